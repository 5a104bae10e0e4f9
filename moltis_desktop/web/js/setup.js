// The first-run notice: a reply failed because nothing is set up to answer (no key, no local
// server, the local model not downloaded). The gateway says so in `moltis.chat.setup`
// (`{runId, sessionKey, message, actions}`) just before the run's `chat` error; the chat
// shows one notice, on the assistant's side, with the actions as buttons: download the
// local model (with its progress), add an API key, or try again once Ollama runs.
import { useEffect, useRef, useState } from "../vendor/preact-hooks.mjs";
import { html } from "./ui.js";

const KEY_PROVIDERS = [
  ["anthropic", "Anthropic"], ["openai", "OpenAI"], ["gemini", "Google Gemini"], ["openrouter", "OpenRouter"],
  ["groq", "Groq"], ["mistral", "Mistral"], ["deepseek", "DeepSeek"], ["xai", "xAI"],
];

export function formatSize(bytes) {
  if (!bytes) return "";
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  return `${Math.max(1, Math.round(bytes / 1e6))} MB`;
}

function Command({ text }) {
  return text ? html`<code class="notice-cmd">${text}</code>` : null;
}

/** Download the local model: the button, then its progress, then "Try again". */
function Download({ gw, action, onRetry }) {
  const [p, setP] = useState(null);   // {state: downloading|done|error, done, total, error?}
  const id = action.modelId;
  const title = action.title || id;
  useEffect(() => gw.on("moltis.models.local.progress", (e) => {
    if (e?.id !== id) return;
    setP((cur) => (cur?.state === "done" ? cur : { ...e }));
  }), [gw, id]);

  async function start() {
    setP({ state: "downloading", done: 0, total: action.bytes || 0 });
    try {
      const res = await gw.request("moltis.models.local.download", { id });
      // Already there (downloaded before, or shipped in a package): nothing to wait for.
      if (res?.state && res.state !== "downloading") setP({ state: "done", done: 1, total: 1 });
    } catch (err) {
      setP({ state: "error", error: err.message || String(err) });
    }
  }

  if (!gw.can("moltis.models.local.download")) {
    return html`<p class="hint">To download ${title}, run <${Command} text=${action.command} /> on the gateway's computer, then send your message again.</p>`;
  }
  if (!p) {
    return html`<button type="button" class="btn primary" data-testid="setup-download" onClick=${start}>${action.label}</button>`;
  }
  if (p.state === "done") {
    return html`<div class="notice-step" data-testid="setup-downloaded">
      <span class="notice-ok" role="status">${title} is downloaded.</span>
      <button type="button" class="btn primary" data-testid="setup-retry" onClick=${onRetry}>Try again</button></div>`;
  }
  if (p.state === "error") {
    return html`<div class="notice-step">
      <span class="notice-bad" role="alert" data-testid="setup-download-error">The download failed: ${p.error || "unknown error"}</span>
      <button type="button" class="btn" data-testid="setup-download" onClick=${start}>Try the download again</button></div>`;
  }
  const total = p.total || action.bytes || 0;
  const pct = total ? Math.min(100, Math.round((p.done / total) * 100)) : 0;
  return html`<div class="notice-progress" data-testid="setup-progress">
    <progress max="100" value=${total && p.done ? pct : undefined} aria-label=${`Downloading ${title}`}></progress>
    <span class="hint" aria-live="polite">Downloading ${title}… ${total && p.done ? `${pct}% of ${formatSize(total)}` : ""}</span>
  </div>`;
}

