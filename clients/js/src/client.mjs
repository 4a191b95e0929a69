// RelayClient: the application-level client. One device of one account, kept in a store
// (store.mjs): it registers or reopens the account, keeps a WebSocket in ack mode open
// (reconnects with backoff, renews its token before it expires, refills prekeys), sends text or
// bytes to a person (every device of theirs, a copy to one's own other devices, mismatched/stale
// recovery, idempotent retries) and reports what arrives as 'message' events. It links devices
// too (docs/api.md §3.5). Built on RelayDevice (devices.mjs): one client implementation.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { S, b64, unb64, deviceAddress, MSG_PREKEY } from './signal.mjs';
import { call, RELAY_URL, WS_TIMEOUT_MS } from './http.mjs';
import { RelaySocket, ProvisioningSocket, WsHandshakeError, SocketClosedError } from './socket.mjs';
import { RelayDevice } from './devices.mjs';
import { sealProvisioningMessage, openProvisioningMessage } from './provisioning.mjs';
import {
  RelayError,
  AuthError,
  UnknownUserError,
  RateLimitedError,
  ServerUnavailableError,
  MismatchedDevicesError,
  ApiError,
  errorFromFrame,
} from './errors.mjs';

export const DEFAULT_REFILL = Object.freeze({ below: 20, oneTime: 100, kyberBelow: 5, kyber: 20 });
// Signal's schedule: a new signed prekey (and Kyber last-resort prekey) every 2 days; retired
// ones kept 30 days, as long as the relay keeps a message.
export const DEFAULT_ROTATE = Object.freeze({ everyMs: 2 * 86_400_000, keepMs: 30 * 86_400_000 });
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const STORE_FORMAT = 'relay-client';
const PROCESSED_KEEP = 2000; // envelope ids remembered for deduplication (ack-mode redeliveries)
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const PING_EVERY_MS = 45_000;
const OWN_DEVICES_TTL_MS = 30_000;
// Acknowledgements are gathered (docs/api.md §6.9): one quiet ack once the oldest has waited
// this long, or once a frame's worth of ids (100) waits.
const ACK_GATHER_MS = 20;
const ACK_MAX_IDS = 100;

const utf8 = new TextDecoder();
const b64url = (bytes) => Buffer.from(bytes).toString('base64url');

function defaultUrl(url) {
  return String(url || process.env.RELAY_URL || RELAY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
}

/** `rotate` options over the defaults; intervals must be positive numbers of milliseconds. */
function rotateOptions(rotate = {}) {
  const r = { ...DEFAULT_ROTATE, ...rotate };
  for (const k of ['everyMs', 'keepMs']) {
    if (typeof r[k] !== 'number' || !(r[k] > 0)) throw new TypeError(`rotate.${k} must be a positive number of milliseconds`);
  }
  return Object.freeze(r);
}

/** Network failures of the WebSocket handshake as typed errors. */
function handshakeError(e, url) {
  if (e instanceof RelayError) return e;
  if (e instanceof WsHandshakeError) {
    if (e.status === 401) return new AuthError(`WebSocket handshake refused (401): the session is over`, { cause: e });
    if (e.status === 429) return new RateLimitedError(`rate limited, retry in ${e.retryAfter ?? 1} s (WebSocket handshake)`, { retryAfter: e.retryAfter ?? 1, cause: e });
    if (e.status >= 500) return new ServerUnavailableError(`WebSocket handshake refused (${e.status})`, { cause: e, status: e.status });
    return new ApiError(`WebSocket handshake refused (${e.status})`, { status: e.status, code: 'handshake_refused', cause: e });
  }
  return new ServerUnavailableError(`cannot reach the relay at ${url} (${e.code || e.message})`, { code: 'unreachable', status: 0, cause: e });
}

/** A simple async mutex: Signal state (sessions, keys) is changed by one operation at a time. */
class Lock {
  constructor() {
    this.tail = Promise.resolve();
  }
  run(fn) {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => {});
    return p;
  }
}

/** `address.publicKey` (base64url) → { address, publicKey } or throws RelayError('invalid_link_string'). */
export function parseLinkString(linkString) {
  const s = String(linkString ?? '').trim();
  const m = /^([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43,45})$/.exec(s);
  const bad = () => new RelayError('not a link string (expected what `startLinking` printed: ADDRESS.KEY)', { code: 'invalid_link_string' });
  if (!m) throw bad();
  const key = Buffer.from(m[2], 'base64url');
  if (key.length !== 33 || key[0] !== 0x05) throw bad();
  try {
    return { address: m[1], publicKey: S.PublicKey.deserialize(new Uint8Array(key)) };
  } catch {
    throw bad();
  }
}

export class RelayClient extends EventEmitter {
  /**
   * Opens the account kept in `store` (logs in with its refresh token, or the password), or
   * registers `username` with fresh keys when the store is empty and `register` is true.
   */
  static async open({
    url,
    store,
    username,
    password,
    register = true,
    ack = true,
    refill = {},
    rotate = {},
    savePassword = false,
    sendTimeoutMs = 30_000,
    hooks = {},
  } = {}) {
    if (!store || typeof store.load !== 'function') throw new TypeError('RelayClient.open needs a store (FileStore or MemoryStore)');
    await store.acquire?.();
    try {
      return await RelayClient.openLocked({ url, store, username, password, register, ack, refill, rotate, savePassword, sendTimeoutMs, hooks });
    } catch (e) {
      await store.release?.().catch(() => {});
      throw e;
    }
  }

