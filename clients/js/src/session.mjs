// The account of one device and its session on the relay: the device read from a store (or
// registered), the store document written after every change that matters, and the tokens: login,
// refresh-token rotation, a fresh access token for every authenticated call.
import { RelayDevice } from './devices.mjs';
import { call, RELAY_URL } from './http.mjs';
import { RelayError, AuthError } from './errors.mjs';

const STORE_FORMAT = 'relay-client';
// The relay's refresh tokens live 30 days (REFRESH_TOKEN_TTL_SECS): one refused before that was
// revoked, not expired.
const REFRESH_TOKEN_RECENT_MS = 29 * 86_400_000;
// An HTTP call refreshes first when the access token ends within this.
const HTTP_TOKEN_MARGIN_MS = 5000;

/** The relay's base URL: `url`, else RELAY_URL, without a trailing slash. */
export function relayBaseUrl(url) {
  return String(url || process.env.RELAY_URL || RELAY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
}

/**
 * The device of the account in the store document `doc` (RelayError `store_mismatch` when the
 * store is not a relay-client's or the account not `username`'s).
 */
export function storedDevice(doc, { url, store, username }) {
  if (doc.format !== STORE_FORMAT) throw new RelayError(`${store} does not hold a relay-client account`, { code: 'store_mismatch' });
  if (username && String(username).toLowerCase() !== doc.account.username) {
    throw new RelayError(`${store} holds the account ${doc.account.username}, not ${username}`, { code: 'store_mismatch' });
  }
  const device = new RelayDevice('me', { url, state: doc.signal, username: doc.account.username, retries429: 0 });
  device.password = null;
  device.refreshToken = doc.refreshToken ?? null;
  return device;
}

/** Registers `username` with fresh keys (UsernameTakenError, RateLimitedError, ServerUnavailableError, …). */
export async function registerDevice({ url, username, password, refill }) {
  const device = new RelayDevice('me', {
    url,
    username: String(username).toLowerCase(),
    password,
    oneTimePreKeys: Math.min(100, refill.oneTime),
    kyberOneTimePreKeys: Math.min(100, refill.kyber),
    retries429: 0,
  });
  await device.register();
  return device;
}

/**
 * The account kept in a store and its tokens. `onTokens` runs after every new token pair (the
 * connection renews its socket and its refresh timer); `processedIds()` gives the envelope ids to
 * keep in the document.
 */
export class Session {
  #url;
  #store;
  #device;
  #password;
  #savePassword;
  #passwordSaved;
  #refreshedAt; // when the relay last issued the stored refresh token
  #tokenExpiresAt = 0;
  #tokenTtlMs = 0;
  #refreshing = null;
  #processedIds;
  #groupState;
  #onTokens;

  constructor({ url, store, device, password, savePassword = false, doc, processedIds, groupState = () => ({}), onTokens }) {
    this.#url = url;
    this.#store = store;
    this.#device = device;
    this.#password = password ?? null;
    this.#savePassword = savePassword;
    this.#passwordSaved = Boolean(doc?.password) && this.#password === doc.password;
    this.#refreshedAt = doc?.refreshedAt ?? null;
    this.#processedIds = processedIds;
    this.#groupState = groupState;
    this.#onTokens = onTokens;
  }

  get url() {
    return this.#url;
  }
  get device() {
    return this.#device;
  }
  /** The current access token (may have expired: freshToken() renews it). */
  get token() {
    return this.#device.token;
  }
  /** The life of the last access token, in ms (0 before the first). */
  get tokenTtlMs() {
    return this.#tokenTtlMs;
  }
  get tokenExpiresAt() {
    return this.#tokenExpiresAt;
  }

  // ------------------------------------------------------------ the store document

  /**
   * The store document: account, refresh token, Signal state, envelope ids already processed,
   * what this device keeps about its groups (per-group keys, its sender-key chains).
   */
  toDocument() {
    const d = this.#device;
    const doc = {
      format: STORE_FORMAT,
      version: 1,
      url: this.#url,
      account: { userId: d.userId, deviceId: d.deviceId, username: d.username },
      refreshToken: d.refreshToken ?? null,
      refreshedAt: this.#refreshedAt ?? null,
      signal: d.exportState(),
      processed: this.#processedIds(),
      groups: this.#groupState(),
    };
    if (this.#savePassword && this.#password) doc.password = this.#password;
    return doc;
  }

  persist() {
    return this.#store.save(this.toDocument());
  }

  // ------------------------------------------------------------ tokens

  async applyTokens(res) {
    this.#device.token = res.access_token;
    this.#device.refreshToken = res.refresh_token;
    this.#tokenTtlMs = (res.expires_in ?? 900) * 1000;
    this.#tokenExpiresAt = Date.now() + this.#tokenTtlMs;
    this.#refreshedAt = Date.now();
    // A rotated refresh token is the only one that works from now on: keep it at once.
    await this.persist();
    this.#onTokens();
  }

  async login() {
    if (!this.#password) throw new AuthError('the session is over and no password is known: open the store again with the password');
    const d = this.#device;
    const body = { username: d.username, password: this.#password };
    if (d.deviceId !== 1) body.device_id = d.deviceId;
    const res = await call('POST', '/v1/sessions', { url: this.#url, retries429: 0, body });
    await this.applyTokens(res);
  }

  /**
   * New tokens: rotates the refresh token, or logs in with the password when that fails with 401.
   * A stored refresh token the relay refuses, with no password or a password refused too: the
   * relay no longer knows the account (its data was reset, the account deleted, the device
   * removed): AuthError `account_unknown`, whose message says to start again. Concurrent callers
   * share one refresh (a refresh token works once).
   */
  refreshTokens() {
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  async #refresh() {
    let refused = null; // the stored refresh token, refused with 401
    if (this.#device.refreshToken) {
      try {
        const res = await call('POST', '/v1/sessions/refresh', {
          url: this.#url,
          retries429: 0,
          body: { refresh_token: this.#device.refreshToken },
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
      if (refused && e instanceof AuthError && this.#sessionWasRecent()) throw this.#accountUnknown(e);
      throw e;
    }
  }

  /**
   * The refresh token was issued recently enough not to have simply expired: its refusal means
   * the session is gone.
   */
  #sessionWasRecent() {
    return !this.#refreshedAt || Date.now() - this.#refreshedAt < REFRESH_TOKEN_RECENT_MS;
  }

  #accountUnknown(cause) {
    const { username, deviceId } = this.#device;
    const where = this.#store?.dir ?? String(this.#store);
    const who = deviceId === 1 ? `the account ${username}` : `the account ${username} (device ${deviceId})`;
    const wrongPassword = this.#password && !this.#passwordSaved ? ' (or the password given is wrong)' : '';
    const remedy = this.#store?.dir ? `remove ${where} to start again` : 'start again with an empty store';
    return new AuthError(
      `${who} in ${where} is not known to the relay at ${this.#url} (was its data reset?); ${remedy}${wrongPassword}`,
      { code: 'account_unknown', cause },
    );
  }

  /** The access token, refreshed first when it has expired or ends within `marginMs`. */
  async freshToken(marginMs = HTTP_TOKEN_MARGIN_MS) {
    if (!this.#device.token || Date.now() > this.#tokenExpiresAt - marginMs) await this.refreshTokens();
    return this.#device.token;
  }

  /** How long before its end a token is renewed: half its life, at most 60 s. */
  refreshMarginMs() {
    return Math.max(Math.min(60_000, this.#tokenTtlMs * 0.5), 500);
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

  /** An authenticated HTTP call (withAuth; a 429 is an error at once). */
  call(method, path, body) {
    return this.withAuth(() => call(method, path, { url: this.#url, retries429: 0, token: this.#device.token, body }));
  }

  /** Ends this session on the relay (DELETE /v1/sessions/current) and forgets its tokens (saved). */
  async end() {
    try {
      await this.call('DELETE', '/v1/sessions/current');
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
    }
    this.#device.refreshToken = null;
    this.#device.token = null;
    await this.persist();
  }
}
