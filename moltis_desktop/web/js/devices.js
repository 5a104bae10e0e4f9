// Devices: pair a phone with a setup code (QR), approve the devices that ask to pair,
// and manage the paired ones (names, per-role tokens, removal) and the nodes.
// Methods the gateway does not offer (an older one) are left out of the page, not shown
// as errors.
import { useEffect, useRef, useState } from "../vendor/preact-hooks.mjs";
import { html, timeAgo, toast } from "./ui.js";

const PROFILES = [
  ["full", "Full access", "Chat, settings and approvals; can also run as a node."],
  ["limited", "Limited", "Chat and approvals, but no settings or admin actions."],
  ["node", "Node only", "Runs commands for the agent (camera, location, …); no chat."],
  ["voice-node", "Voice node", "Talks and listens, and runs as a node."],
];
const profileLabel = (id) => PROFILES.find((p) => p[0] === id)?.[1] || id;
const STATUS_POLL_MS = 3000;
const REFRESH_MS = 10000;

/** "operator.read" → "read": the role is shown next to it already. */
const shortScope = (s) => String(s).replace(/^operator\./, "");
const deviceName = (d) => d.displayName || d.label || d.clientId || `${String(d.deviceId || "").slice(0, 12)}…`;

function formatDate(ms) {
  if (!ms) return "";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function countdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** Copy to the clipboard; where the page has no clipboard access (plain http from another
 * computer is not a secure context) select the text so Ctrl+C copies it. */
async function copyText(text, select) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied");
  } catch {
    if (select?.select) select.select();
    else if (select) {
      const range = document.createRange();
      range.selectNodeContents(select);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
    toast("Selected: press Ctrl+C (⌘C) to copy");
  }
}

function Scopes({ scopes }) {
  if (!scopes?.length) return html`<span class="muted">none</span>`;
  return html`<span class="pills">${scopes.map((s) => html`<span class="pill" title=${s}>${shortScope(s)}</span>`)}</span>`;
}

function Presence({ connected, lastSeenAtMs, now }) {
  if (connected === true) return html`<span class="presence"><span class="dot ok" aria-hidden="true"></span>Connected</span>`;
  if (connected === false || lastSeenAtMs) {
    return html`<span class="presence"><span class="dot off" aria-hidden="true"></span>${lastSeenAtMs ? `Last seen ${timeAgo(lastSeenAtMs, now)}` : "Not connected"}</span>`;
  }
  return null;
}

function Banner({ error, onDismiss }) {
  if (!error) return null;
  return html`<div class="banner error" role="alert">${error}
    ${onDismiss ? html`<button type="button" class="btn small" onClick=${onDismiss}>Dismiss</button>` : null}</div>`;
}

/** A name with an inline Rename: the heading turns into a small form. */
function EditableName({ name, canRename, onSave, level = "h3", testid }) {
  const [editing, setEditing] = useState(false);
  const [value, setValue] = useState(name);
  const [busy, setBusy] = useState(false);
  const input = useRef(null);
  const renameButton = useRef(null);
  useEffect(() => { if (editing) { input.current?.focus(); input.current?.select(); } }, [editing]);
  const stop = (refocus = true) => { setEditing(false); if (refocus) setTimeout(() => renameButton.current?.focus(), 0); };
  async function save() {
    const label = value.trim();
    if (!label || label === name) { stop(); return; }
    setBusy(true);
    try { await onSave(label); stop(); }
    catch { /* the caller shows the error; keep the form open */ }
    finally { setBusy(false); }
  }
  if (editing) {
    return html`<form class="rename" data-testid=${`${testid}-rename-form`} onSubmit=${(e) => { e.preventDefault(); save(); }}
        onKeyDown=${(e) => { if (e.key === "Escape") { e.stopPropagation(); stop(); } }}>
      <label class="sr-only" for=${`${testid}-name`}>New name for ${name}</label>
      <input id=${`${testid}-name`} ref=${input} value=${value} maxlength="80" data-testid=${`${testid}-name-input`}
        onInput=${(e) => setValue(e.currentTarget.value)} />
      <button type="submit" class="btn small primary" disabled=${busy}>Save</button>
      <button type="button" class="btn small" onClick=${() => stop()}>Cancel</button>
    </form>`;
  }
  const Heading = level;
  return html`<div class="name-line">
    <${Heading} class="device-name" data-testid=${`${testid}-name`}>${name}</${Heading}>
    ${canRename ? html`<button type="button" class="btn small ghost" ref=${renameButton} aria-label=${`Rename ${name}`}
      data-testid=${`${testid}-rename`} onClick=${() => { setValue(name); setEditing(true); }}>Rename</button>` : null}
  </div>`;
}

