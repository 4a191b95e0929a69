// Scenario 4: bundles use Kyber one-time prekeys while any remain, then the
// Kyber last-resort key; PQXDH sessions succeed in both cases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MSG_PREKEY, unb64 } from '../lib/client.mjs';
import { relaySuite, assertEnvelope, assertBundleOf, counts } from '../lib/testutil.mjs';

const newUser = relaySuite();

async function sessionWorks(sender, bob, bundle, text) {
  await sender.processBundle(bundle);
  const m = await sender.sendText(bob, text);
  assert.equal(m.type, MSG_PREKEY);
  const [r] = await bob.receiveFrom(sender, 1);
  assertEnvelope(r.env, { from: sender, body: m.body });
  assert.equal(r.plaintext, text);
  const back = await bob.sendText(sender, `re: ${text}`);
  const [rb] = await sender.receiveFrom(bob, 1);
  assert.equal(rb.plaintext, `re: ${text}`);
  assertEnvelope(rb.env, { from: bob, body: back.body });
}

test('Kyber one-time prekeys are used while any remain, then the last-resort key', async () => {
  const KY = 3;
  const LR = 3; // sessions on the last-resort key
  const bob = await newUser('bob', { oneTimePreKeys: 20, kyberOneTimePreKeys: KY, connect: true });
  const senders = await Promise.all(Array.from({ length: KY + LR }, (_, i) => newUser(`k${i}`, { oneTimePreKeys: 1, kyberOneTimePreKeys: 0, connect: true })));
  assert.deepEqual(await counts(bob), { one_time_prekeys: 20, kyber_one_time_prekeys: KY });
  const oneTimeIds = bob.kyberOneTimePreKeys.map((k) => k.id());
  const lastResortId = bob.kyberLastResort.id();

  // Phase 1: one-time Kyber keys, each handed out once, count going down.
  const used = [];
  for (let i = 0; i < KY; i++) {
    const bundle = await senders[i].fetchBundle(bob.userId);
    assertBundleOf(bundle, bob);
    assert.ok(bundle.kyber_prekey, 'bundle has a Kyber prekey');
    const pub = unb64(bundle.kyber_prekey.public_key);
    assert.equal(pub.length, 1569);
    assert.equal(pub[0], 0x08);
    assert.equal(unb64(bundle.kyber_prekey.signature).length, 64);
    assert.ok(oneTimeIds.includes(bundle.kyber_prekey.key_id), `key ${bundle.kyber_prekey.key_id} is a Kyber one-time prekey`);
    assert.ok(!used.includes(bundle.kyber_prekey.key_id), 'never handed out twice');
    used.push(bundle.kyber_prekey.key_id);
    assert.equal((await counts(bob)).kyber_one_time_prekeys, KY - 1 - i);
    await sessionWorks(senders[i], bob, bundle, `one-time kyber ${i}`);
  }
  assert.deepEqual([...bob.kyberPreKeyStore.usedOneTime].sort(), [...used].sort(), "Bob's libsignal consumed exactly those keys");

  // Phase 2: no one-time Kyber key left: the last-resort key, every time, kept.
  for (let i = 0; i < LR; i++) {
    const s = senders[KY + i];
    const bundle = await s.fetchBundle(bob.userId);
    assertBundleOf(bundle, bob);
    assert.ok(bundle.kyber_prekey, 'the last-resort Kyber key is still returned');
    assert.equal(bundle.kyber_prekey.key_id, lastResortId, 'the last-resort Kyber key');
    assert.equal((await counts(bob)).kyber_one_time_prekeys, 0);
    await sessionWorks(s, bob, bundle, `last-resort kyber ${i}`);
  }
  assert.deepEqual(bob.kyberPreKeyStore.usedLastResort, Array(LR).fill(lastResortId));
  // EC one-time prekeys went down by one per bundle all along.
  assert.equal((await counts(bob)).one_time_prekeys, 20 - KY - LR);

  // A fresh upload of Kyber one-time keys is used again before the last resort.
  const { res, kyber } = await bob.uploadNewPreKeys({ kyber: 2 });
  assert.equal(res.kyber_one_time_prekeys, 2);
  const again = await senders[0].fetchBundle(bob.userId);
  assert.ok(kyber.some((k) => k.id() === again.kyber_prekey.key_id), 'newly uploaded Kyber one-time key is preferred');
  assert.equal((await counts(bob)).kyber_one_time_prekeys, 1);
  await sessionWorks(senders[0], bob, again, 'kyber after refill');
});
