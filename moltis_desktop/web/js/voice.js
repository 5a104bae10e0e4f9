// Voice: listening for the wake word on this computer (live state), talk mode, push to
// talk; speech (on/off, provider, a test); the wake words phones listen for; and the voice
// models (download with progress, remove). Methods the gateway does not offer are left out
// or explained, not shown as errors.
import { useEffect, useRef, useState } from "../vendor/preact-hooks.mjs";
import { html, toast } from "./ui.js";
import { playSpeech, stopSpeech } from "./chat.js";

const TEST_PHRASE = "Hello, I am your assistant.";
const KINDS = [
  ["stt", "Transcription", "Whisper turns speech into text, on this computer."],
  ["tts", "Voices", "Piper speaks the replies, on this computer."],
  ["wake", "Wake words", "openWakeWord listens for the wake word, on this computer."],
];

/** "hey_jarvis" → "hey jarvis". */
const wakeWords = (name) => String(name || "").replace(/\.(tflite|onnx)$/, "").split(/[\\/]/).pop().replace(/_/g, " ");

function formatBytes(n) {
  if (!n) return "";
  if (n < 1024 * 1024) return `${Math.max(1, Math.round(n / 1024))} KB`;
  if (n < 1024 * 1024 * 1024) return `${Math.round(n / 1024 / 1024)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(1)} GB`;
}

/** What the loop is doing, in words. */
function stateText(status, heard) {
  if (!status?.listening) return "Off";
  switch (status.state) {
    case "listening": return `Listening for “${(status.wakeModels || []).map(wakeWords).join("”, “") || "the wake word"}”`;
    case "idle": return "On (no wake word: use push to talk)";
    case "capturing": return status.source === "wake" && heard ? `Heard “${heard}”: go ahead` : "Listening to your question…";
    case "transcribing": return "Transcribing…";
    case "thinking": return "Thinking…";
    case "speaking": return "Speaking…";
    case "off": return "Off";
    default: return status.state || "On";
  }
}

function Banner({ error, onDismiss, testid }) {
  if (!error) return null;
  return html`<div class="banner error" role="alert" data-testid=${testid}>${error}
    ${onDismiss ? html`<button type="button" class="btn small" onClick=${onDismiss}>Dismiss</button>` : null}</div>`;
}

/** A labelled on/off switch (a checkbox with role=switch). */
function Switch({ id, label, hint, checked, disabled, busy, onChange, testid }) {
  return html`<div class="switch-row">
    <label class="switch" for=${id}>
      <input id=${id} type="checkbox" role="switch" checked=${!!checked} disabled=${disabled || busy} data-testid=${testid}
        aria-describedby=${hint ? `${id}-hint` : undefined} onChange=${(e) => onChange(e.currentTarget.checked)} />
      <span class="switch-track" aria-hidden="true"><span class="switch-thumb"></span></span>
      <span class="switch-label">${label}</span>
      ${busy ? html`<span class="spinner small" aria-hidden="true"></span>` : null}
    </label>
    ${hint ? html`<span class="hint" id=${`${id}-hint`}>${hint}</span>` : null}
  </div>`;
}

// ------------------------------------------------------------------ listening

