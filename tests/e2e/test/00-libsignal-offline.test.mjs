// Offline self-check of the libsignal usage (no relay needed): key formats,
// signatures, PQXDH session setup with Kyber prekeys, ratcheting, tampering.
// If this file fails, the relay scenarios cannot be trusted either.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { S, SignalParty, b64, unb64, flipBit, isPaddedB64, MSG_PREKEY, MSG_WHISPER } from '../lib/signal.mjs';

function party(opts) {
  const p = new SignalParty(opts);
  p.setUserId(randomUUID());
  return p;
}

test('offline: key and signature formats match the API', () => {
  const p = party({ oneTimePreKeys: 3, kyberOneTimePreKeys: 2 });
  const body = p.registrationKeys();
  const idk = unb64(body.identity_key);
  assert.equal(idk.length, 33);
  assert.equal(idk[0], 0x05);
  for (const k of [body.signed_prekey, ...body.one_time_prekeys]) {
    assert.ok(isPaddedB64(k.public_key));
    const pub = unb64(k.public_key);
    assert.equal(pub.length, 33);
    assert.equal(pub[0], 0x05);
  }
  for (const k of [body.kyber_last_resort_prekey, ...body.kyber_one_time_prekeys]) {
    const pub = unb64(k.public_key);
    assert.equal(pub.length, 1569);
    assert.equal(pub[0], 0x08);
  }
  for (const k of [body.signed_prekey, body.kyber_last_resort_prekey, ...body.kyber_one_time_prekeys]) {
    assert.ok(isPaddedB64(k.signature));
    const sig = unb64(k.signature);
    assert.equal(sig.length, 64);
    assert.ok(p.identity.publicKey.verify(unb64(k.public_key), sig), 'libsignal signature verifies');
    assert.ok(!p.identity.publicKey.verify(unb64(k.public_key), flipBit(sig, 0, 0)), 'flipped bit fails');
  }
  assert.ok(body.registration_id >= 1 && body.registration_id <= 16380);
  const ids = [body.signed_prekey, ...body.one_time_prekeys, body.kyber_last_resort_prekey, ...body.kyber_one_time_prekeys].map((k) => k.key_id);
  for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id <= 2 ** 31 - 1);
  assert.equal(new Set(ids).size, ids.length, 'key ids are distinct');
});

test('offline: PQXDH session with one-time EC + Kyber prekeys, then 50 each way interleaved', async () => {
  const alice = party({ oneTimePreKeys: 2, kyberOneTimePreKeys: 2 });
  const bob = party({ oneTimePreKeys: 2, kyberOneTimePreKeys: 2 });
  const bundle = bob.localBundleJson();
  await alice.processBundle(bundle);
  assert.ok(alice.hasSession(bob.userId));

  const first = await alice.encrypt(bob.userId, 'hello bob');
  assert.equal(first.type, MSG_PREKEY);
  const got = await bob.decrypt(alice.userId, first.body);
  assert.equal(got.plaintext, 'hello bob');
  assert.equal(got.type, MSG_PREKEY);
  // Bob's one-time keys were consumed by libsignal through our stores.
  assert.ok(!bob.preKeyStore.records.has(bundle.one_time_prekey.key_id));
  assert.deepEqual(bob.kyberPreKeyStore.usedOneTime, [bundle.kyber_prekey.key_id]);

  const reply = await bob.encrypt(alice.userId, 'hi alice');
  assert.equal(reply.type, MSG_WHISPER);
  assert.equal((await alice.decrypt(bob.userId, reply.body)).plaintext, 'hi alice');

  for (let i = 0; i < 50; i++) {
    const a = await alice.encrypt(bob.userId, `a->b ${i}`);
    const b = await bob.encrypt(alice.userId, `b->a ${i}`);
    assert.equal(a.type, MSG_WHISPER);
    assert.equal((await bob.decrypt(alice.userId, a.body)).plaintext, `a->b ${i}`);
    assert.equal((await alice.decrypt(bob.userId, b.body)).plaintext, `b->a ${i}`);
  }
});

