// Sending: one logical send (one id) encrypted for every device of the recipient, then a copy for
// this account's other devices; `mismatched_devices` / `stale_devices` repaired and sent again
// under the same id; a reply lost to a dropped connection answered by the same frame again once
// the client is back online (in ack mode the relay stores a repeated id once).
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { WS_TIMEOUT_MS } from './http.mjs';
import { SocketClosedError } from './socket.mjs';
import { RelayDevice } from './devices.mjs';
import { encodeContent } from './content.mjs';
import { RelayError, ServerUnavailableError, MismatchedDevicesError, errorFromFrame } from './errors.mjs';

const MAX_ATTEMPTS = 5; // sends refused for the recipient's device list, repaired and tried again
const UNREACHABLE_RETRY_MS = 1000;

/**
 * A send's `expiresIn` (seconds, a disappearing message): undefined when not asked for, else a
 * whole number of seconds (the relay checks its bounds, 5 s to its inbox TTL: `invalid_frame`).
 */
export function expiresInOption(expiresIn) {
  if (expiresIn === undefined || expiresIn === null || expiresIn === 0 || expiresIn === false) return undefined;
  if (!Number.isInteger(expiresIn) || expiresIn < 0) throw new TypeError(`expiresIn must be a whole number of seconds (got ${expiresIn})`);
  return expiresIn;
}

/**
 * The sending side of `session`'s device: sessions and encryption under `signal` (a Lock), frames
 * on `connection`'s socket. `onError(e)` hears of a sync copy that failed.
 */
export class Outbound {
  #session;
  #signal;
  #directory;
  #connection;
  #sendTimeoutMs;
  #onError;
  #onSent;

  constructor({ session, signal, directory, connection, sendTimeoutMs, onError, onSent = () => {} }) {
    this.#session = session;
    this.#signal = signal;
    this.#directory = directory;
    this.#connection = connection;
    this.#sendTimeoutMs = sendTimeoutMs;
    this.#onError = onError;
    this.#onSent = onSent;
  }