// ------------------------------------------------------------------ pair a phone

function PairPanel({ gw, onPaired, confirm }) {
  const [profile, setProfile] = useState("full");
  const [state, setState] = useState({ phase: "idle" });
  const [now, setNow] = useState(Date.now());
  const codeBox = useRef(null);
  const seq = useRef(0);
  // Every code shown here stays valid until it expires, even after Regenerate: a phone
  // that scanned an earlier one completes the pairing too.
  const shownIds = useRef(new Set());
  const setup = state.phase === "shown" || state.phase === "loading" ? state.setup : null;

  /** A new code; `waitForLan` asks again for a few seconds while the listener moves to
   * the network (a change of gateway.bind takes effect just after the config is saved). */
  async function generate(which = profile, waitForLan = false) {
    const mine = ++seq.current;
    setState((cur) => ({ phase: "loading", setup: cur.setup }));
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await gw.request("device.pair.setupCode", { includeQr: true, bootstrapProfile: which });
        if (mine === seq.current) {
          // The deadline on this computer's clock: a browser on another computer may be
          // minutes off the gateway's, so a code carrying when it was issued counts down
          // from its arrival here.
          const here = Date.now();
          const issued = res.issuedAtMs ?? res.createdAtMs;
          const deadline = issued ? here + (res.expiresAtMs - issued) : res.expiresAtMs;
          shownIds.current.add(res.setupId);
          setNow(here);
          setState({ phase: "shown", setup: { ...res, deadline } });
        }
        return;
      } catch (err) {
        if (waitForLan && attempt < 20 && err.details?.code === "LAN_DISABLED") {
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        if (mine === seq.current) setState({ phase: "error", error: err });
        return;
      }
    }
  }

  // The one-click way out of LAN_DISABLED: the same change as editing `gateway.bind` in
  // Config (a merge patch on the version just read), after saying what it means.
  const canListen = gw.can("config.patch") && gw.can("config.get");
  async function listenOnLan() {
    const ok = await confirm({
      title: "Listen on the network?",
      body: "The gateway then accepts connections from other devices on your network (gateway.bind = lan). They still need the gateway's token, its password or a pairing code.",
      confirmText: "Listen on the network",
    });
    if (!ok) return;
    setState({ phase: "loading" });
    try {
      const { hash } = await gw.request("config.get", {});
      await gw.request("config.patch", { raw: JSON.stringify({ gateway: { bind: "lan" } }), baseHash: hash });
    } catch (err) {
      setState({ phase: "error", error: err });
      return;
    }
    await generate(profile, true);
  }

  function completed(done) {
    seq.current++;
    setState({ phase: "done", done });
    onPaired();
  }

  // The countdown, and the setup's status (the event is the fast path; asking covers an
  // event missed while reconnecting).
  useEffect(() => {
    if (!setup) return undefined;
    const tick = setInterval(() => setNow(Date.now()), 1000);
    const poll = setInterval(async () => {
      if (Date.now() > setup.deadline) return;
      try {
        const res = await gw.request("device.pair.setupStatus", { setupId: setup.setupId });
        if (res?.completion) completed(res.completion);
      } catch { /* the next poll or the event will tell */ }
    }, STATUS_POLL_MS);
    return () => { clearInterval(tick); clearInterval(poll); };
  }, [setup?.setupId]);
  useEffect(() => gw.on("device.pair.setup.completed", (p) => { if (shownIds.current.has(p?.setupId)) completed(p); }), [gw]);

  const lanOff = state.phase === "error" && state.error.details?.code === "LAN_DISABLED";
  const expired = setup && now >= setup.deadline;
  const others = (setup?.gatewayUrls || []).filter((u) => u !== setup.gatewayUrl);

  const picker = html`<label class="field pair-access"><span class="field-label">Access for the phone</span>
    <select value=${profile} data-testid="pair-access" onChange=${(e) => {
      const v = e.currentTarget.value;
      setProfile(v);
      if (setup) generate(v);
    }}>
      ${PROFILES.map(([id, label]) => html`<option value=${id}>${label}</option>`)}
    </select>
    <span class="hint">${PROFILES.find((p) => p[0] === profile)?.[2]}</span></label>`;

  return html`<section class="card pair" aria-labelledby="pair-title" data-testid="pair-panel">
    <div class="card-head"><h2 id="pair-title">Pair a phone</h2></div>
    ${state.phase === "done" ? html`<div class="pair-done" role="status" data-testid="pair-done">
        <span class="pair-check" aria-hidden="true">✓</span>
        <div><p class="big">${state.done.deviceName || "The device"} paired</p>
          <p class="muted">${state.done.access ? `With ${profileLabel(state.done.access).toLowerCase()} access. ` : ""}It is listed under Paired devices below.</p></div>
        <button type="button" class="btn" onClick=${() => setState({ phase: "idle" })}>Pair another</button>
      </div>` : null}
    ${state.phase !== "done" && !setup ? html`
      <p class="muted pair-intro">Open the Moltis or OpenClaw app on the phone and scan the code this shows. The phone must be on the same network as this computer.</p>
      <div class="pair-controls">
        ${picker}
        <button type="button" class="btn primary" data-testid="pair-show" disabled=${state.phase === "loading"}
          onClick=${() => generate()}>${state.phase === "loading" ? "Making a code…" : "Show pairing code"}</button>
      </div>` : null}
    ${lanOff ? html`<div class="banner warn" role="alert" data-testid="pair-lan-disabled">
        <b>Phones can't reach this gateway:</b> it listens on this computer only.
        Set <code>gateway.bind</code> to <code>lan</code> in <a href="#/config">Config</a>, or use the tray's <i>Pair a Phone…</i>
        ${canListen ? html`<div class="row"><button type="button" class="btn small" data-testid="pair-listen-lan" onClick=${listenOnLan}>Listen on the network</button></div>` : null}
      </div>` : state.phase === "error" ? html`<div class="banner error" role="alert" data-testid="pair-error">
        Could not make a pairing code: ${state.error.message}
        <button type="button" class="btn small" onClick=${() => generate()}>Try again</button></div>` : null}
    ${setup ? html`<div class=${`pair-body ${expired ? "expired" : ""}`} aria-busy=${state.phase === "loading"}>
      <div class="qr-frame">
        ${setup.qrDataUrl ? html`<img class="qr" src=${setup.qrDataUrl} width="240" height="240" data-testid="pair-qr"
          alt="QR code with this gateway's setup code: scan it with the Moltis or OpenClaw app" />` : null}
        ${expired ? html`<div class="qr-expired">Expired</div>` : null}
      </div>
      <div class="pair-info">
        <p class="pair-timer" role="timer" data-testid="pair-timer">${expired ? html`<b>This code expired.</b> Make a new one to pair.`
          : html`Scan within <b>${countdown(setup.deadline - now)}</b>; the code works once.`}</p>
        ${expired ? null : html`<div class="field"><span class="field-label" id="setup-code-label">Setup code</span>
          <div class="code-line">
            <code class="setup-code" ref=${codeBox} tabindex="0" aria-labelledby="setup-code-label" data-testid="pair-code">${setup.setupCode}</code>
            <button type="button" class="btn small" onClick=${() => copyText(setup.setupCode, codeBox.current)}>Copy</button>
          </div>
          <span class="hint">No camera? Paste this code into the app instead.</span></div>`}
        <dl class="pair-address">
          <dt>Address</dt><dd data-testid="pair-url"><code>${setup.gatewayUrl}</code>
            ${others.length ? html`<div class="hint">The phone also tries ${others.map((u, i) => html`${i ? ", " : ""}<code>${u}</code>`)}</div>` : null}</dd>
          <dt>Grants</dt><dd data-testid="pair-grants">${profileLabel(setup.access)}</dd>
        </dl>
        ${setup.accessDowngraded ? html`<div class="banner warn" role="status" data-testid="pair-downgraded">Full access (settings, admin) is only handed out over an encrypted connection, so this code grants ${profileLabel(setup.access).toLowerCase()} access. Turn on <code>gateway.tls.enabled</code> in <a href="#/config">Config</a> for full access.</div>` : null}
        ${picker}
        <p class="hint">When the phone asks to pair, approve it under <i>Waiting for approval</i>.</p>
        <div class="row">
          <button type="button" class=${`btn ${expired ? "primary" : ""}`} data-testid="pair-regenerate" disabled=${state.phase === "loading"} onClick=${() => generate()}>Regenerate</button>
          <button type="button" class="btn ghost" onClick=${() => { seq.current++; setState({ phase: "idle" }); }}>Hide</button>
        </div>
      </div>
    </div>` : null}
  </section>`;
}

