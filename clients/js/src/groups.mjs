// Groups on the relay (docs/api.md, "Groups"): the HTTP routes (create, invite, join, leave,
// remove, list, read), the group's `meta` sealed with a per-group key (groupmeta.mjs), and what
// this device keeps about each group: the keys other members handed it and its own sender-key
// chain (the distribution id, the roster it was made for, the devices that hold it).
//
// The per-group key and the sender keys travel as "group key" messages over the 1:1 Signal
// sessions: content `{ v: 1, type: 'group_key', group_id, key?, skdm?, invite?, name }`, never
// shown to the application as a message.
import { randomUUID } from 'node:crypto';
import { newMetaKey, sealMeta, openMeta } from './groupmeta.mjs';
import { processDistribution } from './senderkeys.mjs';
import { RelayError } from './errors.mjs';

export const GROUP_KEY = 'group_key';
const KEYS_KEPT = 4; // per group: keys received that did not (yet) open the meta, the newest kept

const enc = encodeURIComponent;

/** A GroupOut of the relay as the library shows it (meta opened with `keys` when one fits). */
function groupView(g, keys, directory, me) {
  let meta = null;
  if (g.meta) {
    meta = undefined; // sealed with a key this device does not hold (yet)
    for (const k of keys) {
      const v = openMeta(k, g.meta);
      if (v !== undefined) {
        meta = v;
        break;
      }
    }
  }
  const members = g.members.map((m) => {
    const out = { userId: m.user_id, role: m.role, state: m.state, since: new Date(m.since) };
    const name = directory.nameOf(m.user_id);
    if (name) out.username = name;
    return out;
  });
  const mine = members.find((m) => m.userId === me);
  return {
    groupId: g.group_id,
    version: g.version,
    meta,
    createdAt: new Date(g.created_at),
    members,
    role: mine?.role ?? null,
    state: mine?.state ?? null,
  };
}

/**
 * The groups of `session`'s device. `state` is what the store document kept (`groups`);
 * `toJSON()` is what goes back into it. `sendKey(userId, payload)` sends a group key message to
 * every device of a user over the 1:1 path (outbound.mjs).
 */
export class Groups {
  #session;
  #directory;
  #state; // group id → { keys: [b64…], sending: { distributionId, members: [user id…], holders: ['user.device'…] } | null }
  #sendKey = null;
  #onError;

  constructor({ session, directory, state = {}, onError = () => {} }) {
    this.#session = session;
    this.#directory = directory;
    this.#onError = onError;
    this.#state = new Map(Object.entries(state ?? {}).map(([id, s]) => [id, { keys: s.keys ?? [], sending: s.sending ?? null }]));
  }

  /** How group key messages leave (the client's outbound side; set once both exist). */
  set sendKey(fn) {
    this.#sendKey = fn;
  }

  toJSON() {
    return Object.fromEntries(this.#state);
  }

  #entry(groupId) {
    let s = this.#state.get(groupId);
    if (!s) {
      s = { keys: [], sending: null };
      this.#state.set(groupId, s);
    }
    return s;
  }

  /** The per-group key this device seals the meta with (the first one it had). */
  keyOf(groupId) {
    return this.#state.get(groupId)?.keys[0] ?? null;
  }

  #view(g) {
    return groupView(g, this.#state.get(g.group_id)?.keys ?? [], this.#directory, this.#session.device.userId);
  }

  // ------------------------------------------------------------ HTTP

