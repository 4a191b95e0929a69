// Several devices per account (docs/api.md §3.4, §3.5): the provisioning (linking) flow with
// client-side encryption the relay cannot read (provisioning.mjs), multi-device bundles → one libsignal
// session per ProtocolAddress(user_id, device_id), and the send form with one ciphertext per
// device, including the client's answers to `mismatched_devices` and `stale_devices`.
import { randomUUID } from 'node:crypto';
import { S, SignalParty, b64, unb64, deviceAddress, parseAddressKey } from './signal.mjs';
import { call, errorCode, request } from './http.mjs';
import { RelaySocket, ProvisioningSocket } from './socket.mjs';
import { RelayUser } from './user.mjs';
import { PROVISIONING_VERSION, sealProvisioningMessage, openProvisioningMessage } from './provisioning.mjs';
import { errorFromFrame, errorFromResponse, MismatchedDevicesError } from './errors.mjs';

export { PROVISIONING_VERSION, sealProvisioningMessage, openProvisioningMessage };

// ---------------------------------------------------------------- a device

const enc = (s) => encodeURIComponent(String(s));
const idOf = (peer) => (typeof peer === 'string' ? peer : peer.userId);

/**
 * One device of an account: its own registration id, signed prekey, one-time and
 * Kyber prekeys, libsignal stores, tokens and socket; the identity key pair is the
 * account's (shared by all its devices). Device 1 (the primary) registers with a
 * username and password; a linked device comes from RelayDevice.link().
 *
 * Sessions are per ProtocolAddress(user_id, device_id). The devices this device
 * believes a peer has are those it holds a current session with (as Signal
 * clients do); the registration id sent for each is the session's remote one.
 */
export class RelayDevice extends RelayUser {
  constructor(role = 'u', opts = {}) {
    super(role, opts);
    this.refreshToken = null;
    this.linked = null; // the POST /v1/devices answer of a linked device
  }

  /** Registers an account (device 1, the primary) and logs it in. */
  static async primary(role, opts = {}) {
    const d = new RelayDevice(role, opts);
    await d.register();
    await d.login();
    if (opts.connect) await d.connect();
    return d;
  }

  async login() {
    const res = await super.login();
    this.refreshToken = res.refresh_token;
    return res;
  }

  /** POST /v1/sessions with an explicit device_id (raw response). */
  loginRaw(deviceId, { username = this.username, password = this.password } = {}) {
    const body = { username, password };
    if (deviceId !== undefined) body.device_id = deviceId;
    return request('POST', '/v1/sessions', { url: this.url, retries429: this.retries429, body });
  }

  get address() {
    return this.localAddress;
  }

  label() {
    return `${this.role}#${this.deviceId}`;
  }

  // ------------------------------------------------------ linking

  /** POST /v1/devices/provisioning (primary only): raw response. */
  provisioningCodeRaw() {
    return request('POST', '/v1/devices/provisioning', { url: this.url, retries429: this.retries429, token: this.token });
  }

  async provisioningCode() {
    return call('POST', '/v1/devices/provisioning', { url: this.url, retries429: this.retries429, token: this.token });
  }

  /** The provisioning payload this (primary) device hands to a new device. */
  provisioningPayload(code) {
    return {
      version: PROVISIONING_VERSION,
      user_id: this.userId,
      username: this.username,
      identity_key_pair: b64(this.identity.serialize()),
      code,
    };
  }

  /** PUT /v1/provisioning/{address} with {"body": base64}: raw response. */
  putProvisioningRaw(addressStr, bodyB64) {
    return request('PUT', `/v1/provisioning/${enc(addressStr)}`, { url: this.url, retries429: this.retries429, body: { body: bodyB64 }, token: this.token });
  }

  /** The new device's half of POST /v1/devices (the code authenticates; no bearer). */
  linkBody(code) {
    const k = this.registrationKeys();
    delete k.identity_key;
    return { code, ...k };
  }