function ListenPanel({ gw, status, setStatus, live, reload }) {
  const [busy, setBusy] = useState("");
  const [error, setError] = useState("");
  const listening = !!status?.listening;

  async function listen(enabled) {
    setBusy("listen"); setError("");
    try {
      const res = await gw.request("moltis.voice.listen", { enabled }, 120000);
      setStatus((s) => ({ ...s, ...res }));
    } catch (err) {
      setError(`Could not ${enabled ? "start" : "stop"} listening: ${err.message}`);
    } finally {
      setBusy("");
      reload();
    }
  }
  async function talk(enabled) {
    setBusy("talk"); setError("");
    try {
      const res = await gw.request("talk.mode", { enabled });
      setStatus((s) => ({ ...s, talkMode: !!res.enabled }));
    } catch (err) { setError(`Could not turn talk mode ${enabled ? "on" : "off"}: ${err.message}`); }
    finally { setBusy(""); }
  }
  async function pushToTalk() {
    setBusy("ptt"); setError("");
    try { await gw.request("moltis.voice.pushToTalk", {}); }
    catch (err) { setError(`Push to talk did not start: ${err.message}`); }
    finally { setBusy(""); }
  }

  const error2 = error || (status?.error ? `The voice loop stopped: ${status.error}` : "");
  return html`<section class="card voice-listen" aria-labelledby="voice-listen-title" data-testid="voice-listen">
    <div class="card-head"><h2 id="voice-listen-title">Listening on this computer</h2></div>
    <p class="muted card-intro">Say the wake word, then your question: the reply is spoken on this computer's speakers. Nothing heard before the wake word is stored or sent anywhere.</p>
    <div class=${`voice-state ${listening ? "on" : ""} ${status?.state || "off"}`}>
      <span class="voice-orb" aria-hidden="true"></span>
      <div class="voice-state-text">
        <span class="field-label">Now</span>
        <span role="status" aria-live="polite" data-testid="voice-state" data-state=${listening ? status.state : "off"}>${stateText(status, live.heard)}</span>
        ${live.transcript ? html`<span class="voice-transcript" data-testid="voice-transcript">You said: “${live.transcript}”</span>` : null}
        ${live.reply ? html`<span class="voice-reply muted">Reply: ${live.reply}</span>` : null}
      </div>
    </div>
    <${Banner} error=${error2} testid="voice-listen-error" onDismiss=${error ? () => setError("") : null} />
    <div class="switches">
      <${Switch} id="voice-listen-switch" testid="voice-listen-switch" label="Listen for the wake word" checked=${listening}
        busy=${busy === "listen"} disabled=${status && status.available === false} onChange=${listen}
        hint="Uses this computer's microphone (the gateway's, not this browser's)." />
      <${Switch} id="voice-talk-switch" testid="voice-talk-switch" label="Talk mode" checked=${status?.talkMode}
        busy=${busy === "talk"} onChange=${talk} hint="Keep the conversation going after each reply, without the wake word, until you say “stop” or go quiet." />
    </div>
    <div class="row">
      <button type="button" class="btn" data-testid="voice-ptt" aria-describedby="voice-ptt-hint" disabled=${!listening || busy === "ptt"} onClick=${pushToTalk}>Push to talk</button>
      <span class="hint" id="voice-ptt-hint">${listening ? "Ask a question now, without the wake word." : "Turn listening on to ask without the wake word."}</span>
    </div>
  </section>`;
}

// ------------------------------------------------------------------ speech

function SpeechPanel({ gw, tts, setTts }) {
  const [busy, setBusy] = useState("");
  const [error, setError] = useState("");
  const [playing, setPlaying] = useState(false);
  const owner = useRef({});
  useEffect(() => () => stopSpeech(owner.current), []);

  async function enable(on) {
    setBusy("enable"); setError("");
    try { await gw.request(on ? "tts.enable" : "tts.disable", {}); setTts((t) => ({ ...t, enabled: on })); }
    catch (err) { setError(err.message); }
    finally { setBusy(""); }
  }
  async function speakChat(on) {
    setBusy("auto"); setError("");
    try {
      const res = await gw.request("moltis.tts.setAuto", { auto: on ? "always" : "off" });
      setTts((t) => ({ ...t, auto: res.auto }));
    } catch (err) { setError(`Could not turn speaking typed replies ${on ? "on" : "off"}: ${err.message}`); }
    finally { setBusy(""); }
  }
  async function provider(id) {
    setBusy("provider"); setError("");
    try {
      await gw.request("tts.setProvider", { provider: id });
      const fresh = await gw.request("tts.status", {});
      setTts(fresh);
    } catch (err) { setError(`Could not change the provider: ${err.message}`); }
    finally { setBusy(""); }
  }
  async function test() {
    if (playing) { stopSpeech(owner.current); return; }
    setBusy("test"); setError("");
    try {
      const res = await gw.request("tts.convert", { text: TEST_PHRASE }, 120000);
      setBusy("");
      setPlaying(true);
      await playSpeech(res.audioBase64, res.mimeType, owner.current);
    } catch (err) {
      setError(`The test did not play: ${err.message}`);
    } finally { setBusy(""); setPlaying(false); }
  }

  if (!tts) return null;
  const states = tts.providerStates?.length ? tts.providerStates : [{ id: tts.provider, label: tts.provider, configured: true }];
  const current = states.find((p) => p.id === tts.provider);
  return html`<section class="card" aria-labelledby="voice-speech-title" data-testid="voice-speech">
    <div class="card-head"><h2 id="voice-speech-title">Speech</h2></div>
    <div class="switches">
      <${Switch} id="voice-tts-switch" testid="voice-tts-switch" label="Speak the replies" checked=${tts.enabled}
        busy=${busy === "enable"} onChange=${enable} hint="Replies to spoken questions are read out loud." />
      ${gw.can("moltis.tts.setAuto") ? html`<${Switch} id="voice-auto-switch" testid="voice-auto-switch" label="Speak typed chat replies too"
        checked=${tts.auto === "always"} busy=${busy === "auto"} onChange=${speakChat}
        hint="Replies to messages typed in the chat are read out loud on this computer's speakers." />` : null}
    </div>
    <div class="speech-controls">
      <label class="field speech-provider"><span class="field-label">Voice provider</span>
        <select value=${tts.provider} disabled=${busy === "provider"} data-testid="voice-provider"
          onChange=${(e) => provider(e.currentTarget.value)}>
          ${states.map((p) => html`<option value=${p.id}>${p.label}${p.configured ? "" : " (not set up)"}</option>`)}
        </select>
        <span class="hint">${tts.provider === "openai"
          ? "OpenAI's speech API: the text of the replies is sent to OpenAI."
          : "Piper, on this computer: nothing leaves it."}${tts.voice ? html` Voice: <code>${tts.voice}</code>.` : null}</span>
      </label>
      <button type="button" class="btn" data-testid="voice-test" aria-busy=${busy === "test" ? "true" : undefined}
        aria-label=${playing ? "Stop the test voice" : undefined} onClick=${test}>
        ${busy === "test" ? html`<span class="spinner small" aria-hidden="true"></span> Test voice…` : playing ? "Stop" : "Test voice"}</button>
    </div>
    ${current && !current.configured ? html`<div class="banner warn" role="status" data-testid="voice-provider-unset">${current.label} is not set up: ${current.id === "openai"
      ? html`add an OpenAI API key under <code>providers.openai</code> in <a href="#/config">Config</a>.`
      : "its voice is not installed (see Models below)."}</div>` : null}
    <${Banner} error=${error} testid="voice-speech-error" onDismiss=${() => setError("")} />
  </section>`;
}

