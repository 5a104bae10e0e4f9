// The chat: history, the streaming reply, tool cards, thinking, the composer.
import { useEffect, useLayoutEffect, useMemo, useRef, useState, useCallback } from "../vendor/preact-hooks.mjs";
import { html, formatCost, formatTokens, readFileAsBase64, sessionTitle, textOf, timeAgo, toMs, toast } from "./ui.js";
import { onGrammarLoaded, renderMarkdown } from "./markdown.js";
import { uuid } from "./gateway.js";

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

function Message({ msg, isLastAssistant, onRetry, onEdit, busy }) {
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
  const scroller = useRef(null);
  const stick = useRef(true);
  const liveRef = useRef(null);
  const localRef = useRef(null);
  const textarea = composerRef || localRef;

  const load = useCallback(async () => {
    try {
      const early = prefetched.get(sessionKey);
      prefetched.delete(sessionKey);
      const res = await (early || gw.request("chat.history", { sessionKey, limit: 200 }));
      if (!performance.getEntriesByName("moltis:history").length) performance.mark("moltis:history");
      setMessages(res.messages || []);
      setMeta({ thinkingLevel: res.thinkingLevel, modelOverride: res.modelOverride });
      setLoaded(true);
      setError("");
    } catch (err) {
      if (err.code === "UNAVAILABLE" && err.retryable) setTimeout(load, 300);
      else setError(err.message);
    }
  }, [gw, sessionKey]);

  useEffect(() => {
    setLoaded(false); setMessages([]); setLive(null); liveRef.current = null; stick.current = true;
    setShowAll(false);
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
      if (p.state === "error") setError(p.errorMessage || "the reply failed");
      load();
      onSessionsChanged?.();
    });
    const offHello = gw.on("hello", ({ reconnect }) => { if (reconnect) load(); });
    const offGap = gw.on("gap", () => load());
    return () => { offAgent(); offChat(); offHello(); offGap(); };
  }, [gw, sessionKey, load]);

  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [messages, live]);

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
      ${grouped.slice(hidden).map((m, j) => { const i = j + hidden; return html`<${Message} key=${m.id || i} msg=${m} busy=${busy}
          isLastAssistant=${i === lastAssistantIdx && i === grouped.length - 1}
          onRetry=${retry} onEdit=${(t) => send(t)} />`; })}
      ${live ? html`<${LiveReply} live=${live} />` : null}
    </div>
    ${error ? html`<div class="chat-error" role="alert" data-testid="chat-error">${error}
      <button type="button" class="btn small ghost" onClick=${() => setError("")} aria-label="Dismiss error">✕</button></div>` : null}
    <form class=${`composer ${dragging ? "dragging" : ""}`} onSubmit=${(e) => { e.preventDefault(); submit(); }}>
      ${files.length ? html`<ul class="attachments" aria-label="Attachments">${files.map((f, i) => html`
        <li class="chip">${f.name} <span class="muted">${Math.ceil(f.size / 1024)} KB</span>
          <button type="button" class="chip-x" aria-label=${`Remove ${f.name}`} onClick=${() => setFiles((cur) => cur.filter((_, j) => j !== i))}>✕</button></li>`)}</ul>` : null}
      <div class="composer-row">
        <label class="btn icon attach" title="Attach files">
          <svg aria-hidden="true" width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48"/></svg><span class="sr-only">Attach files</span>
          <input type="file" multiple class="sr-only" data-testid="file-input"
            onChange=${(e) => { addFiles([...e.currentTarget.files]); e.currentTarget.value = ""; }} />
        </label>
        <textarea ref=${textarea} rows="1" placeholder="Message Moltis…" aria-label="Message" data-testid="composer"
          value=${text} onInput=${(e) => { setText(e.currentTarget.value); e.currentTarget.style.height = "auto"; e.currentTarget.style.height = `${Math.min(e.currentTarget.scrollHeight, 240)}px`; }}
          onKeyDown=${onKeyDown}
          onPaste=${(e) => { const fl = [...(e.clipboardData?.files || [])]; if (fl.length) { e.preventDefault(); addFiles(fl); } }}></textarea>
        ${busy
          ? html`<button type="button" class="btn danger" data-testid="stop" onClick=${stop}>Stop</button>`
          : html`<button type="submit" class="btn primary" data-testid="send" disabled=${!text.trim() && !files.length}>Send</button>`}
      </div>
    </form>
  </section>`;
}
