// The chat: history, the streaming reply, tool cards, thinking, the composer.
import { useEffect, useLayoutEffect, useMemo, useRef, useState, useCallback } from "../vendor/preact-hooks.mjs";
import { html, formatCost, formatTokens, readFileAsBase64, sessionTitle, textOf, timeAgo, toMs, toast } from "./ui.js";
import { onGrammarLoaded, renderMarkdown } from "./markdown.js";
import { uuid } from "./gateway.js";
import { SetupNotice } from "./setup.js";

const THINKING_LEVELS = ["off", "minimal", "low", "medium", "high", "xhigh"];
const MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024;
const FIRST_SHOWN = 12;   // messages rendered at first; earlier ones when scrolled to

// The first history of a page load is asked for as soon as the gateway says hello, before
// the chat view has rendered (it takes it from here).
const prefetched = new Map();
export function prefetchHistory(gw, sessionKey) {
  const pending = gw.request("chat.history", { sessionKey, limit: 200 });
  pending.catch(() => {});   // the view handles a failure when it takes the answer
  prefetched.set(sessionKey, pending);
}

function Markdown({ text, className = "md" }) {
  const [grammars, setGrammars] = useState(0);
  useEffect(() => (text.includes("```") ? onGrammarLoaded(() => setGrammars((n) => n + 1)) : undefined), [text]);
  const inner = useMemo(() => renderMarkdown(text), [text, grammars]);
  return html`<div class=${className} dangerouslySetInnerHTML=${{ __html: inner }}></div>`;
}

function pretty(value) {
  if (typeof value === "string") return value;
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

export function ToolCard({ name, args, result, isError, pending, durationMs }) {
  const status = pending ? "running…" : isError ? "failed" : "done";
  return html`
    <details class=${`tool-card ${isError ? "is-error" : ""} ${pending ? "is-pending" : ""}`} data-testid="tool-card">
      <summary>
        <span class="tool-icon" aria-hidden="true">⚙</span>
        <span class="tool-name">${name}</span>
        <span class="tool-status">${status}${durationMs != null && !pending ? ` · ${durationMs} ms` : ""}</span>
      </summary>
      <div class="tool-body">
        <div class="tool-label">Arguments</div>
        <pre class="tool-pre">${pretty(args ?? {})}</pre>
        ${!pending && html`<div class="tool-label">Result</div><pre class="tool-pre">${pretty(result ?? "")}</pre>`}
      </div>
    </details>`;
}

function Thinking({ text, live }) {
  if (!text) return null;
  return html`<details class="thinking" data-testid="thinking">
    <summary>${live ? "Thinking…" : "Thought process"}</summary>
    <div class="thinking-body">${text}</div>
  </details>`;
}

function UsageLine({ usage, model }) {
  if (!usage) return null;
  const cost = usage.cost?.total;
  return html`<div class="usage" data-testid="usage" title=${`${usage.input ?? 0} input, ${usage.output ?? 0} output, ${usage.cacheRead ?? 0} cache read tokens`}>
    ${model ? html`<span>${model}</span>` : null}
    <span>${formatTokens(usage.input ?? 0)} in · ${formatTokens(usage.output ?? 0)} out</span>
    ${cost ? html`<span>${formatCost(cost)}</span>` : null}
  </div>`;
}

function AttachmentChips({ content }) {
  const images = (content || []).filter((b) => b.type === "image" && b.data);
  if (!images.length) return null;
  return html`<div class="msg-images">${images.map((b) => html`<img alt="attached image" src=${`data:${b.mimeType};base64,${b.data}`} />`)}</div>`;
}

/** Turn the flat transcript into bubbles: tool results join the call they answer. */
export function groupMessages(messages) {
  const results = new Map();
  for (const m of messages) if (m.role === "toolResult") results.set(m.toolCallId, m);
  const out = [];
  for (const m of messages) {
    if (m.role === "toolResult") continue;
    const prev = out[out.length - 1];
    if (m.role === "assistant" && prev?.role === "assistant") {
      // One turn of tool rounds reads as one reply, with its usage added up.
      prev.content = [...(Array.isArray(prev.content) ? prev.content : []), ...(Array.isArray(m.content) ? m.content : [])];
      prev.usage = sumUsage(prev.usage, m.usage);
      for (const k of ["stopReason", "errorMessage", "model"]) if (m[k] !== undefined) prev[k] = m[k];
      continue;
    }
    out.push({ ...m, results });
  }
  return out;
}

function sumUsage(a, b) {
  if (!a) return b;
  if (!b) return a;
  const n = (k) => (a[k] || 0) + (b[k] || 0);
  const cost = (a.cost?.total || 0) + (b.cost?.total || 0);
  return { input: n("input"), output: n("output"), cacheRead: n("cacheRead"), cacheWrite: n("cacheWrite"),
    totalTokens: n("totalTokens"), ...(a.cost || b.cost ? { cost: { total: cost } } : {}) };
}

function AssistantBody({ content, results }) {
  const blocks = Array.isArray(content) ? content : [{ type: "text", text: String(content ?? "") }];
  return blocks.map((b) => {
    if (b.type === "text") return b.text ? html`<${Markdown} text=${b.text} />` : null;
    if (b.type === "thinking") return html`<${Thinking} text=${b.thinking} />`;
    if (b.type === "toolCall") {
      const r = results?.get(b.id);
      return html`<${ToolCard} name=${b.name} args=${b.arguments} result=${r ? textOf(r.content) : undefined}
        isError=${r?.isError} pending=${!r} />`;
    }
    if (b.type === "image") return html`<img class="msg-image" alt="image" src=${`data:${b.mimeType};base64,${b.data}`} />`;
    return null;
  });
}

// ------------------------------------------------------------------ voice: the mic and Read aloud

const MIC_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/ogg", "audio/mp4"];
const MAX_RECORDING_MS = 5 * 60 * 1000;
const MAX_SPOKEN_CHARS = 4000;   // tts.convert's limit

/** Why this page cannot record ("" when it can). Browsers offer the microphone to https
 * pages and to localhost only: plain http on a LAN address has no `navigator.mediaDevices`. */
export function micUnavailable() {
  if (!navigator.mediaDevices?.getUserMedia) {
    return window.isSecureContext === false
      ? "Voice messages need https or localhost: the browser offers the microphone to secure pages only."
      : "This browser offers no microphone to web pages.";
  }
  if (typeof MediaRecorder === "undefined") return "This browser cannot record audio.";
  return "";
}

function micError(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "The microphone is blocked. Allow the microphone for this page in your browser's site settings, then try again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone found. Connect one (or turn it on) and try again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be opened: another app may be using it.";
    default:
      return `The microphone could not be started: ${err?.message || err}`;
  }
}