// ------------------------------------------------------------------ waiting for approval

/** What a request from a device paired already asks for, in words (null for a new one). */
function upgrade(r) {
  if (r.reason === "role-upgrade") return "paired already: asks for a new role";
  if (r.reason === "scope-upgrade") return "paired already: asks for more access";
  return r.isRepair ? "paired already: asks again" : null;
}

/** A node asking to run commands it was not approved for (`node.pair.*`). */
function NodeRequest({ r, approved, busy, onDecide, now }) {
  const name = r.displayName || r.nodeId;
  const have = new Set(approved || []);
  const fresh = (r.commands || []).filter((c) => !have.has(c));
  return html`<li class="device pending-row" data-testid="node-request-row" data-request=${r.requestId}>
    <div class="device-main">
      <div class="name-line"><h3 class="device-name">${name}</h3><span class="pill warn">node: asks for more commands</span></div>
      <div class="device-sub muted">${[r.platform, r.version && `v${r.version}`].filter(Boolean).join(" · ")} · asked ${timeAgo(r.ts, now)}</div>
      <dl class="device-meta">
        <dt>New</dt><dd><span class="pills">${fresh.map((c) => html`<code class="pill cmd">${c}</code>`)}</span></dd>
        ${(r.requiredApproveScopes || []).includes("operator.admin") ? html`<dt>Note</dt><dd>Some of these run programs or reach files: approving needs admin.</dd>` : null}
      </dl>
    </div>
    <div class="device-actions">
      <button type="button" class="btn primary" disabled=${busy} aria-label=${`Approve the new commands of ${name}`} onClick=${() => onDecide(r, true)}>Approve</button>
      <button type="button" class="btn" disabled=${busy} aria-label=${`Reject the new commands of ${name}`} onClick=${() => onDecide(r, false)}>Reject</button>
    </div>
  </li>`;
}

