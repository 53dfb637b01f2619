// memoryd-client.js: a client of memoryd's wire protocol v1 over the JSON subprotocol.
// One ES module, no dependencies, no build step. The contract is docs/protocol.md; the
// Python SDK (memoryd/client/) is the reference this follows, plus what it leaves to the
// caller: token refresh (in-band `auth.refresh`, REST when expired), waiting out
// `rate_limited`, resending unanswered requests after a reconnect, liveness pings.
//
//   import { MemorydClient } from "/memoryd-client.js";
//   const client = new MemorydClient({ accessToken, refreshToken, onTokens: save });
//   client.on("event", (e) => apply(e.seq, e.event, e.data));   // once each, in seq order
//   await client.connect();
//   const memory = await client.request("memory.create", { title: "Trip" });
//   await client.sendMessage(memory.id, "hello");

export const PROTOCOL = "memoryd.v1.json";
export const VERSION = "1.0.0";

/** The server answered a request (or a REST call) with an error. */
export class MemorydError extends Error {
  constructor(code, message, { retryAfter = null, details = null, status = null, id = null } = {}) {
    super(message);
    this.name = "MemorydError";
    this.code = code;
    this.retryAfter = retryAfter;
    this.details = details;
    this.status = status; // the HTTP status, for REST errors
    this.id = id;
  }
}

/** The socket dropped before the answer came, and the request is not safe to resend. */
export class DisconnectedError extends Error {
  constructor(message = "the connection was lost before the answer came") {
    super(message);
    this.name = "DisconnectedError";
    this.code = "disconnected";
  }
}

/** The session cannot continue: the refresh token was refused (sign in again). */
export class AuthError extends MemorydError {
  constructor(code, message) {
    super(code, message, { status: 401 });
    this.name = "AuthError";
  }
}

// Requests that are safe to send twice: reads, and writes that are idempotent (a send
// keyed by clientMsgId, an update to the same values, a read marker that never moves
// back). Any other request pending when the socket drops fails with DisconnectedError.
const RESENDABLE = new Set([
  "ping", "presence", "typing", "read", "auth.refresh",
  "memory.list", "memory.get", "memory.update", "category.list", "category.update",
  "message.send", "message.edit", "message.history", "ai.cancel",
]);

const SUPERSEDED = 4011;
const TOKEN_CLOSE = 4001;
const TOO_MANY = 4008;

function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** The claims of a JWT (not verified: only to know when it expires). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function defaultBaseUrl() {
  return globalThis.location ? globalThis.location.origin : "http://127.0.0.1:8080";
}