// ------------------------------------------------------------------ wake words

function WakePanel({ gw, triggers, setTriggers, wakeModels }) {
  const [word, setWord] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const input = useRef(null);

  async function save(next) {
    setBusy(true); setError("");
    try {
      const res = await gw.request("voicewake.set", { triggers: next });
      setTriggers(res.triggers || next);
      return true;
    } catch (err) { setError(`Could not save the wake words: ${err.message}`); return false; }
    finally { setBusy(false); }
  }
  async function add() {
    const w = word.trim().replace(/\s+/g, " ");
    if (!w) return;
    if ((triggers || []).some((t) => t.toLowerCase() === w.toLowerCase())) { setError(`“${w}” is in the list already.`); return; }
    if (await save([...(triggers || []), w])) { setWord(""); input.current?.focus(); }
  }
  async function remove(w) {
    if ((triggers || []).length <= 1) { setError("Keep at least one wake word."); return; }
    if (await save(triggers.filter((t) => t !== w))) { toast(`“${w}” removed`); input.current?.focus(); }
  }

  if (!triggers) return null;
  return html`<section class="card" aria-labelledby="voice-wake-title" data-testid="voice-wake">
    <div class="card-head"><h2 id="voice-wake-title">Wake words</h2></div>
    <p class="muted card-intro">Phones and other nodes paired with this gateway listen for these words.
      ${wakeModels?.length ? html` This computer listens with its wake-word model: ${wakeModels.map((m, i) => html`${i ? ", " : ""}<b>${wakeWords(m)}</b>`)}.` : null}</p>
    <ul class="wake-list" aria-label="Wake words" data-testid="wake-list">
      ${triggers.map((t) => html`<li class="chip" data-testid="wake-word">${t}
        <button type="button" class="chip-x" aria-label=${`Remove ${t}`} disabled=${busy} onClick=${() => remove(t)}>✕</button></li>`)}
    </ul>
    <form class="wake-add" onSubmit=${(e) => { e.preventDefault(); add(); }}>
      <label class="sr-only" for="wake-add-input">New wake word</label>
      <input id="wake-add-input" ref=${input} value=${word} maxlength="64" placeholder="New wake word, e.g. computer" data-testid="wake-add-input"
        onInput=${(e) => setWord(e.currentTarget.value)} />
      <button type="submit" class="btn" data-testid="wake-add" disabled=${busy || !word.trim()}>Add</button>
    </form>
    <${Banner} error=${error} testid="voice-wake-error" onDismiss=${() => setError("")} />
  </section>`;
}

// ------------------------------------------------------------------ models

