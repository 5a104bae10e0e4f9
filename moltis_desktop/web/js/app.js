// The web app's shell: sign-in, the connection, navigation, theme, dialogs and shortcuts.
// Phases of the first load are marked (`moltis:*`) for bench/bench_ui.py.
performance.mark("moltis:app-start");
import { useCallback, useEffect, useRef, useState } from "../vendor/preact-hooks.mjs";
import { Gateway, gatewayUrl } from "./gateway.js";
import { html, onToast, render, sessionTitle } from "./ui.js";
import { installCopyHandler } from "./markdown.js";
import { ChatView, prefetchHistory } from "./chat.js";
import { Sidebar, Switcher } from "./sessions.js";

const AUTH_KEY = "moltis.auth";
const THEME_KEY = "moltis.theme";
const lazy = {
  explorer: () => import("./explorer.js").then((m) => m.Explorer),
  config: () => import("./config.js").then((m) => m.ConfigView),
  status: () => import("./status.js").then((m) => m.StatusView),
  devices: () => import("./devices.js").then((m) => m.DevicesView),
  voice: () => import("./voice.js").then((m) => m.VoiceView),
};

// ------------------------------------------------------------------ credential

function storedAuth() {
  for (const store of [sessionStorage, localStorage]) {
    try {
      const raw = store.getItem(AUTH_KEY);
      if (raw) return JSON.parse(raw);
    } catch { /* unreadable: ignore */ }
  }
  return null;
}

function saveAuth(auth, remember) {
  const raw = JSON.stringify(auth);
  sessionStorage.setItem(AUTH_KEY, raw);
  if (remember) localStorage.setItem(AUTH_KEY, raw);
}

function forgetAuth() {
  sessionStorage.removeItem(AUTH_KEY);
  localStorage.removeItem(AUTH_KEY);
}

/** A one-time `#ticket=` (from the desktop app or `moltis dashboard`): trade it for the
 * credential, and take it out of the address bar at once. Null when there is none. */
function redeemTicket() {
  const match = /(?:^#|&)ticket=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + location.search + "#/chat");
  return fetch("/ui/redeem", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ticket: decodeURIComponent(match[1]) }),
  }).then(async (res) => {
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error?.message || "this sign-in link did not work");
    return body.auth || {};
  });
}

// ------------------------------------------------------------------ theme

