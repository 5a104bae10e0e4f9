// The method explorer: every method the gateway advertises, a JSON editor for its params
// (prefilled from the method's schema), the answer, and a live event log with filters.
import { useEffect, useMemo, useRef, useState } from "../vendor/preact-hooks.mjs";
import { html } from "./ui.js";

const MAX_EVENTS = 300;

export function Explorer({ gw }) {
  const [meta, setMeta] = useState({});
  const [filter, setFilter] = useState("");
  const [method, setMethod] = useState("health");
  const [params, setParams] = useState("{}");
  // Whether the user has typed into the params since picking the method: until then the
  // schema's example may still arrive (methods.json loads after the method list) and fill it.
  const [edited, setEdited] = useState(false);
  const [result, setResult] = useState(null);
  const [running, setRunning] = useState(false);
  const [events, setEvents] = useState([]);
  const [eventFilter, setEventFilter] = useState("");
  const [hideTicks, setHideTicks] = useState(true);
  const [paused, setPaused] = useState(false);
  const pausedRef = useRef(false);
  pausedRef.current = paused;

  useEffect(() => {
    fetch("/ui/methods.json").then((r) => r.json()).then((body) => {
      const map = {};
      for (const m of body.methods || []) map[m.name] = m;
      setMeta(map);
    }).catch(() => {});
  }, []);

  useEffect(() => gw.on("*", ({ event, payload }) => {
    if (pausedRef.current || ["state", "retry", "hello", "gap"].includes(event)) return;
    setEvents((list) => [{ id: Math.random(), at: new Date(), event, payload }, ...list].slice(0, MAX_EVENTS));
  }), [gw]);

  function pick(name) {
    setMethod(name);
    setEdited(false);
    setParams(JSON.stringify(meta[name]?.example ?? {}, null, 2));
    setResult(null);
  }

  useEffect(() => {
    const ex = meta[method]?.example;
    if (!edited && ex) setParams(JSON.stringify(ex, null, 2));
  }, [meta]);

  let parseError = "";
  try { JSON.parse(params || "{}"); } catch (err) { parseError = err.message; }

  async function call() {
    if (parseError) return;
    setRunning(true);
    const t0 = performance.now();
    try {
      const payload = await gw.request(method, JSON.parse(params || "{}"));
      setResult({ ok: true, ms: Math.round(performance.now() - t0), body: payload });
    } catch (err) {
      setResult({ ok: false, ms: Math.round(performance.now() - t0), body: { code: err.code, message: err.message, details: err.details } });
    } finally {
      setRunning(false);
    }
  }

  const methods = gw.methods.filter((m) => m.toLowerCase().includes(filter.toLowerCase()));
  const shown = useMemo(() => events.filter((e) =>
    (!hideTicks || e.event !== "tick") && (!eventFilter || e.event.includes(eventFilter))), [events, eventFilter, hideTicks]);
  const info = meta[method];

  return html`<section class="page explorer" aria-label="Method explorer">
    <div class="explorer-methods">
      <input type="search" class="search" placeholder=${`Filter ${gw.methods.length} methods`} aria-label="Filter methods"
        value=${filter} onInput=${(e) => setFilter(e.currentTarget.value)} />
      <ul class="method-list" data-testid="method-list">
        ${methods.map((m) => html`<li><button type="button" class=${m === method ? "active" : ""} onClick=${() => pick(m)}>
          <span>${m}</span>${meta[m]?.scope ? html`<span class="scope">${meta[m].scope.replace("operator.", "")}</span>` : null}</button></li>`)}
      </ul>
    </div>
    <div class="explorer-main">
      <div class="card">
        <div class="card-head"><h2 data-testid="explorer-method">${method}</h2>
          ${info?.scope ? html`<span class="pill">${info.scope}</span>` : null}</div>
        <label class="field-label" for="explorer-params">Params (JSON)</label>
        <textarea id="explorer-params" class=${`code-editor ${parseError ? "invalid" : ""}`} spellcheck="false" rows="8"
          data-testid="explorer-params" value=${params} onInput=${(e) => { setEdited(true); setParams(e.currentTarget.value); }}
          onKeyDown=${(e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); call(); } }}
          aria-invalid=${!!parseError} aria-describedby="explorer-params-error"></textarea>
        <div id="explorer-params-error" class="field-error" role="status">${parseError}</div>
        <div class="row">
          <button type="button" class="btn primary" data-testid="explorer-call" disabled=${running || !!parseError} onClick=${call}>${running ? "Calling…" : "Call"}</button>
          <span class="muted">Ctrl+Enter calls</span>
          ${info?.schema ? html`<details class="schema"><summary>Schema</summary><pre>${JSON.stringify(info.schema, null, 2)}</pre></details>` : null}
        </div>
        ${result ? html`<div class=${`result ${result.ok ? "ok" : "err"}`} data-testid="explorer-result">
          <div class="result-head">${result.ok ? "OK" : "Error"} · ${result.ms} ms</div>
          <pre>${JSON.stringify(result.body, null, 2)}</pre></div>` : null}
      </div>
      <div class="card events">
        <div class="card-head"><h2>Live events</h2>
          <div class="row">
            <input type="search" class="search small" placeholder="Filter events" aria-label="Filter events" value=${eventFilter}
              onInput=${(e) => setEventFilter(e.currentTarget.value)} />
            <label class="check"><input type="checkbox" checked=${hideTicks} onChange=${(e) => setHideTicks(e.currentTarget.checked)} /> Hide ticks</label>
            <button type="button" class="btn small" onClick=${() => setPaused(!paused)}>${paused ? "Resume" : "Pause"}</button>
            <button type="button" class="btn small" onClick=${() => setEvents([])}>Clear</button>
          </div>
        </div>
        <ol class="event-log" data-testid="event-log">
          ${shown.map((e) => html`<li key=${e.id}><details><summary><time>${e.at.toLocaleTimeString()}</time> <b>${e.event}</b></summary>
            <pre>${JSON.stringify(e.payload, null, 2)}</pre></details></li>`)}
          ${!shown.length ? html`<li class="muted">No events yet.</li>` : null}
        </ol>
      </div>
    </div>
  </section>`;
}
