// Shared helpers for the relay scenarios.
import assert from 'node:assert/strict';
import { before, after } from 'node:test';
import { RelayUser, waitForRelay, isPaddedB64, unb64 } from './client.mjs';
import { RelayDevice } from './devices.mjs';

/**
 * Registers the per-file hooks: wait for the relay before the first test,
 * close every socket after the last. Returns `newUser(role, opts)`, which
 * registers + logs in a fresh user with a unique username.
 */
export function relaySuite() {
  const users = [];
  before(async () => {
    await waitForRelay();
  });
  after(async () => {
    await Promise.all(users.map((u) => u.dispose().catch(() => {})));
  });
  return async function newUser(role, opts = {}) {
    const u = await RelayUser.create(role, opts);
    users.push(u);
    return u;
  };
}

/** Asserts an HTTP error response: status, the API's error shape and code. */
export function assertApiError(res, status, code) {
  assert.equal(res.status, status, `expected ${status}${code ? ` ${code}` : ''}, got ${res.status}: ${res.text.slice(0, 300)}`);
  assert.ok(res.json && typeof res.json.error === 'object', `error body has the API's error shape: ${res.text.slice(0, 300)}`);
  if (code) assert.equal(res.json.error.code, code, `error code: ${res.text.slice(0, 300)}`);
  assert.equal(typeof res.json.error.message, 'string');
}

/** Asserts a 2xx response and returns its JSON. */
export function assertOk(res, what = 'request') {
  assert.ok(res.status >= 200 && res.status < 300, `${what}: expected 2xx, got ${res.status}: ${res.text.slice(0, 300)}`);
  return res.json;
}

/** Asserts an envelope's shape; `from` (RelayUser) and `body` (sent base64) when given. */
export function assertEnvelope(env, { from, body, sentAfter } = {}) {
  assert.equal(typeof env.id, 'string', 'envelope id');
  assert.ok(env.id.length > 0);
  assert.equal(typeof env.from, 'string', 'envelope from');
  assert.equal(typeof env.sent_at, 'number', 'envelope sent_at (unix ms)');
  assert.ok(env.sent_at > 1.6e12 && env.sent_at < Date.now() + 120_000, `sent_at ${env.sent_at} looks like unix ms`);
  if (sentAfter !== undefined) assert.ok(env.sent_at >= sentAfter - 60_000, 'sent_at not before the send (60 s skew)');
  assert.ok(isPaddedB64(env.body), 'envelope body is padded standard base64');
  if (from) assert.equal(env.from, from.userId, 'from is the sender id taken from the token');
  if (body !== undefined) {
    assert.ok(Buffer.from(unb64(env.body)).equals(Buffer.from(unb64(body))), 'body relayed byte-for-byte');
    assert.equal(env.body, body, 'body string relayed unchanged');
  }
}

/** Asserts a bundle's shape against the API and the owner's own keys. */
export function assertBundleOf(bundle, owner) {
  assert.equal(bundle.user_id, owner.userId);
  assert.equal(bundle.registration_id, owner.registrationId);
  assert.equal(bundle.identity_key, owner.identityKeyB64());
  assert.ok(bundle.signed_prekey && Number.isInteger(bundle.signed_prekey.key_id));
  const spk = owner.signedPreKeyStore.records.get(bundle.signed_prekey.key_id);
  assert.ok(spk, `signed_prekey.key_id ${bundle.signed_prekey.key_id} is one of the owner's`);
  assert.equal(bundle.signed_prekey.public_key, Buffer.from(spk.publicKey().serialize()).toString('base64'));
  assert.equal(bundle.signed_prekey.signature, Buffer.from(spk.signature()).toString('base64'));
  if (bundle.one_time_prekey) {
    const r = owner.preKeyStore.records.get(bundle.one_time_prekey.key_id);
    assert.ok(r, `one_time_prekey.key_id ${bundle.one_time_prekey.key_id} is one of the owner's unused keys`);
    assert.equal(bundle.one_time_prekey.public_key, Buffer.from(r.publicKey().serialize()).toString('base64'));
  }
  if (bundle.kyber_prekey) {
    const r = owner.kyberPreKeyStore.records.get(bundle.kyber_prekey.key_id);
    assert.ok(r, `kyber_prekey.key_id ${bundle.kyber_prekey.key_id} is one of the owner's`);
    assert.equal(bundle.kyber_prekey.public_key, Buffer.from(r.publicKey().serialize()).toString('base64'));
    assert.equal(bundle.kyber_prekey.signature, Buffer.from(r.signature()).toString('base64'));
  }
}