function ModelRow({ m, progress, inUse, busy, onDownload, onRemove }) {
  const p = progress[m.id];
  const downloading = p && p.state === "downloading";
  const pct = downloading && p.total ? Math.min(100, Math.round((p.done / p.total) * 100)) : 0;
  const state = m.state === "downloaded" ? html`<span class="pill ok">Downloaded</span>`
    : m.state === "package" ? html`<span class="pill ok" title="Installed with a Python package">Installed (package)</span>`
    : html`<span class="pill">Not installed</span>`;
  return html`<tr data-testid="model-row" data-model=${m.id} data-state=${m.state || "absent"}>
    <th scope="row" data-label="Model"><span class="model-title">${m.title}</span>
      ${inUse ? html` <span class="pill accent">In use</span>` : null}
      <span class="model-id mono">${m.id}</span></th>
    <td data-label="Language">${m.language === "multi" ? "Many" : m.language}</td>
    <td data-label="Size">${formatBytes(m.sizeBytes)}</td>
    <td data-label="State">${downloading ? html`<div class="model-progress">
        <progress max="100" value=${p.total ? pct : undefined} aria-label=${`Downloading ${m.title}`} data-testid="model-progress"></progress>
        <span class="hint">${p.total ? `${pct}% of ${formatBytes(p.total)}` : "Starting…"}</span></div>` : state}
      ${p?.state === "error" ? html`<div class="bad-text model-error" role="alert">Download failed: ${p.error || "unknown error"}</div>` : null}</td>
    <td class="model-actions" data-label="">
      ${!m.state && !downloading ? html`<button type="button" class="btn small" disabled=${busy} aria-label=${`Download ${m.title}`}
          data-testid="model-download" onClick=${() => onDownload(m)}>Download</button>` : null}
      ${m.state === "downloaded" && !downloading ? html`<button type="button" class="btn small danger-text" disabled=${busy} aria-label=${`Remove ${m.title}`}
          data-testid="model-remove" onClick=${() => onRemove(m)}>Remove</button>` : null}
    </td>
  </tr>`;
}

function ModelsPanel({ gw, confirm, inUse }) {
  const [models, setModels] = useState(null);
  const [error, setError] = useState("");
  const [progress, setProgress] = useState({});
  const [busy, setBusy] = useState("");
  const available = gw.can("moltis.voice.models.list");

  async function load() {
    try {
      const res = await gw.request("moltis.voice.models.list", {});
      setModels(res.models || []);
      setError("");
    } catch (err) { setError(`Could not list the voice models: ${err.message}`); }
  }
  useEffect(() => { if (available) load(); }, []);
  useEffect(() => gw.on("moltis.voice.models.progress", (p) => {
    if (!p?.id) return;
    setProgress((cur) => ({ ...cur, [p.id]: p }));
    if (p.state === "done") { load(); toast("Model downloaded"); }
    if (p.state === "error") load();
  }), [gw]);

  async function download(m) {
    setBusy(m.id);
    setProgress((cur) => ({ ...cur, [m.id]: { id: m.id, done: 0, total: m.sizeBytes, state: "downloading" } }));
    try { await gw.request("moltis.voice.models.download", { id: m.id }); }
    catch (err) { setProgress((cur) => ({ ...cur, [m.id]: { id: m.id, state: "error", error: err.message } })); }
    finally { setBusy(""); }
  }
  async function remove(m) {
    const ok = await confirm({ title: `Remove ${m.title}?`, body: `Its files (${formatBytes(m.sizeBytes)}) are deleted from this computer. You can download it again.`, confirmText: "Remove", danger: true });
    if (!ok) return;
    setBusy(m.id);
    try { await gw.request("moltis.voice.models.remove", { id: m.id }); toast(`${m.title} removed`); }
    catch (err) { setError(`Could not remove ${m.title}: ${err.message}`); }
    finally { setBusy(""); load(); }
  }

  return html`<section class="card" aria-labelledby="voice-models-title" data-testid="voice-models">
    <div class="card-head"><h2 id="voice-models-title">Models</h2>
      ${available ? html`<button type="button" class="btn small" onClick=${load}>Refresh</button>` : null}</div>
    ${!available ? html`<p class="muted" data-testid="voice-models-unavailable">This gateway does not manage voice models (it has no <code>voice.models.list</code>). Use <code>moltis models voice</code> on its computer.</p>` : null}
    <${Banner} error=${error} testid="voice-models-error" />
    ${available && !models && !error ? html`<div class="loading" role="status">Loading models…</div>` : null}
    ${models ? KINDS.map(([kind, title, about]) => {
      const list = models.filter((m) => m.kind === kind);
      if (!list.length) return null;
      return html`<div class="model-group">
        <table class="models-table" aria-labelledby=${`models-${kind}`}>
          <caption id=${`models-${kind}`}><span class="model-kind">${title}</span> <span class="hint">${about}</span></caption>
          <thead><tr><th scope="col">Model</th><th scope="col">Language</th><th scope="col">Size</th><th scope="col">State</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>${list.map((m) => html`<${ModelRow} key=${m.id} m=${m} progress=${progress} inUse=${inUse.has(m.id)}
            busy=${busy === m.id} onDownload=${download} onRemove=${remove} />`)}</tbody>
        </table></div>`;
    }) : null}
  </section>`;
}