  /**
   * POST /v1/devices with the linking code: the answer (user_id, device_id, tokens). A
   * registration id that a device removed from the id this one would get had is refused with
   * the code left usable (409 registration_id_reused): this device draws another and asks
   * again, so that nothing a sender encrypted for the removed device can reach it.
   */
  async postLink(code, { attempts = 3 } = {}) {
    for (let attempt = 1; ; attempt++) {
      const res = await request('POST', '/v1/devices', { url: this.url, retries429: this.retries429, body: this.linkBody(code) });
      if (res.status >= 200 && res.status <= 299) return res.json;
      if (errorCode(res) !== 'registration_id_reused' || attempt >= attempts) throw errorFromResponse('POST', '/v1/devices', res);
      this.newRegistrationId();
    }
  }

  /**
   * Links a new device to `primary`'s account through the provisioning flow and
   * returns it (logged in, not connected). `trace` (optional object) receives every
   * intermediate value for assertions: ephemeral key, socket, address frame, code
   * answer, the sealed body, the pushed frame, the decrypted payload, the link answer.
   * opts: oneTimePreKeys, kyberOneTimePreKeys, registrationId, connect.
   */
  static async link(primary, role = primary.role, opts = {}, trace = {}) {
    // New device: an ephemeral key pair and an anonymous provisioning socket.
    const ephemeral = S.PrivateKey.generate();
    trace.ephemeral = ephemeral;
    const prov = await ProvisioningSocket.connect({ url: opts.url || primary.url });
    trace.socket = prov;
    try {
      const addr = await prov.provision();
      trace.addressFrame = addr;
      // (QR code: address + ephemeral public key, read by the primary.)
      const qr = { address: addr.address, publicKey: ephemeral.getPublicKey() };

      // Primary: a linking code, sealed with the identity key pair to the new device.
      const code = await primary.provisioningCode();
      trace.code = code;
      const sealed = sealProvisioningMessage(qr.publicKey, primary.provisioningPayload(code.code), { address: qr.address });
      trace.sealed = sealed;
      const put = await primary.putProvisioningRaw(qr.address, b64(sealed));
      trace.put = put;
      if (put.status !== 204) throw new Error(`PUT /v1/provisioning -> ${put.status}: ${put.text.slice(0, 300)}`);

      // New device: the pushed message, decrypted with its ephemeral key.
      const msg = await prov.provisioningMessage();
      trace.message = msg;
      // The relay closes the provisioning socket after the push: { code, reason }, or null.
      trace.closedByServer = await prov.waitClosed(5000).catch(() => null);
      const payload = openProvisioningMessage(ephemeral, unb64(msg.body), { address: qr.address });
      trace.payload = payload;
      const identity = S.IdentityKeyPair.deserialize(unb64(payload.identity_key_pair));

      const dev = new RelayDevice(role, { url: primary.url, ...opts, identity, username: payload.username });
      dev.password = null; // a linked device never learns the account's password
      const res = await dev.postLink(payload.code);
      trace.linked = res;
      if (res?.user_id !== payload.user_id) throw new Error(`POST /v1/devices: user_id ${res?.user_id} ≠ ${payload.user_id}`);
      dev.setUserId(res.user_id, res.device_id);
      dev.token = res.access_token;
      dev.refreshToken = res.refresh_token;
      dev.linked = res;
      if (opts.connect) await dev.connect();
      return dev;
    } finally {
      await prov.close().catch(() => {});
    }
  }

  // ------------------------------------------------------ devices

  /** GET /v1/devices → [{device_id, registration_id, created_at}]. */
  async listDevices() {
    const res = await call('GET', '/v1/devices', { url: this.url, retries429: this.retries429, token: this.token });
    return res.devices;
  }

  /** DELETE /v1/devices/{id}: raw response. */
  removeDeviceRaw(deviceId) {
    return request('DELETE', `/v1/devices/${enc(deviceId)}`, { url: this.url, retries429: this.retries429, token: this.token });
  }

  // ------------------------------------------------------ bundles and sessions

