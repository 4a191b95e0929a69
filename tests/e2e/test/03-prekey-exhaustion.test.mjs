// Scenario 3: Bob's one-time prekeys run out: the next bundle fetch is 412
// prekeys_exhausted; Bob uploads a new batch with PUT /v1/keys; the following
// session setup succeeds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MSG_PREKEY } from '../lib/client.mjs';
import { relaySuite, assertEnvelope, assertApiError, assertBundleOf, counts } from '../lib/testutil.mjs';

const newUser = relaySuite();

test('one-time prekeys run out (412), a new batch is uploaded, sessions work again', async () => {
  const K = 3;
  const bob = await newUser('bob', { oneTimePreKeys: K, kyberOneTimePreKeys: 1, connect: true });
  const senders = await Promise.all(Array.from({ length: K + 1 }, (_, i) => newUser(`s${i}`, { oneTimePreKeys: 1, kyberOneTimePreKeys: 0, connect: true })));
  assert.equal((await counts(bob)).one_time_prekeys, K);

  // K senders each take one one-time prekey and complete a session.
  const handed = [];
  for (let i = 0; i < K; i++) {
    const s = senders[i];
    const bundle = await s.startSession(bob);
    assertBundleOf(bundle, bob);
    assert.ok(bundle.one_time_prekey);
    handed.push(bundle.one_time_prekey.key_id);
    assert.equal((await counts(bob)).one_time_prekeys, K - 1 - i);
    const m = await s.sendText(bob, `from ${s.role}`);
    assert.equal(m.type, MSG_PREKEY);
    const [r] = await bob.receiveFrom(s, 1);
    assertEnvelope(r.env, { from: s, body: m.body });
    assert.equal(r.plaintext, `from ${s.role}`);
  }
  assert.equal(new Set(handed).size, K, 'each one-time prekey was handed out once');
  assert.deepEqual([...handed].sort(), bob.oneTimePreKeys.map((k) => k.id()).sort());

  // Exhausted: strict 412, twice, and nothing changes.
  const late = senders[K];
  for (let i = 0; i < 2; i++) {
    assertApiError(await late.fetchBundleRaw(bob.userId), 412, 'prekeys_exhausted');
  }
  assert.equal((await counts(bob)).one_time_prekeys, 0);

  // Bob refills with PUT /v1/keys (keys created and kept by his libsignal stores).
  const { res, ec } = await bob.uploadNewPreKeys({ oneTime: 5 });
  assert.equal(res.one_time_prekeys, 5, 'PUT /v1/keys answers the new count');
  assert.equal((await counts(bob)).one_time_prekeys, 5);

  const bundle = await late.startSession(bob);
  assertBundleOf(bundle, bob);
  assert.ok(ec.some((k) => k.id() === bundle.one_time_prekey.key_id), 'the bundle uses a key from the new batch');
  assert.equal((await counts(bob)).one_time_prekeys, 4);
  const m = await late.sendText(bob, 'after the refill');
  assert.equal(m.type, MSG_PREKEY);
  const [r] = await bob.receiveFrom(late, 1);
  assertEnvelope(r.env, { from: late, body: m.body });
  assert.equal(r.plaintext, 'after the refill');
  const back = await bob.sendText(late, 'welcome');
  const [rb] = await late.receiveFrom(bob, 1);
  assert.equal(rb.plaintext, 'welcome');
  assertEnvelope(rb.env, { from: bob, body: back.body });
});
