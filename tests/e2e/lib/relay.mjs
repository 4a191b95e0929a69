// The relay half of the e2e client: HTTP (global fetch) and WebSocket (ws)
// exactly as docs/api.md describes. Nothing here knows about Signal.
import WebSocket from 'ws';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';

export const RELAY_URL = (process.env.RELAY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
/** ws://HOST/ws locally; override with RELAY_WS_URL (e.g. a wss://…/<stage> URL). */
export const RELAY_WS_URL = (process.env.RELAY_WS_URL || RELAY_URL.replace(/^http/i, 'ws') + '/ws').replace(/\/+$/, '');

/**
 * The anonymous provisioning socket (a device being linked): RELAY_PROVISIONING_URL when set;
 * else `RELAY_WS_URL?provisioning=1` when RELAY_WS_URL is set (the AWS form, which the local
 * gateway accepts too); else ws://HOST/ws/provisioning derived from RELAY_URL.
 */
export const RELAY_PROVISIONING_URL = process.env.RELAY_PROVISIONING_URL
  || (process.env.RELAY_WS_URL
    ? `${process.env.RELAY_WS_URL.replace(/\/+$/, '')}?provisioning=1`
    : RELAY_URL.replace(/^http/i, 'ws') + '/ws/provisioning');

export const HTTP_TIMEOUT_MS = Number(process.env.RELAY_HTTP_TIMEOUT_MS || 20000);
export const WS_TIMEOUT_MS = Number(process.env.RELAY_WS_TIMEOUT_MS || 15000);

// ---------------------------------------------------------------- HTTP

export class ApiError extends Error {
  constructor(method, path, res) {
    const code = res.json?.error?.code;
    super(`${method} ${path} -> ${res.status}${code ? ` ${code}` : ''}: ${res.text.slice(0, 300)}`);
    this.status = res.status;
    this.code = code;
    this.res = res;
  }
}

/**
 * One HTTP request. Returns { status, headers, json, text } whatever the status.
 * A 429 is retried (honouring Retry-After, bounded), as a real client would.
 */
export async function request(method, path, { body, token, rawBody, retries429 = 5 } = {}) {
  const headers = {};
  if (body !== undefined || rawBody !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(RELAY_URL + path, {
      method,
      headers,
      body: rawBody !== undefined ? rawBody : body !== undefined ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    if (res.status === 429 && attempt < retries429) {
      const ra = Number(res.headers.get('retry-after'));
      const waitS = Number.isFinite(ra) && ra > 0 ? Math.min(ra, 5) : 1;
      await sleep(waitS * 1000);
      continue;
    }
    return { status: res.status, headers: res.headers, json, text };
  }
}

/** Like request() but throws ApiError unless the status is 2xx; returns the JSON body. */
export async function call(method, path, opts) {
  const res = await request(method, path, opts);
  if (res.status < 200 || res.status > 299) throw new ApiError(method, path, res);
  return res.json;
}

/** Asserts-free helper: the API error code of a response, or undefined. */
export function errorCode(res) {
  return res?.json?.error?.code;
}

/** Waits for GET /healthz to answer 200 (up to `timeoutMs`). */
export async function waitForRelay(timeoutMs = Number(process.env.RELAY_WAIT_MS || 20000)) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(RELAY_URL + '/healthz', { signal: AbortSignal.timeout(3000) });
      if (res.status === 200) return;
      last = `status ${res.status}`;
    } catch (e) {
      last = e.cause?.code || e.message;
    }
    await sleep(500);
  }
  throw new Error(`relay at ${RELAY_URL} is not healthy after ${timeoutMs} ms (${last}); start it with ./local/up or set RELAY_URL`);
}

// ---------------------------------------------------------------- WebSocket

export class WsHandshakeError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * A connection to the relay. Incoming `messages` frames (live deliveries and
 * fetch results) are collected in `this.inbox` in arrival order; every other
 * frame answers a pending request (sent/error by id, drained/inbox/pong by type).
 */
export class RelaySocket {
  /**
   * `ack: true` opens the connection in ack mode (`&ack=1`, issue 14): what the relay writes to
   * it stays in flight until acknowledged with ack(). Without it, fire-and-forget (as before).
   */
  static async connect(token, { timeoutMs = WS_TIMEOUT_MS, ack = false } = {}) {
    const url = `${RELAY_WS_URL}?token=${encodeURIComponent(token)}${ack ? '&ack=1' : ''}`;
    const s = await this.open(url, { timeoutMs });
    s.ackMode = Boolean(ack);
    return s;
  }

