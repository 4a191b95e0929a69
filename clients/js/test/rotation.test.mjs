// Signed-prekey rotation: the client replaces its signed prekey and Kyber last-resort prekey when
// due; a message built from a bundle fetched before the rotation still decrypts; retired keys
// older than `keepMs` are deleted (what was built on them no longer decrypts), the newest
// retired one kept; the rotated keys are what a reopened client has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore, RelayUser } from '../src/index.mjs';
import { name, password, record, sleep, stackSuite } from './util.mjs';

const { stack, clients } = stackSuite();

const text = (t) => JSON.stringify({ v: 1, text: t });

test('rotates the signed and Kyber last-resort prekeys; retired ones decrypt until they age out', async () => {
  // No Kyber one-time prekeys: every bundle carries the last-resort Kyber key.
  const refill = { kyberBelow: 0, kyber: 0 };
  const rotate = { everyMs: 1500, keepMs: 3000 };
  const store = new MemoryStore();
  const bob = await RelayClient.open({ url: stack().url, store, username: name('bob'), password: password(), refill, rotate });
  clients.push(bob);
  const senders = [];
  const sender = async (role) => {
    const u = await RelayUser.create(role, { url: stack().url, oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
    senders.push(u);
    return u;
  };
  const [carol, dave, erin] = [await sender('carol'), await sender('dave'), await sender('erin')];

  const b0 = await carol.fetchBundle(bob.userId);
  assert.equal(await bob.rotateIfDue(), null, 'not due yet');

  await sleep(rotate.everyMs + 100);
  const r1 = await bob.rotateIfDue();
  assert.ok(r1, 'due after everyMs');
  const b1 = await dave.fetchBundle(bob.userId);
  assert.equal(b1.signed_prekey.key_id, r1.signedPreKeyId, 'the relay hands out the new signed prekey');
  assert.equal(b1.kyber_prekey.key_id, r1.kyberLastResortId, 'and the new Kyber last-resort prekey');
  assert.notEqual(b1.signed_prekey.key_id, b0.signed_prekey.key_id);
  assert.notEqual(b1.kyber_prekey.key_id, b0.kyber_prekey.key_id);
  assert.equal(await bob.rotateIfDue(), null, 'the new key is not due');

  // Past keepMs of the first keys: the second rotation deletes them, keeps the newest retired.
  await sleep(rotate.keepMs + 100);
  const r2 = await bob.rotateIfDue();
  assert.ok(r2);
  const doc = await store.load();
  const ids = (m) => Object.keys(m).map(Number).sort();
  assert.equal(doc.signal.signed_prekey_id, r2.signedPreKeyId);
  assert.equal(doc.signal.kyber_last_resort_id, r2.kyberLastResortId);
  assert.deepEqual(ids(doc.signal.signed_prekeys), [b1.signed_prekey.key_id, r2.signedPreKeyId].sort());
  assert.ok(!(b0.kyber_prekey.key_id in doc.signal.kyber_prekeys), 'the first Kyber last-resort key is deleted');
  assert.ok(b1.kyber_prekey.key_id in doc.signal.kyber_prekeys, 'the newest retired one is kept');
  assert.deepEqual(doc.signal.kyber_last_resort.map(Number).sort(), [b1.kyber_prekey.key_id, r2.kyberLastResortId].sort());

  await bob.close();

  // Reopened (rotation not due for a minute, so nothing rotates under the messages below): the
  // rotated keys are current. A message built from the bundle before the last rotation decrypts,
  // one built on the deleted keys does not.
  const again = await RelayClient.open({ url: stack().url, store, refill, rotate: { everyMs: 60_000 } });
  clients.push(again);
  assert.equal(await again.rotateIfDue(), null);
  const seen = record(again);
  await again.connect();
  await dave.processBundle(b1);
  await dave.connect();
  await dave.sendText(bob.userId, text('from a bundle of the retired keys'));
  assert.equal((await seen.next()).text, 'from a bundle of the retired keys');
  const b2 = await erin.startSession(bob.userId);
  assert.equal(b2.signed_prekey.key_id, r2.signedPreKeyId);
  await erin.connect();
  await erin.sendText(bob.userId, text('from a bundle of the current keys'));
  assert.equal((await seen.next()).text, 'from a bundle of the current keys');
  await carol.processBundle(b0);
  await carol.connect();
  await carol.sendText(bob.userId, text('from a bundle of deleted keys'));
  for (let i = 0; i < 100 && seen.errors.length === 0; i++) await sleep(100);
  assert.deepEqual(seen.errors.map((e) => e.code), ['decrypt_failed'], 'built on deleted keys: not decryptable');
  assert.equal(seen.messages.length, 2);
  for (const u of senders) await u.dispose();
});

test('rotate options are checked', async () => {
  await assert.rejects(
    RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('x'), password: password(), rotate: { everyMs: 0 } }),
    /rotate.everyMs must be a positive number/,
  );
});