test('offline: Kyber last-resort key works repeatedly, and without an EC one-time prekey', async () => {
  const bob = party({ oneTimePreKeys: 3, kyberOneTimePreKeys: 0 });
  for (let i = 0; i < 3; i++) {
    const alice = party({ oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
    const bundle = bob.localBundleJson({ preKey: i < 2 ? bob.oneTimePreKeys[i] : null, kyber: bob.kyberLastResort });
    await alice.processBundle(bundle);
    const m = await alice.encrypt(bob.userId, `lr ${i}`);
    assert.equal((await bob.decrypt(alice.userId, m.body)).plaintext, `lr ${i}`);
  }
  assert.deepEqual(bob.kyberPreKeyStore.usedLastResort, Array(3).fill(bob.kyberLastResort.id()));
  assert.ok(bob.kyberPreKeyStore.records.has(bob.kyberLastResort.id()), 'last-resort key is kept');
});

test('offline: a bundle with a bad signed-prekey signature is refused by libsignal', async () => {
  const alice = party({ oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
  const bob = party({ oneTimePreKeys: 1, kyberOneTimePreKeys: 1 });
  const bundle = bob.localBundleJson();
  bundle.signed_prekey.signature = b64(flipBit(unb64(bundle.signed_prekey.signature), 5, 3));
  await assert.rejects(alice.processBundle(bundle));
  const bundle2 = bob.localBundleJson();
  bundle2.kyber_prekey.signature = b64(flipBit(unb64(bundle2.kyber_prekey.signature), 5, 3));
  await assert.rejects(alice.processBundle(bundle2));
});

test('offline: tampered PreKeySignalMessage and SignalMessage are rejected; originals still decrypt', async () => {
  const alice = party({ oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
  const bob = party({ oneTimePreKeys: 2, kyberOneTimePreKeys: 2 });
  await alice.processBundle(bob.localBundleJson());
  const first = await alice.encrypt(bob.userId, 'first');
  for (const idx of [-1, -12, Math.floor(first.bytes.length / 2)]) {
    await assert.rejects(bob.decrypt(alice.userId, flipBit(first.bytes, idx, 1)), `tamper at ${idx}`);
  }
  assert.equal((await bob.decrypt(alice.userId, first.body)).plaintext, 'first');

  const r = await bob.encrypt(alice.userId, 'reply');
  assert.equal((await alice.decrypt(bob.userId, r.body)).plaintext, 'reply');
  const m = await alice.encrypt(bob.userId, 'second');
  assert.equal(m.type, MSG_WHISPER);
  for (const idx of [-1, -9, 10]) {
    await assert.rejects(bob.decrypt(alice.userId, flipBit(m.bytes, idx, 0)), `tamper at ${idx}`);
  }
  assert.equal((await bob.decrypt(alice.userId, m.body)).plaintext, 'second');
});

test('offline: a third party cannot decrypt a message meant for someone else', async () => {
  const alice = party({ oneTimePreKeys: 1, kyberOneTimePreKeys: 1 });
  const bob = party({ oneTimePreKeys: 1, kyberOneTimePreKeys: 1 });
  const carol = party({ oneTimePreKeys: 1, kyberOneTimePreKeys: 1 });
  await alice.processBundle(bob.localBundleJson());
  await carol.processBundle(alice.localBundleJson());
  const carolToAlice = await carol.encrypt(alice.userId, 'c->a');
  await alice.decrypt(carol.userId, carolToAlice.body);

  const m = await alice.encrypt(bob.userId, 'for bob only');
  await assert.rejects(carol.decrypt(alice.userId, m.body));
  assert.equal((await bob.decrypt(alice.userId, m.body)).plaintext, 'for bob only');
  const m2 = await alice.encrypt(bob.userId, 'still for bob');
  await assert.rejects(carol.decrypt(alice.userId, m2.body));
  assert.equal((await bob.decrypt(alice.userId, m2.body)).plaintext, 'still for bob');
  assert.ok(S.CiphertextMessageType.PreKey === 3 && S.CiphertextMessageType.Whisper === 2);
});