  /** Opens a WebSocket to `url`; resolves with an instance of the class it is called on. */
  static open(url, { timeoutMs = WS_TIMEOUT_MS } = {}) {
    const Cls = this;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeoutMs });
      let settled = false;
      ws.once('open', () => {
        settled = true;
        resolve(new Cls(ws));
      });
      ws.once('unexpected-response', (_req, res) => {
        settled = true;
        res.resume();
        ws.terminate();
        reject(new WsHandshakeError(res.statusCode, `WebSocket handshake rejected with ${res.statusCode}`));
      });
      ws.once('error', (e) => {
        if (settled) return;
        settled = true;
        const m = /Unexpected server response: (\d+)/.exec(e.message);
        reject(m ? new WsHandshakeError(Number(m[1]), e.message) : e);
      });
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.inbox = []; // envelopes {id, from, sent_at, body}
    this.frames = []; // every frame received, for debugging/assertions
    this.unmatched = []; // non-message frames nobody waited for
    this.waiters = []; // {match(frame), resolve, reject, timer}
    this.inboxWaiters = [];
    this.closed = false;
    this.closeInfo = null;
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('close', (code, reason) => {
      this.closed = true;
      this.closeInfo = { code, reason: reason.toString() };
      const err = new Error(`WebSocket closed (${code} ${reason})`);
      for (const w of this.waiters.splice(0)) w.fail(err);
      for (const w of this.inboxWaiters.splice(0)) w.fail(err);
    });
    ws.on('error', () => {
      /* surfaced through close */
    });
  }

  onFrame(data, isBinary) {
    let f;
    try {
      if (isBinary) throw new Error('binary frame');
      f = JSON.parse(data.toString());
    } catch (e) {
      f = { type: '__unparseable__', raw: data.toString(), error: e.message };
    }
    this.frames.push(f);
    if (f.type === 'messages') {
      for (const env of f.messages || []) this.inbox.push(env);
      this.checkInboxWaiters();
      return;
    }
    const i = this.waiters.findIndex((w) => w.match(f));
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1);
      w.ok(f);
    } else {
      this.unmatched.push(f);
    }
  }

  waitFrame(match, what, timeoutMs = WS_TIMEOUT_MS) {
    const j = this.unmatched.findIndex(match);
    if (j >= 0) return Promise.resolve(this.unmatched.splice(j, 1)[0]);
    if (this.closed) return Promise.reject(new Error(`WebSocket closed while waiting for ${what}`));
    return new Promise((resolve, reject) => {
      const w = {
        match,
        ok: (f) => {
          clearTimeout(w.timer);
          resolve(f);
        },
        fail: (e) => {
          clearTimeout(w.timer);
          reject(e);
        },
      };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; unmatched frames: ${JSON.stringify(this.unmatched).slice(0, 500)}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  sendFrame(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  /**
   * {"action":"send"}; resolves with the `sent` reply or the `error` frame of
   * that id (never rejects on an error frame: callers assert on it).
   */
  async send(to, body, { id = randomUUID(), onlineOnly } = {}) {
    const frame = { action: 'send', to, id, body };
    if (onlineOnly) frame.online_only = true;
    const reply = this.waitFrame((f) => (f.type === 'sent' || f.type === 'error') && f.id === id, `reply to send ${id}`);
    this.sendFrame(frame);
    return reply;
  }

  /**
   * The multi-device form of send: `messages` = [{device_id, registration_id, body}, …].
   * Resolves with the `sent` reply or the `error` frame of that id.
   */
  async sendMessages(to, messages, { id = randomUUID(), onlineOnly } = {}) {
    const frame = { action: 'send', to, id, messages };
    if (onlineOnly) frame.online_only = true;
    const reply = this.waitFrame((f) => (f.type === 'sent' || f.type === 'error') && f.id === id, `reply to send ${id}`);
    this.sendFrame(frame);
    return reply;
  }

  /** Like send() but throws unless the reply is `sent`. */
  async sendOk(to, body, opts) {
    const r = await this.send(to, body, opts);
    if (r.type !== 'sent') throw new Error(`send failed: ${JSON.stringify(r)}`);
    return r;
  }

  /**
   * {"action":"fetch"}: waits for `drained`, then returns (and removes) every
   * envelope collected so far, including any that arrived live before it.
   */
  async fetch() {
    const done = this.waitFrame((f) => f.type === 'drained' || (f.type === 'error' && !f.id), 'drained');
    this.sendFrame({ action: 'fetch' });
    const f = await done;
    if (f.type === 'error') throw new Error(`fetch failed: ${JSON.stringify(f)}`);
    return this.inbox.splice(0);
  }

  /** {"action":"list"} → pending count. */
  async list() {
    const done = this.waitFrame((f) => f.type === 'inbox' || (f.type === 'error' && !f.id), 'inbox');
    this.sendFrame({ action: 'list' });
    const f = await done;
    if (f.type === 'error') throw new Error(`list failed: ${JSON.stringify(f)}`);
    return f.pending;
  }

  async ping() {
    const done = this.waitFrame((f) => f.type === 'pong', 'pong');
    this.sendFrame({ action: 'ping' });
    return done;
  }

  checkInboxWaiters() {
    for (const w of [...this.inboxWaiters]) {
      const env = w.take();
      if (env) {
        this.inboxWaiters.splice(this.inboxWaiters.indexOf(w), 1);
        w.ok(env);
      }
    }
  }

  /**
   * Waits until `n` envelopes matching `filter` have arrived (live or via
   * fetch), removes them from the inbox and returns them in arrival order.
   */
  nextMessages(n = 1, { filter = () => true, timeoutMs = WS_TIMEOUT_MS } = {}) {
    const take = () => {
      const idx = [];
      for (let i = 0; i < this.inbox.length && idx.length < n; i++) if (filter(this.inbox[i])) idx.push(i);
      if (idx.length < n) return null;
      const out = idx.map((i) => this.inbox[i]);
      for (const i of idx.reverse()) this.inbox.splice(i, 1);
      return out;
    };
    const now = take();
    if (now) return Promise.resolve(now);
    if (this.closed) return Promise.reject(new Error('WebSocket closed while waiting for messages'));
    return new Promise((resolve, reject) => {
      const w = {
        take,
        ok: (v) => {
          clearTimeout(w.timer);
          resolve(v);
        },
        fail: (e) => {
          clearTimeout(w.timer);
          reject(e);
        },
      };
      w.timer = setTimeout(() => {
        this.inboxWaiters.splice(this.inboxWaiters.indexOf(w), 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${n} message(s); inbox holds ${this.inbox.length}`));
      }, timeoutMs);
      this.inboxWaiters.push(w);
    });
  }

  /**
   * {"action":"ack","id","ids"} (ack mode, issue 14): acknowledges envelopes by their `id`.
   * Resolves with the `acked` reply (`acked`: how many were in flight and are now deleted) or the
   * `error` frame of that id (never rejects on an error frame). `id: null` sends no frame id (the
   * reply's id is then null).
   */
  async ack(ids, { id = randomUUID() } = {}) {
    const frame = { action: 'ack', ids };
    if (id !== null) frame.id = id;
    const want = id === null ? null : id;
    const reply = this.waitFrame(
      (f) => (f.type === 'acked' || f.type === 'error') && (f.id ?? null) === want,
      `reply to ack ${id}`,
    );
    this.sendFrame(frame);
    return reply;
  }

  /**
   * Drops the connection abruptly, as a crashed app or a lost network does: no Close frame
   * (ws.terminate destroys the TCP socket). Resolves once the socket is closed here.
   */
  async terminate() {
    if (this.closed) return;
    const done = new Promise((resolve) => this.ws.once('close', resolve));
    this.ws.terminate();
    await done;
  }

  /** Resolves with { code, reason } once the server has closed the socket (rejects after timeoutMs). */
  waitClosed(timeoutMs = WS_TIMEOUT_MS) {
    if (this.closed) return Promise.resolve(this.closeInfo);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs);
      this.ws.once('close', () => {
        clearTimeout(t);
        resolve(this.closeInfo);
      });
    });
  }

  /** Closes the socket and waits for the close to complete. */
  async close() {
    if (this.closed) return;
    await new Promise((resolve) => {
      const t = setTimeout(() => {
        this.ws.terminate();
        resolve();
      }, 3000);
      this.ws.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.ws.close(1000, 'bye');
    });
  }
}

/**
 * The anonymous provisioning socket of a device being linked: `provision` → its one-time
 * address; the primary's opaque provisioning message is pushed to it, then the relay closes it.
 */
export class ProvisioningSocket extends RelaySocket {
  static connect({ url = RELAY_PROVISIONING_URL, timeoutMs = WS_TIMEOUT_MS } = {}) {
    return this.open(url, { timeoutMs });
  }

  /** {"action":"provision"} → the `provisioning_address` frame (or throws on an error frame). */
  async provision({ id = randomUUID() } = {}) {
    const done = this.waitFrame(
      (f) => f.type === 'provisioning_address' || (f.type === 'error' && (f.id === id || f.id == null)),
      'provisioning_address',
    );
    this.sendFrame({ action: 'provision', id });
    const f = await done;
    if (f.type === 'error') throw new Error(`provision failed: ${JSON.stringify(f)}`);
    return f;
  }

  /** Waits for the pushed {"type":"provisioning_message","body"} frame. */
  provisioningMessage(timeoutMs = WS_TIMEOUT_MS) {
    return this.waitFrame((f) => f.type === 'provisioning_message', 'provisioning_message', timeoutMs);
  }
}
