// A group send: one ciphertext under this device's sender key, one frame, and the relay fans it
// out to every member device. Before it: the roster read from the relay (a member gone means a
// new sender key), sessions with member devices this device does not know yet, and the sender
// key handed over the 1:1 sessions to every device that lacks it. A `mismatched_devices` or
// `stale_devices` answer is repaired (sessions, key) and the frame sent again under the same id.
import { randomUUID } from 'node:crypto';
import { distributionMessage, groupEncrypt } from './senderkeys.mjs';
import { Lock } from './lock.mjs';
import { encodeContent } from './content.mjs';
import { GROUP_KEY, notAMember } from './groups.mjs';
import { MismatchedDevicesError, errorFromFrame } from './errors.mjs';
import { expiresInOption } from './outbound.mjs';

const MAX_ATTEMPTS = 5;

export class GroupSender {
  #session;
  #signal;
  #directory;
  #outbound;
  #groups;
  #sendTimeoutMs;
  #onSent;
  #order = new Lock(); // one group send at a time: the chain and its holders change as it goes

  constructor({ session, signal, directory, outbound, groups, sendTimeoutMs, onSent = () => {} }) {
    this.#onSent = onSent;
    this.#session = session;
    this.#signal = signal;
    this.#directory = directory;
    this.#outbound = outbound;
    this.#groups = groups;
    this.#sendTimeoutMs = sendTimeoutMs;
  }

  /**
   * Sends text or bytes to every member device of `groupId` (this account's other devices
   * included). Resolves { id, groupId, delivery, delivered, queued, dropped }.
   */
  send(groupId, content, { timeoutMs = this.#sendTimeoutMs, onlineOnly = false, expiresIn } = {}) {
    expiresIn = expiresInOption(expiresIn);
    return this.#order.run(() => this.#send(String(groupId).toLowerCase(), content, { timeoutMs, onlineOnly, expiresIn }));
  }

  async #send(groupId, content, { timeoutMs, onlineOnly, expiresIn }) {
    this.#outbound.assertOpen();
    const started = Date.now();
    const deadline = started + timeoutMs;
    const { userId, username } = this.#session.device;
    const id = randomUUID();
    // `mid`: the message's own id, inside the ciphertext (receipts name it).
    const payload = typeof content === 'string'
      ? { v: 1, text: content, name: username, mid: id }
      : { v: 1, b64: Buffer.from(content).toString('base64'), name: username, mid: id };
    const plaintext = encodeContent(payload);
    let last;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      // The roster as the relay has it now: whoever left since the chain was made must not
      // read what follows.
      const g = await this.#outbound.untilDeadline(() => this.#groups.fetchRaw(groupId), deadline);
      const joined = g.members.filter((m) => m.state === 'member').map((m) => m.user_id);
      if (!joined.includes(userId)) throw notAMember(groupId);
      const chain = this.#groups.sendingChain(groupId, joined);
      const devices = await this.#deviceMap(joined, deadline);
      await this.#distribute(groupId, chain, devices, deadline);
      const body = await this.#signal.run(async () => {
        const b = await groupEncrypt(this.#session.device, chain.distributionId, plaintext);
        await this.#session.persist(); // the chain moved: saved before the ciphertext leaves
        return b;
      });
      const frame = { action: 'send', id, group_id: groupId, body, devices: await this.#deviceMap(joined, deadline) };
      if (onlineOnly) frame.online_only = true;
      if (expiresIn) frame.expires_in = expiresIn;
      const reply = await this.#outbound.deliver(frame, deadline);
      if (reply.type === 'sent') {
        // Counted from before the frame left: the copy kept here goes no later than the relay's.
        const expiresAt = expiresIn ? new Date(started + expiresIn * 1000) : undefined;
        this.#onSent({ id, groupId, content, sentAt: new Date(), expiresAt });
        const result = { id, groupId, delivery: reply.delivery, delivered: reply.delivered ?? 0, queued: reply.queued ?? 0, dropped: reply.dropped ?? 0 };
        if (expiresAt) result.expiresAt = expiresAt;
        return result;
      }
      last = reply;
      if (reply.code === 'mismatched_devices') await this.#mismatched(groupId, reply.users ?? []);
      else if (reply.code === 'stale_devices') await this.#stale(groupId, reply.users ?? []);
      else if (reply.code === 'not_a_member') throw notAMember(groupId, errorFromFrame(reply, `send to group ${groupId}`));
      else throw errorFromFrame(reply, `send to group ${groupId}`);
    }
    throw new MismatchedDevicesError(`send to group ${groupId}: the device list still does not match after ${MAX_ATTEMPTS} attempts`, { frame: last });
  }

  /**
   * { user id: [{ device_id, registration_id }] } of every joined member device but this one,
   * from the sessions this device holds; sessions are started with members it has none with.
   */
  async #deviceMap(joined, deadline) {
    const session = this.#session;
    const device = session.device;
    await this.#outbound.untilDeadline(() => this.#signal.run(async () => {
      let started = false;
      for (const u of joined) {
        if (u === device.userId) started = (await this.#outbound.ensureOwnSessions()) || started;
        else if (device.knownDevices(u).length === 0) {
          await session.withAuth(() => device.startDeviceSessions(u, '*'));
          started = true;
        }
      }
      if (started) await session.persist();
    }), deadline);
    const map = {};
    for (const u of joined) {
      const list = device.knownDevices(u).map((d) => ({ device_id: d.deviceId, registration_id: d.registrationId }));
      if (list.length) map[u] = list;
    }
    return map;
  }

  /**
   * The chain's distribution message to every member whose devices do not all hold it yet, over
   * the 1:1 path (all of that member's devices: the 1:1 send repairs its own device list).
   */
  async #distribute(groupId, chain, devices, deadline) {
    const lacking = Object.entries(devices)
      .filter(([u, list]) => list.some((d) => !chain.holders.includes(`${u}.${d.device_id}`)))
      .map(([u]) => u);
    // Made here even when nobody lacks it (a member alone): groupEncrypt needs the chain.
    const skdm = await this.#signal.run(async () => {
      const m = await distributionMessage(this.#session.device, chain.distributionId);
      return Buffer.from(m).toString('base64'); // saved with the ratchet of the 1:1 sends below
    });
    if (!lacking.length) return;
    const key = this.#groups.keyOf(groupId);
    for (const u of lacking) {
      const content = { type: GROUP_KEY, group_id: groupId, skdm };
      if (key) content.key = key;
      const reply = await this.#outbound.sendPayload(u, content, { deadline });
      const reached = (reply?.devices ?? []).map((d) => d.device_id);
      this.#groups.addHolders(groupId, u, reached);
    }
    await this.#signal.run(() => this.#session.persist());
  }

  async #mismatched(groupId, users) {
    const session = this.#session;
    const device = session.device;
    await this.#signal.run(async () => {
      for (const { user_id: u, missing = [], extra = [] } of users) {
        for (const d of extra) {
          await device.archiveSession(u, d);
          this.#groups.dropHolder(groupId, u, d);
        }
        for (const d of missing) await session.withAuth(() => device.startDeviceSessions(u, d));
        if (u === device.userId) this.#directory.forgetOwnDevices();
      }
      await session.persist();
    });
  }

  async #stale(groupId, users) {
    const session = this.#session;
    const device = session.device;
    await this.#signal.run(async () => {
      for (const { user_id: u, stale = [] } of users) {
        for (const d of stale) {
          await device.archiveSession(u, d);
          this.#groups.dropHolder(groupId, u, d);
          await session.withAuth(() => device.startDeviceSessions(u, d));
        }
      }
      await session.persist();
    });
  }
}

