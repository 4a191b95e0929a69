// The WebSocket of one client, kept open: connect (ack mode unless told otherwise) and fetch what
// waits, reconnect with exponential backoff and jitter after any drop, ping, and keep the socket's
// token fresh (refreshed while online, before it ends, and handed to the socket with `renew`).
import { RelaySocket, WsHandshakeError } from './socket.mjs';
import {
  RelayError,
  AuthError,
  RateLimitedError,
  ServerUnavailableError,
  ApiError,
  errorFromFrame,
} from './errors.mjs';

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const PING_EVERY_MS = 45_000;
const PONG_TIMEOUT_MS = 15_000;
const FETCH_ROUNDS = 10; // `unavailable` answers to a fetch tried again, at most this often
const REFRESH_RETRY_MS = 5000;

const closedError = () => new RelayError('the client is closed', { code: 'closed' });

/** Network failures of a WebSocket handshake as typed errors. */
export function handshakeError(e, url) {
  if (e instanceof RelayError) return e;
  if (e instanceof WsHandshakeError) {
    if (e.status === 401) return new AuthError(`WebSocket handshake refused (401): the session is over`, { cause: e });
    if (e.status === 429) return new RateLimitedError(`rate limited, retry in ${e.retryAfter ?? 1} s (WebSocket handshake)`, { retryAfter: e.retryAfter ?? 1, cause: e });
    if (e.status >= 500) return new ServerUnavailableError(`WebSocket handshake refused (${e.status})`, { cause: e, status: e.status });
    return new ApiError(`WebSocket handshake refused (${e.status})`, { status: e.status, code: 'handshake_refused', cause: e });
  }
  return new ServerUnavailableError(`cannot reach the relay at ${url} (${e.code || e.message})`, { code: 'unreachable', status: 0, cause: e });
}

/**
 * The connection of `session`'s device. What it reports goes to the callbacks: `onState(state)`,
 * `onEnvelopes(envelopes, socket)`, `onPresence(frame)`, `onOnline()` (connected and what waited fetched), `onPing()`,
 * `onError(e)`, `onBackgroundError(e)`.
 */
export class Connection {
  #session;
  #ack;
  #on;
  #socket = null;
  #state = 'offline';
  #wantConnected = false;
  #closed = false;
  #connecting = null;
  #reconnectAttempt = 0;
  #timers = { reconnect: null, refresh: null, ping: null };
  #stateWaiters = new Set();

  constructor({ session, ack, onState, onEnvelopes, onPresence = () => {}, onOnline, onPing, onError, onBackgroundError }) {
    this.#session = session;
    this.#ack = Boolean(ack);
    this.#on = { state: onState, envelopes: onEnvelopes, presence: onPresence, online: onOnline, ping: onPing, error: onError, background: onBackgroundError };
  }

  get state() {
    return this.#state;
  }
  /** close() was called (or is under way): nothing reconnects, refreshes or pings any more. */
  get closed() {
    return this.#closed;
  }