  static async openLocked({ url, store, username, password, register, ack, refill, rotate, savePassword, sendTimeoutMs, hooks }) {
    const base = defaultUrl(url);
    const refillOpts = { ...DEFAULT_REFILL, ...refill };
    const doc = await store.load();
    const common = { url: base, store, ack, refill: refillOpts, rotate: rotateOptions(rotate), savePassword, sendTimeoutMs, hooks };
    if (doc?.account) {
      if (doc.format !== STORE_FORMAT) throw new RelayError(`${store} does not hold a relay-client account`, { code: 'store_mismatch' });
      if (username && String(username).toLowerCase() !== doc.account.username) {
        throw new RelayError(`${store} holds the account ${doc.account.username}, not ${username}`, { code: 'store_mismatch' });
      }
      const device = new RelayDevice('me', {
        url: base,
        state: doc.signal,
        username: doc.account.username,
        retries429: 0,
      });
      device.password = null;
      device.refreshToken = doc.refreshToken ?? null;
      const client = new RelayClient({ ...common, device, password: password ?? doc.password ?? null, doc });
      await client.refreshTokens();
      return client;
    }
    if (!register) {
      throw new UnknownUserError(`${store} holds no account (and register is false)`, { code: 'no_account' });
    }
    if (!username || !password) throw new RelayError('registering needs a username and a password', { code: 'invalid_request', status: 400 });
    const device = new RelayDevice('me', {
      url: base,
      username: String(username).toLowerCase(),
      password,
      oneTimePreKeys: Math.min(100, refillOpts.oneTime),
      kyberOneTimePreKeys: Math.min(100, refillOpts.kyber),
      retries429: 0,
    });
    await device.register(); // UsernameTakenError, RateLimitedError, ServerUnavailableError, …
    const client = new RelayClient({ ...common, device, password, doc: null });
    await client.persist();
    await client.login();
    return client;
  }

  /**
   * Starts linking a new device to an existing account: opens the provisioning socket and returns
   * { linkString, done, cancel }. `linkString` goes to the primary (`linkDevice`); `done` resolves
   * to the RelayClient of the new device (not connected yet) once the primary has linked it.
   */
  static async startLinking({ url, store, ack = true, refill = {}, rotate = {}, sendTimeoutMs = 30_000, hooks = {} } = {}) {
    if (!store || typeof store.load !== 'function') throw new TypeError('RelayClient.startLinking needs a store');
    const base = defaultUrl(url);
    await store.acquire?.();
    const existing = await store.load().catch(async (e) => {
      await store.release?.().catch(() => {});
      throw e;
    });
    if (existing?.account) {
      await store.release?.().catch(() => {});
      throw new RelayError(`${store} already holds the account ${existing.account.username}`, { code: 'store_in_use' });
    }
    const refillOpts = { ...DEFAULT_REFILL, ...refill };
    const rotateOpts = rotateOptions(rotate);
    const ephemeral = S.PrivateKey.generate();
    let prov;
    try {
      prov = await ProvisioningSocket.connect({ url: base });
    } catch (e) {
      await store.release?.().catch(() => {});
      throw handshakeError(e, base);
    }
    let addr;
    try {
      addr = await prov.provision();
    } catch (e) {
      await prov.close().catch(() => {});
      await store.release?.().catch(() => {});
      throw new ServerUnavailableError(`provisioning failed: ${e.message}`, { cause: e });
    }
    const linkString = `${addr.address}.${b64url(ephemeral.getPublicKey().serialize())}`;
    const done = (async () => {
      try {
        let msg;
        try {
          msg = await prov.provisioningMessage((addr.expires_in ?? 600) * 1000);
        } catch (e) {
          throw new RelayError(`no provisioning message arrived: ${e.message}`, { code: 'link_failed', cause: e });
        }
        const payload = openProvisioningMessage(ephemeral, unb64(msg.body), { address: addr.address });
        const identity = S.IdentityKeyPair.deserialize(unb64(payload.identity_key_pair));
        const device = new RelayDevice('me', {
          url: base,
          identity,
          username: payload.username,
          oneTimePreKeys: Math.min(100, refillOpts.oneTime),
          kyberOneTimePreKeys: Math.min(100, refillOpts.kyber),
          retries429: 0,
        });
        device.password = null;
        const res = await device.postLink(payload.code);
        if (res?.user_id !== payload.user_id) throw new RelayError(`POST /v1/devices: user_id ${res?.user_id} is not ${payload.user_id}`, { code: 'link_failed' });
        device.setUserId(res.user_id, res.device_id);
        const client = new RelayClient({ url: base, store, ack, refill: refillOpts, rotate: rotateOpts, sendTimeoutMs, hooks, device, password: null, doc: null });
        await client.applyTokens(res);
        return client;
      } catch (e) {
        await store.release?.().catch(() => {});
        throw e;
      } finally {
        await prov.close().catch(() => {});
      }
    })();
    done.catch(() => {}); // the caller awaits it; no unhandled rejection when they stop waiting
    return { linkString, address: addr.address, done, cancel: () => prov.close() };
  }

