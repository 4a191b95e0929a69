// Scenario 6: a tampered ciphertext relayed by the server is rejected by
// Bob's libsignal, and the server never alters bodies (byte-for-byte).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { b64, unb64, flipBit, MSG_PREKEY, MSG_WHISPER } from '../lib/client.mjs';
import { relaySuite, assertEnvelope } from '../lib/testutil.mjs';

const newUser = relaySuite();

/** Sends `body` from x to y over the relay and returns the envelope y got. */
async function relay(x, y, body) {
  const reply = await x.sendRaw(y, body);
  assert.equal(reply.type, 'sent', JSON.stringify(reply));
  const [env] = await y.socket.nextMessages(1, { filter: (e) => e.from === x.userId });
  assertEnvelope(env, { from: x, body }); // byte-for-byte, string-for-string
  return env;
}

test('tampered PreKeySignalMessage and SignalMessage are relayed unchanged and rejected by libsignal', async () => {
  const alice = await newUser('alice', { oneTimePreKeys: 1, kyberOneTimePreKeys: 0, connect: true });
  const bob = await newUser('bob', { oneTimePreKeys: 5, kyberOneTimePreKeys: 2, connect: true });

  // First message, tampered in its last byte (inside the SignalMessage MAC).
  await alice.startSession(bob);
  const first = await alice.encrypt(bob.userId, 'first, genuine');
  assert.equal(first.type, MSG_PREKEY);
  const tamperedFirst = b64(flipBit(first.bytes, -1, 0));
  const env1 = await relay(alice, bob, tamperedFirst);
  await assert.rejects(bob.decrypt(alice.userId, env1.body), 'tampered PreKeySignalMessage rejected');
  // The genuine one still goes through afterwards (nothing was consumed).
  const env1b = await relay(alice, bob, first.body);
  assert.equal((await bob.decrypt(alice.userId, env1b.body)).plaintext, 'first, genuine');

  const r = await bob.encrypt(alice.userId, 'reply');
  const envR = await relay(bob, alice, r.body);
  assert.equal((await alice.decrypt(bob.userId, envR.body)).plaintext, 'reply');

  // A SignalMessage tampered at several places: MAC, ciphertext, header.
  const m = await alice.encrypt(bob.userId, 'second, genuine');
  assert.equal(m.type, MSG_WHISPER);
  for (const [idx, bit] of [[-1, 0], [-9, 7], [Math.floor(m.bytes.length / 2), 3], [5, 1]]) {
    const env = await relay(alice, bob, b64(flipBit(m.bytes, idx, bit)));
    await assert.rejects(bob.decrypt(alice.userId, env.body), `tampered at byte ${idx} bit ${bit} rejected`);
  }
  const envM = await relay(alice, bob, m.body);
  assert.equal((await bob.decrypt(alice.userId, envM.body)).plaintext, 'second, genuine');
  assert.equal(bob.socket.inbox.length, 0);
});

test('arbitrary bytes (every byte value, various sizes) are relayed unchanged, live and queued', async () => {
  const x = await newUser('x', { oneTimePreKeys: 1, kyberOneTimePreKeys: 0, connect: true });
  const y = await newUser('y', { oneTimePreKeys: 1, kyberOneTimePreKeys: 0, connect: true });
  const all = new Uint8Array(256).map((_, i) => i);
  const bodies = [all, randomBytes(1), randomBytes(2), randomBytes(3), randomBytes(1000), randomBytes(60 * 1024)].map((u) => b64(u));

  for (const body of bodies) await relay(x, y, body); // live

  // Queued for a user who is not connected (never was), then fetched.
  const z = await newUser('z', { oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
  for (const body of bodies) {
    const reply = await x.sendRaw(z, body);
    assert.equal(reply.type, 'sent');
    assert.equal(reply.delivery, 'queued');
  }
  await z.connect();
  const got = await z.socket.fetch();
  assert.equal(got.length, bodies.length);
  got.forEach((env, i) => assertEnvelope(env, { from: x, body: bodies[i] })); // oldest first
  assert.ok(Buffer.from(unb64(got[0].body)).equals(Buffer.from(all)));
});
