// RelayClient: the application-level client. One device of one account, kept in a store
// (store.mjs): it registers or reopens the account, keeps a WebSocket in ack mode open, sends text
// or bytes to a person and reports what arrives as 'message' events; it links devices too
// (docs/api.md §3.5). Built on RelayDevice (devices.mjs): one client implementation.
//
// The class is a facade over one module per responsibility, each holding its own state:
//   session.mjs     the account in its store, the tokens and their renewal
//   connection.mjs  the socket: connect, reconnect with backoff, ping, `renew`
//   inbound.mjs     what arrives: decryption, deduplication, gathered acknowledgements
//   outbound.mjs    sending: every device of the recipient, recovery, retries under one id
//   keys.mjs        prekey refill and rotation
//   directory.mjs   usernames and user ids, this account's devices
//   linking.mjs     device linking, on the new device and on the primary
//   groups.mjs      groups: the routes, the sealed meta, the keys this device keeps per group
//   groupsend.mjs   a group send: sender key handed out, one frame, device lists repaired
import { EventEmitter } from 'node:events';
import { Lock } from './lock.mjs';
import { Session, relayBaseUrl, storedDevice, registerDevice } from './session.mjs';
import { Connection } from './connection.mjs';
import { Inbound } from './inbound.mjs';
import { Outbound } from './outbound.mjs';
import { KeyUpkeep, refillOptions, rotateOptions } from './keys.mjs';
import { Directory } from './directory.mjs';
import { startLinking, linkDevice } from './linking.mjs';
import { Groups } from './groups.mjs';
import { GroupSender } from './groupsend.mjs';
import { RelayError, UnknownUserError, ServerUnavailableError } from './errors.mjs';

export { DEFAULT_REFILL, DEFAULT_ROTATE } from './keys.mjs';
export { parseLinkString } from './linking.mjs';

// Only open() and startLinking() construct a client.
const CONSTRUCT = Symbol('RelayClient.construct');

