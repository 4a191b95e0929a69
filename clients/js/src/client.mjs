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
//   receipts.mjs    end-to-end receipts going out, gathered per sender account
//   history.mjs     the conversations kept on the device, encrypted at rest
//   presence.mjs    presence: the share list, presence read, the `presence` frames
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
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
import { ReceiptSender, receiptOptions } from './receipts.mjs';
import { History, groupConversation } from './history.mjs';
import { Presence } from './presence.mjs';
import { RelayError, UnknownUserError, ServerUnavailableError } from './errors.mjs';
import { ACCOUNT } from './content.mjs';

export { DEFAULT_REFILL, DEFAULT_ROTATE } from './keys.mjs';
export { DEFAULT_RECEIPTS } from './receipts.mjs';

const HISTORY_FILE = 'history.enc';
const RECEIPT_CLOSE_WAIT_MS = 3000; // close() waits this long at most for gathered receipts to leave
const EARLY_RECEIPTS = 1000; // receipts for ids not (yet) kept, held for a send still finishing

/**
 * The history of a store: encrypted in <dir>/history.enc for a FileStore when a key is known (the
 * password, or `opts.keyFile`), else in memory only. `opts` false: in memory only.
 */
async function openHistory(store, opts, password) {
  if (opts === false || !store?.dir) return History.memory();
  const o = opts ?? {};
  const file = o.file ?? join(store.dir, HISTORY_FILE);
  if (o.keyFile) return History.open({ file, keyFile: o.keyFile });
  const pw = o.password ?? password;
  if (pw == null) return History.memory();
  return History.open({ file, password: pw });
}

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
  #history;
  #receipts;
  #presence;
  #early = new Map(); // message id → [{ type, by }]: receipts that came before the send finished

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
    receipts = {},
    history,
  } = {}) {
    if (!store || typeof store.load !== 'function') throw new TypeError('RelayClient.open needs a store (FileStore or MemoryStore)');
    await store.acquire?.();
    try {
      const base = relayBaseUrl(url);
      const refillOpts = refillOptions(refill);
      const doc = await store.load();
      const opts = { url: base, store, ack, refill: refillOpts, rotate: rotateOptions(rotate), savePassword, sendTimeoutMs, receipts: receiptOptions(receipts) };
      if (doc?.account) {
        const device = storedDevice(doc, { url: base, store, username });
        opts.history = await openHistory(store, history, password ?? doc.password ?? null);
        const client = new RelayClient(CONSTRUCT, { ...opts, device, password: password ?? doc.password ?? null, doc });
        await client.#session.refreshTokens();
        return client;
      }
      if (!register) throw new UnknownUserError(`${store} holds no account (and register is false)`, { code: 'no_account' });
      if (!username || !password) throw new RelayError('registering needs a username and a password', { code: 'invalid_request', status: 400 });
      opts.history = await openHistory(store, history, password);
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
  static async startLinking({ url, store, ack = true, refill = {}, rotate = {}, sendTimeoutMs = 30_000, receipts = {}, history } = {}) {
    if (!store || typeof store.load !== 'function') throw new TypeError('RelayClient.startLinking needs a store');
    const base = relayBaseUrl(url);
    const refillOpts = refillOptions(refill);
    const rotateOpts = rotateOptions(rotate);
    return startLinking({
      url: base,
      store,
      refill: refillOpts,
      finish: async (device, tokens) => {
        const opts = { url: base, store, ack, refill: refillOpts, rotate: rotateOpts, sendTimeoutMs, receipts: receiptOptions(receipts) };
        opts.history = await openHistory(store, history, null);
        const client = new RelayClient(CONSTRUCT, { ...opts, device, password: null, doc: null });
        await client.#session.applyTokens(tokens);
        return client;
      },
    });
  }

  /** Use RelayClient.open() or RelayClient.startLinking(). */
  constructor(construct, { url, store, ack, refill, rotate, savePassword, sendTimeoutMs, receipts, history, device, password, doc } = {}) {
    if (construct !== CONSTRUCT) throw new TypeError('use RelayClient.open() or RelayClient.startLinking()');
    super();
    const onError = (e) => this.#reportError(e);
    const onBackgroundError = (e) => this.#reportBackground(e);
    const signal = this.#signal;
    this.#store = store;
    this.#useHistory(history ?? History.memory());
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
    this.#presence = new Presence({ session, directory });
    this.#keys = new KeyUpkeep({ session, signal, refill, rotate, isClosed: () => this.#connection.closed });
    this.#inbound = new Inbound({
      session,
      signal,
      directory,
      groups,
      ack,
      processed: doc?.processed,
      onMessage: (m) => this.#onMessage(m),
      onReceipt: (r) => this.#onReceipt(r),
      onAccount: (a) => this.#onAccount(a),
      beforeAck: () => this.#history.flushed(),
      onGroupKey: (k) => this.#onGroupKey(k).catch(onError),
      onError,
      onPreKeyMessage: () => this.#keys.check().catch(onBackgroundError),
    });
    this.#connection = new Connection({
      session,
      ack,
      onState: (s) => this.#emitSafe('state', s),
      onEnvelopes: (envs, sock) => this.#inbound.enqueue(envs, sock),
      onPresence: (f) => {
        const ev = this.#presence.fromFrame(f);
        if (ev) this.#emitSafe('presence', ev);
      },
      onOnline: () => this.#keys.check().catch(onBackgroundError),
      onPing: () => this.#keys.rotateIfDue().catch(onBackgroundError), // a local check until it is due
      onError,
      onBackgroundError,
    });
    const outbound = (this.#outbound = new Outbound({
      session, signal, directory, connection: this.#connection, sendTimeoutMs, onError,
      onSent: ({ id, peer, content, sentAt, expiresAt }) => this.#keepSent({ id, conversation: peer.userId, with: peer.username, content, sentAt, expiresAt }),
    }));
    groups.sendKey = (userId, payload) => outbound.sendPayload(userId, payload);
    this.#groupSender = new GroupSender({
      session, signal, directory, outbound, groups, sendTimeoutMs,
      onSent: ({ id, groupId, content, sentAt, expiresAt }) => this.#keepSent({ id, conversation: groupConversation(groupId), groupId, content, sentAt, expiresAt }),
    });
    this.#receipts = new ReceiptSender({
      options: receipts ?? receiptOptions(),
      send: (userId, payload) => outbound.sendPayload(userId, payload),
      onError: (e) => {
        if (e?.code !== 'closed') onBackgroundError(e); // the client closed with a receipt under way
      },
    });
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
   * `opts.expiresIn` (seconds, 5 to the relay's inbox TTL): a disappearing message, never
   * delivered after it and dropped from every history then (the result has `expiresAt`).
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
   * { id, groupId, delivery, delivered, queued, dropped }. `opts`: `onlineOnly`, `expiresIn`
   * (seconds: a disappearing message, as for send()).
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

  // ------------------------------------------------------------ presence

  /**
   * Replaces this account's presence share list: the users (usernames or user ids) who may see
   * when it is online, if they share theirs with it too. `lastSeen`: they also see when it was
   * last online. [] shows it to nobody. Resolves the list as stored: { userIds, lastSeen }.
   */
  setPresenceShares(users, opts) {
    return this.#presence.setShares(users, opts);
  }

  /** This account's presence share list: { userIds, lastSeen }. */
  presenceShares() {
    return this.#presence.shares();
  }

  /**
   * The presence of `users` (usernames or user ids) who share theirs with this account and with
   * whom it shares: [{ userId, username?, online, lastSeen? }] (the others are left out).
   */
  presence(users) {
    return this.#presence.read(users);
  }

  // ------------------------------------------------------------ the account

  /** Everything the relay stores about this account (GET /v1/account/export), as it answers. */
  exportAccount() {
    return this.#session.call('GET', '/v1/account/export');
  }

  /**
   * Renames the account (the primary device only; UsernameTakenError when the name is taken).
   * Resolves { userId, username }; this client sends under the new name from then on.
   */
  async changeUsername(name) {
    const res = await this.#session.call('PATCH', '/v1/users/me', { username: String(name) });
    await this.#renamed(res.username);
    // The account's other devices log in by name: they are told (end to end, as a sync message).
    try {
      await this.#outbound.sendPayload(this.userId, { type: ACCOUNT, username: res.username });
    } catch (e) {
      this.#reportError(new RelayError(`the new name did not reach this account's other devices: ${e.message}`, { code: e.code, cause: e }));
    }
    return { userId: res.user_id, username: res.username };
  }

  async #renamed(username) {
    const old = this.#session.device.username;
    if (old === username) return false;
    this.#session.device.username = username;
    this.#directory.renamed(old, username, this.userId);
    await this.#signal.run(() => this.#session.persist());
    return true;
  }

  /**
   * Another device of this account renamed it: stored and used from now on, once the relay
   * confirms the name is the account's (a `renamed` event).
   */
  async #onAccount({ username }) {
    const name = username.toLowerCase();
    if (name === this.username) return;
    const id = await this.#directory.lookup(name).catch(() => null);
    if (id !== this.userId) return; // renamed again since, or not this account's
    if (await this.#renamed(name)) this.#emitSafe('renamed', { username: name });
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

  // ------------------------------------------------------------ receipts and history

  /** An ordinary message arrived: kept in the history, reported, a `delivered` receipt queued. */
  #onMessage(m) {
    const e = {
      id: m.messageId,
      conversation: m.conversation,
      from: { userId: m.from.userId, deviceId: m.from.deviceId },
      outgoing: m.sync,
      text: m.text,
      sentAt: m.sentAt,
      status: m.sync ? 'sent' : 'received',
    };
    if (m.from.username) e.from.username = m.from.username;
    if (m.groupId) e.groupId = m.groupId;
    else if (m.sync && m.to?.username) e.with = m.to.username;
    else if (!m.sync && m.from.username) e.with = m.from.username;
    if (m.text === null) e.b64 = Buffer.from(m.bytes).toString('base64');
    if (m.receiptable) e.receipts = true;
    if (m.expiresAt) e.expiresAt = m.expiresAt;
    this.#history.add(e);
    if (m.sync) this.#applyEarly(e.id);
    this.#emitSafe('message', m);
    if (m.receiptable) this.#receipts.queue(m.from.userId, 'delivered', [m.messageId]);
  }

  /** A send went out: kept in the history as `sent`. */
  #keepSent({ id, conversation, groupId, with: peerName, content, sentAt, expiresAt }) {
    const { userId, username } = this.#session.device;
    const e = { id, conversation, from: { userId, deviceId: this.deviceId, username }, outgoing: true, sentAt, status: 'sent' };
    if (groupId) e.groupId = groupId;
    if (peerName) e.with = peerName;
    if (typeof content === 'string') e.text = content;
    else e.b64 = Buffer.from(content).toString('base64');
    if (expiresAt) e.expiresAt = expiresAt;
    this.#history.add(e);
    this.#applyEarly(id);
  }

  #applyEarly(id) {
    const early = this.#early.get(id);
    if (!early) return;
    this.#early.delete(id);
    for (const r of early) this.#applyReceipt(id, r.type, r.from);
  }

  /** A receipt arrived: the messages it names raised to its status ('status' events), then 'receipt'. */
  #onReceipt({ from, type, ids, sentAt }) {
    const who = { ...from };
    const name = this.#directory.nameOf(from.userId);
    if (name) who.username = name;
    for (const id of ids) {
      if (this.#history.get(id)) this.#applyReceipt(id, type, who);
      else {
        if (this.#early.size >= EARLY_RECEIPTS) this.#early.delete(this.#early.keys().next().value);
        this.#early.set(id, [...(this.#early.get(id) ?? []), { type, from: who }]);
      }
    }
    this.#emitSafe('receipt', { from: who, type, ids, sentAt });
  }

  #applyReceipt(id, type, from) {
    const e = this.#history.get(id);
    // Only for what this account sent, and in a 1:1 conversation only from its other party.
    if (!e || !e.outgoing || (!e.groupId && e.conversation !== from.userId)) return;
    const changed = this.#history.setStatus(id, type, from.userId);
    if (changed) this.#emitSafe('status', { id, conversation: e.conversation, status: changed.status, by: from, message: changed });
  }

  /** A conversation: `{ groupId }`, 'group:ID', a user id or a username (looked up). */
  async #conversation(c) {
    if (c && typeof c === 'object' && c.groupId) return groupConversation(c.groupId);
    const s = String(c ?? '');
    if (s.startsWith('group:')) return s.toLowerCase();
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s)) return s.toLowerCase();
    return (await this.#directory.resolve(s)).userId;
  }

  /**
   * Marks received messages of a conversation read (all of them when `ids` is not given) and
   * queues `read` receipts to their senders. Resolves the ids newly marked.
   */
  async markRead(conversation, ids) {
    const conv = await this.#conversation(conversation);
    const entries = ids ? [].concat(ids).map((id) => this.#history.get(id)).filter((e) => e?.conversation === conv) : this.#history.page(conv, { limit: 1000 });
    const marked = [];
    const bySender = new Map();
    for (const e of entries) {
      if (e.outgoing || e.status === 'read') continue;
      this.#history.setStatus(e.id, 'read');
      marked.push(e.id);
      if (!e.receipts) continue;
      if (!bySender.has(e.from.userId)) bySender.set(e.from.userId, []);
      bySender.get(e.from.userId).push(e.id);
    }
    for (const [userId, list] of bySender) this.#receipts.queue(userId, 'read', list);
    return marked;
  }

  /**
   * A page of a conversation's history, oldest first: the `limit` (50) newest messages before
   * `before` (a Date, a time in ms or a message id; default: the newest).
   */
  async history(conversation, opts) {
    return this.#history.page(await this.#conversation(conversation), opts);
  }

  /** The messages of the history whose text holds every word of `query` (case-insensitive), oldest first. */
  async search(query, { conversation, limit } = {}) {
    const conv = conversation === undefined ? undefined : await this.#conversation(conversation);
    return this.#history.search(query, { conversation: conv, limit });
  }

  /** The conversations kept: [{ conversation, count, last }], the most recent first. */
  conversations() {
    return this.#history.conversations();
  }

  /** The history message with this id (undefined when not kept). */
  message(id) {
    return this.#history.get(id);
  }

  /** True when the history is kept on disk (encrypted), false when in memory only. */
  get historyPersistent() {
    return this.#history.persistent;
  }

  /**
   * Opens the encrypted history of a FileStore after the client was opened without a key (the
   * account reopened with its refresh token): `{ password }` or `{ keyFile }`. What the client
   * kept in memory since is added to it. RelayError `history_key` when the key does not open it.
   */
  async openHistory({ password, keyFile, file } = {}) {
    if (this.#history.persistent) return;
    if (!this.#store?.dir) throw new RelayError(`${this.#store} keeps no files: the history stays in memory`, { code: 'history_memory' });
    if (password == null && !keyFile) throw new RelayError('openHistory needs a password or a key file', { code: 'history_locked' });
    const h = await openHistory(this.#store, { password, keyFile, file }, null);
    const old = this.#history;
    h.merge(old);
    old.onExpire = null;
    await old.close();
    this.#useHistory(h);
  }

  /** `h` is the history from now on; what expires in it is an 'expired' event. */
  #useHistory(h) {
    h.onExpire = (messages) => this.#emitSafe('expired', messages);
    this.#history = h;
  }

  /** Deletes the history: the file on disk and what is in memory. */
  deleteHistory() {
    return this.#history.delete();
  }

  /** Sends the receipts gathered so far now (they leave by themselves after a short delay). */
  flushReceipts() {
    return this.#receipts.flush();
  }

  /** Closes the socket and stops every timer (no more reconnects). Waits for what is being saved. */
  async close() {
    if (this.#connection.closed) return;
    // Gathered receipts leave first, while the socket is up (not waiting long for an unreachable relay).
    await this.#inbound.drained();
    if (this.#connection.state === 'online') {
      let timer;
      await Promise.race([this.#receipts.flush(), new Promise((r) => (timer = setTimeout(r, RECEIPT_CLOSE_WAIT_MS)))]);
      clearTimeout(timer);
    }
    this.#receipts.clear();
    const sock = this.#connection.stop();
    await this.#inbound.drained(); // what was received is processed, saved and acknowledged
    this.#inbound.flushAcks();
    if (sock) await sock.close().catch(() => {});
    await this.#inbound.drained(); // fire-and-forget: what arrived before the close too
    await this.#keys.settled(); // a rotation uploaded is made current and saved first
    await this.#signal.run(() => {});
    await this.#history.close().catch((e) => this.#reportError(e));
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
