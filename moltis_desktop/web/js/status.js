// Status: gateway health, providers and models, usage and cost over time, who is
// connected, and the log with live follow.
import { useEffect, useRef, useState } from "../vendor/preact-hooks.mjs";
import { html, formatCost, formatTokens, timeAgo } from "./ui.js";

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A bar chart of cost (or tokens when nothing is priced) per day, as SVG. */
export function UsageChart({ daily }) {
  if (!daily?.length) return html`<p class="muted">No usage recorded in the last 30 days.</p>`;
  const byCost = daily.some((d) => d.cost > 0);
  const values = daily.map((d) => (byCost ? d.cost : d.totalTokens ?? (d.input + d.output)));
  const max = Math.max(...values, byCost ? 0.0001 : 1);
  const w = 600, h = 140, pad = 24;
  const slots = Math.max(values.length, 14);
  const bw = (w - pad) / slots;
  return html`<figure class="chart" data-testid="usage-chart">
    <svg viewBox=${`0 0 ${w} ${h + 20}`} role="img" aria-label=${`${byCost ? "Cost" : "Tokens"} per day`}>
      <line x1=${pad} y1=${h} x2=${w} y2=${h} class="axis" />
      ${values.map((v, i) => {
        const bh = Math.max(1, (v / max) * (h - 10));
        return html`<rect x=${pad + (slots - values.length + i) * bw + 2} y=${h - bh} width=${Math.max(2, bw - 4)} height=${bh} class="bar" rx="2">
          <title>${daily[i].date}: ${byCost ? formatCost(v) : `${formatTokens(v)} tokens`}</title></rect>`;
      })}
      ${daily.length > 1
        ? html`<text x=${pad + (slots - values.length) * bw} y=${h + 15} class="tick">${daily[0].date}</text>`
        : html`<text x=${w} y=${h + 15} class="tick end">${daily[0].date}</text>`}
      ${daily.length > 1 ? html`<text x=${w} y=${h + 15} class="tick end">${daily[daily.length - 1].date}</text>` : null}
      <text x="0" y="12" class="tick">${byCost ? formatCost(max) : formatTokens(max)}</text>
    </svg>
    <figcaption>${byCost ? "Cost" : "Tokens"} per day</figcaption>
  </figure>`;
}

function Logs({ gw }) {
  const [lines, setLines] = useState([]);
  const [follow, setFollow] = useState(true);
  const [error, setError] = useState("");
  const cursor = useRef(null);
  const box = useRef(null);
  useEffect(() => {
    let stop = false;
    let timer;
    async function poll() {
      try {
        const res = await gw.request("logs.tail", cursor.current == null ? { limit: 200 } : { cursor: cursor.current, limit: 500 });
        cursor.current = res.cursor;
        if (res.lines?.length) setLines((cur) => (res.reset ? res.lines : [...cur, ...res.lines]).slice(-1000));
        setError("");
      } catch (err) { setError(err.message); }
      if (!stop && follow) timer = setTimeout(poll, 2000);
    }
    poll();
    return () => { stop = true; clearTimeout(timer); };
  }, [gw, follow]);
  useEffect(() => { if (follow && box.current) box.current.scrollTop = box.current.scrollHeight; }, [lines, follow]);
  const shown = lines.map((l) => {
    try {
      const j = JSON.parse(l);
      const meta = j._meta || {};
      return { level: (j.level || meta.logLevelName || "").toLowerCase(), time: j.time || meta.date || "", text: j.message ?? j.msg ?? j["1"] ?? l, name: j.subsystem || "" };
    } catch { return { level: "", time: "", text: l, name: "" }; }
  });
  return html`<div class="card logs">
    <div class="card-head"><h2>Log</h2>
      <label class="check"><input type="checkbox" checked=${follow} data-testid="log-follow" onChange=${(e) => setFollow(e.currentTarget.checked)} /> Follow</label></div>
    ${error ? html`<div class="banner error">${error}</div>` : null}
    <pre class="log-box" ref=${box} tabindex="0" aria-label="Gateway log" data-testid="log-box">${shown.map((l) => html`<div class=${`log-line ${l.level}`}><span class="log-time">${String(l.time).slice(11, 19)}</span> <span class="log-level">${l.level}</span> ${l.name ? html`<span class="log-name">[${l.name}]</span> ` : null}${typeof l.text === "string" ? l.text : JSON.stringify(l.text)}</div>`)}</pre>
  </div>`;
}

