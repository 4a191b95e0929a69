// A small Signal client for the relay, single device: a SignalParty (signal.mjs) that registers,
// logs in, manages its keys and exchanges messages over the relay. devices.mjs adds devices;
// client.mjs (RelayClient) the application-level layer with persistence and reconnects.
import { randomBytes, randomInt } from 'node:crypto';
import { SignalParty } from './signal.mjs';
import { call, request, RELAY_URL } from './http.mjs';
import { RelaySocket } from './socket.mjs';

const USERNAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** A fresh random username (3–32 chars of a-z 0-9 _ . -), e.g. "e2e_alice_k3j9x0q2mz". */
export function uniqueUsername(role = 'u') {
  let tail = '';
  for (let i = 0; i < 10; i++) tail += USERNAME_CHARS[randomInt(USERNAME_CHARS.length)];
  return `e2e_${role.toLowerCase().replace(/[^a-z0-9_.-]/g, '').slice(0, 12)}_${tail}`;
}

export function randomPassword() {
  return randomBytes(18).toString('base64url'); // 24 chars
}

export class RelayUser extends SignalParty {
  /**
   * @param {string} role  used in the username and in messages
   * @param {object} opts  oneTimePreKeys (default 100), kyberOneTimePreKeys (default 10)
   */
  constructor(role = 'u', opts = {}) {
    super(opts);
    this.role = role;
    /** The relay's base URL (opts.url, default RELAY_URL). */
    this.url = (opts.url || RELAY_URL).replace(/\/+$/, '');
    /** How many 429s each request waits out (Retry-After) before it gives up (opts.retries429, default 5). */
    this.retries429 = opts.retries429 ?? 5;
    this.username = opts.username ?? uniqueUsername(role);
    this.password = opts.password ?? randomPassword();
    this.token = null;
    this.socket = null;
  }

  /** Registers, logs in (and optionally connects). */
  static async create(role, opts = {}) {
    const u = new RelayUser(role, opts);
    await u.register();
    await u.login();
    if (opts.connect) await u.connect();
    return u;
  }

  registrationBody() {
    return { username: this.username, password: this.password, ...this.registrationKeys() };
  }

  /** POST /v1/users with `body` (default: the full registration body). Raw response. */
  registerRaw(body = this.registrationBody()) {
    return request('POST', '/v1/users', { url: this.url, retries429: this.retries429, body });
  }

  async register() {
    const res = await call('POST', '/v1/users', { url: this.url, retries429: this.retries429, body: this.registrationBody() });
    if (!res?.user_id) throw new Error(`register: no user_id in ${JSON.stringify(res)}`);
    this.setUserId(res.user_id);
    this.registered = res;
    return res;
  }

  async login() {
    const res = await call('POST', '/v1/sessions', { url: this.url, retries429: this.retries429, body: { username: this.username, password: this.password } });
    if (!res?.access_token) throw new Error(`login: no access_token in ${JSON.stringify(res)}`);
    this.token = res.access_token;
    this.session = res;
    if (!this.userId) this.setUserId(res.user_id);
    return res;
  }

  /** GET /v1/keys/count → { one_time_prekeys, kyber_one_time_prekeys } */
  keyCount() {
    return call('GET', '/v1/keys/count', { url: this.url, retries429: this.retries429, token: this.token });
  }

  /** PUT /v1/keys with a raw body; returns the raw response. */
  uploadKeysRaw(body) {
    return request('PUT', '/v1/keys', { url: this.url, retries429: this.retries429, body, token: this.token });
  }

  /**
   * Generates and uploads `oneTime` new EC one-time prekeys and `kyber` new
   * Kyber one-time prekeys (stored locally first). Returns the server's counts.
   */
  async uploadNewPreKeys({ oneTime = 0, kyber = 0 } = {}) {
    const ec = this.newPreKeys(oneTime);
    const ky = this.newKyberPreKeys(kyber);
    const body = {};
    if (ec.length) body.one_time_prekeys = ec.map(SignalParty.preKeyJson);
    if (ky.length) body.kyber_one_time_prekeys = ky.map(SignalParty.signedPreKeyJson);
    const res = await call('PUT', '/v1/keys', { url: this.url, retries429: this.retries429, body, token: this.token });
    return { res, ec, kyber: ky };
  }

  /** GET /v1/users/{id}/bundle, raw response. */
  fetchBundleRaw(userId) {
    return request('GET', `/v1/users/${encodeURIComponent(userId)}/bundle`, { url: this.url, retries429: this.retries429, token: this.token });
  }

  fetchBundle(userId) {
    return call('GET', `/v1/users/${encodeURIComponent(userId)}/bundle`, { url: this.url, retries429: this.retries429, token: this.token });
  }

  /** Fetches the peer's bundle and runs processPreKeyBundle. Returns the bundle JSON. */
  async startSession(peer) {
    const peerId = typeof peer === 'string' ? peer : peer.userId;
    const bundle = await this.fetchBundle(peerId);
    await this.processBundle(bundle);
    return bundle;
  }

  lookup(username) {
    return request('GET', `/v1/users?username=${encodeURIComponent(username)}`, { url: this.url, retries429: this.retries429, token: this.token });
  }

  /**
   * Connects (once); `{ ack: true }` opens it in ack mode (`&ack=1`, docs/api.md §6.9): what it
   * receives stays in flight until acknowledged.
   */
  async connect({ ack = false } = {}) {
    if (this.socket && !this.socket.closed) return this.socket;
    this.socket = await RelaySocket.connect(this.token, { ack, url: this.url });
    return this.socket;
  }

  /** The app dies: the socket is dropped without a Close frame (RelaySocket.terminate). */
  async crash() {
    if (this.socket) await this.socket.terminate();
    this.socket = null;
  }

  async disconnect() {
    if (this.socket) await this.socket.close();
    this.socket = null;
  }

  /**
   * Encrypts `plaintext` for `peer` and sends it over this user's socket.
   * Returns { reply, type, body, bytes } (body = the base64 sent on the wire).
   */
  async sendText(peer, plaintext, opts) {
    const peerId = typeof peer === 'string' ? peer : peer.userId;
    const enc = await this.encrypt(peerId, plaintext);
    const reply = await this.socket.sendOk(peerId, enc.body, opts);
    return { reply, ...enc };
  }

  /** Sends an arbitrary base64 body (no encryption). Returns the reply frame. */
  sendRaw(peer, body, opts) {
    const peerId = typeof peer === 'string' ? peer : peer.userId;
    return this.socket.send(peerId, body, opts);
  }

  /**
   * Waits for `n` envelopes from `from` (a RelayUser or user id), decrypts them
   * in arrival order and returns [{ env, type, plaintext }].
   */
  async receiveFrom(from, n = 1, opts = {}) {
    const fromId = typeof from === 'string' ? from : from.userId;
    const envs = await this.socket.nextMessages(n, { ...opts, filter: (e) => e.from === fromId });
    const out = [];
    for (const env of envs) {
      const d = await this.decrypt(fromId, env.body);
      out.push({ env, type: d.type, plaintext: d.plaintext });
    }
    return out;
  }

  async deleteAccount() {
    if (!this.token) return;
    await request('DELETE', '/v1/users/me', { url: this.url, retries429: this.retries429, token: this.token }).catch(() => {});
  }

  /** Best-effort cleanup: close the socket (and erase the account when asked). */
  async dispose({ erase = false } = {}) {
    await this.disconnect().catch(() => {});
    if (erase) await this.deleteAccount();
  }
}