const clock = (ms) => { const s = Math.floor(ms / 1000); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; };

/** A voice message: record in the browser (MediaRecorder), transcribe on the gateway
 * (`moltis.voice.transcribe`), hand the text to `onText`. */
function useVoiceMessage(gw, onText) {
  const [phase, setPhase] = useState("idle");   // idle | starting | recording | transcribing
  const [elapsed, setElapsed] = useState(0);
  const [error, setError] = useState("");
  const rec = useRef(null);
  const alive = useRef(true);
  const onTextRef = useRef(onText);
  onTextRef.current = onText;

  const release = (r) => r.stream.getTracks().forEach((t) => t.stop());
  useEffect(() => () => {
    alive.current = false;
    const r = rec.current;
    if (r) { r.cancelled = true; try { r.recorder.stop(); } catch { /* stopped */ } release(r); }
  }, []);

  async function finish(r) {
    const type = r.recorder.mimeType || r.chunks[0]?.type || "audio/webm";
    const blob = new Blob(r.chunks, { type });
    if (!blob.size) { setPhase("idle"); setError("Nothing was recorded: check that the microphone is on and not muted."); return; }
    setPhase("transcribing");
    try {
      const audioBase64 = await readFileAsBase64(blob);
      const res = await gw.request("moltis.voice.transcribe", { audioBase64, mimeType: type }, 180000);
      if (!alive.current) return;
      const text = String(res?.text || "").trim();
      setPhase("idle");
      if (!text) { setError("No speech was heard in the recording. Try again a little closer to the microphone."); return; }
      onTextRef.current(text);
    } catch (err) {
      if (!alive.current) return;
      setPhase("idle");
      setError(`Transcription failed: ${err.message || err}`);
    }
  }

  async function start() {
    const missing = micUnavailable();
    if (missing) { setError(missing); return; }
    if (phase !== "idle") return;
    setError("");
    setPhase("starting");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
    } catch (err) {
      setPhase("idle");
      setError(micError(err));
      return;
    }
    if (!alive.current) { stream.getTracks().forEach((t) => t.stop()); return; }
    const mimeType = MIC_TYPES.find((t) => MediaRecorder.isTypeSupported?.(t)) || "";
    let recorder;
    try {
      recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    } catch (err) {
      stream.getTracks().forEach((t) => t.stop());
      setPhase("idle");
      setError(`This browser cannot record audio: ${err.message || err}`);
      return;
    }
    const r = { recorder, stream, chunks: [], cancelled: false, started: Date.now() };
    rec.current = r;
    recorder.ondataavailable = (e) => { if (e.data?.size) r.chunks.push(e.data); };
    recorder.onstop = () => {
      release(r);
      if (rec.current === r) rec.current = null;
      if (!r.cancelled && alive.current) finish(r);
    };
    recorder.start(250);
    setElapsed(0);
    setPhase("recording");
  }

  function stop() {
    const r = rec.current;
    if (r && r.recorder.state !== "inactive") r.recorder.stop();
  }

  function cancel() {
    const r = rec.current;
    if (!r) return;
    r.cancelled = true;
    if (r.recorder.state !== "inactive") r.recorder.stop();
    else release(r);
    rec.current = null;
    setPhase("idle");
  }

  // The elapsed time, the length limit, and Escape to cancel.
  useEffect(() => {
    if (phase !== "recording") return undefined;
    const tick = setInterval(() => {
      const r = rec.current;
      if (!r) return;
      const ms = Date.now() - r.started;
      setElapsed(ms);
      if (ms >= MAX_RECORDING_MS) stop();
    }, 250);
    const onKey = (e) => { if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); cancel(); } };
    addEventListener("keydown", onKey, true);
    return () => { clearInterval(tick); removeEventListener("keydown", onKey, true); };
  }, [phase]);

  return { phase, elapsed, error, setError, start, stop, cancel };
}

