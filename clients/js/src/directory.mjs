// Who is who for one client: usernames and user ids (looked up once, cached both ways), the name a
// sender claims checked against its user id, and this account's own devices.
import { UnknownUserError } from './errors.mjs';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const OWN_DEVICES_TTL_MS = 30_000;

export class Directory {
  #session;
  #nameToId; // username → user id, or null for a name the relay does not know
  #idToName;
  #ownDevices = null; // { at, ids }

  constructor(session) {
    this.#session = session;
    const { username, userId } = session.device;
    this.#nameToId = new Map([[username, userId]]);
    this.#idToName = new Map([[userId, username]]);
  }

  async #lookupUncached(username) {
    const res = await this.#session.call('GET', `/v1/users?username=${encodeURIComponent(username)}`);
    return res.user_id;
  }

  #remember(name, userId) {
    this.#nameToId.set(name, userId);
    this.#idToName.set(userId, name);
  }

  /** username → user id (UnknownUserError when there is none). Cached. */
  async lookup(username) {
    const n = String(username).toLowerCase();
    const known = this.#nameToId.get(n);
    if (known) return known;
    const id = await this.#lookupUncached(n);
    this.#remember(n, id);
    return id;
  }

  /** A username or a user id → { userId, username } (username undefined when not known). */
  async resolve(to) {
    const s = String(to);
    if (UUID_RE.test(s)) return { userId: s.toLowerCase(), username: this.#idToName.get(s.toLowerCase()) };
    const userId = await this.lookup(s);
    return { userId, username: s.toLowerCase() };
  }

  /** The account `userId` was renamed from `oldName` to `newName`. */
  renamed(oldName, newName, userId) {
    if (this.#nameToId.get(oldName) === userId) this.#nameToId.delete(oldName);
    this.#remember(newName, userId);
  }

  /** The username known for `userId`, if any. */
  nameOf(userId) {
    return this.#idToName.get(userId);
  }

  /** The claimed name when it maps to `userId` (one lookup per name, cached), else undefined. */
  async verifyName(name, userId) {
    const n = name.toLowerCase();
    if (!this.#nameToId.has(n)) {
      try {
        this.#remember(n, await this.#lookupUncached(n));
      } catch (e) {
        if (e instanceof UnknownUserError) this.#nameToId.set(n, null);
        return undefined;
      }
    }
    return this.#nameToId.get(n) === userId ? n : undefined;
  }

  /** [{ id, registrationId, createdAt: Date, current }] of this account (GET /v1/devices). */
  async devices() {
    const res = await this.#session.call('GET', '/v1/devices');
    const current = this.#session.device.deviceId;
    const list = res.devices.map((d) => ({
      id: d.device_id,
      registrationId: d.registration_id,
      createdAt: new Date(d.created_at * 1000),
      current: d.device_id === current,
    }));
    this.#ownDevices = { at: Date.now(), ids: list.map((d) => d.id) };
    return list;
  }

  /** The ids of this account's devices, listed at most 30 s ago. */
  async ownDeviceIds() {
    if (!this.#ownDevices || Date.now() - this.#ownDevices.at > OWN_DEVICES_TTL_MS) await this.devices();
    return this.#ownDevices.ids;
  }

  /** The account's device list changed (a device linked, a send refused): list it again next time. */
  forgetOwnDevices() {
    this.#ownDevices = null;
  }
}
