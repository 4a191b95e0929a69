// Prekey refill: below the threshold the client uploads new one-time prekeys (EC and Kyber), at
// connect and after a PreKey message; the new private keys are in the store first. And a
// recipient whose one-time prekeys are used up while its client is not running: bundles are
// strict (BUNDLE_WITHOUT_ONE_TIME unset, docs/api.md §5.16), so send() rejects with
// PreKeysExhaustedError until that client comes online and refills.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore, RelayUser, PreKeysExhaustedError, call } from '../src/index.mjs';
import { name, password, record, waitFor, stackSuite, login } from './util.mjs';

// Strict bundle fetches (the default): a device without one-time prekeys gets 412, whatever
// the calling shell's environment says.
const { stack, clients } = stackSuite({ env: { BUNDLE_WITHOUT_ONE_TIME: null } });

test('refills one-time prekeys below the threshold, at connect and after a PreKey message', async () => {
  const refill = { below: 20, oneTime: 30, kyberBelow: 5, kyber: 10 };
  const store = new MemoryStore();
  const bobName = name('bob');
  const bobPw = password();
  const bob = await RelayClient.open({ url: stack().url, store, username: bobName, password: bobPw, refill });
  clients.push(bob);
  const token = await login(stack().url, bobName, bobPw);
  const count = () => call('GET', '/v1/keys/count', { url: stack().url, token });
  assert.deepEqual(await count(), { one_time_prekeys: 30, kyber_one_time_prekeys: 10 }, 'registered with refill.oneTime / refill.kyber');

  // Another user takes 12 bundles: 18 EC keys left (< 20), the 10 Kyber one-time keys are gone.
  const carol = await RelayUser.create('carol', { url: stack().url, oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
  for (let i = 0; i < 12; i++) await carol.fetchBundle(bob.userId);
  assert.deepEqual(await count(), { one_time_prekeys: 18, kyber_one_time_prekeys: 0 });

  // At connect: back above the thresholds.
  await bob.connect();
  await waitFor(async () => (await count()).one_time_prekeys === 48, 'the refill at connect');
  assert.deepEqual(await count(), { one_time_prekeys: 48, kyber_one_time_prekeys: 10 });
  const doc = await store.load();
  assert.ok(Object.keys(doc.signal.prekeys).length >= 48, 'the new private keys are in the store');

  // Spend them again, then a PreKey message from a new sender triggers the check.
  for (let i = 0; i < 30; i++) await carol.fetchBundle(bob.userId);
  assert.equal((await count()).one_time_prekeys, 18);
  const seen = record(bob);
  const alice = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('alice'), password: password() });
  clients.push(alice);
  await alice.send(bob.userId, 'a first message (PreKey)');
  assert.equal((await seen.next()).text, 'a first message (PreKey)');
  await waitFor(async () => (await count()).one_time_prekeys === 47, 'the refill after a PreKey message');

  // A session started on a refilled key works.
  const dave = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('dave'), password: password() });
  clients.push(dave);
  for (let i = 0; i < 17; i++) await carol.fetchBundle(bob.userId); // only refilled keys left
  await dave.send(bob.userId, 'on a refilled key');
  assert.equal((await seen.next()).text, 'on a refilled key');
  assert.deepEqual(seen.errors.map((e) => e.message), []);
  await carol.dispose();
});

test('one-time prekeys used up while the recipient is away: send() rejects with PreKeysExhaustedError', async () => {
  const refill = { below: 20, oneTime: 3, kyberBelow: 5, kyber: 2 };
  const erinName = name('erin');
  const erinPw = password();
  const erinStore = new MemoryStore();
  // Erin registers with 3 one-time prekeys and is not running (never connected: nothing refills).
  const erin = await RelayClient.open({ url: stack().url, store: erinStore, username: erinName, password: erinPw, refill });
  const erinId = erin.userId;
  await erin.close();

  const carol = await RelayUser.create('carol', { url: stack().url, oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
  for (let i = 0; i < 3; i++) await carol.fetchBundle(erinId);
  const raw = await carol.fetchBundleRaw(erinId);
  assert.equal(raw.status, 412, `the pool is empty: ${raw.text}`);

  const frank = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('frank'), password: password() });
  clients.push(frank);
  const f = record(frank);
  await frank.connect();
  await assert.rejects(frank.send(erinName, 'hello?'), (e) => {
    assert.ok(e instanceof PreKeysExhaustedError, `${e.name}: ${e.message}`);
    assert.equal(e.code, 'prekeys_exhausted');
    assert.equal(e.status, 412);
    assert.deepEqual(e.devices, [1]);
    return true;
  });
  assert.deepEqual(f.errors.map((e) => e.message), []);

  // Erin comes online once: her client refills, and the same send goes through.
  const erin2 = await RelayClient.open({ url: stack().url, store: erinStore, refill });
  clients.push(erin2);
  const e2 = record(erin2);
  await erin2.connect();
  const token = await login(stack().url, erinName, erinPw);
  const count = () => call('GET', '/v1/keys/count', { url: stack().url, token });
  await waitFor(async () => (await count()).one_time_prekeys >= 3, 'the refill at connect');
  await frank.send(erinName, 'hello again');
  assert.equal((await e2.next()).text, 'hello again');
  assert.deepEqual(e2.errors.map((e) => e.message), []);
  await carol.dispose();
});