/** One sound at a time: starting one stops the one playing. */
let playing = null;   // { owner, audio, url, done }

export function stopSpeech(owner) {
  const p = playing;
  if (!p || (owner && p.owner !== owner)) return;
  playing = null;
  p.audio.pause();
  p.audio.remove();
  URL.revokeObjectURL(p.url);
  p.done();
}

/** Play speech from `tts.convert` (base64); resolves when it ends or is stopped. The page's
 * CSP allows media from blob: URLs (not data:), so the bytes go through a Blob. */
export function playSpeech(base64, mimeType = "audio/wav", owner = {}) {
  stopSpeech();
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: mimeType || "audio/wav" }));
  const audio = document.createElement("audio");
  audio.dataset.testid = "speech-audio";
  audio.src = url;
  document.body.append(audio);
  return new Promise((resolve, reject) => {
    const entry = { owner, audio, url, done: resolve };
    playing = entry;
    const fail = (why) => {
      if (playing !== entry) return;
      playing = null;
      audio.remove();
      URL.revokeObjectURL(url);
      reject(new Error(why));
    };
    audio.onended = () => { if (playing === entry) stopSpeech(); };
    audio.onerror = () => fail("the browser could not play the audio");
    audio.play().catch((err) => fail(err.name === "NotAllowedError" ? "the browser blocked playing sound: click Read aloud again" : String(err.message || err)));
  });
}

