// Scenario 1: Alice sends a first message while Bob is offline (a
// PreKeySignalMessage); Bob connects, fetches, decrypts, replies; Alice
// decrypts the reply. Then 50 messages each way, interleaved, in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MSG_PREKEY, MSG_WHISPER, RelaySocket } from '../lib/client.mjs';
import { relaySuite, assertEnvelope, assertBundleOf, counts } from '../lib/testutil.mjs';

const newUser = relaySuite();

test('first message to an offline user, reply, then 50 each way interleaved', async () => {
  const alice = await newUser('alice', { kyberOneTimePreKeys: 5 });
  const bob = await newUser('bob', { kyberOneTimePreKeys: 5 });
  assert.deepEqual(await counts(bob), { one_time_prekeys: 100, kyber_one_time_prekeys: 5 });

  // Alice: bundle → PQXDH session → PreKeySignalMessage, Bob is offline.
  const bundle = await alice.startSession(bob);
  assertBundleOf(bundle, bob);
  assert.ok(bundle.one_time_prekey, 'bundle carries a one-time prekey');
  assert.ok(bundle.kyber_prekey, 'bundle carries a Kyber prekey');
  assert.ok(bob.kyberOneTimePreKeys.some((k) => k.id() === bundle.kyber_prekey.key_id), 'a Kyber one-time prekey');
  assert.deepEqual(await counts(bob), { one_time_prekeys: 99, kyber_one_time_prekeys: 4 });

  await alice.connect();
  const t0 = Date.now();
  const first = await alice.sendText(bob, 'hello bob, this is alice');
  assert.equal(first.type, MSG_PREKEY, 'first message is a PreKeySignalMessage');
  assert.equal(first.reply.delivery, 'queued', 'Bob is offline: the message is queued');

  // Bob comes online, sees one pending message, fetches and decrypts it.
  await bob.connect();
  assert.equal(await bob.socket.list(), 1);
  const fetched = await bob.socket.fetch();
  assert.equal(fetched.length, 1);
  assertEnvelope(fetched[0], { from: alice, body: first.body, sentAfter: t0 });
  const dec = await bob.decrypt(alice.userId, fetched[0].body);
  assert.equal(dec.type, MSG_PREKEY);
  assert.equal(dec.plaintext, 'hello bob, this is alice');
  assert.equal(await bob.socket.list(), 0, 'fetched messages are gone from the inbox');
  assert.deepEqual(await bob.socket.fetch(), [], 'a second fetch is empty');
  // libsignal consumed exactly the prekeys the server handed out.
  assert.ok(!bob.preKeyStore.records.has(bundle.one_time_prekey.key_id));
  assert.deepEqual(bob.kyberPreKeyStore.usedOneTime, [bundle.kyber_prekey.key_id]);

  // Bob replies; Alice is online and gets it at once.
  const reply = await bob.sendText(alice, 'hi alice, got it');
  assert.equal(reply.type, MSG_WHISPER);
  assert.equal(reply.reply.delivery, 'delivered', 'Alice is online: delivered live');
  const [r] = await alice.receiveFrom(bob, 1);
  assertEnvelope(r.env, { from: bob, body: reply.body });
  assert.equal(r.plaintext, 'hi alice, got it');

  // 50 messages each way, interleaved, each side receiving live.
  const N = 50;
  const sentAB = [];
  const sentBA = [];
  for (let i = 0; i < N; i++) {
    sentAB.push(await alice.sendText(bob, `a->b #${i}`));
    sentBA.push(await bob.sendText(alice, `b->a #${i}`));
    // Every 10 rounds both sides catch up, so the ratchet turns over both ways.
    if (i % 10 === 9) {
      const gotB = await bob.receiveFrom(alice, 10);
      const gotA = await alice.receiveFrom(bob, 10);
      for (let k = 0; k < 10; k++) {
        const j = i - 9 + k;
        assert.equal(gotB[k].plaintext, `a->b #${j}`, 'Bob decrypts in order');
        assert.equal(gotA[k].plaintext, `b->a #${j}`, 'Alice decrypts in order');
        assertEnvelope(gotB[k].env, { from: alice, body: sentAB[j].body });
        assertEnvelope(gotA[k].env, { from: bob, body: sentBA[j].body });
      }
    }
  }
  assert.ok(sentAB.every((m) => m.type === MSG_WHISPER), 'after the reply Alice sends SignalMessages');
  assert.ok(sentAB.every((m) => m.reply.delivery === 'delivered'));
  assert.ok(sentBA.every((m) => m.reply.delivery === 'delivered'));
  assert.equal(await alice.socket.list(), 0);
  assert.equal(await bob.socket.list(), 0);
  assert.equal(alice.socket.inbox.length + bob.socket.inbox.length, 0, 'no stray messages');
});

test('relay basics: ping/pong, a bad token is refused at the WebSocket handshake', async () => {
  const carol = await newUser('carol', { oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
  const s = await carol.connect();
  assert.equal((await s.ping()).type, 'pong');
  await assert.rejects(RelaySocket.connect(carol.token + 'x'), (e) => e.status === 401);
  await assert.rejects(RelaySocket.connect(''), (e) => e.status === 401);
});
