// Config: a form for the common settings, and the raw file with inline validation.
// Saves carry the hash the page loaded (`baseHash`), so a change made meanwhile by someone
// else (another window, an editor, `moltis config set`) is never overwritten silently.
// API keys typed here go to the secret store (`moltis.secrets.set`) and never into the file.
import { useEffect, useState } from "../vendor/preact-hooks.mjs";
import { html, toast } from "./ui.js";

const KNOWN_PROVIDERS = ["anthropic", "openai", "gemini", "groq", "xai", "deepseek", "openrouter", "mistral", "ollama", "lmstudio"];
const KEYLESS = new Set(["ollama", "lmstudio"]);
const STALE = /changed since last load/i;

/** The 1-based line an issue points at: "line N" in the message, else the key's line. */
export function issueLine(raw, issue) {
  const m = /line (\d+)/i.exec(issue.message || "");
  if (m) return Number(m[1]);
  const path = (issue.path || "").replace(/`/g, "");
  if (!path || path === "<root>") return null;
  const parts = path.split(".");
  const leaf = parts[parts.length - 1];
  const lines = raw.split("\n");
  const section = parts.slice(0, -1).join(".");
  let inSection = section === "";
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].trim();
    const header = /^\[+\s*([^\]]+?)\s*\]+$/.exec(t);
    if (header) { inSection = header[1] === section; continue; }
    if (inSection && new RegExp(`^"?${leaf.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}"?\\s*[=:]`).test(t)) return i + 1;
  }
  return null;
}

function RawEditor({ gw, state, reload }) {
  const [text, setText] = useState(state.raw ?? "");
  const [loaded, setLoaded] = useState({ raw: state.raw ?? "", hash: state.hash });
  const [issues, setIssues] = useState(state.issues || []);
  const [conflict, setConflict] = useState(false);
  const [saving, setSaving] = useState(false);
  const dirty = text !== loaded.raw;
  // A new version on disk replaces the text only when there is no unsaved edit; an edit in
  // progress keeps the hash it started from, so saving it reports the conflict.
  useEffect(() => {
    if (dirty || state.hash === loaded.hash) return;
    setText(state.raw ?? ""); setLoaded({ raw: state.raw ?? "", hash: state.hash });
    setIssues(state.issues || []); setConflict(false);
  }, [state.hash]);
  const changedOnDisk = dirty && state.hash !== loaded.hash;

  function takeTheirs() {
    setText(state.raw ?? ""); setLoaded({ raw: state.raw ?? "", hash: state.hash });
    setIssues([]); setConflict(false);
  }

  async function save(apply) {
    setSaving(true);
    try {
      await gw.request(apply ? "config.apply" : "config.set", { raw: text, baseHash: loaded.hash });
      setLoaded({ raw: text, hash: null });
      setIssues([]); setConflict(false);
      toast(apply ? "Saved and applied" : "Saved");
      reload();
    } catch (err) {
      if (STALE.test(err.message)) setConflict(true);
      else setIssues(err.details?.issues || [{ path: "<root>", message: err.message }]);
    } finally { setSaving(false); }
  }

  const lines = text.split("\n");
  const bad = new Set(issues.map((i) => issueLine(text, i)).filter(Boolean));
  return html`<div class="card">
    <div class="card-head"><h2>${state.path}</h2><span class="pill">${state.format}</span></div>
    ${conflict ? html`<div class="banner warn" role="alert" data-testid="config-conflict">
      <b>The config file changed since you opened it.</b> Someone else (another window, an editor or the CLI) saved it.
      Your edits are still here: copy what you need, load their version, then apply your change again.
      <button type="button" class="btn small" onClick=${takeTheirs}>Load their version</button>
    </div>` : changedOnDisk ? html`<div class="banner warn" role="status" data-testid="config-changed-on-disk">
      The file changed on disk while you were editing. Saving will ask you to merge.
      <button type="button" class="btn small" onClick=${takeTheirs}>Load their version</button></div>` : null}
    <div class="editor-wrap">
      <ol class="gutter" aria-hidden="true">${lines.map((_, i) => html`<li class=${bad.has(i + 1) ? "bad" : ""}>${i + 1}</li>`)}</ol>
      <textarea class=${`code-editor raw ${issues.length ? "invalid" : ""}`} spellcheck="false" aria-label="Config file"
        data-testid="config-raw" value=${text} rows=${Math.max(12, Math.min(lines.length + 2, 40))}
        onInput=${(e) => setText(e.currentTarget.value)} aria-invalid=${issues.length > 0} aria-describedby="config-issues"></textarea>
    </div>
    <ul id="config-issues" class="issues" data-testid="config-issues" role="alert">
      ${issues.map((i) => { const ln = issueLine(text, i); return html`<li><b>${i.path}</b>${ln ? ` (line ${ln})` : ""}: ${i.message}</li>`; })}
    </ul>
    ${(state.warnings || []).length ? html`<ul class="warnings">${state.warnings.map((w) => html`<li>${w}</li>`)}</ul>` : null}
    <div class="row">
      <button type="button" class="btn primary" data-testid="config-save" disabled=${saving} onClick=${() => save(true)}>Save and apply</button>
      <button type="button" class="btn" disabled=${saving} onClick=${() => save(false)}>Save only</button>
      <button type="button" class="btn ghost" disabled=${!dirty} onClick=${takeTheirs}>Discard changes</button>
    </div>
  </div>`;
}

function FormView({ gw, state, reload }) {
  const cfg = state.config || {};
  const configured = Object.keys(cfg.providers || {});
  const [model, setModel] = useState(cfg.agents?.model || "");
  const [providers, setProviders] = useState(() => Object.fromEntries(configured.map((id) => [id, { ...cfg.providers[id] }])));
  const [keys, setKeys] = useState({});
  const [secrets, setSecrets] = useState(new Set());
  const [models, setModels] = useState([]);
  const [adding, setAdding] = useState("");
  const [busy, setBusy] = useState(false);
  const [conflict, setConflict] = useState(false);
  const [base, setBase] = useState(state.hash);   // the version the form was filled from
  useEffect(() => { if (base === null) setBase(state.hash); }, [state.hash]);

  useEffect(() => {
    gw.request("moltis.secrets.list", {}).then((r) => setSecrets(new Set(r.names))).catch(() => {});
    gw.request("models.list", {}).then((r) => setModels(r.models || [])).catch(() => {});
  }, [state.hash]);

  const secretName = (id) => providers[id]?.api_key_secret || `${id}-api-key`;

  async function save() {
    setBusy(true);
    try {
      for (const [id, value] of Object.entries(keys)) {
        if (value) await gw.request("moltis.secrets.set", { name: secretName(id), value });
      }
      const patch = { agents: { model }, providers: {} };
      for (const [id, p] of Object.entries(providers)) {
        patch.providers[id] = { enabled: p.enabled !== false, base_url: p.base_url || "" };
      }
      await gw.request("config.patch", { raw: JSON.stringify(patch), baseHash: base });
      setKeys({});
      setBase(null);
      toast("Settings saved");
      reload();
    } catch (err) {
      if (STALE.test(err.message)) setConflict(true);
      else toast(err.message, "error");
    } finally { setBusy(false); }
  }

  const ids = Object.keys(providers);
  return html`<div class="card form">
    ${conflict ? html`<div class="banner warn" role="alert" data-testid="config-conflict">
      <b>The config file changed since you opened it.</b> Reload to see the new version, then save again.
      <button type="button" class="btn small" onClick=${() => { setConflict(false); setBase(state.hash); reload(); }}>Use the new version</button></div>` : null}
    <h2>Model</h2>
    <label class="field">
      <span class="field-label">Default model</span>
      <input list="model-options" value=${model} placeholder="provider/model (empty: first available)" data-testid="config-model"
        onInput=${(e) => setModel(e.currentTarget.value)} />
      <datalist id="model-options">${models.map((m) => html`<option value=${`${m.provider}/${m.id}`}>${m.name || m.id}</option>`)}</datalist>
    </label>
    <h2>Providers</h2>
    ${!ids.length ? html`<p class="muted">No provider configured: Moltis picks one from the keys it finds. Add one to choose.</p>` : null}
    ${ids.map((id) => html`<fieldset class="provider" key=${id}>
      <legend>${id}</legend>
      <label class="check"><input type="checkbox" checked=${providers[id].enabled !== false}
        onChange=${(e) => setProviders({ ...providers, [id]: { ...providers[id], enabled: e.currentTarget.checked } })} /> Enabled</label>
      <label class="field"><span class="field-label">Base URL (optional)</span>
        <input value=${providers[id].base_url || ""} placeholder="the provider's default"
          onInput=${(e) => setProviders({ ...providers, [id]: { ...providers[id], base_url: e.currentTarget.value } })} /></label>
      ${KEYLESS.has(id) ? html`<p class="muted">Runs locally; no API key needed.</p>` : html`<label class="field">
        <span class="field-label">API key ${secrets.has(secretName(id)) ? html`<span class="pill ok">stored</span>` : html`<span class="pill">not set</span>`}</span>
        <input type="password" autocomplete="off" value=${keys[id] || ""} data-testid=${`key-${id}`}
          placeholder=${secrets.has(secretName(id)) ? "•••••••• (type to replace)" : "paste the key"}
          onInput=${(e) => setKeys({ ...keys, [id]: e.currentTarget.value })} />
        <span class="hint">Kept in the OS keyring as “${secretName(id)}”, never in the config file.</span></label>`}
    </fieldset>`)}
    <div class="row">
      <label class="select-label"><span class="sr-only">Add a provider</span>
        <select aria-label="Add a provider" value=${adding} onChange=${(e) => setAdding(e.currentTarget.value)}>
          <option value="">Add a provider…</option>
          ${KNOWN_PROVIDERS.filter((p) => !providers[p]).map((p) => html`<option value=${p}>${p}</option>`)}
        </select></label>
      <button type="button" class="btn" disabled=${!adding} onClick=${() => { setProviders({ ...providers, [adding]: { enabled: true } }); setAdding(""); }}>Add</button>
    </div>
    <div class="row">
      <button type="button" class="btn primary" data-testid="config-form-save" disabled=${busy} onClick=${save}>${busy ? "Saving…" : "Save settings"}</button>
    </div>
  </div>`;
}

export function ConfigView({ gw }) {
  const [state, setState] = useState(null);
  const [tab, setTab] = useState("form");
  const [error, setError] = useState("");
  async function reload() {
    try { setState(await gw.request("config.get", {})); setError(""); }
    catch (err) { setError(err.message); }
  }
  useEffect(() => { reload(); }, []);
  useEffect(() => gw.on("config.changed", () => reload()), [gw]);
  if (error) return html`<section class="page"><div class="banner error" role="alert">${error}</div></section>`;
  if (!state) return html`<section class="page"><div class="loading" role="status">Loading config…</div></section>`;
  return html`<section class="page config" aria-label="Configuration">
    <div class="page-head">
      <h1>Configuration</h1>
      <div class="tabs" role="tablist">
        <button type="button" role="tab" aria-selected=${tab === "form"} class=${tab === "form" ? "active" : ""} onClick=${() => setTab("form")}>Settings</button>
        <button type="button" role="tab" aria-selected=${tab === "raw"} class=${tab === "raw" ? "active" : ""} data-testid="config-tab-raw" onClick=${() => setTab("raw")}>Raw file</button>
      </div>
    </div>
    ${!state.valid ? html`<div class="banner error" role="alert">The file on disk has an error; the last good config stays in force.
      ${(state.issues || []).map((i) => html`<div><b>${i.path}</b>: ${i.message}</div>`)}</div>` : null}
    ${tab === "raw" ? html`<${RawEditor} gw=${gw} state=${state} reload=${reload} />` : html`<${FormView} gw=${gw} state=${state} reload=${reload} />`}
  </section>`;
}