function applyTheme(theme) {
  const root = document.documentElement;
  if (theme === "light" || theme === "dark") root.dataset.theme = theme;
  else delete root.dataset.theme;
}
function effectiveTheme(theme) {
  if (theme === "light" || theme === "dark") return theme;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

// ------------------------------------------------------------------ routing

function parseRoute() {
  const h = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = h.split("/");
  if (["explorer", "config", "devices", "voice", "status"].includes(page)) return { page };
  return { page: "chat", key: rest.length ? decodeURIComponent(rest.join("/")) : null };
}

// ------------------------------------------------------------------ pieces

function SignIn({ error, onSubmit, initialMode }) {
  const [mode, setMode] = useState(initialMode === "password" ? "password" : "token");
  const [value, setValue] = useState("");
  const [remember, setRemember] = useState(false);
  return html`<main class="signin">
    <form class="card signin-card" onSubmit=${(e) => { e.preventDefault(); if (value) onSubmit({ [mode]: value }, remember); }} aria-labelledby="signin-title">
      <div class="brand big"><img src="/ui/icon.svg" alt="" width="40" height="40" /><span>Moltis</span></div>
      <h1 id="signin-title">Sign in to this gateway</h1>
      <p class="muted">Use the gateway's token (run <code>moltis secrets get gateway-token</code> on the gateway's computer) or its password.</p>
      <div class="tabs" role="radiogroup" aria-label="Credential type">
        <label class=${mode === "token" ? "active" : ""}><input type="radio" name="mode" value="token" checked=${mode === "token"} onChange=${() => setMode("token")} /> Token</label>
        <label class=${mode === "password" ? "active" : ""}><input type="radio" name="mode" value="password" checked=${mode === "password"} onChange=${() => setMode("password")} /> Password</label>
      </div>
      <label class="field"><span class="field-label">${mode === "token" ? "Gateway token" : "Password"}</span>
        <input type="password" autocomplete=${mode === "password" ? "current-password" : "off"} data-testid="signin-secret" value=${value}
          onInput=${(e) => setValue(e.currentTarget.value)} autofocus /></label>
      <label class="check"><input type="checkbox" checked=${remember} onChange=${(e) => setRemember(e.currentTarget.checked)} /> Remember on this device</label>
      ${error ? html`<div class="banner error" role="alert" data-testid="signin-error">${error}</div>` : null}
      <button type="submit" class="btn primary block" data-testid="signin-submit" disabled=${!value}>Sign in</button>
    </form>
  </main>`;
}

function ConnectionBanner({ state, error, onRetry }) {
  if (state === "connected") return null;
  const text = state === "reconnecting" ? "Reconnecting…" : "Connecting…";
  return html`<div class="conn-banner" role="status" data-testid="conn-banner">
    <span class="spinner" aria-hidden="true"></span> ${text}${error ? html` <span class="muted">(${error})</span>` : null}
    <button type="button" class="btn small" onClick=${onRetry}>Retry now</button>
  </div>`;
}

function Dialog({ dialog, close }) {
  const [value, setValue] = useState(dialog.value || "");
  const first = useRef(null);
  useEffect(() => { first.current?.focus(); first.current?.select?.(); }, []);
  const ok = () => close(dialog.kind === "prompt" ? value : true);
  return html`<div class="overlay" onClick=${(e) => { if (e.target === e.currentTarget) close(null); }}
      onKeyDown=${(e) => { if (e.key === "Escape") { e.stopPropagation(); close(null); } }}>
    <form class="dialog" role="dialog" aria-modal="true" aria-labelledby="dialog-title" data-testid="dialog"
        onSubmit=${(e) => { e.preventDefault(); ok(); }}>
      <h2 id="dialog-title">${dialog.title}</h2>
      ${dialog.body ? html`<p>${dialog.body}</p>` : null}
      ${dialog.kind === "prompt" ? html`<label class="field"><span class="field-label">${dialog.label}</span>
        <input ref=${first} value=${value} onInput=${(e) => setValue(e.currentTarget.value)} data-testid="dialog-input" /></label>` : null}
      <div class="row end">
        <button type="button" class="btn" onClick=${() => close(null)} ref=${dialog.kind === "prompt" ? undefined : first}>Cancel</button>
        <button type="submit" class=${`btn ${dialog.danger ? "danger" : "primary"}`} data-testid="dialog-confirm">${dialog.confirmText || "OK"}</button>
      </div>
    </form>
  </div>`;
}

function Toasts() {
  const [items, setItems] = useState([]);
  useEffect(() => onToast((t) => {
    setItems((cur) => [...cur, t]);
    setTimeout(() => setItems((cur) => cur.filter((x) => x.id !== t.id)), t.kind === "error" ? 6000 : 2500);
  }), []);
  return html`<div class="toasts" aria-live="polite">${items.map((t) => html`<div key=${t.id} class=${`toast ${t.kind}`} role=${t.kind === "error" ? "alert" : "status"}>${t.message}</div>`)}</div>`;
}

function Lazy({ name, gw, confirm, prompt }) {
  const [View, setView] = useState(null);
  useEffect(() => { let live = true; lazy[name]().then((v) => { if (live) setView(() => v); }); return () => { live = false; }; }, [name]);
  return View ? html`<${View} gw=${gw} confirm=${confirm} prompt=${prompt} />` : html`<div class="loading" role="status">Loading…</div>`;
}

// ------------------------------------------------------------------ the app

function Shell({ gw, onSignOut }) {
  const [conn, setConn] = useState({ state: gw.state, error: gw.lastError });
  const [route, setRoute] = useState(parseRoute());
  const [sessions, setSessions] = useState([]);
  const [defaults, setDefaults] = useState(null);
  const [models, setModels] = useState([]);
  const [search, setSearch] = useState("");
  const [dialog, setDialog] = useState(null);
  const [switcher, setSwitcher] = useState(false);
  const [navOpen, setNavOpen] = useState(false);
  const [theme, setTheme] = useState(localStorage.getItem(THEME_KEY) || "system");
  const [mainKey, setMainKey] = useState(null);
  const [pending, setPending] = useState(null);
  const composer = useRef(null);
  const freshChat = useRef(null);
  // On a phone the chat list is a drawer: closed, it is out of reach of Tab and readers.
  const [phone, setPhone] = useState(() => matchMedia("(max-width: 760px)").matches);
  useEffect(() => {
    const q = matchMedia("(max-width: 760px)");
    const f = () => setPhone(q.matches);
    q.addEventListener("change", f);
    return () => q.removeEventListener("change", f);
  }, []);

  useEffect(() => gw.on("state", (s) => setConn(s)), [gw]);
  useEffect(() => { const f = () => setRoute(parseRoute()); addEventListener("hashchange", f); return () => removeEventListener("hashchange", f); }, []);
  useEffect(() => { applyTheme(theme); }, [theme]);

  // Whoever asks for the list (an event, a view, the search box) gets it for the search as
  // it is now, and an answer that arrives after a newer one is dropped.
  const searchRef = useRef(search);
  searchRef.current = search;
  const listSeq = useRef(0);
  const loadSessions = useCallback(async () => {
    const mine = ++listSeq.current;
    const q = searchRef.current;
    try {
      const res = await gw.request("sessions.list", { limit: 200, includeLastMessage: true, ...(q ? { search: q } : {}) });
      if (mine !== listSeq.current) return;
      const list = res.sessions || [];
      // A chat just started here exists on the gateway only once its first message is
      // sent: keep it in the list until then.
      const fresh = freshChat.current;
      if (fresh && !q && !list.some((x) => x.key === fresh.key)) list.unshift(fresh);
      setSessions(list);
      setDefaults(res.defaults || null);
    } catch (err) {
      if (err.retryable) setTimeout(loadSessions, 400);
    }
  }, [gw]);

  useEffect(() => {
    const onHello = ({ hello }) => {
      setMainKey(hello.snapshot?.sessionDefaults?.mainSessionKey || "agent:main:main");
      loadSessions();
      loadModels();
    };
    if (gw.hello) onHello({ hello: gw.hello });
    const offs = [gw.on("hello", onHello), gw.on("sessions.changed", () => loadSessions()), gw.on("gap", () => loadSessions())];
    return () => offs.forEach((f) => f());
  }, [gw, loadSessions]);

  useEffect(() => { const t = setTimeout(loadSessions, 150); return () => clearTimeout(t); }, [search]);

  // The catalogue fills in as providers answer (discovery runs in the background): ask
  // again a little later, and whenever the model picker is opened.
  const loadModels = useCallback(() => {
    gw.request("models.list", {}).then((r) => setModels(r.models || [])).catch(() => {});
  }, [gw]);
  useEffect(() => {
    const timers = [1500, 4000, 10000].map((ms) => setTimeout(loadModels, ms));
    return () => timers.forEach(clearTimeout);
  }, [loadModels]);

  const currentKey = route.key || pending || mainKey;

  function go(hash) { location.hash = hash; setNavOpen(false); }
  function select(key) { setPending(null); go(`#/chat/${encodeURIComponent(key)}`); setSwitcher(false); setTimeout(() => composer.current?.focus(), 50); }

  function newChat() {
    const id = `web-${Date.now().toString(36)}`;
    const agent = (mainKey || "agent:main:main").split(":")[1] || "main";
    const key = `agent:${agent}:${id}`;
    freshChat.current = { key, label: "", updatedAt: Date.now() };
    setSessions((cur) => [freshChat.current, ...cur.filter((s) => s.key !== key)]);
    select(key);
  }

  const ask = (kind) => (opts) => new Promise((resolve) => setDialog({ ...opts, kind, resolve }));
  const confirm = ask("confirm");
  const prompt = ask("prompt");

  useEffect(() => {
    const onKey = (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") { e.preventDefault(); setSwitcher((s) => !s); return; }
      if (e.key === "Escape" && !dialog && !switcher && route.page === "chat") {
        const stop = document.querySelector("[data-testid=stop]");
        if (stop) { e.preventDefault(); stop.click(); }
      }
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [dialog, switcher, route.page]);

  const onChatReady = useCallback(() => {
    document.documentElement.dataset.ready = "chat";
    if (!performance.getEntriesByName("moltis:chat-ready").length) performance.mark("moltis:chat-ready");
  }, []);

  const nextTheme = { system: effectiveTheme("system") === "dark" ? "light" : "dark", light: "dark", dark: "light" }[theme];
  const current = sessions.find((s) => s.key === currentKey);
  const connected = conn.state === "connected";

  return html`<div class=${`shell ${navOpen ? "nav-open" : ""}`}>
    <a class="skip" href="#main">Skip to content</a>
    <header class="topbar">
      <button type="button" class="btn icon ghost menu-toggle" aria-label="Show chats" aria-expanded=${navOpen} onClick=${() => setNavOpen(!navOpen)}>☰</button>
      <a class="brand" href="#/chat" aria-label="Moltis home"><img src="/ui/icon.svg" alt="" width="24" height="24" /><span>Moltis</span></a>
      <nav class="tabs main-nav" aria-label="Views">
        ${[["chat", "Chat"], ["explorer", "Explorer"], ["config", "Config"], ["devices", "Devices"], ["voice", "Voice"], ["status", "Status"]].map(([p, label]) => html`
          <a href=${`#/${p}`} class=${route.page === p ? "active" : ""} aria-current=${route.page === p ? "page" : undefined} data-testid=${`nav-${p}`}>${label}</a>`)}
      </nav>
      <div class="topbar-end">
        <span class=${`conn-dot ${connected ? "ok" : "bad"}`} role="img" aria-label=${connected ? "Connected" : "Not connected"} data-testid="conn-state" data-state=${conn.state}></span>
        <button type="button" class="btn icon ghost" data-testid="theme-toggle" aria-label=${`Switch to ${nextTheme} theme`} title=${`Theme: ${theme}`}
          onClick=${() => { localStorage.setItem(THEME_KEY, nextTheme); setTheme(nextTheme); }}>${effectiveTheme(theme) === "dark" ? "☀" : "☾"}</button>
        <button type="button" class="btn small ghost" onClick=${onSignOut}>Sign out</button>
      </div>
    </header>
    <${ConnectionBanner} state=${conn.state} error=${conn.error} onRetry=${() => gw.retryNow()} />
    <div class="body">
      ${route.page === "chat" ? html`<${Sidebar} inert=${phone && !navOpen} gw=${gw} sessions=${sessions} current=${currentKey} onSelect=${select} onNew=${newChat}
          onChanged=${(deleted) => {
            if (deleted && deleted === freshChat.current?.key) freshChat.current = null;
            loadSessions();
            if (deleted && deleted === currentKey) go(`#/chat/${encodeURIComponent(mainKey)}`);
          }}
          search=${search} setSearch=${setSearch} confirm=${confirm} prompt=${prompt} />` : null}
      <main id="main" class="main" tabindex="-1" onClick=${() => { if (navOpen) setNavOpen(false); }}>
        ${route.page === "chat" && currentKey && gw.hello ? html`<${ChatView} key=${currentKey} gw=${gw} sessionKey=${currentKey}
            session=${current} models=${models} defaults=${defaults} onSessionsChanged=${loadSessions} onReady=${onChatReady} composerRef=${composer} onNeedModels=${loadModels} />` : null}
        ${route.page === "chat" && !gw.hello ? html`<div class="loading" role="status">Connecting to the gateway…</div>` : null}
        ${route.page !== "chat" && gw.hello ? html`<${Lazy} key=${route.page} name=${route.page} gw=${gw} confirm=${confirm} prompt=${prompt} />` : null}
      </main>
    </div>
    ${switcher ? html`<${Switcher} sessions=${sessions} onPick=${select} onClose=${() => setSwitcher(false)} />` : null}
    ${dialog ? html`<${Dialog} dialog=${dialog} close=${(v) => { dialog.resolve(v); setDialog(null); }} />` : null}
    <${Toasts} />
  </div>`;
}

function startGateway(auth) {
  const g = new Gateway({ url: gatewayUrl(), auth });
  g.start();
  return g;
}

// Start at once, before anything renders: redeem a sign-in ticket (the socket opens
// meanwhile and `connect` waits for the credential) or use the stored credential.
const bootTicket = redeemTicket();
const bootAuth = bootTicket || storedAuth();
const bootGateway = bootAuth ? startGateway(bootAuth) : null;
bootGateway?.on("hello", ({ hello, reconnect }) => {
  const route = parseRoute();
  if (reconnect || route.page !== "chat") return;
  prefetchHistory(bootGateway, route.key || hello.snapshot?.sessionDefaults?.mainSessionKey || "agent:main:main");
});
if (bootTicket) bootTicket.then(() => performance.mark("moltis:auth"), () => {});
else if (bootAuth) performance.mark("moltis:auth");

function App() {
  const [gw, setGw] = useState(bootGateway);
  const [error, setError] = useState("");
  const [mode, setMode] = useState(null);

  // Not signed in: ask the gateway what it wants (a gateway with auth mode `none` needs
  // nothing, and is reachable from this machine only).
  useEffect(() => {
    if (gw) return;
    fetch("/ui/auth-mode").then((r) => r.json()).then((body) => {
      if (body.mode === "none" && !error) setGw(startGateway({}));
      else setMode(body.mode);
    }).catch(() => setMode("token"));
  }, [gw]);

  useEffect(() => {
    if (!bootTicket) return;
    bootTicket.then((a) => saveAuth(a, false)).catch((err) => {
      setError(err.message);
      bootGateway?.stop();
      const stored = storedAuth();
      setGw(stored ? startGateway(stored) : null);
    });
  }, []);

  useEffect(() => {
    if (!gw) return undefined;
    return gw.on("state", ({ state, error: why }) => {
      if (state === "auth-failed") {
        forgetAuth();
        gw.stop();
        setError(why || "the gateway refused this credential");
        setGw(null);
      }
    });
  }, [gw]);

  if (!gw) {
    if (!mode && !error) return html`<div class="boot" role="status">Loading Moltis…</div>`;
    return html`<${SignIn} key=${mode} initialMode=${mode} error=${error} onSubmit=${(a, remember) => { setError(""); saveAuth(a, remember); setGw(startGateway(a)); }} />`;
  }
  return html`<${Shell} key=${gw._instanceId} gw=${gw} onSignOut=${() => { forgetAuth(); gw.stop(); setGw(null); }} />`;
}

// `prefers-color-scheme` changes while the page is open follow through CSS; the toggle
// stores an explicit choice.
applyTheme(localStorage.getItem(THEME_KEY) || "system");
installCopyHandler(document);
render(html`<${App} />`, document.getElementById("app"));
window.__moltis = { version: "0.1.0", sessionTitle };
