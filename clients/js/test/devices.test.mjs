// Linking a second device (provisioning message sealed client-side) and mismatched-device
// recovery: Alice has a session with Bob's device 1 only; after Bob links device 2 her next send
// is refused (mismatched_devices), fixed and reaches both. Sync copies to one's own devices.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore, RelayError, RelayDevice } from '../src/index.mjs';
import { name, password, record, stackSuite } from './util.mjs';

const { stack, track } = stackSuite();

test('links a device; a send after it recovers from mismatched_devices and reaches both; sync copies', async () => {
  const aliceName = name('alice');
  const bobName = name('bob');
  const alice = track(await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: aliceName, password: password() }));
  const bob1 = track(await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: bobName, password: password() }));
  const a = record(alice);
  const b1 = record(bob1);
  await alice.connect();
  await bob1.connect();
  const r1 = await alice.send(bobName, 'one');
  assert.deepEqual(r1.deliveries, [{ deviceId: 1, delivery: 'delivered' }], JSON.stringify(r1));
  assert.equal((await b1.next()).text, 'one');

  await assert.rejects(bob1.linkDevice('not a link string'), (e) => e instanceof RelayError && e.code === 'invalid_link_string');
  const store2 = new MemoryStore();
  const { linkString, done } = await RelayClient.startLinking({ url: stack().url, store: store2 });
  assert.match(linkString, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{44}$/);
  assert.deepEqual(await bob1.linkDevice(linkString), { deviceId: 2 }, 'linkDevice resolves to the id the relay gave the new device');
  const bob2 = track(await done);
  assert.equal(bob2.userId, bob1.userId);
  assert.equal(bob2.deviceId, 2);
  assert.equal(bob2.username, bobName);
  assert.equal((await store2.load()).account.deviceId, 2, 'the new device is in its store');
  const b2 = record(bob2);
  await bob2.connect();
  assert.deepEqual((await bob1.devices()).map((d) => d.id), [1, 2]);

  // Alice knows only device 1: the relay refuses, the client fetches device 2's bundle, resends.
  const r = await alice.send(bobName, 'two');
  assert.deepEqual(r.deliveries.map((d) => d.deviceId), [1, 2], JSON.stringify(r));
  // Both are connected: 'delivered' (a push that fails under load leaves it 'queued', fetched later).
  for (const d of r.deliveries) assert.ok(['delivered', 'queued'].includes(d.delivery), `${JSON.stringify(r)}; bob1: ${b1.states}; bob2: ${b2.states}`);
  for (const seen of [b1, b2]) {
    const m = await seen.next();
    assert.equal(m.text, 'two');
    assert.deepEqual(m.from, { userId: alice.userId, deviceId: 1, username: aliceName }, JSON.stringify(m.from));
  }

  // Bob's device 2 answers: Alice gets it from device 2, device 1 gets the sync copy.
  await bob2.send(aliceName, 'from device 2');
  const m = await a.next();
  assert.equal(m.text, 'from device 2');
  assert.deepEqual(m.from, { userId: bob1.userId, deviceId: 2, username: bobName }, JSON.stringify(m.from));
  const sync = await b1.next();
  assert.equal(sync.sync, true);
  assert.equal(sync.text, 'from device 2');
  assert.deepEqual(sync.to, { userId: alice.userId, username: aliceName }, JSON.stringify(sync));
  assert.equal(sync.from.deviceId, 2);

  // And device 1's sends are copied to device 2.
  await bob1.send(alice.userId, 'from device 1');
  assert.equal((await a.next()).text, 'from device 1');
  const sync2 = await b2.next();
  assert.equal(sync2.sync, true);
  assert.equal(sync2.text, 'from device 1');
  assert.equal(sync2.to.userId, alice.userId);
  for (const x of [a, b1, b2]) assert.deepEqual(x.errors.map((e) => e.message), []);
  assert.equal(b1.messages.length, 3, JSON.stringify(b1.messages.map((m) => m.text)));
  assert.equal(b2.messages.length, 2, JSON.stringify(b2.messages.map((m) => m.text)));
});

test('a relinked device repeating its predecessor\'s registration id draws another and links with the same code', async () => {
  const primary = await RelayDevice.primary('carol', { url: stack().url });
  const first = await RelayDevice.link(primary, 'carol', { registrationId: 2002 });
  assert.equal(first.deviceId, 2);
  assert.equal((await primary.removeDeviceRaw(2)).status, 204);
  const trace = {};
  const second = await RelayDevice.link(primary, 'carol', { registrationId: 2002 }, trace);
  assert.equal(second.deviceId, 2);
  assert.notEqual(second.registrationId, 2002, 'refused with registration_id_reused, then another');
  const listed = (await primary.listDevices()).find((d) => d.device_id === 2);
  assert.equal(listed.registration_id, second.registrationId);
  await Promise.all([primary, first, second].map((d) => d.dispose().catch(() => {})));
});
