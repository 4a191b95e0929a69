// The Signal-protocol half of the client: keys, stores and encrypt/decrypt on top of the real
// @signalapp/libsignal-client. Nothing here talks to the network; user.mjs adds the relay.
// The stores live in memory; SignalParty.exportState() / new SignalParty({ state }) turn all of
// them into JSON and back (what store.mjs keeps in a MemoryStore or a FileStore).
import * as S from '@signalapp/libsignal-client';
import { randomInt } from 'node:crypto';

export { S };

/** The single-device model's device id (the primary); multi-device code passes its own. */
export const DEVICE_ID = 1;
export const MAX_KEY_ID = 2 ** 31 - 1;

// ---------------------------------------------------------------- encoding

/** Standard base64 with padding (what the relay expects and returns). */
export function b64(bytes) {
  return Buffer.from(bytes).toString('base64');
}

const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** True when `s` is standard base64 with padding. */
export function isPaddedB64(s) {
  return typeof s === 'string' && B64_RE.test(s);
}

/** Decodes base64 into a fresh Uint8Array (own ArrayBuffer, as libsignal wants). */
export function unb64(s) {
  if (typeof s !== 'string') throw new TypeError(`expected a base64 string, got ${typeof s}`);
  return new Uint8Array(Buffer.from(s, 'base64'));
}

/** A copy of `bytes` with one bit flipped (byte `index`, bit `bit`). */
export function flipBit(bytes, index = 0, bit = 0) {
  const out = new Uint8Array(bytes);
  const i = index < 0 ? out.length + index : index;
  out[i] ^= 1 << bit;
  return out;
}

export function address(userId) {
  return S.ProtocolAddress.new(String(userId), DEVICE_ID);
}

/** ProtocolAddress(user_id, device_id): one libsignal session per device. */
export function deviceAddress(userId, deviceId = DEVICE_ID) {
  return S.ProtocolAddress.new(String(userId), Number(deviceId));
}

/** "name.device" (ProtocolAddress.toString()) → { name, deviceId }. */
export function parseAddressKey(key) {
  const i = key.lastIndexOf('.');
  return { name: key.slice(0, i), deviceId: Number(key.slice(i + 1)) };
}

// ---------------------------------------------------------------- stores

export class MemIdentityKeyStore extends S.IdentityKeyStore {
  constructor(identity, registrationId) {
    super();
    this.identity = identity;
    this.registrationId = registrationId;
    this.known = new Map(); // "name.device" -> PublicKey
  }
  async getIdentityKey() {
    return this.identity.privateKey;
  }
  async getIdentityKeyPair() {
    return this.identity;
  }
  async getLocalRegistrationId() {
    return this.registrationId;
  }
  async saveIdentity(name, key) {
    const k = name.toString();
    const prev = this.known.get(k);
    this.known.set(k, key);
    return prev && !prev.equals(key)
      ? S.IdentityChange.ReplacedExisting
      : S.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity(name, key, _direction) {
    // Trust on first use; a changed identity is not trusted.
    const prev = this.known.get(name.toString());
    return !prev || prev.equals(key);
  }
  async getIdentity(name) {
    return this.known.get(name.toString()) ?? null;
  }
}

export class MemSessionStore extends S.SessionStore {
  constructor() {
    super();
    this.sessions = new Map(); // "name.device" -> serialized SessionRecord
  }
  async saveSession(name, record) {
    this.sessions.set(name.toString(), record.serialize());
  }
  async getSession(name) {
    const bytes = this.sessions.get(name.toString());
    return bytes ? S.SessionRecord.deserialize(bytes) : null;
  }
  async getExistingSessions(addresses) {
    return addresses.map((a) => {
      const bytes = this.sessions.get(a.toString());
      if (!bytes) throw new Error(`no session for ${a.toString()}`);
      return S.SessionRecord.deserialize(bytes);
    });
  }
}

export class MemPreKeyStore extends S.PreKeyStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async savePreKey(id, record) {
    this.records.set(id, record);
  }
  async getPreKey(id) {
    const r = this.records.get(id);
    if (!r) throw new Error(`no one-time prekey ${id}`);
    return r;
  }
  async removePreKey(id) {
    this.records.delete(id);
  }
}