export class RelayClient extends EventEmitter {
  #store;
  #signal = new Lock(); // one change of the Signal state at a time: receiving, sending, prekeys
  #session;
  #directory;
  #keys;
  #inbound;
  #connection;
  #outbound;
  #groups;
  #groupSender;

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
  } = {}) {
    if (!store || typeof store.load !== 'function') throw new TypeError('RelayClient.open needs a store (FileStore or MemoryStore)');
    await store.acquire?.();
    try {
      const base = relayBaseUrl(url);
      const refillOpts = refillOptions(refill);
      const doc = await store.load();
      const opts = { url: base, store, ack, refill: refillOpts, rotate: rotateOptions(rotate), savePassword, sendTimeoutMs };
      if (doc?.account) {
        const device = storedDevice(doc, { url: base, store, username });
        const client = new RelayClient(CONSTRUCT, { ...opts, device, password: password ?? doc.password ?? null, doc });
        await client.#session.refreshTokens();
        return client;
      }
      if (!register) throw new UnknownUserError(`${store} holds no account (and register is false)`, { code: 'no_account' });
      if (!username || !password) throw new RelayError('registering needs a username and a password', { code: 'invalid_request', status: 400 });
      const device = await registerDevice({ url: base, username, password, refill: refillOpts });
      const client = new RelayClient(CONSTRUCT, { ...opts, device, password, doc: null });
      await client.#session.persist();
      await client.#session.login();
      return client;
    } catch (e) {
      await store.release?.().catch(() => {});
      throw e;
    }
  }

  /**
   * Starts linking a new device to an existing account: opens the provisioning socket and returns
   * { linkString, address, done, cancel }. `linkString` goes to the primary (`linkDevice`); `done`
   * resolves to the RelayClient of the new device (not connected yet) once the primary has linked it.
   */
  static async startLinking({ url, store, ack = true, refill = {}, rotate = {}, sendTimeoutMs = 30_000 } = {}) {
    if (!store || typeof store.load !== 'function') throw new TypeError('RelayClient.startLinking needs a store');
    const base = relayBaseUrl(url);
    const refillOpts = refillOptions(refill);
    const rotateOpts = rotateOptions(rotate);
    return startLinking({
      url: base,
      store,
      refill: refillOpts,
      finish: async (device, tokens) => {
        const opts = { url: base, store, ack, refill: refillOpts, rotate: rotateOpts, sendTimeoutMs };
        const client = new RelayClient(CONSTRUCT, { ...opts, device, password: null, doc: null });
        await client.#session.applyTokens(tokens);
        return client;
      },
    });
  }

  /** Use RelayClient.open() or RelayClient.startLinking(). */
  constructor(construct, { url, store, ack, refill, rotate, savePassword, sendTimeoutMs, device, password, doc } = {}) {
    if (construct !== CONSTRUCT) throw new TypeError('use RelayClient.open() or RelayClient.startLinking()');
    super();
    const onError = (e) => this.#reportError(e);
    const onBackgroundError = (e) => this.#reportBackground(e);
    const signal = this.#signal;
    this.#store = store;
    const session = (this.#session = new Session({
      url,
      store,
      device,
      password,
      savePassword,
      doc,
      processedIds: () => this.#inbound.processedIds(),
      groupState: () => this.#groups.toJSON(),
      onTokens: () => this.#connection.tokensChanged(),
    }));
    const directory = (this.#directory = new Directory(session));
    const groups = (this.#groups = new Groups({ session, directory, state: doc?.groups, onError }));
    this.#keys = new KeyUpkeep({ session, signal, refill, rotate, isClosed: () => this.#connection.closed });
    this.#inbound = new Inbound({
      session,
      signal,
      directory,
      groups,
      ack,
      processed: doc?.processed,
      onMessage: (m) => this.#emitSafe('message', m),
      onGroupKey: (k) => this.#onGroupKey(k).catch(onError),
      onError,
      onPreKeyMessage: () => this.#keys.check().catch(onBackgroundError),
    });
    this.#connection = new Connection({
      session,
      ack,
      onState: (s) => this.#emitSafe('state', s),
      onEnvelopes: (envs, sock) => this.#inbound.enqueue(envs, sock),
      onOnline: () => this.#keys.check().catch(onBackgroundError),
      onPing: () => this.#keys.rotateIfDue().catch(onBackgroundError), // a local check until it is due
      onError,
      onBackgroundError,
    });
    const outbound = (this.#outbound = new Outbound({ session, signal, directory, connection: this.#connection, sendTimeoutMs, onError }));
    groups.sendKey = (userId, payload) => outbound.sendPayload(userId, payload);
    this.#groupSender = new GroupSender({ session, signal, directory, outbound, groups, sendTimeoutMs });
  }

  get url() {
    return this.#session.url;
  }
  get userId() {
    return this.#session.device.userId;
  }
  get deviceId() {
    return this.#session.device.deviceId;
  }
  get username() {
    return this.#session.device.username;
  }
  /** `connecting`, `online` or `offline`. */
  get state() {
    return this.#connection.state;
  }

  /**
   * Connects (ack mode unless opened with ack: false), fetches what waits, and from then on keeps
   * the connection: reconnects on any drop, renews the token, refills prekeys. Rejects when the
   * first attempt fails (ServerUnavailableError, AuthError, RateLimitedError); the client then
   * keeps trying in the background unless the error is an AuthError (close() stops it).
   */
  connect() {
    return this.#connection.connect();
  }

  /**
   * Sends text (a string) or bytes (Uint8Array) to a person (username or user id): every device of
   * theirs, then a copy to this account's other devices. Resolves { id, delivery, deliveries }.
   */
  send(to, content, opts) {
    return this.#outbound.send(to, content, opts);
  }

  // ------------------------------------------------------------ groups

  /**
   * Creates a group: this account its admin, `users` (usernames or user ids) invited. `meta`
   * (anything JSON holds, e.g. { name }) is sealed with a per-group key only members get: the
   * relay keeps ciphertext. Resolves the group (see group()).
   */
  createGroup(users = [], meta) {
    return this.#groups.create(users, meta);
  }

  /** Invites `users` to a group (admins only). Resolves the group. */
  invite(groupId, users) {
    return this.#groups.invite(groupId, Array.isArray(users) ? users : [users]);
  }

  /** Accepts an invitation. Resolves the group. */
  join(groupId) {
    return this.#groups.join(groupId);
  }

  /** Leaves a group (or declines an invitation). Resolves the group after it. */
  leave(groupId) {
    return this.#groups.leave(groupId);
  }

  /** Removes a member (admins; yourself: leave). The next send uses a new sender key. */
  remove(groupId, user) {
    return this.#groups.remove(groupId, user);
  }

  /** Makes a user of the roster an 'admin' or a plain 'member' (admins only). Resolves the group. */
  setRole(groupId, user, role) {
    return this.#groups.setRole(groupId, user, role);
  }

  /** Replaces the group's meta (admins only), sealed with the per-group key. Resolves the group. */
  setMeta(groupId, meta) {
    return this.#groups.setMeta(groupId, meta);
  }

  /** This account's groups and invitations: [{ groupId, role, state }]. */
  groups() {
    return this.#groups.list();
  }

  /**
   * A group as the relay has it now: { groupId, version, meta, createdAt, members:
   * [{ userId, username?, role, state, since }], role, state } (`meta` opened; undefined while
   * this device holds no key that opens it).
   */
  group(groupId) {
    return this.#groups.get(groupId);
  }

  /**
   * Sends text or bytes to every member device of a group, this account's other devices
   * included: one ciphertext under this device's sender key. Resolves
   * { id, groupId, delivery, delivered, queued, dropped }.
   */
  sendGroup(groupId, content, opts) {
    return this.#groupSender.send(groupId, content, opts);
  }

  /** A group key message arrived: an invitation from another account is an 'invite' event. */
  async #onGroupKey({ groupId, from, invite, distributionId, name }) {
    const who = { ...from };
    const checked = name ? await this.#directory.verifyName(name, from.userId).catch(() => undefined) : this.#directory.nameOf(from.userId);
    if (checked) who.username = checked;
    if (invite && from.userId !== this.userId) this.#emitSafe('invite', { groupId, from: who });
    this.#emitSafe('groupKey', { groupId, from: who, invite, distributionId });
  }

  /** username → user id (UnknownUserError when there is none). Cached. */
  lookup(username) {
    return this.#directory.lookup(username);
  }

  /** [{ id, registrationId, createdAt: Date, current }] of this account. */
  devices() {
    return this.#directory.devices();
  }

  /**
   * On the primary: links the device that printed `linkString` (RelayClient.startLinking).
   * Resolves { deviceId }: the id the relay gave the new device, as GET /v1/devices shows it once
   * the new device has presented the code (null when it did not show up within `timeoutMs`).
   */
  linkDevice(linkString, opts) {
    const parts = { session: this.#session, directory: this.#directory, isClosed: () => this.#connection.closed };
    return linkDevice(parts, linkString, opts);
  }

  /**
   * Replaces the signed prekey and the Kyber last-resort prekey once the current signed prekey is
   * `rotate.everyMs` old (the client also checks at connect, after a PreKey message and at every
   * ping). Resolves to the new key ids, or null when not due.
   */
  rotateIfDue() {
    return this.#keys.rotateIfDue();
  }

  /** Closes the socket and stops every timer (no more reconnects). Waits for what is being saved. */
  async close() {
    if (this.#connection.closed) return;
    const sock = this.#connection.stop();
    await this.#inbound.drained(); // what was received is processed, saved and acknowledged
    this.#inbound.flushAcks();
    if (sock) await sock.close().catch(() => {});
    await this.#inbound.drained(); // fire-and-forget: what arrived before the close too
    await this.#keys.settled(); // a rotation uploaded is made current and saved first
    await this.#signal.run(() => {});
    await this.#store.release?.().catch(() => {});
    this.#connection.setState('offline');
  }

  /** Ends this device's session on the relay (DELETE /v1/sessions/current), forgets the refresh token, closes. */
  async logout() {
    await this.#session.end(); // saved while the store is still this client's: close() releases it
    await this.close();
  }

  #emitSafe(event, ...args) {
    try {
      this.emit(event, ...args);
    } catch (e) {
      if (event !== 'error') this.#reportError(e);
    }
  }

  #reportError(e) {
    if (this.listenerCount('error') > 0) this.#emitSafe('error', e);
  }

  /**
   * A background task failed (a refill): reported unless the relay was unreachable, which the
   * state events show already (the task runs again at the next connect).
   */
  #reportBackground(e) {
    if (!(e instanceof ServerUnavailableError)) this.#reportError(e);
  }
}