  setState(s) {
    if (this.#state === s) return;
    this.#state = s;
    for (const wake of this.#stateWaiters) wake();
    this.#on.state(s);
  }

  /**
   * Connects, fetches what waits, and from then on keeps the connection. Rejects when the first
   * attempt fails; the connection keeps trying in the background unless the error is an AuthError.
   */
  async connect() {
    if (this.#closed) throw closedError();
    this.#wantConnected = true;
    if (this.#socket && !this.#socket.closed) return;
    if (this.#connecting) return this.#connecting;
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = null;
    try {
      await this.#connectOnce();
    } catch (e) {
      if (e instanceof AuthError) this.#stopConnection('offline');
      else this.#scheduleReconnect(e);
      throw e;
    }
  }

  #connectOnce() {
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  async #open() {
    const session = this.#session;
    this.setState('connecting');
    let sock;
    try {
      // An expired token, or one near its end (the refresh timer does not run while offline):
      // new tokens first.
      await session.freshToken(session.tokenTtlMs ? session.refreshMarginMs() : undefined);
      try {
        sock = await RelaySocket.connect(session.token, { url: session.url, ack: this.#ack });
      } catch (e) {
        if (!(e instanceof WsHandshakeError && e.status === 401)) throw e;
        await session.refreshTokens();
        sock = await RelaySocket.connect(session.token, { url: session.url, ack: this.#ack });
      }
    } catch (e) {
      throw handshakeError(e, session.url);
    }
    if (this.#closed || !this.#wantConnected) {
      await sock.close().catch(() => {});
      throw closedError();
    }
    sock.onEnvelopes = (envs) => this.#on.envelopes(envs, sock);
    sock.onPresence = (f) => this.#on.presence(f);
    sock.onClose = () => this.#onSocketClosed(sock);
    this.#socket = sock;
    this.#reconnectAttempt = 0;
    this.#startPing(sock);
    if (!this.#timers.refresh) this.#scheduleRefresh(); // stopped while offline
    this.setState('online');
    await this.#fetchAll(sock);
    this.#on.online();
  }

  async #fetchAll(sock) {
    for (let i = 0; i < FETCH_ROUNDS && !sock.closed; i++) {
      try {
        const f = await sock.request(
          { action: 'fetch' },
          (x) => x.type === 'drained' || (x.type === 'error' && !x.id),
          'drained',
          60_000,
        );
        if (f.type === 'drained') return;
        if (f.code !== 'unavailable') {
          this.#on.error(errorFromFrame(f, 'fetch'));
          return;
        }
      } catch {
        return; // the socket closed: the reconnect fetches again
      }
    }
  }

  #onSocketClosed(sock) {
    if (sock !== this.#socket) return;
    this.#socket = null;
    clearInterval(this.#timers.ping);
    this.#timers.ping = null;
    if (this.#closed || !this.#wantConnected) return;
    this.setState('offline');
    this.#scheduleReconnect();
  }

  #scheduleReconnect(err) {
    if (this.#closed || !this.#wantConnected || this.#timers.reconnect) return;
    const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.#reconnectAttempt);
    let delay = exp / 2 + Math.random() * (exp / 2); // jitter: half to all of it
    if (err instanceof RateLimitedError) delay = Math.max(delay, err.retryAfter * 1000);
    this.#reconnectAttempt++;
    this.setState('offline');
    this.#timers.reconnect = setTimeout(async () => {
      this.#timers.reconnect = null;
      if (this.#closed || !this.#wantConnected || (this.#socket && !this.#socket.closed)) return;
      try {
        await this.#connectOnce();
      } catch (e) {
        if (e instanceof AuthError) {
          this.#on.error(e);
          this.#stopConnection('offline');
          return;
        }
        if (e.code !== 'closed') this.#scheduleReconnect(e);
      }
    }, delay);
  }

  #startPing(sock) {
    clearInterval(this.#timers.ping);
    this.#timers.ping = setInterval(async () => {
      if (sock.closed) return;
      this.#on.ping();
      try {
        await sock.request({ action: 'ping' }, (f) => f.type === 'pong' || (f.type === 'error' && !f.id), 'pong', PONG_TIMEOUT_MS);
      } catch {
        await sock.terminate().catch(() => {}); // a dead connection: reconnect
      }
    }, PING_EVERY_MS);
    this.#timers.ping.unref?.();
  }

  /** Stops reconnecting (after an AuthError): the socket is closed, the state `state`. */
  #stopConnection(state) {
    this.#wantConnected = false;
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = null;
    const sock = this.#socket;
    this.#socket = null;
    if (sock) sock.close().catch(() => {});
    this.setState(state);
  }

  #isOnline() {
    return Boolean(this.#socket && !this.#socket.closed && this.#state === 'online');
  }

  /**
   * The open socket, waiting for the (re)connection until `deadline` (ms since epoch);
   * `sendTimeoutMs` is the wait the error names.
   */
  async onlineSocket(deadline, sendTimeoutMs) {
    if (!this.#wantConnected && !this.#closed) this.connect().catch(() => {});
    for (;;) {
      if (this.#closed) throw closedError();
      if (this.#isOnline()) return this.#socket;
      if (!this.#wantConnected && !this.#connecting) {
        throw new AuthError('not connected: the session is over');
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new ServerUnavailableError(`cannot reach the relay at ${this.#session.url} (still offline after ${sendTimeoutMs} ms)`);
      await this.#stateChange(Math.min(left, 1000));
    }
  }

  /** Resolves at the next state change, or after `ms`. */
  #stateChange(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#stateWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#stateWaiters.add(wake);
    });
  }

  // ------------------------------------------------------------ the token of the socket

  /** New tokens were issued: the refresh timer restarts on them, the open socket gets them. */
  tokensChanged() {
    this.#scheduleRefresh();
    this.#renewSocket();
  }

  /**
   * Gives the open socket the newest access token (`renew`), after every refresh: the timer's,
   * and one an HTTP call made, which would otherwise leave the socket on an older token that
   * ends before the next timer. A refused renew drops the socket: the reconnect uses the new
   * token.
   */
  #renewSocket() {
    const sock = this.#socket;
    if (this.#closed || !sock || sock.closed) return;
    const token = this.#session.token;
    (async () => {
      try {
        const r = await sock.renew(token);
        if (r.type !== 'renewed') {
          if (r.code !== 'unavailable' && r.code !== 'internal') this.#on.error(errorFromFrame(r, 'renew'));
          await sock.terminate();
        }
      } catch {
        /* the socket closed meanwhile: the reconnect uses the new token */
      }
    })();
  }

  #scheduleRefresh(delayMs) {
    clearTimeout(this.#timers.refresh);
    this.#timers.refresh = null;
    const session = this.#session;
    if (this.#closed || !session.tokenTtlMs) return;
    // Refresh halfway through the token's life, and not later than 60 s before it ends.
    const delay = delayMs ?? Math.max(250, session.tokenExpiresAt - session.refreshMarginMs() - Date.now());
    this.#timers.refresh = setTimeout(() => this.#onRefreshTimer(), delay);
    this.#timers.refresh.unref?.();
  }

  /**
   * The refresh timer: only while online (the token is for the open socket; it is renewed on
   * it). Offline, it stops: the reconnect refreshes first when the token has expired or is near
   * its end, and HTTP calls refresh on their own, so nothing is tried, and nothing reported,
   * while the relay cannot be reached.
   */
  async #onRefreshTimer() {
    this.#timers.refresh = null;
    if (this.#closed || !this.#isOnline()) return;
    try {
      await this.#session.refreshTokens(); // schedules the next one and renews the socket
    } catch (e) {
      if (e instanceof AuthError) {
        this.#on.error(e);
        this.#stopConnection('offline');
        return;
      }
      // The socket may outlive a failed HTTP call (the relay restarting): try again while online.
      // An unreachable relay shows in the state events; only other failures are reported.
      if (!(e instanceof ServerUnavailableError)) this.#on.error(e);
      if (!this.#closed && this.#isOnline()) this.#scheduleRefresh(REFRESH_RETRY_MS);
    }
  }

  // ------------------------------------------------------------ ending

  /**
   * Stops for good: no more reconnects, refreshes or pings. Returns the open socket, detached (a
   * close no longer reconnects) and, in ack mode, deaf: what arrives from now on stays in flight,
   * and closing the connection puts it back. The caller closes it.
   */
  stop() {
    this.#closed = true;
    this.#wantConnected = false;
    clearTimeout(this.#timers.reconnect);
    clearTimeout(this.#timers.refresh);
    clearInterval(this.#timers.ping);
    const sock = this.#socket;
    this.#socket = null;
    if (sock && this.#ack) sock.onEnvelopes = () => {};
    if (sock) sock.onPresence = () => {};
    return sock;
  }
}