export class MemSignedPreKeyStore extends S.SignedPreKeyStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async saveSignedPreKey(id, record) {
    this.records.set(id, record);
  }
  async getSignedPreKey(id) {
    const r = this.records.get(id);
    if (!r) throw new Error(`no signed prekey ${id}`);
    return r;
  }
}

export class MemKyberPreKeyStore extends S.KyberPreKeyStore {
  constructor() {
    super();
    this.records = new Map(); // id -> KyberPreKeyRecord
    this.lastResort = new Set(); // ids of last-resort keys (kept after use)
    this.usedBaseKeys = new Set(); // "kyberId:signedId:baseKeyB64" for last-resort reuse detection
    this.usedOneTime = []; // ids of consumed one-time keys, in order
    this.usedLastResort = []; // ids of last-resort keys used, in order
  }
  async saveKyberPreKey(id, record) {
    this.records.set(id, record);
  }
  async getKyberPreKey(id) {
    const r = this.records.get(id);
    if (!r) throw new Error(`no kyber prekey ${id}`);
    return r;
  }
  async markKyberPreKeyUsed(id, signedPreKeyId, baseKey) {
    if (this.lastResort.has(id)) {
      const k = `${id}:${signedPreKeyId}:${b64(baseKey.serialize())}`;
      if (this.usedBaseKeys.has(k)) throw new Error(`kyber last-resort key ${id} reused with the same base key`);
      this.usedBaseKeys.add(k);
      this.usedLastResort.push(id);
    } else {
      this.records.delete(id);
      this.usedOneTime.push(id);
    }
  }
}

const keyOf = (sender, distributionId) => `${sender.toString()}::${String(distributionId).toLowerCase()}`;

/** The SenderKeyStore of one party, in memory: "name.device::distribution id" → record bytes. */
export class MemSenderKeyStore extends S.SenderKeyStore {
  constructor(records = {}) {
    super();
    this.records = new Map(Object.entries(records).map(([k, v]) => [k, unb64(v)]));
  }
  async saveSenderKey(sender, distributionId, record) {
    this.records.set(keyOf(sender, distributionId), record.serialize());
  }
  async getSenderKey(sender, distributionId) {
    const bytes = this.records.get(keyOf(sender, distributionId));
    return bytes ? S.SenderKeyRecord.deserialize(bytes) : null;
  }
  /** Every record as base64 (exportState). */
  toJSON() {
    return Object.fromEntries([...this.records].map(([k, v]) => [k, b64(v)]));
  }
  /** Forgets this party's own chains of a distribution id it no longer sends with. */
  forget(sender, distributionId) {
    this.records.delete(keyOf(sender, distributionId));
  }
}

// ---------------------------------------------------------------- framing

// Wire body of a relayed message: 1 byte CiphertextMessageType (2 = SignalMessage,
// 3 = PreKeySignalMessage) followed by the libsignal serialization.
export const MSG_WHISPER = S.CiphertextMessageType.Whisper; // 2
export const MSG_PREKEY = S.CiphertextMessageType.PreKey; // 3

export function frame(type, serialized) {
  const out = new Uint8Array(1 + serialized.length);
  out[0] = type;
  out.set(serialized, 1);
  return out;
}

export function unframe(bytes) {
  if (bytes.length < 2) throw new Error('wire body too short');
  return { type: bytes[0], payload: bytes.slice(1) };
}

// ---------------------------------------------------------------- a party

let nextIdBase = randomInt(1, 2 ** 30);
function freshIdRange(n) {
  // Distinct ids across all parties in this process (not required, but it
  // makes "the key the server returned is one of ours" checks meaningful).
  if (nextIdBase + n > MAX_KEY_ID) nextIdBase = randomInt(1, 2 ** 20);
  const start = nextIdBase;
  nextIdBase += n + randomInt(1, 1000);
  return start;
}