  /** Use RelayClient.open() or RelayClient.startLinking(). */
  constructor({ url, store, ack, refill, rotate = DEFAULT_ROTATE, savePassword = false, sendTimeoutMs, hooks = {}, device, password, doc }) {
    super();
    this.url = url;
    this.store = store;
    this.ack = Boolean(ack);
    this.refill = refill;
    this.rotate = rotate;
    this.savePassword = savePassword;
    this.sendTimeoutMs = sendTimeoutMs;
    this.hooks = hooks;
    this.device = device;
    this.password = password ?? null;
    this.processed = new Set(doc?.processed ?? []);
    this.nameToId = new Map([[device.username, device.userId]]);
    this.idToName = new Map([[device.userId, device.username]]);
    this.signal = new Lock();
    this.rx = Promise.resolve();
    this.socket = null;
    this.state = 'offline';
    this.wantConnected = false;
    this.closed = false;
    this.reconnectAttempt = 0;
    this.timers = { reconnect: null, refresh: null, ping: null };
    this.tokenExpiresAt = 0;
    this.tokenTtlMs = 0;
    this.refreshedAt = doc?.refreshedAt ?? null; // when the relay last issued the stored refresh token
    this.passwordSaved = Boolean(doc?.password) && this.password === doc.password;
    this.refreshing = null;
    this.connecting = null;
    this.ownDevices = null; // { at, ids }
    this.refilling = null;
    this.rotating = null;
    this.acks = null; // { sock, ids, timer }: acknowledgements being gathered
  }

  get userId() {
    return this.device.userId;
  }
  get deviceId() {
    return this.device.deviceId;
  }
  get username() {
    return this.device.username;
  }

  // ------------------------------------------------------------ persistence

  /** The store document: account, refresh token, Signal state, envelope ids already processed. */
  toDocument() {
    const doc = {
      format: STORE_FORMAT,
      version: 1,
      url: this.url,
      account: { userId: this.userId, deviceId: this.deviceId, username: this.username },
      refreshToken: this.device.refreshToken ?? null,
      refreshedAt: this.refreshedAt ?? null,
      signal: this.device.exportState(),
      processed: [...this.processed].slice(-PROCESSED_KEEP),
    };
    if (this.savePassword && this.password) doc.password = this.password;
    return doc;
  }

  persist() {
    if (this.crashed) return Promise.resolve(); // a killed process saves nothing more
    return this.store.save(this.toDocument());
  }

  // ------------------------------------------------------------ tokens

  async applyTokens(res) {
    this.device.token = res.access_token;
    this.device.refreshToken = res.refresh_token;
    this.tokenTtlMs = (res.expires_in ?? 900) * 1000;
    this.tokenExpiresAt = Date.now() + this.tokenTtlMs;
    this.refreshedAt = Date.now();
    // A rotated refresh token is the only one that works from now on: keep it at once.
    await this.persist();
    this.scheduleRefresh();
    this.renewSocket();
  }

  /**
   * Gives the open socket the newest access token (`renew`), after every refresh: the timer's,
   * and one an HTTP call made (freshToken), which would otherwise leave the socket on an older
   * token that ends before the next timer. A refused renew drops the socket: the reconnect uses
   * the new token.
   */
  renewSocket() {
    const sock = this.socket;
    if (this.closed || !sock || sock.closed) return;
    const token = this.device.token;
    (async () => {
      try {
        const r = await sock.renew(token);
        if (r.type !== 'renewed') {
          if (r.code !== 'unavailable' && r.code !== 'internal') this.reportError(errorFromFrame(r, 'renew'));
          await sock.terminate();
        }
      } catch {
        /* the socket closed meanwhile: the reconnect uses the new token */
      }
    })();
  }

  async login() {
    if (!this.password) throw new AuthError('the session is over and no password is known: open the store again with the password');
    const body = { username: this.username, password: this.password };
    if (this.deviceId !== 1) body.device_id = this.deviceId;
    const res = await call('POST', '/v1/sessions', { url: this.url, retries429: 0, body });
    await this.applyTokens(res);
  }