function Pending({ list, nodeRequests, nodeCommands, busy, onDecide, onDecideNode, error, onDismiss, now }) {
  const count = list.length + nodeRequests.length;
  return html`<section class="card" aria-labelledby="pending-title" data-testid="pending">
    <div class="card-head"><h2 id="pending-title">Waiting for approval${count ? html` <span class="count">${count}</span>` : null}</h2></div>
    <${Banner} error=${error} onDismiss=${onDismiss} />
    ${count ? html`<ul class="device-list">${nodeRequests.map((r) => html`<${NodeRequest} key=${r.requestId} r=${r}
        approved=${nodeCommands[r.nodeId]} busy=${busy} onDecide=${onDecideNode} now=${now} />`)}${list.map((r) => html`<li key=${r.requestId} class="device pending-row" data-testid="pending-row" data-request=${r.requestId}>
        <div class="device-main">
          <div class="name-line"><h3 class="device-name">${deviceName(r)}</h3>
            ${r.setupId ? html`<span class="pill ok">scanned a pairing code</span>` : null}
            ${upgrade(r) ? html`<span class="pill warn">${upgrade(r)}</span>` : null}</div>
          <div class="device-sub muted">${[r.platform, r.clientMode, r.remoteIp].filter(Boolean).join(" · ")} · asked ${timeAgo(r.ts, now)}</div>
          <dl class="device-meta">
            <dt>Role</dt><dd>${(r.roles?.length ? r.roles : [r.role]).filter(Boolean).join(", ") || "operator"}</dd>
            <dt>Scopes</dt><dd><${Scopes} scopes=${r.scopes} /></dd>
          </dl>
        </div>
        <div class="device-actions">
          <button type="button" class="btn primary" disabled=${busy} data-testid="approve" aria-label=${`Approve ${deviceName(r)}`} onClick=${() => onDecide(r, true)}>Approve</button>
          <button type="button" class="btn" disabled=${busy} data-testid="reject" aria-label=${`Reject ${deviceName(r)}`} onClick=${() => onDecide(r, false)}>Reject</button>
        </div>
      </li>`)}</ul>`
      : html`<p class="muted">No device is waiting. A device that connects over the network without a token shows up here.</p>`}
  </section>`;
}