/**
 * One Signal party: identity, registration id, prekeys and in-memory stores.
 * `userId` must be set (setUserId) before sessions are used; it is the
 * ProtocolAddress name, with device id 1 unless setUserId() is given another
 * (lib/devices.mjs).
 */
export class SignalParty {
  constructor({ oneTimePreKeys = 100, kyberOneTimePreKeys = 10, identity, registrationId, state } = {}) {
    if (state) {
      this.importState(state);
      return;
    }
    // `identity`: a linked device shares its account's identity key pair.
    this.identity = identity ?? S.IdentityKeyPair.generate();
    this.registrationId = registrationId ?? randomInt(1, 16381); // libsignal: 14-bit, non-zero
    this.identityStore = new MemIdentityKeyStore(this.identity, this.registrationId);
    this.sessionStore = new MemSessionStore();
    this.preKeyStore = new MemPreKeyStore();
    this.signedPreKeyStore = new MemSignedPreKeyStore();
    this.kyberPreKeyStore = new MemKyberPreKeyStore();
    this.senderKeyStore = new MemSenderKeyStore();
    this.userId = null;

    this.signedPreKey = this.newSignedPreKey();
    this.kyberLastResort = this.newKyberPreKeys(1, { lastResort: true })[0];
    this.oneTimePreKeys = this.newPreKeys(oneTimePreKeys);
    this.kyberOneTimePreKeys = this.newKyberPreKeys(kyberOneTimePreKeys);
  }

  /**
   * Draws another registration id. Only before the device is registered: a link refused with
   * 409 registration_id_reused (a device removed from the id this one would get had it), when
   * no session or peer knows the old id yet.
   */
  newRegistrationId() {
    let next;
    do next = randomInt(1, 16381);
    while (next === this.registrationId);
    this.registrationId = next;
    this.identityStore = new MemIdentityKeyStore(this.identity, next);
  }

  // ------------------------------------------------------ persistence

  /**
   * Every key and every store as JSON (binary values in standard base64): identity key pair,
   * registration id, the current signed and Kyber last-resort prekeys, every prekey record
   * (EC, signed, Kyber with its last-resort and used-base-key markers), sessions, sender keys
   * (groups: this party's chains and those other members distributed), the identities of peers,
   * and the local address. Secrets: keep it where only the owner can read.
   */
  exportState() {
    const recs = (m) => Object.fromEntries([...m].map(([id, r]) => [id, b64(r.serialize())]));
    const k = this.kyberPreKeyStore;
    return {
      version: 1,
      identity: b64(this.identity.serialize()),
      registration_id: this.registrationId,
      user_id: this.userId,
      device_id: this.deviceId ?? null,
      signed_prekey_id: this.signedPreKey?.id() ?? null,
      kyber_last_resort_id: this.kyberLastResort?.id() ?? null,
      prekeys: recs(this.preKeyStore.records),
      signed_prekeys: recs(this.signedPreKeyStore.records),
      kyber_prekeys: recs(k.records),
      kyber_last_resort: [...k.lastResort],
      // Only needed to refuse a replayed last-resort PreKey message: the newest 2000.
      kyber_used_base_keys: [...k.usedBaseKeys].slice(-2000),
      sessions: Object.fromEntries([...this.sessionStore.sessions].map(([a, bytes]) => [a, b64(bytes)])),
      identities: Object.fromEntries([...this.identityStore.known].map(([a, key]) => [a, b64(key.serialize())])),
      sender_keys: this.senderKeyStore.toJSON(),
    };
  }

