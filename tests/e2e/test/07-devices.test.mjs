// Several devices per account, with libsignal for real: one PQXDH
// session per ProtocolAddress(user_id, device_id), one ciphertext per device.
//  1. Alice links a second device through the provisioning flow (the provisioning
//     message is encrypted to the new device's ephemeral key: the relay cannot read it).
//  2. Bob has two devices; Alice's device 1 sends to both (offline, then online) and a
//     sync copy to her device 2; Bob's device 2 replies to both of Alice's devices.
//  3. Stale device lists: a device linked after the sender fetched bundles
//     (mismatched_devices, missing), a removed device (extra), a device id reused by a
//     new device with a new registration id (stale_devices).
//  4. Single-device clients beside a two-device account (old send form).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { S, b64, unb64, MSG_PREKEY, MSG_WHISPER, request } from '../lib/client.mjs';
import { RelayDevice, openProvisioningMessage, deliveries } from '../lib/devices.mjs';
import {
  deviceSuite,
  assertApiError,
  assertOk,
  assertDeviceBundles,
  assertDeviceEnvelope,
  counts,
} from '../lib/testutil.mjs';

const { primary, link } = deviceSuite();

const sortNum = (a) => [...(a ?? [])].sort((x, y) => x - y);

/** A `sent` reply with exactly these per-device deliveries ({ device_id: delivery }). */
function assertSent(reply, perDevice, what = 'send') {
  assert.equal(reply.type, 'sent', `${what}: ${JSON.stringify(reply)}`);
  assert.deepEqual(deliveries(reply), perDevice, `${what}: per-device delivery: ${JSON.stringify(reply)}`);
  const all = Object.values(perDevice);
  const overall = all.includes('dropped') ? 'dropped' : all.includes('queued') ? 'queued' : 'delivered';
  assert.equal(reply.delivery, overall, `${what}: overall delivery`);
}

function assertMismatched(reply, { missing, extra }, what = 'send') {
  assert.equal(reply.type, 'error', `${what}: expected mismatched_devices, got ${JSON.stringify(reply)}`);
  assert.equal(reply.code, 'mismatched_devices', `${what}: ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.message, 'string');
  assert.deepEqual(sortNum(reply.missing_devices), missing, `${what}: missing_devices: ${JSON.stringify(reply)}`);
  assert.deepEqual(sortNum(reply.extra_devices), extra, `${what}: extra_devices: ${JSON.stringify(reply)}`);
}

function assertStale(reply, stale, what = 'send') {
  assert.equal(reply.type, 'error', `${what}: expected stale_devices, got ${JSON.stringify(reply)}`);
  assert.equal(reply.code, 'stale_devices', `${what}: ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.message, 'string');
  assert.deepEqual(sortNum(reply.stale_devices), stale, `${what}: stale_devices: ${JSON.stringify(reply)}`);
}

/** `dev` receives exactly one message from `from`, sent as `sent` (its entry for dev); checks and decrypts it. */
async function receiveOne(dev, from, messages, plaintext, { type } = {}) {
  const mine = messages.find((m) => m.device_id === dev.deviceId);
  assert.ok(mine, `a ciphertext for ${dev.label()}`);
  const [r] = await dev.receive(from, 1, { sourceDevice: from.deviceId });
  assertDeviceEnvelope(r.env, { from, body: mine.body });
  assert.equal(r.plaintext, plaintext, `${dev.label()} decrypts`);
  if (type !== undefined) assert.equal(r.type, type, `${dev.label()}: message type`);
  return r;
}

/** Nothing left anywhere: no envelope collected by the sockets, none waiting in the inboxes. */
async function assertNoStrays(devices) {
  for (const d of devices) {
    assert.deepEqual(d.socket.inbox, [], `${d.label()}: no stray envelope`);
    assert.equal(await d.socket.list(), 0, `${d.label()}: inbox empty`);
  }
}

function listed(devs) {
  return devs.map((d) => ({ device_id: d.device_id, registration_id: d.registration_id }));
}

// ---------------------------------------------------------------- 1

