// The sessions sidebar (search, new, rename, reset, delete) and the Ctrl/Cmd+K switcher.
import { useEffect, useLayoutEffect, useRef, useState } from "../vendor/preact-hooks.mjs";
import { html, plainText, sessionTitle, timeAgo, toast } from "./ui.js";

export function Sidebar({ gw, sessions, current, onSelect, onNew, onChanged, search, setSearch, confirm, prompt, inert }) {
  const [menu, setMenu] = useState(null);

  useEffect(() => {
    if (!menu) return undefined;
    const close = (e) => { if (!e.target.closest?.(".row-menu")) setMenu(null); };
    document.addEventListener("click", close);
    return () => document.removeEventListener("click", close);
  }, [menu]);

  async function rename(s) {
    setMenu(null);
    const label = await prompt({ title: "Rename chat", label: "Name", value: s.label || sessionTitle(s), confirmText: "Rename" });
    if (label == null) return;
    try {
      await gw.request("sessions.patch", { key: s.key, label: label.trim() || null });
      onChanged();
    } catch (err) { toast(err.message, "error"); }
  }

  async function reset(s) {
    setMenu(null);
    const ok = await confirm({ title: "Start this chat over?", body: `“${sessionTitle(s)}” starts empty. The old transcript is archived, not deleted.`, confirmText: "Reset" });
    if (!ok) return;
    try { await gw.request("sessions.reset", { key: s.key }); onChanged(); toast("Chat reset"); }
    catch (err) { toast(err.message, "error"); }
  }

  async function remove(s) {
    setMenu(null);
    const ok = await confirm({ title: "Delete this chat?", body: `“${sessionTitle(s)}” leaves the list. Its transcript is kept in the archive.`, confirmText: "Delete", danger: true });
    if (!ok) return;
    try {
      await gw.request("sessions.delete", { key: s.key });
      onChanged(s.key);
      toast("Chat deleted");
    } catch (err) { toast(err.message, "error"); }
  }

  const now = Date.now();
  return html`<nav class="sidebar" aria-label="Chats" inert=${inert || undefined}>
    <div class="sidebar-head">
      <button type="button" class="btn primary block" data-testid="new-chat" onClick=${onNew}>+ New chat</button>
      <input type="search" class="search" placeholder="Search chats" aria-label="Search chats" data-testid="session-search"
        value=${search} onInput=${(e) => setSearch(e.currentTarget.value)} />
    </div>
    <ul class="session-list" data-testid="session-list">
      ${sessions.map((s) => {
        const last = s.lastMessagePreview;
        return html`<li key=${s.key} class=${`session-row ${s.key === current ? "active" : ""}`}>
          <a href=${`#/chat/${encodeURIComponent(s.key)}`} class="session-link" aria-current=${s.key === current ? "page" : undefined}
             onClick=${(e) => { e.preventDefault(); onSelect(s.key); }} data-key=${s.key}>
            <span class="session-title">${sessionTitle(s)}</span>
            <span class="session-sub">
              <span class="session-last">${last ? `${last.role === "user" ? "You: " : ""}${plainText(last.text)}` : "No messages yet"}</span>
              <span class="session-time">${timeAgo(s.updatedAt || last?.timestamp, now)}</span>
            </span>
          </a>
          <div class="row-menu">
            <button type="button" class="btn icon ghost" aria-label=${`Actions for ${sessionTitle(s)}`} aria-haspopup="menu"
              aria-expanded=${menu === s.key} onClick=${(e) => { e.stopPropagation(); setMenu(menu === s.key ? null : s.key); }}>⋯</button>
            ${menu === s.key ? html`<div class="menu" role="menu">
              <button type="button" role="menuitem" onClick=${() => rename(s)}>Rename</button>
              <button type="button" role="menuitem" onClick=${() => reset(s)}>Reset</button>
              <button type="button" role="menuitem" class="danger" onClick=${() => remove(s)}>Delete</button>
            </div>` : null}
          </div>
        </li>`;
      })}
      ${!sessions.length ? html`<li class="muted pad">${search ? "No chat matches." : "No chats yet."}</li>` : null}
    </ul>
  </nav>`;
}

export function Switcher({ sessions, onPick, onClose }) {
  const [q, setQ] = useState("");
  const [idx, setIdx] = useState(0);
  const input = useRef(null);
  // Before paint, so that keys typed right after Ctrl+K land in the switcher.
  useLayoutEffect(() => { input.current?.focus(); }, []);
  const ql = q.toLowerCase();
  const list = sessions.filter((s) => !ql || sessionTitle(s).toLowerCase().includes(ql) || s.key.includes(ql)).slice(0, 20);
  function key(e) {
    if (e.key === "ArrowDown") { e.preventDefault(); setIdx((i) => Math.min(i + 1, list.length - 1)); }
    else if (e.key === "ArrowUp") { e.preventDefault(); setIdx((i) => Math.max(i - 1, 0)); }
    else if (e.key === "Enter") { e.preventDefault(); if (list[idx]) onPick(list[idx].key); }
    else if (e.key === "Escape") { e.preventDefault(); onClose(); }
  }
  return html`<div class="overlay" onClick=${(e) => { if (e.target === e.currentTarget) onClose(); }}>
    <div class="dialog switcher" role="dialog" aria-modal="true" aria-label="Switch chat" data-testid="switcher">
      <input ref=${input} class="search big" placeholder="Go to chat…" aria-label="Go to chat" value=${q}
        onInput=${(e) => { setQ(e.currentTarget.value); setIdx(0); }} onKeyDown=${key} />
      <ul class="switcher-list" role="listbox" aria-label="Chats">
        ${list.map((s, i) => html`<li role="option" aria-selected=${i === idx} class=${i === idx ? "sel" : ""}
          onClick=${() => onPick(s.key)}>${sessionTitle(s)} <span class="muted">${s.key}</span></li>`)}
      </ul>
    </div>
  </div>`;
}