  /** The inverse of exportState() (the constructor's `state` option). */
  importState(st) {
    if (!st || st.version !== 1) throw new Error('unknown Signal state version');
    this.identity = S.IdentityKeyPair.deserialize(unb64(st.identity));
    this.registrationId = st.registration_id;
    this.identityStore = new MemIdentityKeyStore(this.identity, this.registrationId);
    this.sessionStore = new MemSessionStore();
    this.preKeyStore = new MemPreKeyStore();
    this.signedPreKeyStore = new MemSignedPreKeyStore();
    this.kyberPreKeyStore = new MemKyberPreKeyStore();
    this.senderKeyStore = new MemSenderKeyStore(st.sender_keys ?? {});
    for (const [id, r] of Object.entries(st.prekeys ?? {})) this.preKeyStore.records.set(Number(id), S.PreKeyRecord.deserialize(unb64(r)));
    for (const [id, r] of Object.entries(st.signed_prekeys ?? {})) this.signedPreKeyStore.records.set(Number(id), S.SignedPreKeyRecord.deserialize(unb64(r)));
    for (const [id, r] of Object.entries(st.kyber_prekeys ?? {})) this.kyberPreKeyStore.records.set(Number(id), S.KyberPreKeyRecord.deserialize(unb64(r)));
    for (const id of st.kyber_last_resort ?? []) this.kyberPreKeyStore.lastResort.add(Number(id));
    for (const k of st.kyber_used_base_keys ?? []) this.kyberPreKeyStore.usedBaseKeys.add(k);
    for (const [a, bytes] of Object.entries(st.sessions ?? {})) this.sessionStore.sessions.set(a, unb64(bytes));
    for (const [a, key] of Object.entries(st.identities ?? {})) this.identityStore.known.set(a, S.PublicKey.deserialize(unb64(key)));
    this.signedPreKey = st.signed_prekey_id != null ? this.signedPreKeyStore.records.get(st.signed_prekey_id) ?? null : null;
    this.kyberLastResort = st.kyber_last_resort_id != null ? this.kyberPreKeyStore.records.get(st.kyber_last_resort_id) ?? null : null;
    // The one-time keys not yet used (the registration's lists, for localBundleJson and tests).
    this.oneTimePreKeys = [...this.preKeyStore.records.values()];
    this.kyberOneTimePreKeys = [...this.kyberPreKeyStore.records]
      .filter(([id]) => !this.kyberPreKeyStore.lastResort.has(id))
      .map(([, r]) => r);
    this.userId = null;
    if (st.user_id) this.setUserId(st.user_id, st.device_id ?? DEVICE_ID);
  }

  /** Sets the local ProtocolAddress (user id, device id; device 1 unless told). */
  setUserId(userId, deviceId = DEVICE_ID) {
    this.userId = String(userId);
    this.deviceId = Number(deviceId);
    this.localAddress = deviceAddress(this.userId, this.deviceId);
  }

  /** XEdDSA signature by the identity key over a serialized public key. */
  sign(serializedPublicKey) {
    return this.identity.privateKey.sign(serializedPublicKey);
  }

  newSignedPreKey() {
    const id = freshIdRange(1);
    const priv = S.PrivateKey.generate();
    const pub = priv.getPublicKey();
    const sig = this.sign(pub.serialize());
    const rec = S.SignedPreKeyRecord.new(id, Date.now(), pub, priv, sig);
    this.signedPreKeyStore.records.set(id, rec);
    return rec;
  }

  newPreKeys(n) {
    const start = freshIdRange(n);
    const out = [];
    for (let i = 0; i < n; i++) {
      const priv = S.PrivateKey.generate();
      const rec = S.PreKeyRecord.new(start + i, priv.getPublicKey(), priv);
      this.preKeyStore.records.set(start + i, rec);
      out.push(rec);
    }
    return out;
  }

  newKyberPreKeys(n, { lastResort = false } = {}) {
    const start = freshIdRange(n);
    const out = [];
    for (let i = 0; i < n; i++) {
      const kp = S.KEMKeyPair.generate();
      const sig = this.sign(kp.getPublicKey().serialize());
      const rec = S.KyberPreKeyRecord.new(start + i, Date.now(), kp, sig);
      this.kyberPreKeyStore.records.set(start + i, rec);
      if (lastResort) this.kyberPreKeyStore.lastResort.add(start + i);
      out.push(rec);
    }
    return out;
  }