/** GET /v1/keys/count reduced to its two fields. */
export async function counts(user) {
  const c = await user.keyCount();
  return { one_time_prekeys: c.one_time_prekeys, kyber_one_time_prekeys: c.kyber_one_time_prekeys };
}

// ---------------------------------------------------------------- devices

/**
 * Per-file hooks for the multi-device scenarios: returns { primary(role, opts),
 * link(primary, role, opts, trace) }, both tracked so every socket is closed after
 * the last test.
 */
export function deviceSuite() {
  const devices = [];
  before(async () => {
    await waitForRelay();
  });
  after(async () => {
    await Promise.all(devices.map((d) => d.dispose().catch(() => {})));
  });
  return {
    async primary(role, opts = {}) {
      const d = await RelayDevice.primary(role, opts);
      devices.push(d);
      return d;
    },
    async link(primary, role, opts = {}, trace = {}) {
      const d = await RelayDevice.link(primary, role, opts, trace);
      devices.push(d);
      return d;
    },
  };
}

/** Asserts one device entry of a multi-device bundle against the owning device's own keys. */
export function assertDeviceBundleEntry(entry, owner) {
  assert.equal(entry.device_id, owner.deviceId, 'device_id');
  assertBundleOf(
    { ...entry, user_id: owner.userId, identity_key: owner.identityKeyB64() },
    owner,
  );
  assert.ok(entry.one_time_prekey, `device ${entry.device_id}: a one-time prekey`);
  assert.ok(entry.kyber_prekey, `device ${entry.device_id}: a Kyber prekey`);
}

/**
 * Asserts a multi-device bundle: user, shared identity key, exactly the owners' devices
 * (in any order), each entry against its device's keys.
 */
export function assertDeviceBundles(bundle, owners) {
  assert.equal(bundle.user_id, owners[0].userId);
  assert.equal(bundle.identity_key, owners[0].identityKeyB64(), 'the account identity key');
  assert.ok(Array.isArray(bundle.devices), `devices array: ${JSON.stringify(bundle).slice(0, 300)}`);
  assert.deepEqual(
    bundle.devices.map((e) => e.device_id).sort((a, b) => a - b),
    owners.map((o) => o.deviceId).sort((a, b) => a - b),
    'one entry per device',
  );
  for (const e of bundle.devices) assertDeviceBundleEntry(e, owners.find((o) => o.deviceId === e.device_id));
}

/** assertEnvelope plus the sending device (`source_device`). */
export function assertDeviceEnvelope(env, { from, body, sentAfter } = {}) {
  assertEnvelope(env, { from, body, sentAfter });
  if (from) assert.equal(env.source_device, from.deviceId, `source_device is the sending device: ${JSON.stringify(env).slice(0, 200)}`);
  else assert.ok(Number.isInteger(env.source_device), 'source_device');
}

// ---------------------------------------------------------------- ack mode

/**
 * The relay's lease (`FETCH_LEASE_MS`, default 30000): unacknowledged envelopes are due again
 * after it. Set RELAY_FETCH_LEASE_MS when the relay under test runs with another value.
 */
export const FETCH_LEASE_MS = Number(process.env.RELAY_FETCH_LEASE_MS || 30000);

/**
 * Polls `list` on `socket` until the inbox holds `n` envelopes (in-flight ones are not counted);
 * throws after `timeoutMs`. Returns how long it took (ms).
 */
export async function waitPending(socket, n, { timeoutMs = 5000, stepMs = 50 } = {}) {
  const t0 = Date.now();
  for (;;) {
    const pending = await socket.list();
    if (pending === n) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`inbox holds ${pending}, not ${n}, after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Asserts a WebSocket `error` frame: its id echoed, its code, a message. */
export function assertErrorFrame(f, id, code) {
  assert.equal(f.type, 'error', `expected an error frame: ${JSON.stringify(f)}`);
  assert.equal(f.id, id, `error frame id: ${JSON.stringify(f)}`);
  assert.equal(f.code, code, `error code: ${JSON.stringify(f)}`);
  assert.equal(typeof f.message, 'string', `error message: ${JSON.stringify(f)}`);
}