  /**
   * New tokens: rotates the refresh token, or logs in with the password when that fails with 401.
   * A stored refresh token the relay refuses, with no password or a password refused too: the
   * relay no longer knows the account (its data was reset, the account deleted, the device
   * removed): AuthError `account_unknown`, whose message says to start again.
   */
  refreshTokens() {
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      try {
        let refused = null; // the stored refresh token, refused with 401
        if (this.device.refreshToken) {
          try {
            const res = await call('POST', '/v1/sessions/refresh', {
              url: this.url,
              retries429: 0,
              body: { refresh_token: this.device.refreshToken },
            });
            await this.applyTokens(res);
            return;
          } catch (e) {
            if (!(e instanceof AuthError)) throw e;
            refused = e;
          }
        }
        try {
          await this.login();
        } catch (e) {
          if (refused && e instanceof AuthError && this.sessionWasRecent()) throw this.accountUnknown(e);
          throw e;
        }
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /**
   * The refresh token was issued recently enough not to have simply expired (the relay's
   * REFRESH_TOKEN_TTL_SECS, 30 days by default): its refusal means the session is gone.
   */
  sessionWasRecent() {
    return !this.refreshedAt || Date.now() - this.refreshedAt < 29 * 86_400_000;
  }

  accountUnknown(cause) {
    const where = this.store?.dir ?? String(this.store);
    const who = this.deviceId === 1 ? `the account ${this.username}` : `the account ${this.username} (device ${this.deviceId})`;
    const wrongPassword = this.password && !this.passwordSaved ? ' (or the password given is wrong)' : '';
    const remedy = this.store?.dir ? `remove ${where} to start again` : 'start again with an empty store';
    return new AuthError(
      `${who} in ${where} is not known to the relay at ${this.url} (was its data reset?); ${remedy}${wrongPassword}`,
      { code: 'account_unknown', cause },
    );
  }

  /**
   * The access token, refreshed first when it has expired or ends within `marginMs` (5 s for an
   * HTTP call; the refresh timer's margin before a (re)connect).
   */
  async freshToken(marginMs = 5000) {
    if (!this.device.token || Date.now() > this.tokenExpiresAt - marginMs) await this.refreshTokens();
    return this.device.token;
  }

  /** Runs fn (an authenticated request) with a fresh token; on 401 refreshes once and retries. */
  async withAuth(fn) {
    await this.freshToken();
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof AuthError) || e.code === 'invalid_credentials') throw e;
      await this.refreshTokens();
      return fn();
    }
  }

  /** How long before its end a token is renewed: half its life, at most 60 s. */
  refreshMarginMs() {
    return Math.max(Math.min(60_000, this.tokenTtlMs * 0.5), 500);
  }

  scheduleRefresh(delayMs) {
    clearTimeout(this.timers.refresh);
    this.timers.refresh = null;
    if (this.closed || !this.tokenTtlMs) return;
    // Refresh halfway through the token's life, and not later than 60 s before it ends.
    const delay = delayMs ?? Math.max(250, this.tokenExpiresAt - this.refreshMarginMs() - Date.now());
    this.timers.refresh = setTimeout(() => this.onRefreshTimer(), delay);
    this.timers.refresh.unref?.();
  }

  isOnline() {
    return Boolean(this.socket && !this.socket.closed && this.state === 'online');
  }

  /**
   * The refresh timer: only while online (the token is for the open socket; it is renewed on
   * it). Offline, it stops: the reconnect refreshes first when the token has expired or is near
   * its end (connectOnce), and HTTP calls refresh on their own (freshToken), so nothing is tried,
   * and nothing reported, while the relay cannot be reached.
   */
  async onRefreshTimer() {
    this.timers.refresh = null;
    if (this.closed || !this.isOnline()) return;
    try {
      await this.refreshTokens(); // schedules the next one and renews the socket
    } catch (e) {
      if (e instanceof AuthError) {
        this.reportError(e);
        this.stopConnection('offline');
        return;
      }
      // The socket may outlive a failed HTTP call (the relay restarting): try again while online.
      // An unreachable relay shows in the state events; only other failures are reported.
      if (!(e instanceof ServerUnavailableError)) this.reportError(e);
      if (!this.closed && this.isOnline()) this.scheduleRefresh(5000);
    }
  }

  // ------------------------------------------------------------ connection

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.safeEmit('state', s);
  }

  safeEmit(event, ...args) {
    try {
      this.emit(event, ...args);
    } catch (e) {
      if (event !== 'error') this.reportError(e);
    }
  }

  reportError(e) {
    if (this.listenerCount('error') > 0) this.safeEmit('error', e);
  }

  /**
   * A background task failed (a refill): reported unless the relay was unreachable, which the
   * state events show already (the task runs again at the next connect).
   */
  reportBackground(e) {
    if (!(e instanceof ServerUnavailableError)) this.reportError(e);
  }

  /**
   * Connects (ack mode unless opened with ack: false), fetches what waits, and from then on keeps
   * the connection: reconnects on any drop, renews the token, refills prekeys. Rejects when the
   * first attempt fails (ServerUnavailableError, AuthError, RateLimitedError); the client then
   * keeps trying in the background unless the error is an AuthError (close() stops it).
   */
  async connect() {
    if (this.closed) throw new RelayError('the client is closed', { code: 'closed' });
    this.wantConnected = true;
    if (this.socket && !this.socket.closed) return;
    if (this.connecting) return this.connecting;
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    try {
      await this.connectOnce();
    } catch (e) {
      if (e instanceof AuthError) this.stopConnection('offline');
      else this.scheduleReconnect(e);
      throw e;
    }
  }

  connectOnce() {
    if (this.connecting) return this.connecting;
    this.connecting = (async () => {
      this.setState('connecting');
      let sock;
      try {
        // An expired token, or one near its end (the refresh timer does not run while offline):
        // new tokens first.
        await this.freshToken(this.tokenTtlMs ? this.refreshMarginMs() : 5000);
        try {
          sock = await RelaySocket.connect(this.device.token, { url: this.url, ack: this.ack });
        } catch (e) {
          if (e instanceof WsHandshakeError && e.status === 401) {
            await this.refreshTokens();
            sock = await RelaySocket.connect(this.device.token, { url: this.url, ack: this.ack });
          } else {
            throw e;
          }
        }
      } catch (e) {
        throw handshakeError(e, this.url);
      }
      if (this.closed || !this.wantConnected) {
        await sock.close().catch(() => {});
        throw new RelayError('the client is closed', { code: 'closed' });
      }
      sock.onEnvelopes = (envs) => this.enqueue(envs, sock);
      sock.onClose = () => this.onSocketClosed(sock);
      this.socket = sock;
      this.reconnectAttempt = 0;
      this.startPing(sock);
      if (!this.timers.refresh) this.scheduleRefresh(); // stopped while offline
      this.setState('online');
      await this.fetchAll(sock);
      this.checkKeys().catch((e) => this.reportBackground(e));
    })().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  async fetchAll(sock) {
    for (let i = 0; i < 10 && !sock.closed; i++) {
      try {
        const f = await sock.request(
          { action: 'fetch' },
          (x) => x.type === 'drained' || (x.type === 'error' && !x.id),
          'drained',
          60_000,
        );
        if (f.type === 'drained') return;
        if (f.code !== 'unavailable') {
          this.reportError(errorFromFrame(f, 'fetch'));
          return;
        }
      } catch {
        return; // the socket closed: the reconnect fetches again
      }
    }
  }

  onSocketClosed(sock) {
    if (sock !== this.socket) return;
    this.socket = null;
    clearInterval(this.timers.ping);
    this.timers.ping = null;
    if (this.closed || !this.wantConnected) return;
    this.setState('offline');
    this.scheduleReconnect();
  }

  scheduleReconnect(err) {
    if (this.closed || !this.wantConnected || this.timers.reconnect) return;
    const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.reconnectAttempt);
    let delay = exp / 2 + Math.random() * (exp / 2); // jitter: half to all of it
    if (err instanceof RateLimitedError) delay = Math.max(delay, err.retryAfter * 1000);
    this.reconnectAttempt++;
    this.setState('offline');
    this.timers.reconnect = setTimeout(async () => {
      this.timers.reconnect = null;
      if (this.closed || !this.wantConnected || (this.socket && !this.socket.closed)) return;
      try {
        await this.connectOnce();
      } catch (e) {
        if (e instanceof AuthError) {
          this.reportError(e);
          this.stopConnection('offline');
          return;
        }
        if (e.code !== 'closed') this.scheduleReconnect(e);
      }
    }, delay);
  }

  startPing(sock) {
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(async () => {
      if (sock.closed) return;
      this.rotateIfDue().catch((e) => this.reportBackground(e)); // a local check until it is due
      try {
        await sock.request({ action: 'ping' }, (f) => f.type === 'pong' || (f.type === 'error' && !f.id), 'pong', 15_000);
      } catch {
        await sock.terminate().catch(() => {}); // a dead connection: reconnect
      }
    }, PING_EVERY_MS);
    this.timers.ping.unref?.();
  }

  /** Stops reconnecting (after an AuthError): the socket is closed, the state `state`. */
  stopConnection(state) {
    this.wantConnected = false;
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    const sock = this.socket;
    this.socket = null;
    if (sock) sock.close().catch(() => {});
    this.setState(state);
  }

  /** The open socket, waiting for the (re)connection until `deadline` (ms since epoch). */
  async onlineSocket(deadline) {
    if (!this.wantConnected && !this.closed) this.connect().catch(() => {});
    for (;;) {
      if (this.closed) throw new RelayError('the client is closed', { code: 'closed' });
      if (this.socket && !this.socket.closed && this.state === 'online') return this.socket;
      if (!this.wantConnected && !this.connecting) {
        throw new AuthError('not connected: the session is over');
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new ServerUnavailableError(`cannot reach the relay at ${this.url} (still offline after ${this.sendTimeoutMs} ms)`);
      await new Promise((resolve) => {
        const t = setTimeout(done, Math.min(left, 1000));
        const onState = () => done();
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.once('state', onState);
        setTimeout(() => this.off('state', onState), Math.min(left, 1000) + 10);
      });
    }
  }

  // ------------------------------------------------------------ receiving

  enqueue(envs, sock) {
    this.rx = this.rx.then(() => this.process(envs, sock)).catch((e) => this.reportError(e));
  }

  async process(envs, sock) {
    if (this.closed && this.crashed) return;
    const ackIds = [];
    const out = [];
    let preKeyMessage = false;
    let crash = false;
    await this.signal.run(async () => {
      for (const env of envs) {
        if (this.processed.has(env.id)) {
          ackIds.push(env.id); // a redelivery of what was already processed and saved
          continue;
        }
        if (this.hooks.beforeDecrypt && (await this.hooks.beforeDecrypt(env)) === 'crash') {
          crash = true;
          return;
        }
        try {
          const d = await this.device.decryptFrom(deviceAddress(env.from, env.source_device ?? 1), env.body);
          if (d.type === MSG_PREKEY) preKeyMessage = true;
          out.push({ env, bytes: d.bytes });
        } catch (e) {
          this.reportError(new RelayError(
            `could not decrypt message ${env.id} from ${env.from}.${env.source_device ?? 1}: ${e.message}`,
            { code: 'decrypt_failed', cause: e },
          ));
        }
        this.processed.add(env.id);
        ackIds.push(env.id);
      }
      if (this.processed.size > PROCESSED_KEEP * 2) this.processed = new Set([...this.processed].slice(-PROCESSED_KEEP));
      await this.persist(); // sessions and processed ids saved before anything is acknowledged
    });
    if (crash) {
      await this.crash();
      return;
    }
    for (const { env, bytes } of out) this.safeEmit('message', await this.toMessage(env, bytes));
    if (this.hooks.beforeAck && (await this.hooks.beforeAck(ackIds)) === 'crash') {
      await this.crash();
      return;
    }
    if (this.ack) this.queueAcks(ackIds, sock);
    if (preKeyMessage) this.checkKeys().catch((e) => this.reportBackground(e));
  }

  /**
   * Acknowledges processed (decrypted and saved) envelopes received on `sock`: gathered for
   * ACK_GATHER_MS, or until ACK_MAX_IDS wait, into one quiet ack (docs/api.md §6.9).
   */
  queueAcks(ids, sock) {
    if (!ids.length) return;
    if (this.acks && this.acks.sock !== sock) this.flushAcks();
    this.acks ??= { sock, ids: [], timer: null };
    this.acks.ids.push(...ids);
    if (this.acks.ids.length >= ACK_MAX_IDS) {
      this.flushAcks();
    } else if (!this.acks.timer) {
      this.acks.timer = setTimeout(() => this.flushAcks(), ACK_GATHER_MS);
      this.acks.timer.unref?.();
    }
  }

  /** Sends the gathered acknowledgements now. On a closed socket they are dropped: the envelopes come again and are deduplicated. */
  flushAcks() {
    const q = this.acks;
    this.acks = null;
    if (!q) return;
    clearTimeout(q.timer);
    if (this.crashed) return;
    for (let i = 0; i < q.ids.length && !q.sock.closed; i += ACK_MAX_IDS) {
      try {
        q.sock.quietAck(q.ids.slice(i, i + ACK_MAX_IDS));
      } catch {
        return;
      }
    }
  }

  async toMessage(env, bytes) {
    let content = null;
    try {
      const c = JSON.parse(utf8.decode(bytes));
      if (c && c.v === 1 && (typeof c.text === 'string' || typeof c.b64 === 'string')) content = c;
    } catch {
      /* not ours: raw bytes */
    }
    const m = {
      id: env.id,
      from: { userId: env.from, deviceId: env.source_device ?? 1 },
      text: null,
      bytes: null,
      sentAt: new Date(env.sent_at),
      sync: env.from === this.userId,
    };
    if (content && typeof content.text === 'string') {
      m.text = content.text;
      m.bytes = new Uint8Array(Buffer.from(content.text, 'utf8'));
    } else if (content) {
      m.bytes = new Uint8Array(Buffer.from(content.b64, 'base64'));
    } else {
      m.bytes = new Uint8Array(bytes);
      m.text = utf8.decode(bytes);
    }
    if (m.sync) {
      m.from.username = this.username;
      if (content?.to) {
        m.to = { userId: String(content.to) };
        if (typeof content.to_name === 'string') m.to.username = content.to_name;
      }
    } else if (typeof content?.name === 'string') {
      const name = await this.verifyName(content.name, env.from);
      if (name) m.from.username = name;
    } else if (this.idToName.has(env.from)) {
      m.from.username = this.idToName.get(env.from);
    }
    return m;
  }

  /** The claimed name when it maps to `userId` (one lookup per name, cached), else undefined. */
  async verifyName(name, userId) {
    const n = name.toLowerCase();
    if (!this.nameToId.has(n)) {
      try {
        this.remember(n, await this.lookupUncached(n));
      } catch (e) {
        if (e instanceof UnknownUserError) this.nameToId.set(n, null);
        return undefined;
      }
    }
    return this.nameToId.get(n) === userId ? n : undefined;
  }

  remember(name, userId) {
    this.nameToId.set(name, userId);
    this.idToName.set(userId, name);
  }

  // ------------------------------------------------------------ keys

  /** Prekey upkeep, at connect and after a PreKey message: rotation when due, then the refill. */
  async checkKeys() {
    let failed = null;
    await this.rotateIfDue().catch((e) => {
      failed = e;
    });
    await this.checkRefill();
    if (failed) throw failed;
  }

  /**
   * Replaces the signed prekey and the Kyber last-resort prekey once the current signed prekey is
   * `rotate.everyMs` old (checked at connect, after a PreKey message and at every ping): the new
   * keys are saved, uploaded (PUT /v1/keys), then made current. Retired ones are deleted once
   * `rotate.keepMs` old, except the newest retired one (a message built from a bundle fetched
   * before the rotation still decrypts). Resolves to the new key ids, or null when not due.
   */
  rotateIfDue() {
    if (this.rotating) return this.rotating;
    const current = this.device.signedPreKey;
    if (this.closed || (current && Date.now() - current.timestamp() < this.rotate.everyMs)) return Promise.resolve(null);
    this.rotating = (async () => {
      const next = await this.signal.run(async () => {
        const n = this.device.newRotation();
        await this.persist(); // the private halves first
        return n;
      });
      const body = {
        signed_prekey: RelayDevice.signedPreKeyJson(next.signed),
        kyber_last_resort_prekey: RelayDevice.signedPreKeyJson(next.kyber),
      };
      await this.withAuth(() => call('PUT', '/v1/keys', { url: this.url, retries429: 0, body, token: this.device.token }));
      return this.signal.run(async () => {
        this.device.adoptRotation(next);
        this.device.pruneRetired(this.rotate.keepMs);
        await this.persist();
        return { signedPreKeyId: next.signed.id(), kyberLastResortId: next.kyber.id() };
      });
    })().finally(() => {
      this.rotating = null;
    });
    return this.rotating;
  }

  /** Tops up one-time prekeys (EC, Kyber) when the relay holds fewer than the thresholds. */
  checkRefill() {
    if (this.refilling) return this.refilling;
    this.refilling = (async () => {
      const c = await this.withAuth(() => this.device.keyCount());
      const ecN = c.one_time_prekeys < this.refill.below ? this.refill.oneTime : 0;
      const kyN = c.kyber_one_time_prekeys < this.refill.kyberBelow ? this.refill.kyber : 0;
      for (let ec = ecN, ky = kyN; ec > 0 || ky > 0; ec -= 100, ky -= 100) {
        const body = await this.signal.run(async () => {
          const b = {};
          const ecKeys = this.device.newPreKeys(Math.max(0, Math.min(100, ec)));
          const kyKeys = this.device.newKyberPreKeys(Math.max(0, Math.min(100, ky)));
          if (ecKeys.length) b.one_time_prekeys = ecKeys.map(RelayDevice.preKeyJson);
          if (kyKeys.length) b.kyber_one_time_prekeys = kyKeys.map(RelayDevice.signedPreKeyJson);
          await this.persist(); // the private halves first
          return b;
        });
        await this.withAuth(() => call('PUT', '/v1/keys', { url: this.url, retries429: 0, body, token: this.device.token }));
      }
      return { ...c, refilled: { oneTime: ecN, kyber: kyN } };
    })().finally(() => {
      this.refilling = null;
    });
    return this.refilling;
  }

  // ------------------------------------------------------------ people and devices

  async lookupUncached(username) {
    const res = await this.withAuth(() =>
      call('GET', `/v1/users?username=${encodeURIComponent(username)}`, { url: this.url, retries429: 0, token: this.device.token }),
    );
    return res.user_id;
  }

  /** username → user id (UnknownUserError when there is none). Cached. */
  async lookup(username) {
    const n = String(username).toLowerCase();
    const known = this.nameToId.get(n);
    if (known) return known;
    const id = await this.lookupUncached(n);
    this.remember(n, id);
    return id;
  }

  /** [{ id, registrationId, createdAt: Date, current }] of this account. */
  async devices() {
    const res = await this.withAuth(() => call('GET', '/v1/devices', { url: this.url, retries429: 0, token: this.device.token }));
    const list = res.devices.map((d) => ({
      id: d.device_id,
      registrationId: d.registration_id,
      createdAt: new Date(d.created_at * 1000),
      current: d.device_id === this.deviceId,
    }));
    this.ownDevices = { at: Date.now(), ids: list.map((d) => d.id) };
    return list;
  }

  async resolve(to) {
    const s = String(to);
    if (UUID_RE.test(s)) return { userId: s.toLowerCase(), username: this.idToName.get(s.toLowerCase()) };
    const userId = await this.lookup(s);
    return { userId, username: s.toLowerCase() };
  }

  // ------------------------------------------------------------ sending

  /**
   * Sends text (a string) or bytes (Uint8Array) to a person (username or user id): every device of
   * theirs, then a copy to this account's other devices. Resolves { id, delivery, deliveries }.
   */
  async send(to, content, { timeoutMs = this.sendTimeoutMs } = {}) {
    if (this.closed) throw new RelayError('the client is closed', { code: 'closed' });
    const deadline = Date.now() + timeoutMs;
    const peer = await this.untilDeadline(() => this.resolve(to), deadline);
    const body = typeof content === 'string' ? { v: 1, text: content } : { v: 1, b64: Buffer.from(content).toString('base64') };
    const id = randomUUID();
    const self = peer.userId === this.userId;
    const reply = await this.sendTo(peer.userId, { ...body, name: this.username }, id, deadline, { self });
    if (!reply) throw new RelayError('this account has no other device to send to', { code: 'no_devices' });
    if (!self) {
      try {
        await this.sendTo(this.userId, { ...body, name: this.username, to: peer.userId, to_name: peer.username }, `${id}:sync`, deadline, { self: true });
      } catch (e) {
        this.reportError(new RelayError(`the copy to this account's other devices failed: ${e.message}`, { code: e.code, cause: e }));
      }
    }
    return {
      id,
      delivery: reply.delivery,
      deliveries: [...(reply.devices ?? [])].sort((a, b) => a.device_id - b.device_id).map((d) => ({ deviceId: d.device_id, delivery: d.delivery })),
    };
  }

  /** Sessions with this account's other devices (GET /v1/devices, cached 30 s). */
  async ensureOwnSessions() {
    if (this.device.knownDevices(this.userId).length) return;
    if (!this.ownDevices || Date.now() - this.ownDevices.at > OWN_DEVICES_TTL_MS) await this.devices();
    for (const d of this.ownDevices.ids) {
      if (d !== this.deviceId && !this.device.sessionWith(this.userId, d)) {
        await this.withAuth(() => this.device.startDeviceSessions(this.userId, d));
      }
    }
  }

  /** fn(), tried again every second while the relay cannot be reached, until `deadline`. */
  async untilDeadline(fn, deadline) {
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof ServerUnavailableError) || Date.now() + 1000 > deadline || this.closed) throw e;
        await sleep(1000);
      }
    }
  }

  /**
   * One logical send (one `id`) to every device of `peerId`: sessions first, then one ciphertext
   * per device; mismatched/stale devices fixed and sent again under the same id. Returns the
   * `sent` frame, or null for a copy to one's own devices when there is none.
   */
  async sendTo(peerId, payload, id, deadline, { self = false, maxAttempts = 5 } = {}) {
    const plaintext = Buffer.from(JSON.stringify(payload), 'utf8');
    let last;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const messages = await this.untilDeadline(() => this.signal.run(async () => {
        if (self) await this.ensureOwnSessions();
        else if (this.device.knownDevices(peerId).length === 0) await this.withAuth(() => this.device.startDeviceSessions(peerId, '*'));
        const m = await this.device.encryptForDevices(peerId, plaintext);
        await this.persist(); // the ratchet moved: saved before the ciphertext leaves
        return m;
      }), deadline);
      if (messages.length === 0) {
        if (self) return null;
        throw new RelayError(`no device of ${peerId} to send to`, { code: 'no_devices' });
      }
      const frame = { action: 'send', to: peerId, id, messages: RelayDevice.wireMessages(messages) };
      const reply = await this.deliver(frame, deadline);
      if (reply.type === 'sent') return reply;
      last = reply;
      if (reply.code === 'mismatched_devices') {
        await this.signal.run(async () => {
          for (const d of reply.extra_devices ?? []) await this.device.archiveSession(peerId, d);
          for (const d of reply.missing_devices ?? []) await this.withAuth(() => this.device.startDeviceSessions(peerId, d));
          if (self) this.ownDevices = null;
        });
      } else if (reply.code === 'stale_devices') {
        await this.signal.run(async () => {
          for (const d of reply.stale_devices ?? []) {
            await this.device.archiveSession(peerId, d);
            await this.withAuth(() => this.device.startDeviceSessions(peerId, d));
          }
        });
      } else {
        throw errorFromFrame(reply, `send to ${peerId}`);
      }
    }
    throw new MismatchedDevicesError(`send to ${peerId}: the device list still does not match after ${maxAttempts} attempts`, { frame: last });
  }

  /**
   * Sends one frame and returns its reply. A reply lost to a dropped connection: the same frame
   * again (same id: in ack mode the relay answers a repeat without storing it twice) once the
   * client is back online, until `deadline`.
   */
  async deliver(frame, deadline) {
    for (let attempt = 0; ; attempt++) {
      const sock = await this.onlineSocket(deadline);
      let reply;
      try {
        const pending = sock.request(
          frame,
          (f) => (f.type === 'sent' || f.type === 'error') && f.id === frame.id,
          `reply to send ${frame.id}`,
          Math.max(1000, Math.min(WS_TIMEOUT_MS, deadline - Date.now())),
        );
        // Tests: the connection is lost right after the frame left, before its reply is read.
        if (this.hooks.afterSendFrame?.(frame) === 'drop') sock.ws.terminate();
        reply = await pending;
      } catch (e) {
        if (!(e instanceof SocketClosedError)) await sock.terminate().catch(() => {}); // no reply: a dead connection
        if (Date.now() >= deadline) throw new ServerUnavailableError(`no reply from the relay at ${this.url} to send ${frame.id}`, { cause: e });
        continue;
      }
      if (reply.type === 'error' && reply.code === 'unavailable' && Date.now() < deadline) {
        await sleep(Math.min(2000, 250 * 2 ** attempt));
        continue;
      }
      if (reply.type === 'error' && reply.code === 'unauthorized') {
        await sock.waitClosed(5000).catch(() => sock.terminate());
        continue; // the reconnect logs in again
      }
      return reply;
    }
  }

  // ------------------------------------------------------------ linking

  /**
   * On the primary: links the device that printed `linkString` (RelayClient.startLinking).
   * Resolves { deviceId }: the id the relay gave the new device, as GET /v1/devices shows it once
   * the new device has presented the code (null when it did not show up within `timeoutMs`).
   */
  async linkDevice(linkString, { timeoutMs = 60_000 } = {}) {
    const { address, publicKey } = parseLinkString(linkString);
    const before = new Set((await this.devices()).map((d) => d.id));
    const code = await this.withAuth(() => call('POST', '/v1/devices/provisioning', { url: this.url, retries429: 0, token: this.device.token }));
    const sealed = sealProvisioningMessage(publicKey, this.device.provisioningPayload(code.code), { address });
    await this.withAuth(() =>
      call('PUT', `/v1/provisioning/${encodeURIComponent(address)}`, {
        url: this.url,
        retries429: 0,
        token: this.device.token,
        body: { body: b64(sealed) },
      }),
    );
    this.ownDevices = null;
    // The relay tells the new device its id (POST /v1/devices), not the primary: it shows in
    // the device list as soon as the new device has linked itself.
    const deadline = Date.now() + timeoutMs;
    for (let wait = 100; !this.closed; wait = Math.min(1000, wait * 2)) {
      let added = [];
      try {
        added = (await this.devices()).filter((d) => !before.has(d.id));
      } catch (e) {
        if (!(e instanceof ServerUnavailableError) && !(e instanceof RateLimitedError)) throw e;
      }
      if (added.length) {
        added.sort((a, b) => b.createdAt - a.createdAt || b.id - a.id);
        return { deviceId: added[0].id };
      }
      if (Date.now() + wait > deadline) break;
      await sleep(wait);
    }
    return { deviceId: null };
  }

  // ------------------------------------------------------------ ending

  /** Closes the socket and stops every timer (no more reconnects). Waits for what is being saved. */
  async close() {
    if (this.closed) return;
    this.stopTimers();
    const sock = this.socket;
    this.socket = null;
    // Ack mode: what arrives from now on stays in flight, and closing the connection puts it back.
    if (sock && this.ack) sock.onEnvelopes = () => {};
    await this.rx.catch(() => {}); // what was received is processed, saved and acknowledged
    this.flushAcks();
    if (sock) await sock.close().catch(() => {});
    await this.rx.catch(() => {}); // fire-and-forget: what arrived before the close too
    await this.rotating?.catch(() => {}); // a rotation uploaded is made current and saved first
    await this.signal.run(() => {});
    await this.store.release?.().catch(() => {});
    this.setState('offline');
  }

  /** Ends this device's session on the relay (DELETE /v1/sessions/current), forgets the refresh token, closes. */
  async logout() {
    try {
      await this.withAuth(() => call('DELETE', '/v1/sessions/current', { url: this.url, retries429: 0, token: this.device.token }));
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
    }
    this.device.refreshToken = null;
    this.device.token = null;
    await this.persist(); // while the store is still this client's: close() releases it
    await this.close();
  }

  /** Marks the client closed and stops its timers: no more reconnects, refreshes or pings. */
  stopTimers() {
    this.closed = true;
    this.wantConnected = false;
    for (const k of ['reconnect', 'refresh']) clearTimeout(this.timers[k]);
    clearInterval(this.timers.ping);
  }

  /** For tests: dies as a killed process would (socket dropped without a Close, nothing more saved or acknowledged). */
  async crash() {
    this.crashed = true;
    this.stopTimers();
    const sock = this.socket;
    this.socket = null;
    if (sock) await sock.terminate().catch(() => {});
  }
}