  /**
   * A new signed prekey and a new Kyber last-resort prekey, kept in the stores beside the current
   * ones (so what arrives for them decrypts from now on); adoptRotation() makes them current once
   * the relay has them.
   */
  newRotation() {
    return { signed: this.newSignedPreKey(), kyber: this.newKyberPreKeys(1, { lastResort: true })[0] };
  }

  adoptRotation({ signed, kyber }) {
    this.signedPreKey = signed;
    this.kyberLastResort = kyber;
  }

  /**
   * Deletes signed and Kyber last-resort prekeys that are no longer current and were made more
   * than `keepMs` before `now`, except the newest one retired before the current one (Signal's
   * rule: a message built from a bundle fetched just before the last rotation still decrypts,
   * however long the device was away). Returns the deleted ids.
   */
  pruneRetired(keepMs, now = Date.now()) {
    const prune = (records, current, onDelete) => {
      if (!current) return [];
      const retired = [...records.values()].filter((r) => r.id() !== current.id());
      const older = retired.filter((r) => r.timestamp() <= current.timestamp());
      const newest = older.reduce((a, r) => (!a || r.timestamp() > a.timestamp() ? r : a), null);
      const gone = retired.filter((r) => r !== newest && now - r.timestamp() > keepMs).map((r) => r.id());
      for (const id of gone) {
        records.delete(id);
        onDelete?.(id);
      }
      return gone;
    };
    const k = this.kyberPreKeyStore;
    const lastResort = new Map([...k.records].filter(([id]) => k.lastResort.has(id)));
    const kyber = prune(lastResort, this.kyberLastResort, (id) => {
      k.records.delete(id);
      k.lastResort.delete(id);
      for (const used of k.usedBaseKeys) if (used.startsWith(`${id}:`)) k.usedBaseKeys.delete(used);
    });
    return { signed: prune(this.signedPreKeyStore.records, this.signedPreKey), kyber };
  }

  // ------------------------------------------------------ JSON (the API's shapes)

  static preKeyJson(rec) {
    return { key_id: rec.id(), public_key: b64(rec.publicKey().serialize()) };
  }
  static signedPreKeyJson(rec) {
    // Works for SignedPreKeyRecord and KyberPreKeyRecord alike.
    return {
      key_id: rec.id(),
      public_key: b64(rec.publicKey().serialize()),
      signature: b64(rec.signature()),
    };
  }

  identityKeyB64() {
    return b64(this.identity.publicKey.serialize());
  }

  /** The key material of a POST /v1/users body (without username/password). */
  registrationKeys() {
    return {
      registration_id: this.registrationId,
      identity_key: this.identityKeyB64(),
      signed_prekey: SignalParty.signedPreKeyJson(this.signedPreKey),
      one_time_prekeys: this.oneTimePreKeys.map(SignalParty.preKeyJson),
      kyber_last_resort_prekey: SignalParty.signedPreKeyJson(this.kyberLastResort),
      kyber_one_time_prekeys: this.kyberOneTimePreKeys.map(SignalParty.signedPreKeyJson),
    };
  }

  /**
   * A bundle in the exact shape of GET /v1/users/{id}/bundle, built locally
   * (for the offline self-check). Consumes nothing.
   */
  localBundleJson({ preKey = this.oneTimePreKeys[0], kyber = this.kyberOneTimePreKeys[0] ?? this.kyberLastResort } = {}) {
    return {
      user_id: this.userId,
      registration_id: this.registrationId,
      identity_key: this.identityKeyB64(),
      signed_prekey: SignalParty.signedPreKeyJson(this.signedPreKey),
      one_time_prekey: preKey ? SignalParty.preKeyJson(preKey) : null,
      kyber_prekey: kyber ? SignalParty.signedPreKeyJson(kyber) : null,
    };
  }

  // ------------------------------------------------------ sessions