// ------------------------------------------------------------------ paired devices

function TokenRow({ device, role, token, busy, onRotate, onRevoke, now }) {
  const revoked = !!token?.revokedAtMs;
  return html`<li class=${`token-row ${revoked ? "revoked" : ""}`} data-testid="token-row" data-role=${role}>
    <div class="token-info">
      <b class="token-role">${role}</b>
      ${!token ? html`<span class="pill">no token</span>`
        : revoked ? html`<span class="pill bad" data-testid="token-revoked">revoked ${timeAgo(token.revokedAtMs, now)}</span>`
        : html`<span class="pill ok">active</span>`}
      ${token ? html`<span class="token-dates muted">issued ${timeAgo(token.rotatedAtMs || token.createdAtMs, now)}${token.lastUsedAtMs ? ` · used ${timeAgo(token.lastUsedAtMs, now)}` : ""}</span>` : null}
      ${token?.scopes?.length ? html`<${Scopes} scopes=${token.scopes} />` : null}
    </div>
    <div class="token-actions">
      <button type="button" class="btn small" disabled=${busy} data-testid="token-rotate" aria-label=${`${token && !revoked ? "Rotate" : "Issue"} the ${role} token of ${deviceName(device)}`}
        onClick=${() => onRotate(device, role, token)}>${token && !revoked ? "Rotate" : "Issue new"}</button>
      ${token && !revoked ? html`<button type="button" class="btn small danger-text" disabled=${busy} data-testid="token-revoke" aria-label=${`Revoke the ${role} token of ${deviceName(device)}`}
        onClick=${() => onRevoke(device, role)}>Revoke</button>` : null}
    </div>
  </li>`;
}