export function StatusView({ gw }) {
  const [status, setStatus] = useState(null);
  const [health, setHealth] = useState(null);
  const [models, setModels] = useState([]);
  const [usage, setUsage] = useState(null);
  const [presence, setPresence] = useState([]);
  const [error, setError] = useState("");

  async function load() {
    try {
      const [st, he, mo, us, pr] = await Promise.all([
        gw.request("status", {}),
        gw.request("health", {}),
        gw.request("models.list", {}).catch(() => ({ models: [] })),
        gw.request("usage.cost", { days: 30 }).catch(() => null),
        gw.request("system-presence", {}),
      ]);
      setStatus(st); setHealth(he); setModels(mo.models || []); setUsage(us);
      setPresence(Array.isArray(pr) ? pr : pr.presence || []);
      setError("");
    } catch (err) { setError(err.message); }
  }
  useEffect(() => { load(); const t = setInterval(load, 10000); return () => clearInterval(t); }, [gw]);
  useEffect(() => gw.on("presence", (p) => setPresence(p.presence || [])), [gw]);
  useEffect(() => gw.on("health", (p) => setHealth(p)), [gw]);

  if (error && !status) return html`<section class="page"><div class="banner error" role="alert">${error}</div></section>`;
  if (!status) return html`<section class="page"><div class="loading" role="status">Loading status…</div></section>`;
  const g = status.gateway || {};
  const providers = {};
  for (const m of models) (providers[m.provider] ||= []).push(m);
  const now = Date.now();
  const clients = presence.filter((p) => p.mode !== "gateway");
  const devices = clients.filter((p) => p.deviceId);
  return html`<section class="page status" aria-label="Status">
    <div class="page-head"><h1>Status</h1><button type="button" class="btn small" onClick=${load}>Refresh</button></div>
    <div class="grid">
      <div class="card stat" data-testid="status-health">
        <h2>Gateway</h2>
        <dl>
          <dt>Health</dt><dd><span class=${`dot ${health?.ok !== false ? "ok" : "bad"}`}></span>${health?.ok !== false ? "Healthy" : "Degraded"}</dd>
          <dt>Version</dt><dd>${status.runtimeVersion}</dd>
          <dt>Address</dt><dd>${g.url}</dd>
          <dt>Auth</dt><dd>${g.authMode}</dd>
          <dt>Up</dt><dd>${duration(g.uptimeMs || 0)}</dd>
          <dt>Memory</dt><dd>${Math.round((status.processMemory?.rssBytes || 0) / 1048576)} MiB</dd>
          <dt>Config</dt><dd>${status.config?.valid === false ? html`<span class="bad-text">error</span>` : "valid"}</dd>
        </dl>
      </div>
      <div class="card stat" data-testid="status-usage">
        <h2>Usage (30 days)</h2>
        ${usage ? html`<p class="big">${usage.totals?.cost ? html`${formatCost(usage.totals.cost)} <span class="muted">· </span>` : null}<span class=${usage.totals?.cost ? "muted" : ""}>${formatTokens(usage.totals?.totalTokens ?? 0)} tokens</span></p>
          <${UsageChart} daily=${usage.daily} />` : html`<p class="muted">Usage is not available yet.</p>`}
      </div>
      <div class="card stat" data-testid="status-models">
        <h2>Providers and models</h2>
        ${Object.keys(providers).length ? html`<ul class="plain">${Object.entries(providers).map(([p, list]) => html`<li><b>${p}</b>${" "}<span class="muted">${list.length} model${list.length === 1 ? "" : "s"}</span>
          <div class="model-names">${list.slice(0, 6).map((m) => m.name || m.id).join(", ")}${list.length > 6 ? "…" : ""}</div></li>`)}</ul>`
          : html`<p class="muted">No models yet: add a provider in Config.</p>`}
      </div>
      <div class="card stat" data-testid="status-clients">
        <h2>Connected (${clients.length})</h2>
        <ul class="plain">${clients.map((c) => html`<li><b>${c.host || c.displayName || c.instanceId || "client"}</b>${" "}<span class="muted">${c.mode || ""} ${c.platform || ""} · ${timeAgo(c.ts, now)}</span></li>`)}</ul>
        <h3>Devices (${devices.length})</h3>
        ${devices.length ? html`<ul class="plain">${devices.map((d) => html`<li>${d.deviceId.slice(0, 12)}… <span class="muted">${d.platform || ""}</span></li>`)}</ul>`
          : html`<p class="muted">No paired device is connected.</p>`}
      </div>
    </div>
    <${Logs} gw=${gw} />
  </section>`;
}