/** A reply as something to say: no code, links as their words, no Markdown marks. */
export function speakable(text) {
  let out = String(text || "")
    .replace(/```[\s\S]*?```/g, " (code) ")
    .replace(/!\[([^\]]*)\]\([^)]*\)/g, "$1")
    .replace(/\[([^\]]+)\]\([^)]*\)/g, "$1")
    .replace(/^\s*\|?[-:| ]+\|[-:| ]*$/gm, "")
    .replace(/[*_`#>|~]+/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  if (out.length > MAX_SPOKEN_CHARS) {
    const cut = out.slice(0, MAX_SPOKEN_CHARS);
    const end = Math.max(cut.lastIndexOf(". "), cut.lastIndexOf("! "), cut.lastIndexOf("? "));
    out = end > MAX_SPOKEN_CHARS / 2 ? cut.slice(0, end + 1) : cut;
  }
  return out;
}

const SPEAKER_ICON = html`<svg aria-hidden="true" width="15" height="15" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M11 5 6 9H2v6h4l5 4V5z"/><path d="M15.5 8.5a5 5 0 0 1 0 7"/><path d="M19 5a10 10 0 0 1 0 14"/></svg>`;
const STOP_ICON = html`<svg aria-hidden="true" width="13" height="13" viewBox="0 0 24 24" fill="currentColor"><rect x="5" y="5" width="14" height="14" rx="2"/></svg>`;
const MIC_ICON = html`<svg aria-hidden="true" width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="9" y="2" width="6" height="12" rx="3"/><path d="M5 10v1a7 7 0 0 0 14 0v-1"/><path d="M12 18v4"/></svg>`;

/** "Read aloud" on a reply: `tts.convert` on the gateway, played here. */
function ReadAloud({ gw, text }) {
  const [state, setState] = useState("idle");   // idle | loading | playing
  const [error, setError] = useState("");
  const owner = useRef({});
  const alive = useRef(true);
  useEffect(() => () => { alive.current = false; stopSpeech(owner.current); }, []);
  async function click() {
    if (state === "playing") { stopSpeech(owner.current); return; }
    if (state === "loading") return;
    const say = speakable(text);
    if (!say) return;
    setError("");
    setState("loading");
    try {
      const res = await gw.request("tts.convert", { text: say }, 120000);
      if (!alive.current) return;
      setState("playing");
      await playSpeech(res.audioBase64, res.mimeType, owner.current);
    } catch (err) {
      if (alive.current) setError(err.message || String(err));
    } finally {
      if (alive.current) setState("idle");
    }
  }
  return html`<button type="button" class=${`btn small ghost read-aloud ${state}`} data-testid="read-aloud" data-state=${state}
      aria-label=${state === "playing" ? "Stop reading aloud" : undefined} aria-busy=${state === "loading" ? "true" : undefined} onClick=${click}>
      ${state === "playing" ? STOP_ICON : state === "loading" ? html`<span class="spinner small" aria-hidden="true"></span>` : SPEAKER_ICON}
      ${state === "playing" ? "Stop" : state === "loading" ? "Read aloud…" : "Read aloud"}</button>
    ${error ? html`<span class="msg-flag error" role="alert" data-testid="read-aloud-error">Could not read aloud: ${error}</span>` : null}`;
}

function Message({ gw, msg, isLastAssistant, onRetry, onEdit, busy }) {
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState("");
  const when = toMs(msg.timestamp) ? new Date(toMs(msg.timestamp)) : null;
  if (msg.role === "system") {
    return html`<div class="msg-note">${msg.compaction ? "Earlier messages were summarised" : textOf(msg.content)}</div>`;
  }
  if (msg.role === "user") {
    const text = textOf(msg.content);
    if (editing) {
      return html`<div class="msg msg-user editing">
        <textarea class="edit-box" aria-label="Edit message" value=${draft}
          onInput=${(e) => setDraft(e.currentTarget.value)}
          onKeyDown=${(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); setEditing(false); onEdit(draft); } if (e.key === "Escape") { e.stopPropagation(); setEditing(false); } }}></textarea>
        <div class="msg-actions visible">
          <button type="button" class="btn small primary" onClick=${() => { setEditing(false); onEdit(draft); }}>Send edited</button>
          <button type="button" class="btn small" onClick=${() => setEditing(false)}>Cancel</button>
        </div>
      </div>`;
    }
    return html`<div class="msg msg-user" data-testid="msg-user">
      <${AttachmentChips} content=${msg.content} />
      <div class="bubble"><${Markdown} text=${text} /></div>
      <div class="msg-actions">
        ${when ? html`<time datetime=${when.toISOString()} title=${when.toLocaleString()}>${timeAgo(msg.timestamp)}</time>` : null}
        <button type="button" class="btn small ghost" disabled=${busy} aria-label="Edit and resend" onClick=${() => { setDraft(text); setEditing(true); }}>Edit</button>
      </div>
    </div>`;
  }
  return html`<div class="msg msg-assistant" data-testid="msg-assistant">
    <div class="avatar" aria-hidden="true">M</div>
    <div class="msg-main">
      <${AssistantBody} content=${msg.content} results=${msg.results} />
      ${msg.stopReason === "aborted" ? html`<div class="msg-flag">Stopped</div>` : null}
      ${msg.errorMessage ? html`<div class="msg-flag error">${msg.errorMessage}</div>` : null}
      <div class="msg-actions">
        <${UsageLine} usage=${msg.usage} model=${msg.model} />
        ${isLastAssistant ? html`<button type="button" class="btn small ghost" disabled=${busy} onClick=${onRetry}>Retry</button>` : null}
        ${gw?.can("tts.convert") && speakable(textOf(msg.content)) ? html`<${ReadAloud} gw=${gw} text=${textOf(msg.content)} />` : null}
      </div>
    </div>
  </div>`;
}

function LiveReply({ live }) {
  const tools = [...live.tools.values()];
  return html`<div class="msg msg-assistant live" data-testid="live-reply" aria-live="polite" aria-busy="true">
    <div class="avatar" aria-hidden="true">M</div>
    <div class="msg-main">
      <${Thinking} text=${live.thinking} live=${!live.text} />
      ${tools.map((t) => html`<${ToolCard} key=${t.id} ...${t} />`)}
      ${live.text ? html`<${Markdown} text=${live.text} />` : null}
      <div class="typing" aria-label="Moltis is replying"><span></span><span></span><span></span></div>
    </div>
  </div>`;
}

export function ChatView({ gw, sessionKey, session, models, defaults, onSessionsChanged, onReady, composerRef, onNeedModels }) {
  const [messages, setMessages] = useState([]);
  const [loaded, setLoaded] = useState(false);
  const [live, setLive] = useState(null);
  const [text, setText] = useState("");
  const [files, setFiles] = useState([]);
  const [error, setError] = useState("");
  const [dragging, setDragging] = useState(false);
  const [meta, setMeta] = useState({});
  const [showAll, setShowAll] = useState(false);
  // Nothing is set up to answer: the one notice that says what to do (`moltis.chat.setup`).
  const [setup, setSetup] = useState(null);
  const setupByRun = useRef(new Map());
  const scroller = useRef(null);
  const stick = useRef(true);
  const liveRef = useRef(null);
  const localRef = useRef(null);
  const textarea = composerRef || localRef;

  const load = useCallback(async () => {
    try {
      const early = prefetched.get(sessionKey);
      prefetched.delete(sessionKey);
      // A first-run notice from before this page opened (a reload, the tray's window).
      const notice = gw.can("moltis.chat.setup.get")
        ? gw.request("moltis.chat.setup.get", { sessionKey }).then((r) => r?.notice || null, () => undefined)
        : Promise.resolve(undefined);
      const res = await (early || gw.request("chat.history", { sessionKey, limit: 200 }));
      if (!performance.getEntriesByName("moltis:history").length) performance.mark("moltis:history");
      setMessages(res.messages || []);
      setMeta({ thinkingLevel: res.thinkingLevel, modelOverride: res.modelOverride });
      const n = await notice;
      if (n && !liveRef.current) {
        setSetup((cur) => (cur?.runId === n.runId ? cur : { runId: n.runId, message: n.message || "", actions: n.actions || [] }));
      }
      setLoaded(true);
      setError("");
    } catch (err) {
      if (err.code === "UNAVAILABLE" && err.retryable) setTimeout(load, 300);
      else setError(err.message);
    }
  }, [gw, sessionKey]);

  useEffect(() => {
    setLoaded(false); setMessages([]); setLive(null); liveRef.current = null; stick.current = true;
    setShowAll(false); setSetup(null); setupByRun.current.clear();
    load();
  }, [load]);

  useLayoutEffect(() => { if (loaded) onReady?.(); }, [loaded]);

  // The reply as it streams: `agent` events carry each piece, `chat` events the whole text
  // so far (and the end of the run).
  useEffect(() => {
    const mine = (p) => p && (p.sessionKey === sessionKey || p.data?.sessionKey === sessionKey);
    const update = (fn) => {
      const next = fn(liveRef.current ? { ...liveRef.current, tools: new Map(liveRef.current.tools) } : null);
      liveRef.current = next;
      setLive(next);
    };
    const fresh = (runId) => ({ runId, text: "", thinking: "", tools: new Map() });
    const offAgent = gw.on("agent", (p) => {
      if (!mine(p)) return;
      const d = p.data || {};
      if (p.stream === "assistant" && d.delta) update((l) => { l = l && l.runId === p.runId ? l : fresh(p.runId); l.text += d.delta; return l; });
      else if (p.stream === "thinking" && d.delta) update((l) => { l = l && l.runId === p.runId ? l : fresh(p.runId); l.thinking += d.delta; return l; });
      else if (p.stream === "tool") update((l) => {
        l = l && l.runId === p.runId ? l : fresh(p.runId);
        const prev = l.tools.get(d.toolCallId) || { id: d.toolCallId, name: d.name, args: d.args };
        l.tools.set(d.toolCallId, d.phase === "result"
          ? { ...prev, result: d.result, isError: d.isError, durationMs: d.durationMs, pending: false }
          : { ...prev, pending: true });
        return l;
      });
      else if (p.stream === "lifecycle" && d.phase === "start") update(() => fresh(p.runId));
    });
    const offChat = gw.on("chat", (p) => {
      if (!mine(p)) return;
      if (p.state === "delta") {
        update((l) => { l = l && l.runId === p.runId ? l : fresh(p.runId); l.text = textOf(p.message?.content) || l.text; return l; });
        return;
      }
      liveRef.current = null;
      setLive(null);
      if (p.state === "error") {
        // A run that failed because nothing is set up: its notice (with buttons) instead
        // of an error; it replaces an earlier one, so there is only ever one.
        const notice = setupByRun.current.get(p.runId);
        setupByRun.current.delete(p.runId);
        if (notice) { setSetup(notice); setError(""); }
        else setError(p.errorMessage || "the reply failed");
      } else if (p.state === "final") setSetup(null);   // a reply went through

      load();
      onSessionsChanged?.();
    });
    const offSetup = gw.on("moltis.chat.setup", (p) => {
      if (!mine(p) || !p.runId) return;
      setupByRun.current.set(p.runId, { runId: p.runId, message: p.message || "", actions: Array.isArray(p.actions) ? p.actions : [] });
    });
    const offHello = gw.on("hello", ({ reconnect }) => { if (reconnect) load(); });
    const offGap = gw.on("gap", () => load());
    return () => { offAgent(); offChat(); offSetup(); offHello(); offGap(); };
  }, [gw, sessionKey, load]);

  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [messages, live, setup]);

  // Earlier messages render when the reader scrolls up to them, keeping the view in place.
  const reveal = useRef(null);
  function showEarlier() {
    const el = scroller.current;
    if (el) reveal.current = { height: el.scrollHeight, top: el.scrollTop };
    stick.current = false;
    setShowAll(true);
  }
  useLayoutEffect(() => {
    const el = scroller.current;
    if (showAll && el && reveal.current) {
      el.scrollTop = el.scrollHeight - reveal.current.height + reveal.current.top;
      reveal.current = null;
    }
  }, [showAll]);

  const onScroll = (e) => {
    const el = e.currentTarget;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
    if (el.scrollTop < 60 && !showAll && messages.length > FIRST_SHOWN) showEarlier();
  };

  const busy = !!live;

  async function send(messageText, attachments = []) {
    const body = messageText.trim();
    if (!body && !attachments.length) return;
    setError("");
    setSetup(null);
    const payload = await Promise.all(attachments.map(async (f) => ({
      type: f.type.startsWith("image/") ? "image" : "file",
      mimeType: f.type || "text/plain",
      fileName: f.name,
      content: await readFileAsBase64(f),
    })));
    const optimistic = {
      role: "user",
      id: `local-${uuid()}`,
      timestamp: Date.now(),
      content: [{ type: "text", text: body },
        ...payload.filter((a) => a.type === "image").map((a) => ({ type: "image", mimeType: a.mimeType, data: a.content }))],
    };
    setMessages((m) => [...m, optimistic]);
    stick.current = true;
    const runId = uuid();
    liveRef.current = { runId, text: "", thinking: "", tools: new Map() };
    setLive(liveRef.current);
    try {
      const res = await gw.request("chat.send", {
        sessionKey, message: body, idempotencyKey: runId,
        ...(payload.length ? { attachments: payload } : {}),
      });
      if (res?.status && res.status !== "started" && res.status !== "in_flight") {
        liveRef.current = null; setLive(null); load();
      }
      onSessionsChanged?.();
    } catch (err) {
      liveRef.current = null;
      setLive(null);
      setError(err.message);
      load();
    }
  }

  const voice = useVoiceMessage(gw, (t) => send(t));
  const canRecord = gw.can("moltis.voice.transcribe");
  const noMic = canRecord ? micUnavailable() : "";
  const recording = voice.phase === "recording" || voice.phase === "starting";
  const stopButton = useRef(null);
  useEffect(() => { if (voice.phase === "recording") stopButton.current?.focus(); }, [voice.phase]);
  const prevPhase = useRef(voice.phase);
  useEffect(() => {
    // Back to typing after a recording (sent, cancelled or failed).
    if (prevPhase.current !== "idle" && voice.phase === "idle") setTimeout(() => textarea.current?.focus(), 0);
    prevPhase.current = voice.phase;
  }, [voice.phase]);

  function submit() {
    if (busy) return;
    const t = text;
    const f = files;
    setText(""); setFiles([]);
    send(t, f);
  }

  async function stop() {
    try { await gw.request("chat.abort", { sessionKey }); }
    catch (err) { toast(err.message, "error"); }
  }

  const lastUser = [...messages].reverse().find((m) => m.role === "user");
  function retry() { if (lastUser) send(textOf(lastUser.content)); }

  function addFiles(list) {
    const next = [];
    for (const f of list) {
      if (f.size > MAX_ATTACHMENT_BYTES) { toast(`${f.name} is larger than 5 MB`, "error"); continue; }
      next.push(f);
    }
    if (next.length) setFiles((cur) => [...cur, ...next]);
  }

  function onKeyDown(e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
  }

  async function patch(fields) {
    try {
      await gw.request("sessions.patch", { key: sessionKey, ...fields });
      setMeta((m) => ({ ...m, ...(fields.model !== undefined ? { modelOverride: fields.model } : fields) }));
      onSessionsChanged?.();
    } catch (err) { toast(err.message, "error"); }
  }

  const grouped = groupMessages(messages);
  const lastAssistantIdx = grouped.map((m) => m.role).lastIndexOf("assistant");
  const hidden = showAll ? 0 : Math.max(0, grouped.length - FIRST_SHOWN);
  const defaultModel = defaults?.model ? `${defaults.modelProvider}/${defaults.model}` : "";
  const currentModel = meta.modelOverride || "";
  const modelOptions = (models || []).map((m) => `${m.provider}/${m.id}`);
  if (currentModel && !modelOptions.includes(currentModel)) modelOptions.unshift(currentModel);

  return html`
  <section class="chat" aria-label="Chat"
      onDragOver=${(e) => { if (e.dataTransfer?.types?.includes("Files")) { e.preventDefault(); setDragging(true); } }}
      onDragLeave=${(e) => { if (e.currentTarget === e.target) setDragging(false); }}
      onDrop=${(e) => { e.preventDefault(); setDragging(false); addFiles([...(e.dataTransfer?.files || [])]); }}>
    <header class="chat-head">
      <h1 class="chat-title" data-testid="chat-title">${sessionTitle(session) || sessionTitle({ key: sessionKey })}</h1>
      <div class="chat-controls">
        <label class="select-label">
          <span class="sr-only">Model for this chat</span>
          <select aria-label="Model for this chat" data-testid="model-picker" value=${currentModel} onFocus=${() => onNeedModels?.()}
            onChange=${(e) => patch({ model: e.currentTarget.value || null })}>
            <option value="">${defaultModel ? `Default (${defaultModel})` : "Default model"}</option>
            ${modelOptions.map((m) => html`<option value=${m}>${m}</option>`)}
          </select>
        </label>
        <label class="select-label">
          <span class="sr-only">Thinking level</span>
          <select aria-label="Thinking level" data-testid="thinking-picker" value=${meta.thinkingLevel || ""}
            onChange=${(e) => patch({ thinkingLevel: e.currentTarget.value || null })}>
            <option value="">Thinking: default</option>
            ${THINKING_LEVELS.map((l) => html`<option value=${l}>Thinking: ${l}</option>`)}
          </select>
        </label>
      </div>
    </header>
    <div class="messages" ref=${scroller} onScroll=${onScroll} data-testid="messages" tabindex="0" aria-label="Messages">
      ${loaded && !grouped.length && !live ? html`<div class="empty">
        <div class="empty-mark" aria-hidden="true">M</div>
        <p>Ask anything. Replies stream here.</p>
        <p class="hint">Enter sends · Shift+Enter adds a line · Esc stops · Ctrl+K switches chats</p>
      </div>` : null}
      ${!loaded ? html`<div class="loading" role="status">Loading history…</div>` : null}
      ${hidden > 0 ? html`<button type="button" class="btn small ghost earlier" onClick=${showEarlier}>
          Show ${hidden} earlier message${hidden === 1 ? "" : "s"}</button>` : null}
      ${grouped.slice(hidden).map((m, j) => { const i = j + hidden; return html`<${Message} key=${m.id || i} gw=${gw} msg=${m} busy=${busy}
          isLastAssistant=${i === lastAssistantIdx && i === grouped.length - 1}
          onRetry=${retry} onEdit=${(t) => send(t)} />`; })}
      ${live ? html`<${LiveReply} live=${live} />` : null}
      ${setup && !live ? html`<${SetupNotice} key=${setup.runId} gw=${gw} notice=${setup} busy=${busy} onRetry=${retry} />` : null}
    </div>
    ${error ? html`<div class="chat-error" role="alert" data-testid="chat-error">${error}
      <button type="button" class="btn small ghost" onClick=${() => setError("")} aria-label="Dismiss error">✕</button></div>` : null}
    ${voice.error ? html`<div class="chat-error" role="alert" data-testid="mic-error">${voice.error}
      <button type="button" class="btn small ghost" onClick=${() => voice.setError("")} aria-label="Dismiss">✕</button></div>` : null}
    <form class=${`composer ${dragging ? "dragging" : ""}`} onSubmit=${(e) => { e.preventDefault(); submit(); }}>
      ${files.length ? html`<ul class="attachments" aria-label="Attachments">${files.map((f, i) => html`
        <li class="chip">${f.name} <span class="muted">${Math.ceil(f.size / 1024)} KB</span>
          <button type="button" class="chip-x" aria-label=${`Remove ${f.name}`} onClick=${() => setFiles((cur) => cur.filter((_, j) => j !== i))}>✕</button></li>`)}</ul>` : null}
      <div class="composer-row">
        <label class="btn icon attach" title="Attach files" hidden=${voice.phase !== "idle"}>
          <svg aria-hidden="true" width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48"/></svg><span class="sr-only">Attach files</span>
          <input type="file" multiple class="sr-only" data-testid="file-input"
            onChange=${(e) => { addFiles([...e.currentTarget.files]); e.currentTarget.value = ""; }} />
        </label>
        ${recording ? html`<div class="recording" data-testid="mic-recording">
            <span class="rec-dot" aria-hidden="true"></span>
            <span role="status">${voice.phase === "starting" ? "Starting the microphone…" : "Recording"}</span>
            ${voice.phase === "recording" ? html`<span class="rec-time" role="timer" aria-label="Recording time">${clock(voice.elapsed)}</span>` : null}
            <span class="hint rec-hint">Esc cancels</span>
          </div>` : null}
        ${voice.phase === "transcribing" ? html`<div class="recording" data-testid="mic-transcribing">
            <span class="spinner" aria-hidden="true"></span><span role="status">Transcribing…</span></div>` : null}
        <textarea ref=${textarea} rows="1" placeholder="Message Moltis…" aria-label="Message" data-testid="composer" hidden=${voice.phase !== "idle"}
          value=${text} onInput=${(e) => { setText(e.currentTarget.value); e.currentTarget.style.height = "auto"; e.currentTarget.style.height = `${Math.min(e.currentTarget.scrollHeight, 240)}px`; }}
          onKeyDown=${onKeyDown}
          onPaste=${(e) => { const fl = [...(e.clipboardData?.files || [])]; if (fl.length) { e.preventDefault(); addFiles(fl); } }}></textarea>
        ${canRecord && voice.phase === "idle" ? html`<button type="button" class=${`btn icon ghost mic ${noMic ? "unavailable" : ""}`} data-testid="mic"
            aria-label="Record a voice message" aria-disabled=${noMic || busy ? "true" : undefined}
            title=${noMic || "Record a voice message (it is transcribed on the gateway and sent)"}
            onClick=${() => { if (!busy) voice.start(); }}>${MIC_ICON}</button>` : null}
        ${recording ? html`<button type="button" class="btn" data-testid="mic-cancel" onClick=${voice.cancel}>Cancel</button>
          <button type="button" class="btn danger rec-stop" data-testid="mic-stop" ref=${stopButton} disabled=${voice.phase !== "recording"}
            aria-label="Stop recording and send" onClick=${voice.stop}>${STOP_ICON} Stop</button>` : null}
        ${voice.phase !== "idle" ? null : busy
          ? html`<button type="button" class="btn danger" data-testid="stop" onClick=${stop}>Stop</button>`
          : html`<button type="submit" class="btn primary" data-testid="send" disabled=${!text.trim() && !files.length}>Send</button>`}
      </div>
    </form>
  </section>`;
}