test('linking: Alice links a second device through the provisioning socket; the relay cannot read the message', async () => {
  const alice1 = await primary('alice', { oneTimePreKeys: 20, kyberOneTimePreKeys: 3 });
  assert.equal(alice1.session.device_id, 1, `login answers device_id 1: ${JSON.stringify(alice1.session)}`);

  const trace = {};
  const alice2 = await link(alice1, 'alice', { oneTimePreKeys: 7, kyberOneTimePreKeys: 2 }, trace);

  // The provisioning socket's address, the primary's code, the PUT.
  assert.equal(trace.addressFrame.type, 'provisioning_address');
  assert.match(trace.addressFrame.address, /^[A-Za-z0-9_-]{22}$/, 'address: 22 chars base64url');
  assert.ok(Number.isInteger(trace.addressFrame.expires_in) && trace.addressFrame.expires_in > 0, 'address expires_in');
  assert.match(trace.code.code, /^[A-Za-z0-9_-]{43}$/, 'code: 43 chars base64url');
  assert.ok(Number.isInteger(trace.code.expires_in) && trace.code.expires_in > 0, 'code expires_in');
  assert.equal(trace.put.status, 204);

  // The new device got exactly the opaque bytes the primary sent, then the relay closed the socket.
  assert.equal(trace.message.type, 'provisioning_message');
  assert.ok(Buffer.from(unb64(trace.message.body)).equals(trace.sealed), 'provisioning body relayed byte-for-byte');
  assert.ok(trace.closedByServer, 'the relay closes the provisioning socket after the push');

  // Zero knowledge: the relay saw only ciphertext. Neither the code nor any identity key
  // material appears in it, and only the ephemeral key's holder can open it.
  const wire = trace.sealed;
  assert.ok(!wire.includes(Buffer.from(trace.code.code)), 'the code is not in the clear');
  assert.ok(!wire.includes(Buffer.from(alice1.identity.privateKey.serialize())), 'the identity private key is not in the clear');
  assert.ok(!wire.includes(Buffer.from(alice1.identity.serialize())), 'the identity key pair is not in the clear');
  assert.throws(() => openProvisioningMessage(S.PrivateKey.generate(), wire, { address: trace.addressFrame.address }), 'another key cannot open it');
  assert.equal(trace.payload.code, trace.code.code);
  assert.equal(trace.payload.user_id, alice1.userId);

  // The linked device: same account, device 2, the shared identity key, its own registration id and tokens.
  assert.equal(alice2.userId, alice1.userId);
  assert.equal(alice2.deviceId, 2, 'the first linked device gets id 2');
  assert.ok(alice2.identity.publicKey.equals(alice1.identity.publicKey), 'the identity key is the account\'s');
  assert.equal(trace.linked.token_type, 'Bearer');
  assert.equal(typeof trace.linked.access_token, 'string');
  assert.equal(typeof trace.linked.refresh_token, 'string');
  assert.ok(Number.isInteger(trace.linked.expires_in) && trace.linked.expires_in > 0);

  // Both devices see the same list; each device's key counts are its own.
  for (const d of [alice1, alice2]) {
    const devs = await d.listDevices();
    assert.deepEqual(listed(devs), [
      { device_id: 1, registration_id: alice1.registrationId },
      { device_id: 2, registration_id: alice2.registrationId },
    ]);
    for (const e of devs) assert.ok(Number.isInteger(e.created_at) && e.created_at > 1.6e9 && e.created_at < 1e11, `created_at unix s: ${e.created_at}`);
  }
  assert.deepEqual(await counts(alice1), { one_time_prekeys: 20, kyber_one_time_prekeys: 3 });
  assert.deepEqual(await counts(alice2), { one_time_prekeys: 7, kyber_one_time_prekeys: 2 });

  // Device 2's token works on the WebSocket.
  assert.equal((await (await alice2.connect()).ping()).type, 'pong');

  // Single use: the code cannot link another device, nor can the address take a second message.
  const intruder = new RelayDevice('alice', { identity: alice1.identity, oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
  assertApiError(await request('POST', '/v1/devices', { body: intruder.linkBody(trace.code.code) }), 403, 'invalid_code');
  assertApiError(await request('POST', '/v1/devices', { body: intruder.linkBody(randomBytes(32).toString('base64url')) }), 403, 'invalid_code');
  assertApiError(await alice1.putProvisioningRaw(trace.addressFrame.address, b64(wire)), 404, 'unknown_address');
  // Only the primary hands out linking codes.
  assertApiError(await alice2.provisioningCodeRaw(), 403, 'forbidden');
  assert.deepEqual((await alice1.listDevices()).map((d) => d.device_id), [1, 2], 'still two devices');
});

// ---------------------------------------------------------------- 2

test('two devices each: Alice → both of Bob\'s devices and a sync copy to her device 2, offline then online; Bob\'s device 2 replies', async () => {
  const alice1 = await primary('alice', { oneTimePreKeys: 10, kyberOneTimePreKeys: 3 });
  const alice2 = await link(alice1, 'alice', { oneTimePreKeys: 10, kyberOneTimePreKeys: 3 });
  const bob1 = await primary('bob', { oneTimePreKeys: 10, kyberOneTimePreKeys: 3 });
  const bob2 = await link(bob1, 'bob', { oneTimePreKeys: 8, kyberOneTimePreKeys: 2 });
  assert.deepEqual(bob2.deviceId, 2);

  // Alice's device 1 fetches all of Bob's bundles: one entry per device, each spending one
  // one-time EC and one Kyber prekey of that device.
  const bundles = await alice1.fetchDeviceBundles(bob1, '*');
  assertDeviceBundles(bundles, [bob1, bob2]);
  assert.deepEqual(await counts(bob1), { one_time_prekeys: 9, kyber_one_time_prekeys: 2 });
  assert.deepEqual(await counts(bob2), { one_time_prekeys: 7, kyber_one_time_prekeys: 1 });
  await alice1.processDeviceBundles(bundles);
  assert.deepEqual(alice1.knownDevices(bob1), [
    { deviceId: 1, registrationId: bob1.registrationId },
    { deviceId: 2, registrationId: bob2.registrationId },
  ]);

  // Her own other devices: from GET /v1/devices, then device 2's bundle alone.
  assert.deepEqual((await alice1.listDevices()).map((d) => d.device_id), [1, 2]);
  const own = await alice1.fetchDeviceBundles(alice1, 2);
  assertDeviceBundles(own, [alice2]);
  await alice1.processDeviceBundles(own);
  assert.deepEqual(alice1.knownDevices(alice1), [{ deviceId: 2, registrationId: alice2.registrationId }]);
  assert.deepEqual(await counts(alice1), { one_time_prekeys: 10, kyber_one_time_prekeys: 3 }, 'nothing of device 1 spent');

  // ---- offline: only Alice's device 1 is connected.
  await alice1.connect();
  const t0 = Date.now();
  const toBob = await alice1.sendEncrypted(bob1, 'offline: hello bob, on both devices');
  assertSent(toBob.reply, { 1: 'queued', 2: 'queued' }, 'Alice → Bob (offline)');
  assert.ok(toBob.messages.every((m) => m.type === MSG_PREKEY), 'first messages are PreKeySignalMessages');
  assert.notEqual(toBob.messages[0].body, toBob.messages[1].body, 'one ciphertext per device');
  const sync = await alice1.sendEncrypted(alice1, 'sync: I said hello to bob');
  assert.deepEqual(sync.messages.map((m) => m.device_id), [2], 'the sync copy goes to her other device only');
  assertSent(sync.reply, { 2: 'queued' }, 'sync copy (offline)');

  for (const [dev, sent, text] of [
    [bob1, toBob, 'offline: hello bob, on both devices'],
    [bob2, toBob, 'offline: hello bob, on both devices'],
    [alice2, sync, 'sync: I said hello to bob'],
  ]) {
    await dev.connect();
    assert.equal(await dev.socket.list(), 1, `${dev.label()}: one message waiting`);
    const got = await dev.socket.fetch();
    assert.equal(got.length, 1, `${dev.label()}: one envelope`);
    const mine = sent.messages.find((m) => m.device_id === dev.deviceId);
    assertDeviceEnvelope(got[0], { from: alice1, body: mine.body, sentAfter: t0 });
    const d = await dev.decryptFrom(alice1.address, got[0].body);
    assert.equal(d.type, MSG_PREKEY);
    assert.equal(d.plaintext, text, `${dev.label()} decrypts`);
    assert.equal(await dev.socket.list(), 0);
  }
  assert.equal(await alice1.socket.list(), 0, 'no echo to the sending device');
  assert.deepEqual(alice1.socket.inbox, []);

  // ---- online: everyone connected, delivered live to every device.
  const live = await alice1.sendEncrypted(bob1, 'online: still there?');
  assertSent(live.reply, { 1: 'delivered', 2: 'delivered' }, 'Alice → Bob (online)');
  await receiveOne(bob1, alice1, live.messages, 'online: still there?');
  await receiveOne(bob2, alice1, live.messages, 'online: still there?');
  const liveSync = await alice1.sendEncrypted(alice1, 'sync: asked bob');
  assertSent(liveSync.reply, { 2: 'delivered' }, 'sync copy (online)');
  await receiveOne(alice2, alice1, liveSync.messages, 'sync: asked bob');

  // ---- Bob's device 2 replies. It knows Alice's device 1 only (from her PreKey message,
  // which carried her registration id); the relay names the missing device 2, he fetches its
  // bundle and sends again, to both.
  assert.deepEqual(bob2.knownDevices(alice1), [{ deviceId: 1, registrationId: alice1.registrationId }]);
  const reply = await bob2.sendToUser(alice1, 'reply from bob\'s second device');
  assert.equal(reply.errors.length, 1, `one refusal first: ${JSON.stringify(reply.errors)}`);
  assertMismatched(reply.errors[0], { missing: [2], extra: [] }, 'Bob#2 → Alice with one device known');
  assertSent(reply.reply, { 1: 'delivered', 2: 'delivered' }, 'Bob#2 → Alice');
  await receiveOne(alice1, bob2, reply.messages, 'reply from bob\'s second device', { type: MSG_WHISPER });
  await receiveOne(alice2, bob2, reply.messages, 'reply from bob\'s second device', { type: MSG_PREKEY });
  // And his own sync copy reaches his device 1 (target set: his account minus device 2).
  const bobSync = await bob2.sendToUser(bob1, 'sync: replied to alice');
  assert.deepEqual(bobSync.errors, []);
  assertSent(bobSync.reply, { 1: 'delivered' }, 'Bob#2 sync copy');
  await receiveOne(bob1, bob2, bobSync.messages, 'sync: replied to alice', { type: MSG_PREKEY });

  // ---- offline reply: Alice's devices are away; they fetch later.
  await alice1.disconnect();
  await alice2.disconnect();
  const later = await bob2.sendEncrypted(alice1, 'while you were away');
  assertSent(later.reply, { 1: 'queued', 2: 'queued' }, 'Bob#2 → Alice (offline)');
  for (const dev of [alice1, alice2]) {
    await dev.connect();
    const got = await dev.socket.fetch();
    assert.equal(got.length, 1, `${dev.label()}: one envelope`);
    const mine = later.messages.find((m) => m.device_id === dev.deviceId);
    assertDeviceEnvelope(got[0], { from: bob2, body: mine.body });
    assert.equal((await dev.decryptFrom(bob2.address, got[0].body)).plaintext, 'while you were away');
  }
  // Alice's device 2 answers through her sessions as well (its first message to Bob).
  const a2 = await alice2.sendToUser(bob1, 'alice#2 here');
  assertSent(a2.reply, { 1: 'delivered', 2: 'delivered' }, 'Alice#2 → Bob');
  await receiveOne(bob1, alice2, a2.messages, 'alice#2 here');
  await receiveOne(bob2, alice2, a2.messages, 'alice#2 here');

  await assertNoStrays([alice1, alice2, bob1, bob2]);
});

// ---------------------------------------------------------------- 3

test('stale device lists: a device linked after the fetch (missing), removed (extra), re-linked under the same id (stale)', async () => {
  const alice = await primary('alice', { oneTimePreKeys: 5, kyberOneTimePreKeys: 1, connect: true });
  const carol = await primary('carol', { oneTimePreKeys: 5, kyberOneTimePreKeys: 1, connect: true });
  const bob1 = await primary('bob', { oneTimePreKeys: 10, kyberOneTimePreKeys: 3, connect: true });
  const bob2 = await link(bob1, 'bob', { oneTimePreKeys: 10, kyberOneTimePreKeys: 3, connect: true });

  await alice.startDeviceSessions(bob1, '*');
  assert.deepEqual(alice.knownDevices(bob1).map((d) => d.deviceId), [1, 2]);
  const m0 = await alice.sendEncrypted(bob1, 'hello, two devices');
  assertSent(m0.reply, { 1: 'delivered', 2: 'delivered' });
  await receiveOne(bob1, alice, m0.messages, 'hello, two devices');
  await receiveOne(bob2, alice, m0.messages, 'hello, two devices');

  // Bob links a third device after Alice fetched his bundles.
  const bob3 = await link(bob1, 'bob', { oneTimePreKeys: 10, kyberOneTimePreKeys: 3, connect: true });
  assert.equal(bob3.deviceId, 3);
  const r1 = await alice.sendEncrypted(bob1, 'for two of three (refused)');
  assertMismatched(r1.reply, { missing: [3], extra: [] }, 'send after the link');
  const b3 = await alice.fetchDeviceBundles(bob1, 3);
  assertDeviceBundles(b3, [bob3]);
  await alice.processDeviceBundles(b3);
  const r2 = await alice.sendEncrypted(bob1, 'for all three');
  assertSent(r2.reply, { 1: 'delivered', 2: 'delivered', 3: 'delivered' }, 'resend with device 3');
  // Every device gets the resend and nothing of the refused send (checked by receive order and no strays).
  await receiveOne(bob1, alice, r2.messages, 'for all three');
  await receiveOne(bob2, alice, r2.messages, 'for all three');
  await receiveOne(bob3, alice, r2.messages, 'for all three', { type: MSG_PREKEY });

  // Carol takes sessions with all three devices now (she will still hold device 3's later).
  const cb = await carol.fetchDeviceBundles(bob1, '*');
  assertDeviceBundles(cb, [bob1, bob2, bob3]);
  await carol.processDeviceBundles(cb);

  // Bob removes device 3: its socket is closed, its token refused, the list is [1, 2].
  const del = await bob1.removeDeviceRaw(3);
  assert.equal(del.status, 204, `DELETE /v1/devices/3: ${del.status} ${del.text.slice(0, 300)}`);
  assert.ok(await bob3.socket.waitClosed(), 'the removed device\'s socket is closed');
  assertApiError(await request('GET', '/v1/keys/count', { token: bob3.token }), 401);
  assert.deepEqual(listed(await bob1.listDevices()), [
    { device_id: 1, registration_id: bob1.registrationId },
    { device_id: 2, registration_id: bob2.registrationId },
  ]);

  const r3 = await alice.sendEncrypted(bob1, 'for three (refused)');
  assertMismatched(r3.reply, { missing: [], extra: [3] }, 'send after the removal');
  // She drops device 3 from the resend (her session record with it stays in her store).
  const r4 = await alice.sendEncrypted(bob1, 'for the two left', { deviceIds: [1, 2] });
  assertSent(r4.reply, { 1: 'delivered', 2: 'delivered' }, 'resend without device 3');
  await receiveOne(bob1, alice, r4.messages, 'for the two left');
  await receiveOne(bob2, alice, r4.messages, 'for the two left');

  // Bob links a new device: it reuses id 3, with a new registration id.
  const bob3b = await link(bob1, 'bob', {
    oneTimePreKeys: 10,
    kyberOneTimePreKeys: 3,
    registrationId: (bob3.registrationId % 16380) + 1,
    connect: true,
  });
  assert.equal(bob3b.deviceId, 3, 'the smallest free id is reused');
  assert.notEqual(bob3b.registrationId, bob3.registrationId);
  assert.deepEqual(listed(await bob1.listDevices()), [
    { device_id: 1, registration_id: bob1.registrationId },
    { device_id: 2, registration_id: bob2.registrationId },
    { device_id: 3, registration_id: bob3b.registrationId },
  ]);

  // Alice sends to the three devices she has sessions with: device 3's is the old one.
  assert.equal(alice.knownDevices(bob1).find((d) => d.deviceId === 3).registrationId, bob3.registrationId);
  const r5 = await alice.sendEncrypted(bob1, 'with the old device 3 (refused)');
  assertStale(r5.reply, [3], 'send with the old registration id');
  // A new session with the new device 3, and the resend reaches all three.
  await alice.archiveSession(bob1, 3);
  const nb = await alice.fetchDeviceBundles(bob1, 3);
  assertDeviceBundles(nb, [bob3b]);
  await alice.processDeviceBundles(nb);
  assert.equal(alice.knownDevices(bob1).find((d) => d.deviceId === 3).registrationId, bob3b.registrationId);
  const r6 = await alice.sendEncrypted(bob1, 'hello, new device 3');
  assertSent(r6.reply, { 1: 'delivered', 2: 'delivered', 3: 'delivered' }, 'resend to the new device 3');
  await receiveOne(bob1, alice, r6.messages, 'hello, new device 3');
  await receiveOne(bob2, alice, r6.messages, 'hello, new device 3');
  await receiveOne(bob3b, alice, r6.messages, 'hello, new device 3', { type: MSG_PREKEY });

  // Carol's client, still holding the removed device 3's session, fixes it on its own:
  // stale_devices [3] → archive, new bundle, resend.
  const c = await carol.sendToUser(bob1, 'from carol');
  assert.equal(c.errors.length, 1, `one refusal first: ${JSON.stringify(c.errors)}`);
  assertStale(c.errors[0], [3], 'Carol with the old device 3');
  assertSent(c.reply, { 1: 'delivered', 2: 'delivered', 3: 'delivered' }, 'Carol\'s resend');
  await receiveOne(bob1, carol, c.messages, 'from carol', { type: MSG_PREKEY });
  await receiveOne(bob2, carol, c.messages, 'from carol', { type: MSG_PREKEY });
  await receiveOne(bob3b, carol, c.messages, 'from carol', { type: MSG_PREKEY });

  // The new device 3 answers Alice (its session with her comes from her PreKey message).
  const back = await bob3b.sendEncrypted(alice, 'hi alice, from the new device 3');
  assertSent(back.reply, { 1: 'delivered' });
  const [rb] = await alice.receive(bob3b, 1, { sourceDevice: 3 });
  assertDeviceEnvelope(rb.env, { from: bob3b, body: back.messages[0].body });
  assert.equal(rb.plaintext, 'hi alice, from the new device 3');
  assert.equal(rb.type, MSG_WHISPER);

  await assertNoStrays([alice, carol, bob1, bob2, bob3b]);
  assert.deepEqual(bob3.socket.inbox, [], 'the removed device got nothing after the removal');
});

// ---------------------------------------------------------------- 4

test('single-device clients beside a two-device account: the old send form', async () => {
  const bob1 = await primary('bob', { oneTimePreKeys: 5, kyberOneTimePreKeys: 1, connect: true });
  const bob2 = await link(bob1, 'bob', { oneTimePreKeys: 5, kyberOneTimePreKeys: 1, connect: true });
  const carol = await primary('carol', { oneTimePreKeys: 5, kyberOneTimePreKeys: 1, connect: true });
  const dave = await primary('dave', { oneTimePreKeys: 5, kyberOneTimePreKeys: 1, connect: true });

  // An old client (GET /v1/users/{id}/bundle = device 1, "body" form) cannot reach a
  // two-device account: mismatched_devices naming all of its devices, nothing stored.
  const old = await carol.fetchBundle(bob1.userId);
  assert.equal(old.registration_id, bob1.registrationId, 'the old bundle route is device 1');
  await carol.processBundle(old);
  const enc = await carol.encrypt(bob1.userId, 'old form to a two-device account');
  const r = await carol.sendRaw(bob1, enc.body);
  assertMismatched(r, { missing: [1, 2], extra: [] }, 'old form to two devices');

  // Between single-device accounts the old form works as before; the envelope names device 1.
  await carol.startSession(dave);
  const m = await carol.sendText(dave, 'old form, one device each');
  assertSent(m.reply, { 1: 'delivered' }, 'old form between single-device accounts');
  const [got] = await dave.receive(carol, 1);
  assertDeviceEnvelope(got.env, { from: carol, body: m.body });
  assert.equal(got.plaintext, 'old form, one device each');

  // Bob's device 2 writes to Carol (one device) with the new form; Carol decrypts from (bob, 2).
  const n = await bob2.sendToUser(carol, 'new form from bob#2');
  assert.deepEqual(n.errors, []);
  assertSent(n.reply, { 1: 'delivered' });
  await receiveOne(carol, bob2, n.messages, 'new form from bob#2', { type: MSG_PREKEY });

  // Login per device: device_id 2 names Bob's second device; an unknown device is refused like a wrong password.
  const s2 = assertOk(await bob1.loginRaw(2), 'login device 2');
  assert.equal(s2.device_id, 2);
  assert.equal(s2.user_id, bob1.userId);
  assertApiError(await bob1.loginRaw(3), 401, 'invalid_credentials');

  await assertNoStrays([bob1, bob2, carol, dave]);
});
