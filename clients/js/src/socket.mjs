// WebSocket to the relay (ws): a device's connection (RelaySocket) and the anonymous provisioning
// socket of a device being linked (ProvisioningSocket), exactly as docs/api.md §6 describes.
// Nothing here knows about Signal.
import WebSocket from 'ws';
import { randomUUID } from 'node:crypto';
import { RELAY_WS_URL, RELAY_PROVISIONING_URL, WS_TIMEOUT_MS, relayUrls } from './http.mjs';

const FRAMES_KEPT = 200;
const UNMATCHED_KEPT = 1000;

// ---------------------------------------------------------------- WebSocket

/** A socket closed before the awaited reply (or a frame sent on a closed socket). */
export class SocketClosedError extends Error {
  constructor(message) {
    super(message);
    this.code = 'socket_closed';
  }
}

export class WsHandshakeError extends Error {
  constructor(status, message, { retryAfter } = {}) {
    super(message);
    this.status = status;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

/**
 * A connection to the relay. Incoming `messages` frames (live deliveries and
 * fetch results) are collected in `this.inbox` in arrival order; every other
 * frame answers a pending request (sent/error by id, drained/inbox/pong by type).
 */
export class RelaySocket {
  /**
   * `ack: true` opens the connection in ack mode (`&ack=1`, docs/api.md §6.9): what the relay
   * writes to it stays in flight until acknowledged with ack(). Without it, fire-and-forget.
   */
  static async connect(token, { timeoutMs = WS_TIMEOUT_MS, ack = false, url, wsUrl } = {}) {
    const base = wsUrl || (url ? relayUrls(url).wsUrl : RELAY_WS_URL);
    const sep = base.includes('?') ? '&' : '?';
    const full = `${base}${sep}token=${encodeURIComponent(token)}${ack ? '&ack=1' : ''}`;
    const s = await this.open(full, { timeoutMs });
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
        const ra = Number(res.headers?.['retry-after']);
        reject(new WsHandshakeError(res.statusCode, `WebSocket handshake rejected with ${res.statusCode}`, {
          retryAfter: Number.isFinite(ra) && ra > 0 ? ra : undefined,
        }));
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
    // Bounded: a socket of the high-level client lives for days.
    this.frames = []; // the last FRAMES_KEPT frames received, for debugging
    this.unmatched = []; // the last UNMATCHED_KEPT non-message frames nobody waited for (yet)
    this.waiters = []; // {match(frame), resolve, reject, timer}
    this.inboxWaiters = [];
    this.closed = false;
    this.closeInfo = null;
    // Optional hooks (the high-level client): onEnvelopes(envelopes) takes every `messages`
    // frame's envelopes instead of the inbox; onClose(closeInfo) runs once the socket is closed.
    this.onEnvelopes = null;
    this.onClose = null;
    // onPresence(frame) takes the `presence` frames the relay pushes (docs/api.md §6.10); without
    // it they are kept with the unmatched frames.
    this.onPresence = null;
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('close', (code, reason) => {
      this.closed = true;
      this.closeInfo = { code, reason: reason.toString() };
      const err = new SocketClosedError(`WebSocket closed (${code} ${reason})`);
      for (const w of this.waiters.splice(0)) w.fail(err);
      for (const w of this.inboxWaiters.splice(0)) w.fail(err);
      if (this.onClose) this.onClose(this.closeInfo);
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
    if (this.frames.length > FRAMES_KEPT * 2) this.frames.splice(0, this.frames.length - FRAMES_KEPT);
    if (f.type === 'messages') {
      if (this.onEnvelopes) {
        this.onEnvelopes(f.messages || []);
        return;
      }
      for (const env of f.messages || []) this.inbox.push(env);
      this.checkInboxWaiters();
      return;
    }
    if (f.type === 'presence' && this.onPresence) {
      this.onPresence(f);
      return;
    }
    const i = this.waiters.findIndex((w) => w.match(f));
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1);
      w.ok(f);
    } else {
      this.unmatched.push(f);
      if (this.unmatched.length > UNMATCHED_KEPT) this.unmatched.shift();
    }
  }

  waitFrame(match, what, timeoutMs = WS_TIMEOUT_MS) {
    const j = this.unmatched.findIndex(match);
    if (j >= 0) return Promise.resolve(this.unmatched.splice(j, 1)[0]);
    if (this.closed) return Promise.reject(new SocketClosedError(`WebSocket closed while waiting for ${what}`));
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

  /** {"action":"renew","token"} → the `renewed` frame, or the `error` frame (never rejects on one). */
  async renew(token, { id = randomUUID() } = {}) {
    return this.request(
      { action: 'renew', id, token },
      (f) => f.type === 'renewed' || (f.type === 'error' && (f.id === id || f.id == null)),
      'reply to renew',
    );
  }

  /**
   * {"action":"send"}; resolves with the `sent` reply or the `error` frame of
   * that id (never rejects on an error frame: callers assert on it).
   */
  async send(to, body, { id = randomUUID(), onlineOnly } = {}) {
    const frame = { action: 'send', to, id, body };
    if (onlineOnly) frame.online_only = true;
    return this.request(frame, (f) => (f.type === 'sent' || f.type === 'error') && f.id === id, `reply to send ${id}`);
  }

  /**
   * The multi-device form of send: `messages` = [{device_id, registration_id, body}, …].
   * Resolves with the `sent` reply or the `error` frame of that id.
   */
  async sendMessages(to, messages, { id = randomUUID(), onlineOnly } = {}) {
    const frame = { action: 'send', to, id, messages };
    if (onlineOnly) frame.online_only = true;
    return this.request(frame, (f) => (f.type === 'sent' || f.type === 'error') && f.id === id, `reply to send ${id}`);
  }

  /**
   * The group form of send: one `body` for every member device of `groupId`, `devices` = the
   * sender's view of them ({ user_id: [{device_id, registration_id}, …] }). Resolves with the
   * `sent` reply or the `error` frame of that id.
   */
  async sendGroup(groupId, body, devices, { id = randomUUID(), onlineOnly } = {}) {
    const frame = { action: 'send', id, group_id: groupId, body, devices };
    if (onlineOnly) frame.online_only = true;
    return this.request(frame, (f) => (f.type === 'sent' || f.type === 'error') && f.id === id, `reply to send ${id}`);
  }

  /**
   * Sends `frame` and resolves with the first frame `match` accepts (rejects when the socket is
   * closed first, or after `timeoutMs`).
   */
  request(frame, match, what, timeoutMs = WS_TIMEOUT_MS) {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new SocketClosedError(`WebSocket is not open (${what})`));
    }
    const reply = this.waitFrame(match, what, timeoutMs);
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
   * {"action":"ack","id","ids"} (ack mode): acknowledges envelopes by their `id`.
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
   * A quiet `ack` (`"quiet": true`, docs/api.md §6.3): deletes the envelopes and waits for
   * nothing; only a failure is answered (an `error` frame with the returned frame id).
   */
  quietAck(ids, { id = randomUUID() } = {}) {
    this.sendFrame({ action: 'ack', id, ids, quiet: true });
    return id;
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
  /**
   * `provisioningUrl`: the socket's full URL; `url`: the relay's base URL (the provisioning URL
   * derived from it); default RELAY_PROVISIONING_URL.
   */
  static connect({ url, provisioningUrl, timeoutMs = WS_TIMEOUT_MS } = {}) {
    const target = provisioningUrl || (url ? relayUrls(url).provisioningUrl : RELAY_PROVISIONING_URL);
    return this.open(target, { timeoutMs });
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