  /** GET /v1/users/{id}/devices/{device_id|*}/bundle: raw response. */
  fetchDeviceBundlesRaw(peer, which = '*') {
    return request('GET', `/v1/users/${enc(idOf(peer))}/devices/${which === '*' ? '*' : enc(which)}/bundle`, { url: this.url, retries429: this.retries429, token: this.token });
  }

  async fetchDeviceBundles(peer, which = '*') {
    return call('GET', `/v1/users/${enc(idOf(peer))}/devices/${which === '*' ? '*' : enc(which)}/bundle`, { url: this.url, retries429: this.retries429, token: this.token });
  }

  /**
   * One libsignal session per device entry of a multi-device bundle
   * ({user_id, identity_key, devices:[…]}), skipping this device itself.
   * Returns the device ids a session was started with.
   */
  async processDeviceBundles(json) {
    if (!json || !Array.isArray(json.devices)) throw new Error(`not a multi-device bundle: ${JSON.stringify(json).slice(0, 200)}`);
    const done = [];
    for (const entry of json.devices) {
      if (json.user_id === this.userId && entry.device_id === this.deviceId) continue;
      const single = { ...entry, user_id: json.user_id, identity_key: json.identity_key };
      await this.processBundleFor(deviceAddress(json.user_id, entry.device_id), single);
      done.push(entry.device_id);
    }
    return done;
  }

  /** Fetches bundles (`which` = '*' or a device id) and starts sessions. Returns the bundle JSON. */
  async startDeviceSessions(peer, which = '*') {
    const json = await this.fetchDeviceBundles(peer, which);
    await this.processDeviceBundles(json);
    return json;
  }

  /**
   * Sessions with every device of `peer` this device has none with yet. For its
   * own account it asks GET /v1/devices and fetches the other devices one by one
   * (a `*` fetch would spend a one-time prekey of this very device).
   */
  async ensureSessions(peer) {
    const peerId = idOf(peer);
    if (peerId === this.userId) {
      for (const d of await this.listDevices()) {
        if (d.device_id !== this.deviceId && !this.sessionWith(peerId, d.device_id)) await this.startDeviceSessions(peerId, d.device_id);
      }
    } else if (this.knownDevices(peerId).length === 0) {
      await this.startDeviceSessions(peerId, '*');
    }
  }

  /** The current session record with (peer, device), or null. */
  sessionWith(peer, deviceId) {
    const bytes = this.sessionStore.sessions.get(deviceAddress(idOf(peer), deviceId).toString());
    if (!bytes) return null;
    const rec = S.SessionRecord.deserialize(bytes);
    return rec.hasCurrentState() ? rec : null;
  }

  /**
   * The devices of `peer` this device holds a current session with, sorted:
   * [{deviceId, registrationId}] (registration id = the session's remote one).
   * This device itself is never among them.
   */
  knownDevices(peer) {
    const peerId = idOf(peer);
    const out = [];
    for (const [key, bytes] of this.sessionStore.sessions) {
      const { name, deviceId } = parseAddressKey(key);
      if (name !== peerId) continue;
      if (peerId === this.userId && deviceId === this.deviceId) continue;
      const rec = S.SessionRecord.deserialize(bytes);
      if (!rec.hasCurrentState()) continue;
      out.push({ deviceId, registrationId: rec.remoteRegistrationId() });
    }
    return out.sort((a, b) => a.deviceId - b.deviceId);
  }

  /** Archives the current session with (peer, device): it is no longer one of the peer's known devices. */
  async archiveSession(peer, deviceId) {
    const addr = deviceAddress(idOf(peer), deviceId);
    const rec = await this.sessionStore.getSession(addr);
    if (!rec) return;
    rec.archiveCurrentState();
    await this.sessionStore.saveSession(addr, rec);
  }

  // ------------------------------------------------------ sending (new form)