  /** Builds a libsignal PreKeyBundle from the relay's bundle JSON. */
  static toPreKeyBundle(json, deviceId = DEVICE_ID) {
    if (!json || typeof json !== 'object') throw new Error('bundle is not an object');
    if (!json.kyber_prekey) throw new Error('bundle has no kyber_prekey: libsignal requires one (PQXDH)');
    const otk = json.one_time_prekey;
    return S.PreKeyBundle.new(
      json.registration_id,
      deviceId,
      otk ? otk.key_id : null,
      otk ? S.PublicKey.deserialize(unb64(otk.public_key)) : null,
      json.signed_prekey.key_id,
      S.PublicKey.deserialize(unb64(json.signed_prekey.public_key)),
      unb64(json.signed_prekey.signature),
      S.PublicKey.deserialize(unb64(json.identity_key)),
      json.kyber_prekey.key_id,
      S.KEMPublicKey.deserialize(unb64(json.kyber_prekey.public_key)),
      unb64(json.kyber_prekey.signature),
    );
  }

  requireUserId() {
    if (!this.localAddress) throw new Error('setUserId() first');
  }

  /** processPreKeyBundle with a bundle in relay JSON form. */
  async processBundle(bundleJson) {
    await this.processBundleFor(address(bundleJson.user_id), bundleJson);
  }

  /**
   * processPreKeyBundle for one device: `bundleJson` has the single-device shape
   * (registration_id, identity_key, signed_prekey, one_time_prekey, kyber_prekey);
   * the bundle's device id is the address's.
   */
  async processBundleFor(addr, bundleJson) {
    this.requireUserId();
    const bundle = SignalParty.toPreKeyBundle(bundleJson, addr.deviceId());
    await S.processPreKeyBundle(bundle, addr, this.localAddress, this.sessionStore, this.identityStore);
  }

  hasSession(peerId) {
    return this.sessionStore.sessions.has(address(peerId).toString());
  }

  /** signalEncrypt; returns { type, bytes (framed wire body), body (base64) }. */
  async encrypt(peerId, plaintext) {
    return this.encryptTo(address(peerId), plaintext);
  }

  /** signalEncrypt to one ProtocolAddress; returns { type, bytes, body }. */
  async encryptTo(addr, plaintext) {
    this.requireUserId();
    const data = typeof plaintext === 'string' ? new TextEncoder().encode(plaintext) : new Uint8Array(plaintext);
    const ct = await S.signalEncrypt(data, addr, this.localAddress, this.sessionStore, this.identityStore);
    const bytes = frame(ct.type(), ct.serialize());
    return { type: ct.type(), bytes, body: b64(bytes) };
  }

  /**
   * Decrypts a framed wire body (base64 string or bytes) from `fromId` with
   * signalDecryptPreKey or signalDecrypt. Returns { type, plaintext (string), bytes }.
   */
  async decrypt(fromId, body) {
    return this.decryptFrom(address(fromId), body);
  }

  /** Like decrypt(), from one ProtocolAddress (user id, device id). */
  async decryptFrom(from, body) {
    this.requireUserId();
    const wire = typeof body === 'string' ? unb64(body) : new Uint8Array(body);
    const { type, payload } = unframe(wire);
    let out;
    if (type === MSG_PREKEY) {
      out = await S.signalDecryptPreKey(
        S.PreKeySignalMessage.deserialize(payload),
        from,
        this.localAddress,
        this.sessionStore,
        this.identityStore,
        this.preKeyStore,
        this.signedPreKeyStore,
        this.kyberPreKeyStore,
      );
    } else if (type === MSG_WHISPER) {
      out = await S.signalDecrypt(
        S.SignalMessage.deserialize(payload),
        from,
        this.localAddress,
        this.sessionStore,
        this.identityStore,
      );
    } else {
      throw new Error(`unknown message type byte ${type}`);
    }
    return { type, bytes: out, plaintext: new TextDecoder().decode(out) };
  }
}