  /**
   * Sends text (a string) or bytes (Uint8Array) to a person (username or user id): every device of
   * theirs, then a copy to this account's other devices. Resolves { id, delivery, deliveries }.
   */
  async send(to, content, { timeoutMs = this.#sendTimeoutMs, expiresIn } = {}) {
    this.assertOpen();
    expiresIn = expiresInOption(expiresIn);
    const { userId, username } = this.#session.device;
    const started = Date.now();
    const deadline = started + timeoutMs;
    const peer = await this.untilDeadline(() => this.#directory.resolve(to), deadline);
    const body = typeof content === 'string' ? { v: 1, text: content } : { v: 1, b64: Buffer.from(content).toString('base64') };
    const id = randomUUID();
    body.mid = id; // the message's own id, inside the ciphertext: receipts name it
    const self = peer.userId === userId;
    const reply = await this.#sendTo(peer.userId, { ...body, name: username }, id, deadline, { self, expiresIn });
    if (!reply) throw new RelayError('this account has no other device to send to', { code: 'no_devices' });
    if (!self) {
      try {
        await this.#sendTo(userId, { ...body, name: username, to: peer.userId, to_name: peer.username }, `${id}:sync`, deadline, { self: true, expiresIn });
      } catch (e) {
        this.#onError(new RelayError(`the copy to this account's other devices failed: ${e.message}`, { code: e.code, cause: e }));
      }
    }
    // The relay's expiry counts from when it took the frame, later than `started`: the copy kept
    // here goes a little before the relay's, never after.
    const expiresAt = expiresIn ? new Date(started + expiresIn * 1000) : undefined;
    this.#onSent({ id, peer, content, sentAt: new Date(), expiresAt });
    const result = {
      id,
      delivery: reply.delivery,
      deliveries: [...(reply.devices ?? [])].sort((a, b) => a.device_id - b.device_id).map((d) => ({ deviceId: d.device_id, delivery: d.delivery })),
    };
    if (expiresAt) result.expiresAt = expiresAt;
    return result;
  }

  /** RelayError `closed` once the client is closed. */
  assertOpen() {
    if (this.#connection.closed) throw new RelayError('the client is closed', { code: 'closed' });
  }

  /**
   * A structured payload (an object, e.g. a group key message) to every device of `peerId` (this
   * account's other devices when it is this account), under a new id. Resolves the `sent` reply,
   * or null for this account when it has no other device.
   */
  sendPayload(peerId, payload, { deadline = Date.now() + this.#sendTimeoutMs } = {}) {
    const { userId, username } = this.#session.device;
    return this.#sendTo(peerId, { v: 1, ...payload, name: username }, randomUUID(), deadline, { self: peerId === userId });
  }

  /**
   * Sessions with this account's other devices (their list cached 30 s), under the Signal lock.
   * True when one was started.
   */
  async ensureOwnSessions() {
    const device = this.#session.device;
    const { userId, deviceId } = device;
    if (device.knownDevices(userId).length) return false;
    let started = false;
    for (const d of await this.#directory.ownDeviceIds()) {
      if (d !== deviceId && !device.sessionWith(userId, d)) {
        await this.#session.withAuth(() => device.startDeviceSessions(userId, d));
        started = true;
      }
    }
    return started;
  }

  /** fn(), tried again every second while the relay cannot be reached, until `deadline`. */
  async untilDeadline(fn, deadline) {
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof ServerUnavailableError) || Date.now() + UNREACHABLE_RETRY_MS > deadline || this.#connection.closed) throw e;
        await sleep(UNREACHABLE_RETRY_MS);
      }
    }
  }

  /**
   * One logical send (one `id`) to every device of `peerId`: sessions first, then one ciphertext
   * per device; mismatched/stale devices fixed and sent again under the same id. Returns the
   * `sent` frame, or null for a copy to one's own devices when there is none.
   */
  async #sendTo(peerId, payload, id, deadline, { self = false, expiresIn } = {}) {
    const session = this.#session;
    const device = session.device;
    const plaintext = encodeContent(payload);
    let last;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const messages = await this.untilDeadline(() => this.#signal.run(async () => {
        if (self) await this.ensureOwnSessions();
        else if (device.knownDevices(peerId).length === 0) await session.withAuth(() => device.startDeviceSessions(peerId, '*'));
        const m = await device.encryptForDevices(peerId, plaintext);
        await session.persist(); // the ratchet moved: saved before the ciphertext leaves
        return m;
      }), deadline);
      if (messages.length === 0) {
        if (self) return null;
        throw new RelayError(`no device of ${peerId} to send to`, { code: 'no_devices' });
      }
      const frame = { action: 'send', to: peerId, id, messages: RelayDevice.wireMessages(messages) };
      if (expiresIn) frame.expires_in = expiresIn;
      const reply = await this.deliver(frame, deadline);
      if (reply.type === 'sent') return reply;
      last = reply;
      if (reply.code === 'mismatched_devices') {
        await this.#signal.run(async () => {
          for (const d of reply.extra_devices ?? []) await device.archiveSession(peerId, d);
          for (const d of reply.missing_devices ?? []) await session.withAuth(() => device.startDeviceSessions(peerId, d));
          if (self) this.#directory.forgetOwnDevices();
        });
      } else if (reply.code === 'stale_devices') {
        await this.#signal.run(async () => {
          for (const d of reply.stale_devices ?? []) {
            await device.archiveSession(peerId, d);
            await session.withAuth(() => device.startDeviceSessions(peerId, d));
          }
        });
      } else {
        throw errorFromFrame(reply, `send to ${peerId}`);
      }
    }
    throw new MismatchedDevicesError(`send to ${peerId}: the device list still does not match after ${MAX_ATTEMPTS} attempts`, { frame: last });
  }

  /**
   * Sends one frame and returns its reply. A reply lost to a dropped connection: the same frame
   * again (same id) once the client is back online, until `deadline`.
   */
  async deliver(frame, deadline) {
    for (let attempt = 0; ; attempt++) {
      const sock = await this.#connection.onlineSocket(deadline, this.#sendTimeoutMs);
      let reply;
      try {
        reply = await sock.request(
          frame,
          (f) => (f.type === 'sent' || f.type === 'error') && f.id === frame.id,
          `reply to send ${frame.id}`,
          Math.max(1000, Math.min(WS_TIMEOUT_MS, deadline - Date.now())),
        );
      } catch (e) {
        if (!(e instanceof SocketClosedError)) await sock.terminate().catch(() => {}); // no reply: a dead connection
        if (Date.now() >= deadline) throw new ServerUnavailableError(`no reply from the relay at ${this.#session.url} to send ${frame.id}`, { cause: e });
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
}