function wsUrlFrom(baseUrl) {
  const url = new URL("/ws", baseUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

export class MemorydClient {
  /**
   * @param {object} options see memoryd-client.d.ts (ClientOptions)
   */
  constructor(options = {}) {
    this.baseUrl = options.baseUrl ?? defaultBaseUrl();
    this.url = options.url ?? wsUrlFrom(this.baseUrl);
    this.accessToken = options.accessToken ?? null;
    this.refreshToken = options.refreshToken ?? null;
    this.deviceId = options.deviceId ?? null;
    // null: no local state; the first welcome's headSeq becomes the resume point (a resync).
    this.lastSeq = Number.isInteger(options.lastSeq) ? options.lastSeq : null;
    this.clientName = options.clientName ?? `memoryd-js/${VERSION}`;
    this.options = {
      ackInterval: 50,
      backoffBase: 250,
      backoffCap: 10_000,
      requestTimeout: 30_000,
      handshakeTimeout: 15_000,
      idlePing: 15_000, // ping after this long without a frame...
      pingTimeout: 8_000, // ...and drop the socket if no answer comes by then
      maxRetryAfter: 30, // seconds of rate_limited worth waiting out
      refreshMargin: 60, // seconds before expiry (at most a quarter of the token's life)
      ...options,
    };
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this._listeners = new Map();
    this._ids = 0;
    this._pending = new Map(); // id -> {frame, resolve, reject, resend, sent, timer}
    this._ws = null;
    this._socket = null; // the live session's handle, see _session
    this._state = "idle";
    this._closed = false;
    this._chain = Promise.resolve(); // event handlers run one after another
    this._toAck = 0;
    this._acked = 0;
    this._refreshing = null;
    this._refreshTimer = null;
    this._nextSlot = 0; // when the next rate-limited request may be sent again
    this._wake = null;
    this._firstWelcome = null;
    this.welcome = null;
    this.closeCode = null;
    this.connections = 0;
    this._onOnline = () => this._wake?.();
    this._onOffline = () => {
      if (this._state !== "connected") this._setState("offline");
      else this._checkAlive(3_000); // a socket over a dead link would hang until a timeout
    };
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
  }

  // -- listeners ---------------------------------------------------------------------------

  /** Listen for "event", "signal", "state", "welcome", "resync", "tokens", "error", "signedout". */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name)?.delete(fn);
  }

  _emit(name, value) {
    for (const fn of this._listeners.get(name) ?? []) {
      try {
        fn(value);
      } catch (error) {
        if (name !== "error") this._emit("error", error);
        else console.error(error);
      }
    }
  }

  /** "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "superseded" | "signedout" | "closed" */
  get state() {
    return this._state;
  }

  get userId() {
    return this.welcome?.userId ?? null;
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._emit("state", state);
  }

  // -- lifecycle ---------------------------------------------------------------------------

  /** Open the session; resolves with the first welcome, rejects if the server refuses it. */
  connect() {
    if (this._firstWelcome) return this._firstWelcome.promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
    this._firstWelcome = { promise, resolve, reject, done: false };
    this._run();
    return promise;
  }

  /** Close for good: pending acks are sent, pending requests fail. */
  close() {
    this._closed = true;
    clearTimeout(this._refreshTimer);
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    const socket = this._socket;
    if (socket) {
      this._flushAck();
      socket.ws.close(1000, "client closed");
      socket.finish({ code: 1000, reason: "client closed" });
    }
    this._wake?.();
    this._failPending(() => true, new DisconnectedError("client closed"));
    this._setState("closed");
  }

  /** Drop the socket as if the network had (for tests and "reconnect now" buttons). */
  drop() {
    this._socket?.abandon(1006, "dropped by the client");
  }

  async _run() {
    let attempt = 0;
    while (!this._closed) {
      if (globalThis.navigator?.onLine === false) {
        // No network: wait for the browser's "online" (or a while, in case it is wrong).
        this._setState("offline");
        await this._sleep(30_000);
        if (this._closed) return;
      }
      this._setState(this.connections ? "reconnecting" : "connecting");
      let result;
      try {
        await this._ensureFreshToken();
        result = await this._session();
      } catch (error) {
        if (error instanceof AuthError) return this._signedOut(error);
        result = { code: 1006, reason: String(error?.message ?? error), welcomed: false };
      }
      if (this._closed) return;
      this.closeCode = result.code;
      if (result.welcomed) attempt = 0;
      if (result.code === SUPERSEDED) {
        this._failPending(() => true, new DisconnectedError("another connection of this device took over"));
        this._setState("superseded");
        return;
      }
      const refused = result.error?.code;
      if (result.code === TOKEN_CLOSE || refused === "token_expired" || refused === "invalid_token") {
        // Never retry with the same token: get a new one first. A fresh token refused
        // as invalid too (a foreign key, a deleted user) ends the session.
        this._tokenRefusals = refused === "invalid_token" ? (this._tokenRefusals ?? 0) + 1 : 0;
        if (this._tokenRefusals > 1) {
          return this._signedOut(new AuthError("invalid_token", result.error.message));
        }
        try {
          await this._refreshTokens();
        } catch (error) {
          if (error instanceof AuthError) return this._signedOut(error);
          // otherwise (the server unreachable): back off, and refresh on the next round
        }
      } else if (result.welcomed) {
        this._tokenRefusals = 0;
      }
      if (!result.welcomed && this._firstWelcome && !this._firstWelcome.done && result.error &&
          !["token_expired", "invalid_token", "rate_limited"].includes(result.error.code)) {
        this._firstWelcome.done = true;
        this._firstWelcome.reject(result.error);
        this._setState("closed");
        return;
      }
      attempt += 1;
      // Full jitter, so that a fleet dropped together (a restart: 1012) does not come back together.
      const cap = Math.min(this.options.backoffCap, this.options.backoffBase * 2 ** attempt);
      const floor = result.code === TOO_MANY ? 5_000 : 0;
      this._setState(globalThis.navigator?.onLine === false ? "offline" : "reconnecting");
      await this._sleep(floor + Math.random() * cap);
    }
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self._wake === done) self._wake = null;
        resolve();
      }
      this._wake = done;
    });
  }

  _signedOut(error) {
    this._closed = true;
    this._failPending(() => true, error);
    if (this._firstWelcome && !this._firstWelcome.done) {
      this._firstWelcome.done = true;
      this._firstWelcome.reject(error);
    }
    this._setState("signedout");
    this._emit("signedout", error);
  }

  /** One socket, from open to close. Resolves with {code, reason, welcomed, error}. */
  _session() {
    return new Promise((resolve) => {
      const ws = new this._WebSocket(this.url, [PROTOCOL]);
      let welcomed = false;
      let error = null;
      let finished = false;
      let lastFrame = Date.now();
      let liveness = null;
      const handshake = setTimeout(() => socket.abandon(1006, "no welcome in time"), this.options.handshakeTimeout);
      const socket = {
        ws,
        finish: (result) => {
          if (finished) return;
          finished = true;
          clearTimeout(handshake);
          clearInterval(liveness);
          clearInterval(acker);
          ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
          if (this._socket === socket) {
            this._socket = null;
            this._ws = null;
          }
          // What the lost socket never answered is sent again after the next welcome if
          // that is safe, else it fails now.
          for (const p of [...this._pending.values()]) {
            if (p.sent && !p.resend) this._settle(p, new DisconnectedError());
            p.sent = false;
          }
          resolve({ welcomed, error, ...result });
        },
        abandon: (code, reason) => {
          // A dead link may take minutes to close: stop listening to it now.
          try {
            ws.close(4000, reason);
          } catch {}
          socket.finish({ code, reason });
        },
        seen: () => (lastFrame = Date.now()),
        idle: () => Date.now() - lastFrame,
      };
      const acker = setInterval(() => this._flushAck(), this.options.ackInterval);
      ws.onopen = () => {
        const hello = { type: "hello", token: this.accessToken, client: this.clientName };
        if (this.deviceId) hello.deviceId = this.deviceId;
        if (this.lastSeq !== null) hello.lastSeq = this.lastSeq;
        ws.send(JSON.stringify(hello));
      };
      ws.onerror = () => {}; // a close event follows
      ws.onclose = (e) => socket.finish({ code: e.code, reason: e.reason });
      ws.onmessage = (message) => {
        socket.seen();
        let frame;
        try {
          frame = JSON.parse(message.data);
        } catch {
          return this._emit("error", new MemorydError("invalid_frame", "the server sent a frame that is not JSON"));
        }
        if (welcomed) return this._onFrame(frame);
        if (frame.type === "error") {
          error = new MemorydError(frame.code, frame.message, frame);
          return;
        }
        if (frame.type !== "welcome") return;
        welcomed = true;
        clearTimeout(handshake);
        this._socket = socket;
        this._ws = ws;
        liveness = setInterval(() => {
          if (socket.idle() > this.options.idlePing) this._checkAlive(this.options.pingTimeout);
        }, Math.max(1000, this.options.idlePing / 3));
        this._onWelcome(frame);
      };
    });
  }

  _onWelcome(welcome) {
    this.welcome = welcome;
    this.deviceId = welcome.deviceId;
    this.connections += 1;
    // No state yet, a resync, or the server's log behind ours (a restore, protocol.md §12):
    // start at the head and let the caller fetch its state again.
    const resync = this.lastSeq === null || welcome.resync === true || welcome.headSeq < this.lastSeq;
    if (resync) this.lastSeq = welcome.headSeq;
    this._toAck = Math.max(this._toAck, this.lastSeq);
    this._setState("connected");
    this._emit("welcome", welcome);
    if (resync) this._queue(() => this._emitAsync("resync", welcome));
    this._scheduleRefresh();
    // Requests queued while away, and those the old socket never answered, in id order.
    for (const p of [...this._pending.values()].sort((a, b) => a.frame.id - b.frame.id)) {
      if (!p.sent && !p.waiting) this._transmit(p);
    }
    if (this._firstWelcome && !this._firstWelcome.done) {
      this._firstWelcome.done = true;
      this._firstWelcome.resolve(welcome);
    }
  }

  async _checkAlive(timeout) {
    const socket = this._socket;
    if (!socket || socket.checking) return;
    socket.checking = true;
    try {
      await this.request("ping", {}, { timeout, resend: false, queue: false });
    } catch (error) {
      if (error instanceof DisconnectedError || error.code === "timeout") {
        if (this._socket === socket) socket.abandon(1006, "no answer to ping");
      }
    } finally {
      socket.checking = false;
    }
  }

  // -- frames ------------------------------------------------------------------------------

  _onFrame(frame) {
    switch (frame.type) {
      case "event": {
        if (this.lastSeq !== null && frame.seq <= this.lastSeq) return; // seen already
        this.lastSeq = frame.seq;
        const event = { seq: frame.seq, event: frame.event, data: frame.data };
        this._queue(async () => {
          await this._emitAsync("event", event);
          this._toAck = Math.max(this._toAck, event.seq);
        });
        return;
      }
      case "reply": {
        const p = this._pending.get(frame.id);
        if (p) this._settle(p, null, frame.data);
        return;
      }
      case "error": {
        const error = new MemorydError(frame.code, frame.message, frame);
        const p = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
        if (!p) return this._emit("error", error);
        const wait = frame.retryAfter;
        // The socket's own request bucket: wait and send again. Memo's limits
        // (details.limit) mean the question was not stored: the caller decides.
        if (frame.code === "rate_limited" && typeof wait === "number" && !frame.details?.limit &&
            wait <= this.options.maxRetryAfter) {
          // Resends go out one per token of the server's bucket, not all at once: a burst
          // of refusals would close the socket (4008).
          const now = Date.now();
          const spacing = 1000 / (this.welcome?.limits?.requestsPerSecond || 10);
          const at = Math.max(now + wait * 1000, this._nextSlot ?? 0);
          this._nextSlot = at + spacing;
          p.sent = false;
          p.waiting = setTimeout(() => {
            p.waiting = null;
            if (this._ws) this._transmit(p);
          }, Math.max(10, at - now));
          return;
        }
        this._settle(p, error);
        return;
      }
      case "signal":
        this._emit("signal", { signal: frame.signal, data: frame.data });
        return;
      default:
        return; // be lenient: frame types this client does not know are ignored
    }
  }

  _queue(task) {
    this._chain = this._chain.then(task).catch((error) => this._emit("error", error));
  }

  async _emitAsync(name, value) {
    for (const fn of this._listeners.get(name) ?? []) {
      try {
        await fn(value);
      } catch (error) {
        this._emit("error", error);
      }
    }
  }

  _flushAck() {
    const ws = this._ws;
    if (!ws || this._toAck <= this._acked || ws.readyState !== 1) return;
    ws.send(JSON.stringify({ type: "ack", seq: this._toAck }));
    this._acked = this._toAck;
  }

  // -- requests ----------------------------------------------------------------------------

  /**
   * Send a request; resolves with the reply's data, rejects with MemorydError or
   * DisconnectedError. Made while disconnected, it waits for the next welcome.
   */
  request(type, params = {}, { timeout = this.options.requestTimeout, resend, queue = true } = {}) {
    if (this._closed) return Promise.reject(new DisconnectedError("client closed"));
    if (!queue && !this._ws) return Promise.reject(new DisconnectedError("not connected"));
    const id = ++this._ids;
    const frame = { ...params, type, id };
    const safe = resend ?? (RESENDABLE.has(type) || (type === "ai.ask" && !!params.clientMsgId));
    return new Promise((resolve, reject) => {
      const p = { frame, resolve, reject, resend: safe, sent: false, waiting: null, timer: null };
      p.timer = setTimeout(() => {
        this._settle(p, new MemorydError("timeout", `no answer to ${type} within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, p);
      if (this._ws) this._transmit(p);
    });
  }

  _transmit(p) {
    try {
      this._ws.send(JSON.stringify(p.frame));
      p.sent = true;
    } catch {
      p.sent = false; // the socket is closing: sent again after the next welcome, or failed
    }
  }

  _settle(p, error, data) {
    this._pending.delete(p.frame.id);
    clearTimeout(p.timer);
    clearTimeout(p.waiting);
    if (error) p.reject(error);
    else p.resolve(data);
  }

  _failPending(which, error) {
    for (const p of [...this._pending.values()]) if (which(p)) this._settle(p, error);
  }

  /** A fresh clientMsgId: a send keeps it across every resend. */
  newClientMsgId() {
    return randomId();
  }

  /** message.send with a clientMsgId (given, or new); resent safely across drops. */
  sendMessage(memoryId, content, extra = {}) {
    const clientMsgId = extra.clientMsgId ?? this.newClientMsgId();
    return this.request("message.send", { memoryId, content, ...extra, clientMsgId });
  }

  /** A typing signal for the user's other devices (no answer; dropped while offline). */
  typing(memoryId) {
    const ws = this._ws;
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "typing", memoryId }));
  }

  // -- tokens ------------------------------------------------------------------------------

  _expiresIn() {
    const claims = this.accessToken ? tokenClaims(this.accessToken) : null;
    if (!claims?.exp) return Infinity;
    return { left: claims.exp * 1000 - Date.now(), life: (claims.exp - (claims.iat ?? claims.exp)) * 1000 };
  }

  async _ensureFreshToken() {
    const exp = this._expiresIn();
    if (exp !== Infinity && exp.left < 2_000 && (this.refreshToken || this.options.refresh)) {
      await this._refreshTokens();
    }
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const exp = this._expiresIn();
    if (exp === Infinity || !(this.refreshToken || this.options.refresh)) return;
    const margin = Math.min(this.options.refreshMargin * 1000, exp.life / 4);
    this._refreshTimer = setTimeout(() => this.refreshNow().catch(() => {}), Math.max(0, exp.left - margin));
  }

  /**
   * Get a new access token (options.refresh, or POST /api/auth/refresh) and hand it to
   * the open socket with auth.refresh. Concurrent calls share one refresh.
   */
  async refreshNow() {
    try {
      await this._refreshTokens();
    } catch (error) {
      if (error instanceof AuthError) this._signedOut(error);
      else this._scheduleRetry();
      throw error;
    }
    if (this._ws) {
      try {
        await this.request("auth.refresh", { accessToken: this.accessToken }, { queue: false });
      } catch (error) {
        if (!(error instanceof DisconnectedError)) this._emit("error", error);
        // Disconnected: the next hello carries the new token anyway.
      }
    }
  }

  _scheduleRetry() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = setTimeout(() => this.refreshNow().catch(() => {}), 5_000);
  }

  _refreshTokens() {
    if (!this._refreshing) {
      this._refreshing = (async () => {
        try {
          const tokens = this.options.refresh
            ? await this.options.refresh({ accessToken: this.accessToken, refreshToken: this.refreshToken })
            : await this._restRefresh();
          this.accessToken = tokens.accessToken;
          if (tokens.refreshToken) this.refreshToken = tokens.refreshToken;
          this._emit("tokens", { ...tokens, accessToken: this.accessToken, refreshToken: this.refreshToken });
          this._scheduleRefresh();
          return tokens;
        } finally {
          this._refreshing = null;
        }
      })();
    }
    return this._refreshing;
  }

  async _restRefresh() {
    if (!this.refreshToken) throw new AuthError("no_refresh_token", "the session expired: sign in again");
    const response = await this._fetch(new URL("/api/auth/refresh", this.baseUrl), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refreshToken: this.refreshToken }),
    });
    const body = await response.json().catch(() => null);
    if (response.status === 401) {
      throw new AuthError(body?.error?.code ?? "unauthorized", body?.error?.message ?? "the session expired");
    }
    if (!response.ok) throw restError(response, body);
    return { accessToken: body.accessToken, refreshToken: body.refreshToken, user: body.user };
  }

  // -- REST --------------------------------------------------------------------------------

  /**
   * A REST call with the session's token; an expired token is refreshed and the call
   * made once more. Resolves with the JSON body (null for 204), rejects with MemorydError.
   */
  async api(path, { method = "GET", query, body, headers = {}, signal } = {}) {
    const url = new URL(path, this.baseUrl);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value === undefined || value === null || value === "") continue;
      for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, String(v));
    }
    const send = () => {
      const all = { ...headers };
      if (this.accessToken) all.Authorization = `Bearer ${this.accessToken}`;
      let payload = body;
      if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob)) {
        all["Content-Type"] ??= "application/json";
        payload = JSON.stringify(body);
      }
      return this._fetch(url, { method, headers: all, body: payload, signal });
    };
    await this._ensureFreshToken();
    let response = await send();
    let data = await readJson(response);
    if (response.status === 401 && data?.error?.code === "token_expired") {
      await this._refreshTokens();
      response = await send();
      data = await readJson(response);
    }
    if (!response.ok) throw restError(response, data);
    return data;
  }
}

async function readJson(response) {
  if (response.status === 204) return null;
  return response.json().catch(() => null);
}

function restError(response, body) {
  const e = body?.error;
  const retry = Number(response.headers.get("Retry-After"));
  return new MemorydError(e?.code ?? "http_error", e?.message ?? `HTTP ${response.status}`, {
    status: response.status,
    details: e?.details ?? null,
    retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null,
  });
}

/** Sign in over REST: resolves with {user, accessToken, refreshToken}. */
export async function login(email, password, { baseUrl = defaultBaseUrl(), rememberMe = false } = {}) {
  return authCall(baseUrl, "/api/auth/login", { email, password, rememberMe });
}

/** Register over REST: resolves with {user, accessToken, refreshToken}. */
export async function register(fields, { baseUrl = defaultBaseUrl() } = {}) {
  return authCall(baseUrl, "/api/auth/register", fields);
}

async function authCall(baseUrl, path, body) {
  const response = await fetch(new URL(path, baseUrl), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await readJson(response);
  if (!response.ok) throw restError(response, data);
  return data;
}