function Paired({ list, busy, canRename, onRename, onRotate, onRevoke, onRemove, error, onDismiss, now }) {
  return html`<section class="card" aria-labelledby="paired-title" data-testid="paired">
    <div class="card-head"><h2 id="paired-title">Paired devices${list.length ? html` <span class="count">${list.length}</span>` : null}</h2></div>
    <${Banner} error=${error} onDismiss=${onDismiss} />
    ${list.length ? html`<ul class="device-list">${list.map((d) => {
      const tokens = Object.fromEntries((d.tokens || []).map((t) => [t.role, t]));
      const roles = [...new Set([...(d.roles || []), ...Object.keys(tokens)])];
      return html`<li key=${d.deviceId} class="device" data-testid="paired-row" data-device=${d.deviceId}>
        <div class="device-main">
          <${EditableName} name=${deviceName(d)} canRename=${canRename} testid="device" onSave=${(label) => onRename(d, label)} />
          <div class="device-sub muted">
            <${Presence} connected=${d.connected} lastSeenAtMs=${d.lastSeenAtMs} now=${now} />
            ${[d.platform, d.clientMode, d.remoteIp].filter(Boolean).join(" · ")}
          </div>
          <dl class="device-meta">
            <dt>Scopes</dt><dd><${Scopes} scopes=${d.scopes} /></dd>
            <dt>Paired</dt><dd>${formatDate(d.approvedAtMs || d.createdAtMs)}</dd>
            <dt>ID</dt><dd><code class="device-id" title=${d.deviceId}>${String(d.deviceId).slice(0, 16)}…</code></dd>
          </dl>
          <h4 class="sr-only">Tokens</h4>
          <ul class="token-list" aria-label=${`Tokens of ${deviceName(d)}`}>
            ${roles.map((role) => html`<${TokenRow} key=${role} device=${d} role=${role} token=${tokens[role]} busy=${busy} onRotate=${onRotate} onRevoke=${onRevoke} now=${now} />`)}
          </ul>
        </div>
        <div class="device-actions">
          <button type="button" class="btn danger-text" disabled=${busy} data-testid="device-remove" aria-label=${`Remove ${deviceName(d)}`} onClick=${() => onRemove(d)}>Remove</button>
        </div>
      </li>`;
    })}</ul>` : html`<p class="muted">No paired device yet.</p>`}
  </section>`;
}

// ------------------------------------------------------------------ nodes

function Nodes({ list, canRename, onRename, error, onDismiss, now }) {
  return html`<section class="card" aria-labelledby="nodes-title" data-testid="nodes">
    <div class="card-head"><h2 id="nodes-title">Nodes <span class="count">${list.length}</span></h2></div>
    <p class="hint">Devices that run commands for the agent.</p>
    <${Banner} error=${error} onDismiss=${onDismiss} />
    <ul class="device-list">${list.map((n) => {
      const name = n.displayName || n.nodeId;
      const commands = n.commands || [];
      return html`<li key=${n.nodeId} class="device" data-testid="node-row" data-node=${n.nodeId}>
        <div class="device-main">
          <${EditableName} name=${name} canRename=${canRename} testid="node" onSave=${(label) => onRename(n, label)} />
          <div class="device-sub muted">
            <${Presence} connected=${n.connected} lastSeenAtMs=${n.lastSeenAtMs} now=${now} />
            ${[n.platform, n.version && `v${n.version}`].filter(Boolean).join(" · ")}
            ${n.paired === false ? html` <span class="pill warn">not paired</span>` : null}
          </div>
          ${n.caps?.length ? html`<div class="pills">${n.caps.map((c) => html`<span class="pill">${c}</span>`)}</div>` : null}
          ${commands.length ? html`<details class="commands"><summary>${commands.length} command${commands.length === 1 ? "" : "s"}</summary>
            <ul>${commands.map((c) => html`<li><code>${typeof c === "string" ? c : c.name || JSON.stringify(c)}</code></li>`)}</ul></details>`
            : html`<p class="hint">No commands.</p>`}
        </div>
      </li>`;
    })}</ul>
  </section>`;
}

// ------------------------------------------------------------------ the token, once

/** Keep Tab inside a modal dialog (the page behind it is out of reach while it is open). */
function keepTabInside(e, root) {
  if (e.key !== "Tab" || !root) return;
  const items = [...root.querySelectorAll("button, input, a[href]")].filter((el) => !el.disabled);
  if (!items.length) return;
  const [first, last] = [items[0], items[items.length - 1]];
  if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
  else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
}