// ------------------------------------------------------------------ the page

export function VoiceView({ gw, confirm }) {
  const [status, setStatus] = useState(null);
  const [tts, setTts] = useState(null);
  const [triggers, setTriggers] = useState(null);
  const [loadError, setLoadError] = useState("");
  const [live, setLive] = useState({ heard: "", transcript: "", reply: "" });

  async function loadStatus() {
    try { setStatus(await gw.request("moltis.voice.status", {})); setLoadError(""); }
    catch (err) { setLoadError(err.message); }
  }
  useEffect(() => {
    loadStatus();
    gw.request("tts.status", {}).then(setTts).catch(() => {});
    if (gw.can("voicewake.get")) gw.request("voicewake.get", {}).then((r) => setTriggers(r.triggers || [])).catch(() => {});
  }, [gw]);

  useEffect(() => {
    const offs = [
      gw.on("moltis.voice.state", (p) => {
        if (!p) return;
        if (p.kind === "state") setStatus((s) => ({ ...s, listening: p.state !== "off", state: p.state, source: p.source, talkMode: p.talkMode ?? s?.talkMode, error: null }));
        else if (p.kind === "wake") setLive((l) => ({ ...l, heard: wakeWords(p.model) }));
        else if (p.kind === "transcript") setLive((l) => ({ ...l, transcript: p.text || "", reply: "" }));
        else if (p.kind === "reply") setLive((l) => ({ ...l, reply: p.text || "" }));
        else if (p.kind === "error") { setStatus((s) => ({ ...s, error: p.message })); loadStatus(); }
      }),
      gw.on("talk.mode", (p) => setStatus((s) => ({ ...s, talkMode: !!p?.enabled }))),
      gw.on("moltis.tts.changed", (p) => { if (p) setTts(p); }),
      gw.on("voicewake.changed", (p) => { if (p?.triggers) setTriggers(p.triggers); }),
      gw.on("hello", ({ reconnect }) => { if (reconnect) loadStatus(); }),
    ];
    return () => offs.forEach((f) => f());
  }, [gw]);

  if (loadError && !status) {
    return html`<section class="page"><div class="banner error" role="alert">Could not load voice: ${loadError}
      <button type="button" class="btn small" onClick=${loadStatus}>Try again</button></div></section>`;
  }
  if (!status) return html`<section class="page"><div class="loading" role="status">Loading voice…</div></section>`;
  const inUse = new Set([
    status.sttModel && !/[\\/]/.test(status.sttModel) ? `whisper/${status.sttModel}` : "",
    tts?.provider === "piper" && tts.voice ? `piper/${tts.voice}` : "",
    ...(status.wakeModels || []).map((w) => `wake/${w}`),
  ].filter(Boolean));
  return html`<section class="page voice" aria-labelledby="voice-title">
    <div class="page-head"><h1 id="voice-title">Voice</h1></div>
    ${status.available === false ? html`<div class="banner warn" role="status" data-testid="voice-unavailable">Voice is not available in this gateway: install <code>moltis-desktop[voice]</code> on its computer.</div>` : null}
    <div class="voice-grid">
      <${ListenPanel} gw=${gw} status=${status} setStatus=${setStatus} live=${live} reload=${loadStatus} />
      <div class="voice-side">
        <${SpeechPanel} gw=${gw} tts=${tts} setTts=${setTts} />
        <${WakePanel} gw=${gw} triggers=${triggers} setTriggers=${setTriggers} wakeModels=${status.wakeModels} />
      </div>
    </div>
    <${ModelsPanel} gw=${gw} confirm=${confirm} inUse=${inUse} />
  </section>`;
}