/** Add an API key: a provider, the key, saved to the gateway's secret store. */
function AddKey({ gw, action, onRetry, onClose }) {
  const [provider, setProvider] = useState(action.provider || "anthropic");
  const [key, setKey] = useState("");
  const [state, setState] = useState({ busy: false, saved: "", error: "" });
  const input = useRef(null);
  const panel = useRef(null);
  useEffect(() => {
    input.current?.focus();
    panel.current?.scrollIntoView?.({ block: "nearest" });
  }, []);
  const secret = `${provider}-api-key`;
  const command = `moltis secrets set ${secret}`;

  if (!gw.can("moltis.secrets.set")) {
    return html`<div class="notice-panel" data-testid="setup-key-panel">
      <p class="hint">Store a key on the gateway's computer with <${Command} text=${command} />, then send your message again.</p></div>`;
  }
  if (state.saved) {
    return html`<div class="notice-panel notice-step" data-testid="setup-key-panel">
      <span class="notice-ok" role="status">The key is stored as “${state.saved}”.</span>
      <button type="button" class="btn primary" data-testid="setup-retry" onClick=${onRetry}>Try again</button></div>`;
  }
  async function save(e) {
    e.preventDefault();
    if (!key.trim()) return;
    setState({ busy: true, saved: "", error: "" });
    try {
      await gw.request("moltis.secrets.set", { name: secret, value: key.trim() });
      setKey("");
      setState({ busy: false, saved: secret, error: "" });
    } catch (err) {
      setState({ busy: false, saved: "", error: err.message || String(err) });
    }
  }
  return html`<form class="notice-panel" ref=${panel} data-testid="setup-key-panel" onSubmit=${save}>
    <div class="notice-fields">
      <label class="field"><span class="field-label">Provider</span>
        <select value=${provider} data-testid="setup-key-provider" onChange=${(e) => setProvider(e.currentTarget.value)}>
          ${KEY_PROVIDERS.map(([id, name]) => html`<option value=${id}>${name}</option>`)}
        </select></label>
      <label class="field grow"><span class="field-label">API key</span>
        <input ref=${input} type="password" autocomplete="off" value=${key} placeholder="paste the key" data-testid="setup-key-input"
          onInput=${(e) => setKey(e.currentTarget.value)} /></label>
    </div>
    ${state.error ? html`<p class="notice-bad" role="alert">${state.error}</p>` : null}
    <div class="notice-actions">
      <button type="submit" class="btn primary" data-testid="setup-key-save" disabled=${state.busy || !key.trim()}>${state.busy ? "Saving…" : "Save key"}</button>
      <button type="button" class="btn ghost" onClick=${onClose}>Cancel</button>
    </div>
    <p class="hint">Kept in the gateway's secret store as “${secret}”, never in the config file. In a terminal: <${Command} text=${command} /></p>
  </form>`;
}

/** The gateway's message as a sentence, its `commands` as code. */
function MessageText({ text }) {
  let t = String(text || "").trim();
  if (t && !/[.!?)]$/.test(t)) t += ".";
  const parts = (t.charAt(0).toUpperCase() + t.slice(1)).split("`");
  return parts.map((p, i) => (i % 2 ? html`<code class="notice-cmd">${p}</code>` : p));
}

/** The notice: the gateway's message and its actions. `onRetry` sends the message again. */
export function SetupNotice({ gw, notice, onRetry, busy }) {
  const [keyOpen, setKeyOpen] = useState(false);
  const actions = notice.actions || [];
  const download = actions.find((a) => a.kind === "download_model" && a.modelId);
  const addKey = actions.find((a) => a.kind === "add_key");
  const servers = actions.filter((a) => a.kind === "start_server");
  const retry = () => { if (!busy) onRetry(); };
  return html`<div class="msg msg-assistant setup-notice" data-testid="setup-notice" role="group" aria-labelledby=${`setup-${notice.runId}`}>
    <div class="avatar" aria-hidden="true">M</div>
    <div class="msg-main">
      <div class="notice-card">
        <p class="notice-text" id=${`setup-${notice.runId}`} role="alert" data-testid="setup-message"><${MessageText} text=${notice.message} /></p>
        <div class="notice-actions">
          ${download ? html`<${Download} gw=${gw} action=${download} onRetry=${retry} />` : null}
          ${addKey ? html`<button type="button" class="btn" data-testid="setup-add-key" aria-expanded=${keyOpen}
              onClick=${() => setKeyOpen((o) => !o)}>${addKey.label || "Add an API key"}</button>` : null}
          ${servers.map((s) => html`<button type="button" class="btn" data-testid="setup-server-retry" disabled=${busy}
              title=${s.url ? `Looked for at ${s.url}` : ""} onClick=${retry}>${s.label}</button>`)}
        </div>
        ${addKey && keyOpen ? html`<${AddKey} gw=${gw} action=${addKey} onRetry=${retry} onClose=${() => setKeyOpen(false)} />` : null}
        ${servers.some((s) => s.command) ? html`<p class="hint notice-foot">${servers.map((s) => html`
          <span>To start ${s.provider === "lmstudio" ? "LM Studio's server" : "Ollama"}: <${Command} text=${s.command} /></span>`)}</p>` : null}
      </div>
    </div>
  </div>`;
}