  async #userIds(users) {
    const out = [];
    for (const u of users) out.push((await this.#directory.resolve(u)).userId);
    return out;
  }

  /**
   * Creates a group with this account as its admin and `users` (usernames or user ids) invited.
   * `meta` (anything JSON holds, e.g. { name }) is sealed with a new per-group key; the key goes
   * to every invited user and to this account's other devices in group key messages.
   */
  async create(users = [], meta) {
    const members = await this.#userIds(users);
    const key = newMetaKey();
    const body = { members };
    if (meta !== undefined) body.meta = sealMeta(key, meta);
    const g = await this.#session.call('POST', '/v1/groups', body);
    this.#entry(g.group_id).keys.unshift(key);
    await this.#session.persist();
    await this.#handOut(g.group_id, [...members, this.#session.device.userId]);
    return this.#view(g);
  }

  /** Invites `users` (admins only); each gets the per-group key. */
  async invite(groupId, users) {
    const ids = await this.#userIds(users);
    const g = await this.#session.call('POST', `/v1/groups/${enc(groupId)}/members`, { user_ids: ids });
    await this.#handOut(groupId, ids);
    return this.#view(g);
  }

  /**
   * The per-group key (when this device has one) to `userIds`, as an invitation. Best effort: the
   * group is made already, and a failure (an invitee out of prekeys) is an `error` event; the key
   * also rides with every sender key this device hands out later.
   */
  async #handOut(groupId, userIds) {
    const key = this.keyOf(groupId);
    if (!key || !this.#sendKey) return;
    for (const u of new Set(userIds)) {
      try {
        await this.#sendKey(u, { type: GROUP_KEY, group_id: groupId, key, invite: true });
      } catch (e) {
        this.#onError(new RelayError(`the invitation to ${u} (the group's key) was not sent: ${e.message}`, { code: e.code, cause: e }));
      }
    }
  }

  /** Accepts an invitation. */
  async join(groupId) {
    return this.#view(await this.#session.call('POST', `/v1/groups/${enc(groupId)}/join`, {}));
  }

  /** Leaves (or declines): this device's sender key for the group is forgotten. */
  async leave(groupId) {
    const g = await this.#session.call('DELETE', `/v1/groups/${enc(groupId)}/members/${enc(this.#session.device.userId)}`);
    this.#state.delete(groupId);
    await this.#session.persist();
    return this.#view(g);
  }

  /** Removes a member (admins; anyone removes themselves). The next send uses a new sender key. */
  async remove(groupId, user) {
    const [userId] = await this.#userIds([user]);
    if (userId === this.#session.device.userId) return this.leave(groupId);
    const g = await this.#session.call('DELETE', `/v1/groups/${enc(groupId)}/members/${enc(userId)}`);
    const s = this.#state.get(groupId);
    if (s) s.sending = null; // the removed member holds the current chain: never send with it again
    await this.#session.persist();
    return this.#view(g);
  }

  /** Makes a user of the roster an `admin` or a plain `member` (admins only). */
  async setRole(groupId, user, role) {
    const [userId] = await this.#userIds([user]);
    return this.#view(await this.#session.call('PATCH', `/v1/groups/${enc(groupId)}/members/${enc(userId)}`, { role }));
  }

  /**
   * Replaces the meta (admins only), sealed with the per-group key (RelayError `no_group_key`
   * when this device holds none). `null` clears it.
   */
  async setMeta(groupId, meta) {
    const key = this.keyOf(groupId);
    if (meta !== null && !key) throw new RelayError(`no key of the group ${groupId} to seal its meta with`, { code: 'no_group_key' });
    const sealed = meta === null ? null : sealMeta(key, meta);
    return this.#view(await this.#session.call('PUT', `/v1/groups/${enc(groupId)}/meta`, { meta: sealed }));
  }

  /** This account's groups and invitations: [{ groupId, role, state }] (every page). */
  async list() {
    const out = [];
    let after = null;
    do {
      const page = await this.#session.call('GET', `/v1/groups${after ? `?after=${enc(after)}` : ''}`);
      for (const g of page.groups) out.push({ groupId: g.group_id, role: g.role, state: g.state });
      after = page.next ?? null;
    } while (after);
    return out;
  }

  /** The group as the relay has it now (its roster), its meta opened. */
  async get(groupId) {
    return this.#view(await this.fetchRaw(groupId));
  }

  /** GET /v1/groups/{id} as the relay answers it (the sender reads the roster from it). */
  fetchRaw(groupId) {
    return this.#session.call('GET', `/v1/groups/${enc(groupId)}`);
  }

  // ------------------------------------------------------------ this device's sender key

  /**
   * The sending chain of `groupId` for a send to the joined members `members`: a new one (new
   * distribution id, no holder) when there was none, or when a member it was made for is no
   * longer in the group (left or removed: they hold it).
   */
  sendingChain(groupId, members) {
    const s = this.#entry(groupId);
    const now = new Set(members);
    if (!s.sending || s.sending.members.some((u) => !now.has(u))) {
      s.sending = { distributionId: randomUUID(), members: [...now], holders: [] };
    } else {
      s.sending.members = [...now];
    }
    return s.sending;
  }

  /** Devices that got the current chain (user id + device id). */
  addHolders(groupId, userId, deviceIds) {
    const s = this.#state.get(groupId)?.sending;
    if (!s) return;
    for (const d of deviceIds) if (!s.holders.includes(`${userId}.${d}`)) s.holders.push(`${userId}.${d}`);
  }

  /** A device that is gone or was replaced: it needs the chain again if it comes back. */
  dropHolder(groupId, userId, deviceId) {
    const s = this.#state.get(groupId)?.sending;
    if (s) s.holders = s.holders.filter((h) => h !== `${userId}.${deviceId}`);
  }

  // ------------------------------------------------------------ group key messages received

  /** True for the content of a group key message (not an application message). */
  static isKeyMessage(content) {
    return content?.v === 1 && content.type === GROUP_KEY && typeof content.group_id === 'string';
  }

  /**
   * A group key message from `userId`.`deviceId` (decrypted, under the Signal lock): its sender
   * key processed, its per-group key kept. Returns { groupId, invite, distributionId, name }
   * (`name`: the sender's claim, unchecked).
   */
  async receiveKey(userId, deviceId, content) {
    const groupId = content.group_id.toLowerCase();
    let distributionId = null;
    if (typeof content.skdm === 'string') {
      distributionId = await processDistribution(this.#session.device, userId, deviceId, content.skdm);
    }
    if (typeof content.key === 'string') {
      const s = this.#entry(groupId);
      if (!s.keys.includes(content.key)) {
        s.keys.push(content.key);
        // Keys that opened nothing stay few; the first one (ours, or the first received) stays.
        if (s.keys.length > KEYS_KEPT) s.keys.splice(1, 1);
      }
    }
    return { groupId, invite: content.invite === true, distributionId, name: typeof content.name === 'string' ? content.name : null };
  }
}

/** A RelayError for a group send refused because this account is not a joined member. */
export function notAMember(groupId, cause) {
  return new RelayError(`not a member of the group ${groupId}`, { code: 'not_a_member', status: 403, cause });
}
