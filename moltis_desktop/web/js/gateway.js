// The gateway connection: OpenClaw protocol v3/v4 over one WebSocket.
// It signs in (token or password), matches responses to requests, hands events out,
// watches the `tick` heartbeat, notices gaps in the event `seq`, and reconnects with
// exponential backoff. The credential is never logged, and never put in a URL.

const PROTOCOL_MIN = 3;
const PROTOCOL_MAX = 4;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const REQUEST_TIMEOUT_MS = 30000;

export const CLIENT_VERSION = "0.1.0";

export class RpcError extends Error {
  constructor(shape) {
    super(shape?.message || "request failed");
    this.code = shape?.code || "UNAVAILABLE";
    this.details = shape?.details;
    this.retryable = !!shape?.retryable;
  }
}

function uuid() {
  return crypto.randomUUID ? crypto.randomUUID() :
    ([1e7] + -1e3 + -4e3 + -8e3 + -1e11).replace(/[018]/g,
      (c) => (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16));
}
export { uuid };

export class Gateway {
  constructor({ url, auth }) {
    this.url = url;
    this.auth = auth;            // {token} | {password} | {} (or a promise of one)
    this.state = "idle";         // idle | connecting | connected | reconnecting | auth-failed | closed
    this.lastError = "";
    this.hello = null;
    this.methods = [];
    this.scopes = [];
    this._ws = null;
    this._pending = new Map();
    this._listeners = new Map();
    this._attempt = 0;
    this._lastSeq = null;
    this._lastFrameAt = 0;
    this._watchdog = null;
    this._retryTimer = null;
    this._instanceId = uuid();
    this._everConnected = false;
  }

  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this._listeners.get(event)?.delete(fn);
  }

  _emit(event, payload) {
    for (const fn of this._listeners.get(event) || []) {
      try { fn(payload); } catch (err) { console.error("listener for", event, "failed:", err); }
    }
    for (const fn of this._listeners.get("*") || []) {
      try { fn({ event, payload }); } catch (err) { console.error(err); }
    }
  }

  _setState(state, error = "") {
    this.state = state;
    this.lastError = error;
    this._emit("state", { state, error });
  }

  start() {
    if (this.state === "connecting" || this.state === "connected") return;
    this._open();
  }

  stop() {
    this._setState("closed");
    clearTimeout(this._retryTimer);
    clearInterval(this._watchdog);
    if (this._ws) this._ws.close(1000, "bye");
  }

  _open() {
    clearTimeout(this._retryTimer);
    this._setState(this._everConnected ? "reconnecting" : "connecting", this.lastError);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._scheduleRetry(String(err));
      return;
    }
    this._ws = ws;
    this._lastSeq = null;
    ws.onmessage = (msg) => this._onFrame(ws, msg.data);
    ws.onclose = (ev) => this._onClose(ws, ev);
    ws.onerror = () => {};   // onclose follows with the code
  }

  _onClose(ws, ev) {
    if (ws !== this._ws) return;
    clearInterval(this._watchdog);
    this._ws = null;
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new RpcError({ code: "UNAVAILABLE", message: "connection lost", retryable: true }));
    }
    this._pending.clear();
    if (this.state === "closed" || this.state === "auth-failed") return;
    const why = ev.reason || (ev.code === 1012 ? "gateway restarting" : `connection closed (${ev.code})`);
    this._scheduleRetry(why);
  }

  _scheduleRetry(why) {
    this._attempt += 1;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this._attempt - 1));
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    this._setState(this._everConnected ? "reconnecting" : "connecting", why);
    this._emit("retry", { delay, attempt: this._attempt, why });
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  retryNow() {
    if (this.state === "connected") return;
    this._attempt = 0;
    this._open();
  }

  _send(obj) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) throw new RpcError({ code: "UNAVAILABLE", message: "not connected" });
    this._ws.send(JSON.stringify(obj));
  }

  _onFrame(ws, data) {
    if (ws !== this._ws) return;
    this._lastFrameAt = performance.now();
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (frame.type === "res") {
      const p = this._pending.get(frame.id);
      if (!p) return;
      this._pending.delete(frame.id);
      clearTimeout(p.timer);
      if (frame.ok) p.resolve(frame.payload);
      else p.reject(new RpcError(frame.error));
      return;
    }
    if (frame.type !== "event") return;
    if (frame.event === "connect.challenge") {
      this._connect(frame.payload?.nonce);
      return;
    }
    if (typeof frame.seq === "number") {
      if (this._lastSeq !== null && frame.seq > this._lastSeq + 1) {
        this._emit("gap", { expected: this._lastSeq + 1, received: frame.seq });
      }
      this._lastSeq = frame.seq;
    }
    this._emit(frame.event, frame.payload);
  }

  async _connect() {
    let auth;
    try {
      auth = await this.auth;   // a promise while a sign-in ticket is being redeemed
    } catch (err) {
      this._setState("auth-failed", err.message);
      this._ws?.close(1000, "no credential");
      return;
    }
    const params = {
      minProtocol: PROTOCOL_MIN,
      maxProtocol: PROTOCOL_MAX,
      client: {
        id: "openclaw-control-ui",
        version: CLIENT_VERSION,
        platform: (navigator.userAgentData?.platform || navigator.platform || "web").toLowerCase(),
        mode: "webchat",
        instanceId: this._instanceId,
        displayName: "Moltis web app",
      },
      caps: [],
      role: "operator",
      scopes: ["operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.pairing"],
      auth,
      locale: navigator.language,
      userAgent: navigator.userAgent,
    };
    let hello;
    try {
      hello = await this._request("connect", params, 15000);
    } catch (err) {
      const code = String(err.details?.code || "");
      if (code.startsWith("AUTH_") || code === "DEVICE_IDENTITY_REQUIRED" || /^unauthorized/i.test(err.message)) {
        this._setState("auth-failed", err.message);
        this._ws?.close(1000, "auth failed");
      } else {
        this.lastError = err.message;
      }
      return;
    }
    if (!this._everConnected) performance.mark("moltis:hello");
    this.hello = hello;
    this.methods = hello.features?.methods || [];
    this.scopes = hello.auth?.scopes || [];
    this._attempt = 0;
    const tick = hello.policy?.tickIntervalMs || 30000;
    this._lastFrameAt = performance.now();
    clearInterval(this._watchdog);
    // The gateway sends a tick every tickIntervalMs; two missed ones mean the link is dead
    // even if the socket has not noticed yet.
    this._watchdog = setInterval(() => {
      if (performance.now() - this._lastFrameAt > tick * 2 + 1000) {
        this.lastError = "no heartbeat from the gateway";
        this._ws?.close(4000, "tick timeout");
      }
    }, Math.min(tick, 5000));
    const wasConnected = this._everConnected;
    this._everConnected = true;
    this._setState("connected");
    this._emit("hello", { hello, reconnect: wasConnected });
  }

  _request(method, params, timeoutMs = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const id = uuid();
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RpcError({ code: "UNAVAILABLE", message: `${method} timed out`, retryable: true }));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      try {
        this._send({ type: "req", id, method, params });
      } catch (err) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(err);
      }
    });
  }

  /** Call a method; resolves with its payload, rejects with an RpcError. */
  request(method, params = {}, timeoutMs) {
    if (this.state !== "connected") {
      return Promise.reject(new RpcError({ code: "UNAVAILABLE", message: "not connected to the gateway", retryable: true }));
    }
    return this._request(method, params, timeoutMs);
  }

  can(method) {
    return this.methods.includes(method);
  }
}

/** The WebSocket URL of the gateway that served this page. */
export function gatewayUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/`;
}
