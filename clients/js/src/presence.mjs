// Presence (docs/api.md §5.36–5.38, §6.10): opt-in and mutual. This account's share list (the
// users who may see when it is online: PUT/GET /v1/presence/shares), the presence of users read
// (GET /v1/presence, only those who share both ways with this account are answered), and the
// `presence` frames the relay pushes when such a user's first connection opens or last one ends,
// turned into events. Users are named by username or user id; the relay only knows user ids.

const READ_MAX = 100; // user ids per GET /v1/presence (the relay's limit)
const SHARES_MAX = 1000; // user ids in a share list (the relay's limit)

const lastSeenOf = (ms) => (Number.isFinite(ms) ? { lastSeen: new Date(ms) } : {});

export class Presence {
  #session;
  #directory;

  constructor({ session, directory }) {
    this.#session = session;
    this.#directory = directory;
  }

  /** Usernames or user ids → distinct user ids (UnknownUserError for an unknown name). */
  async #ids(users) {
    const list = users == null ? [] : [].concat(users);
    const ids = [];
    for (const u of list) ids.push((await this.#directory.resolve(u)).userId);
    return [...new Set(ids)];
  }

  #list(res) {
    return { userIds: [...(res.user_ids ?? [])], lastSeen: Boolean(res.last_seen) };
  }

  /** Replaces the share list; resolves it as stored: { userIds, lastSeen }. */
  async setShares(users, { lastSeen = false } = {}) {
    const ids = await this.#ids(users);
    if (ids.length > SHARES_MAX) throw new RangeError(`a presence share list holds at most ${SHARES_MAX} users (got ${ids.length})`);
    return this.#list(await this.#session.call('PUT', '/v1/presence/shares', { user_ids: ids, last_seen: Boolean(lastSeen) }));
  }

  /** The share list: { userIds, lastSeen }. */
  async shares() {
    return this.#list(await this.#session.call('GET', '/v1/presence/shares'));
  }

  /**
   * [{ userId, username?, online, lastSeen? }] of the users who share both ways with this account,
   * in the order asked (100 per request); the others are left out, as the relay leaves them out.
   */
  async read(users) {
    const ids = await this.#ids(users);
    const out = [];
    for (let i = 0; i < ids.length; i += READ_MAX) {
      const q = ids.slice(i, i + READ_MAX).join(',');
      const res = await this.#session.call('GET', `/v1/presence?user_ids=${encodeURIComponent(q)}`);
      for (const p of res.presence ?? []) out.push(this.#entry(p.user_id, p.online, p.last_seen));
    }
    return out;
  }

  #entry(userId, online, lastSeenMs) {
    const e = { userId, online: Boolean(online), ...lastSeenOf(lastSeenMs) };
    const name = this.#directory.nameOf(userId);
    if (name) e.username = name;
    return e;
  }

  /** The event of a `presence` frame: { userId, username?, online, lastSeen? } (null if malformed). */
  fromFrame(f) {
    if (typeof f?.user_id !== 'string' || typeof f.online !== 'boolean') return null;
    return this.#entry(f.user_id, f.online, f.last_seen);
  }
}