function TokenDialog({ issued, onClose }) {
  const box = useRef(null);
  const dialog = useRef(null);
  useEffect(() => { box.current?.focus(); box.current?.select(); }, []);
  return html`<div class="overlay" onClick=${(e) => { if (e.target === e.currentTarget) onClose(); }}
      onKeyDown=${(e) => { if (e.key === "Escape") { e.stopPropagation(); onClose(); } else keepTabInside(e, dialog.current); }}>
    <div class="dialog token-dialog" ref=${dialog} role="dialog" aria-modal="true" aria-labelledby="token-title" aria-describedby="token-note" data-testid="token-dialog">
      <h2 id="token-title">New ${issued.role} token for ${issued.name}</h2>
      <p id="token-note" class="banner warn">Copy it now: it won't be shown again. The device's previous token has stopped working; give it this one.</p>
      <label class="field"><span class="field-label">Token</span>
        <div class="code-line">
          <input ref=${box} readonly value=${issued.token} class="mono" data-testid="token-value" onFocus=${(e) => e.currentTarget.select()} />
          <button type="button" class="btn" onClick=${() => copyText(issued.token, box.current)}>Copy</button>
        </div></label>
      <div class="row end"><button type="button" class="btn primary" data-testid="token-done" onClick=${onClose}>Done</button></div>
    </div>
  </div>`;
}

// ------------------------------------------------------------------ the view