  /**
   * Encrypts `plaintext` once per device (`deviceIds`, default every known device of
   * `peer`). Returns [{device_id, registration_id, body, type}] (`type` stays local).
   */
  async encryptForDevices(peer, plaintext, deviceIds) {
    const peerId = idOf(peer);
    const known = this.knownDevices(peerId);
    const ids = deviceIds ?? known.map((d) => d.deviceId);
    const out = [];
    for (const id of ids) {
      const k = known.find((d) => d.deviceId === id);
      if (!k) throw new Error(`${this.label()} has no session with ${peerId}.${id}`);
      const e = await this.encryptTo(deviceAddress(peerId, id), plaintext);
      out.push({ device_id: id, registration_id: k.registrationId, body: e.body, type: e.type });
    }
    return out;
  }

  /** The wire shape of messages (without the local `type`). */
  static wireMessages(messages) {
    return messages.map(({ device_id, registration_id, body }) => ({ device_id, registration_id, body }));
  }

  /**
   * One send attempt of the new form: encrypts for `deviceIds` (default: every known
   * device) and sends. Returns { reply, messages } whatever the reply (sent or error).
   */
  async sendEncrypted(peer, plaintext, { deviceIds, onlineOnly, id = randomUUID() } = {}) {
    const messages = await this.encryptForDevices(peer, plaintext, deviceIds);
    const reply = await this.socket.sendMessages(idOf(peer), RelayDevice.wireMessages(messages), { id, onlineOnly });
    return { reply, messages };
  }

  /**
   * What a Signal client does: start sessions when it has none, send one ciphertext per
   * known device, and on `mismatched_devices` (fetch bundles of the missing devices, archive
   * the sessions of the extra ones) or `stale_devices` (archive, fetch a new bundle) fix
   * its device list, re-encrypt for every device and send again.
   * Returns { reply, messages, errors } (errors: the error frames met on the way).
   */
  async sendToUser(peer, plaintext, { maxAttempts = 4, onlineOnly, id = randomUUID() } = {}) {
    const peerId = idOf(peer);
    await this.ensureSessions(peerId);
    const errors = [];
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      // The same id for every attempt: a refused send is not remembered by the relay (§6.9).
      const { reply, messages } = await this.sendEncrypted(peerId, plaintext, { onlineOnly, id });
      if (reply.type === 'sent') return { reply, messages, errors };
      errors.push(reply);
      if (reply.code === 'mismatched_devices') {
        for (const d of reply.extra_devices ?? []) await this.archiveSession(peerId, d);
        for (const d of reply.missing_devices ?? []) await this.startDeviceSessions(peerId, d);
      } else if (reply.code === 'stale_devices') {
        for (const d of reply.stale_devices ?? []) {
          await this.archiveSession(peerId, d);
          await this.startDeviceSessions(peerId, d);
        }
      } else {
        throw errorFromFrame(reply, `${this.label()} → ${peerId}: send`);
      }
    }
    throw new MismatchedDevicesError(`${this.label()} → ${peerId}: still refused after ${maxAttempts} attempts: ${JSON.stringify(errors)}`, { frame: errors[errors.length - 1] });
  }

  // ------------------------------------------------------ receiving

  /**
   * Waits for `n` envelopes from `from` (a device, account or user id; optionally only
   * from device `sourceDevice`), decrypts each from ProtocolAddress(from, source_device)
   * in arrival order and returns [{ env, type, plaintext }].
   */
  async receive(from, n = 1, { sourceDevice, timeoutMs } = {}) {
    const fromId = idOf(from);
    const filter = (e) => e.from === fromId && (sourceDevice === undefined || e.source_device === sourceDevice);
    const envs = await this.socket.nextMessages(n, { filter, ...(timeoutMs ? { timeoutMs } : {}) });
    const out = [];
    for (const env of envs) {
      const d = await this.decryptFrom(deviceAddress(fromId, env.source_device ?? 1), env.body);
      out.push({ env, type: d.type, plaintext: d.plaintext });
    }
    return out;
  }
}

/** A `sent` reply's per-device deliveries as { device_id: delivery }. */
export function deliveries(reply) {
  const out = {};
  for (const d of [...(reply.devices ?? [])].sort((a, b) => a.device_id - b.device_id)) out[d.device_id] = d.delivery;
  return out;
}

export { RelaySocket, ProvisioningSocket };