export function DevicesView({ gw, confirm }) {
  const [data, setData] = useState(null);
  const [nodes, setNodes] = useState([]);
  const [nodeRequests, setNodeRequests] = useState([]);
  const [loadError, setLoadError] = useState("");
  const [errors, setErrors] = useState({});
  const [busy, setBusy] = useState(false);
  const [issued, setIssued] = useState(null);
  const [now, setNow] = useState(Date.now());
  const opener = useRef(null);
  const canPair = gw.can("device.pair.setupCode");
  const canRename = gw.can("device.pair.rename");
  const canNodes = gw.can("node.list");

  const seq = useRef(0);
  async function load() {
    const mine = ++seq.current;
    try {
      const [list, nl, np] = await Promise.all([
        gw.request("device.pair.list", {}),
        canNodes ? gw.request("node.list", {}).catch(() => null) : null,
        gw.can("node.pair.list") ? gw.request("node.pair.list", {}).catch(() => null) : null,
      ]);
      if (mine !== seq.current) return;
      setData(list);
      if (nl) setNodes(nl.nodes || []);
      if (np) setNodeRequests(np.pending || []);
      setNow(Date.now());
      setLoadError("");
    } catch (err) {
      if (mine === seq.current) setLoadError(err.message);
    }
  }

  useEffect(() => {
    load();
    const t = setInterval(load, REFRESH_MS);
    const offs = ["device.pair.requested", "device.pair.resolved", "device.pair.setup.completed",
      "node.pair.requested", "node.pair.resolved", "hello", "gap"]
      .map((ev) => gw.on(ev, () => load()));
    return () => { clearInterval(t); offs.forEach((f) => f()); };
  }, [gw]);

  const setError = (section, message) => setErrors((cur) => ({ ...cur, [section]: message }));

  /** Run one change; its error is shown in its section, and the lists are read again. */
  async function act(section, fn) {
    setBusy(true);
    setError(section, "");
    try { return await fn(); }
    catch (err) { setError(section, err.message); throw err; }
    finally { setBusy(false); load(); }
  }

  async function decide(r, approve) {
    await act("pending", () => gw.request(approve ? "device.pair.approve" : "device.pair.reject", { requestId: r.requestId }))
      .then(() => toast(approve ? `${deviceName(r)} paired` : `${deviceName(r)} rejected`), () => {});
  }

  async function decideNode(r, approve) {
    const name = r.displayName || r.nodeId;
    await act("pending", () => gw.request(approve ? "node.pair.approve" : "node.pair.reject", { requestId: r.requestId }))
      .then(() => toast(approve ? `${name} may run its new commands` : `${name}'s new commands rejected`), () => {});
  }

  async function rename(d, label) {
    await act("paired", () => gw.request("device.pair.rename", { deviceId: d.deviceId, label }));
    toast("Renamed");
  }

  async function renameNode(n, displayName) {
    await act("nodes", () => gw.request("node.rename", { nodeId: n.nodeId, displayName }));
    toast("Renamed");
  }

  async function rotate(d, role, token) {
    opener.current = document.activeElement;
    if (token && !token.revokedAtMs) {
      const ok = await confirm({
        title: `Rotate the ${role} token?`,
        body: `${deviceName(d)}'s current ${role} token stops working at once. You get a new one to give it.`,
        confirmText: "Rotate",
      });
      if (!ok) { opener.current?.focus?.(); return; }
    }
    try {
      const res = await act("paired", () => gw.request("device.token.rotate", { deviceId: d.deviceId, role }));
      setIssued({ token: res.token, role, name: deviceName(d) });
    } catch { /* shown in the section */ }
  }

  async function revoke(d, role) {
    const ok = await confirm({
      title: `Revoke the ${role} token?`,
      body: `${deviceName(d)} can no longer connect as ${role} with it. It stays paired: rotate to give it a new token.`,
      confirmText: "Revoke",
      danger: true,
    });
    if (!ok) return;
    await act("paired", () => gw.request("device.token.revoke", { deviceId: d.deviceId, role })).then(() => toast("Token revoked"), () => {});
  }

  async function remove(d) {
    const ok = await confirm({
      title: `Remove ${deviceName(d)}?`,
      body: "It is unpaired at once: its tokens stop working and its connections close. To use it again, pair it again.",
      confirmText: "Remove",
      danger: true,
    });
    if (!ok) return;
    await act("paired", () => gw.request("device.pair.remove", { deviceId: d.deviceId })).then(() => toast(`${deviceName(d)} removed`), () => {});
  }

  if (loadError && !data) {
    return html`<section class="page"><div class="banner error" role="alert">Could not load the devices: ${loadError}
      <button type="button" class="btn small" onClick=${load}>Try again</button></div></section>`;
  }
  if (!data) return html`<section class="page"><div class="loading" role="status">Loading devices…</div></section>`;
  const pending = data.pending || [];
  const paired = data.paired || [];
  return html`<section class="page devices" aria-labelledby="devices-title">
    <div class="page-head"><h1 id="devices-title">Devices</h1>
      <button type="button" class="btn small" onClick=${load}>Refresh</button></div>
    ${loadError ? html`<div class="banner warn" role="status">Showing the last list: ${loadError}</div>` : null}
    ${canPair ? html`<${PairPanel} gw=${gw} onPaired=${load} confirm=${confirm} />` : null}
    <${Pending} list=${pending} nodeRequests=${nodeRequests} nodeCommands=${Object.fromEntries(nodes.map((n) => [n.nodeId, n.commands]))}
      busy=${busy} onDecide=${decide} onDecideNode=${decideNode} now=${now} error=${errors.pending} onDismiss=${() => setError("pending", "")} />
    <${Paired} list=${paired} busy=${busy} canRename=${canRename} onRename=${rename} onRotate=${rotate} onRevoke=${revoke} onRemove=${remove}
      now=${now} error=${errors.paired} onDismiss=${() => setError("paired", "")} />
    ${nodes.length ? html`<${Nodes} list=${nodes} canRename=${gw.can("node.rename")} onRename=${renameNode} now=${now}
      error=${errors.nodes} onDismiss=${() => setError("nodes", "")} />` : null}
    ${issued ? html`<${TokenDialog} issued=${issued} onClose=${() => { setIssued(null); setTimeout(() => opener.current?.focus?.(), 0); }} />` : null}
  </section>`;
}
