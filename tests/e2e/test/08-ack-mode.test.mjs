// Ack mode and idempotent sends with real Signal clients: a receiver that dies
// between delivery and decryption gets the envelope again and decrypts it once (libsignal
// refuses a true duplicate, the session goes on); a sender that lost its `sent` reply repeats
// the send with the same id and gets the same reply, with one envelope stored; a reused id with
// other content is refused. Fire-and-forget connections behave as before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { S, MSG_PREKEY, MSG_WHISPER } from '../lib/client.mjs';
import { relaySuite, assertEnvelope, assertErrorFrame, waitPending, FETCH_LEASE_MS } from '../lib/testutil.mjs';

const newUser = relaySuite();

/** Long enough for the relay to handle a disconnect (a fire-and-forget one has nothing to put back). */
const SETTLE_MS = 500;

/** libsignal's refusal of a message it has already decrypted. */
const isDuplicate = (e) => e?.code === S.ErrorCode.DuplicatedMessage;

/** The `acked` reply to an ack with frame id `id`. */
const acked = (id, n) => ({ type: 'acked', id, acked: n });

test('ack mode: the receiver crashes between delivery and decryption; the envelope comes back, decrypts once, a true duplicate is refused, the session goes on', async () => {
  const alice = await newUser('alice', { kyberOneTimePreKeys: 2 });
  const bob = await newUser('bob', { kyberOneTimePreKeys: 2 });

  // PQXDH: Alice takes Bob's bundle (a one-time EC and a Kyber one-time prekey).
  const bundle = await alice.startSession(bob);
  assert.ok(bundle.one_time_prekey && bundle.kyber_prekey, 'a full PQXDH bundle');
  await alice.connect(); // Alice stays fire-and-forget
  const b1 = await bob.connect({ ack: true });
  assert.equal(b1.ackMode, true);

  const m1 = await alice.sendText(bob, 'm1: hello bob, PQXDH in ack mode');
  assert.equal(m1.type, MSG_PREKEY);
  assert.equal(m1.reply.delivery, 'delivered', 'Bob is connected: pushed to his ack-mode connection');
  const [pushed] = await b1.nextMessages(1);
  assertEnvelope(pushed, { from: alice, body: m1.body });

  // Bob's app dies after the frame arrived and before decrypting it: no ack, no Close frame.
  await bob.crash();
  const crashedAt = Date.now();
  assert.ok(bob.preKeyStore.records.has(bundle.one_time_prekey.key_id), 'nothing was decrypted: the one-time prekey is unused');
  assert.ok(!bob.hasSession(alice.userId), 'Bob has no session yet');

  // Bob restarts: the relay put the unacknowledged envelope back at once (well within the lease).
  const b2 = await bob.connect({ ack: true });
  await waitPending(b2, 1);
  const again = await b2.fetch();
  assert.ok(Date.now() - crashedAt < FETCH_LEASE_MS / 2, 'back at the disconnect, not at the end of the lease');
  assert.equal(again.length, 1, `one envelope again: ${JSON.stringify(again).slice(0, 300)}`);
  assert.deepEqual(again[0], pushed, 'the same envelope: id, from, source_device, sent_at, body');

  // Decrypted once, then acknowledged.
  const d1 = await bob.decrypt(alice.userId, again[0].body);
  assert.equal(d1.type, MSG_PREKEY);
  assert.equal(d1.plaintext, 'm1: hello bob, PQXDH in ack mode');
  assert.ok(!bob.preKeyStore.records.has(bundle.one_time_prekey.key_id), 'the one-time prekey is consumed');
  assert.deepEqual(bob.kyberPreKeyStore.usedOneTime, [bundle.kyber_prekey.key_id]);
  assert.deepEqual(await b2.ack([pushed.id], { id: 'ack-m1' }), acked('ack-m1', 1));
  assert.deepEqual(await b2.ack([pushed.id], { id: 'ack-m1-again' }), acked('ack-m1-again', 0), 'a second ack acknowledges nothing');

  // A true duplicate (the same ciphertext decrypted a second time) is refused by libsignal,
  // and neither the redelivery nor the refusal hurts the session.
  await assert.rejects(bob.decrypt(alice.userId, again[0].body), isDuplicate, 'duplicate PreKeySignalMessage refused');
  await assert.rejects(bob.decrypt(alice.userId, pushed.body), isDuplicate, 'the pre-crash copy is the same message');

  const r1 = await bob.sendText(alice, 'r1: bob answers');
  assert.equal(r1.type, MSG_WHISPER);
  const [gotR1] = await alice.receiveFrom(bob, 1);
  assertEnvelope(gotR1.env, { from: bob, body: r1.body });
  assert.equal(gotR1.plaintext, 'r1: bob answers');

  // Two more pushed to Bob: he decrypts both, acknowledges m2, and dies before acknowledging m3
  // (processed, ack lost). m3 comes back alone (m2 was acknowledged); decrypting it again is a
  // duplicate, which the client recognises as done and acknowledges.
  const m2 = await alice.sendText(bob, 'm2');
  const m3 = await alice.sendText(bob, 'm3');
  assert.equal(m2.type, MSG_WHISPER);
  assert.deepEqual([m2.reply.delivery, m3.reply.delivery], ['delivered', 'delivered']);
  const [e2, e3] = await b2.nextMessages(2);
  assertEnvelope(e2, { from: alice, body: m2.body });
  assertEnvelope(e3, { from: alice, body: m3.body });
  assert.equal((await bob.decrypt(alice.userId, e2.body)).plaintext, 'm2');
  assert.equal((await bob.decrypt(alice.userId, e3.body)).plaintext, 'm3');
  assert.deepEqual(await b2.ack([e2.id], { id: 'ack-m2' }), acked('ack-m2', 1));
  await bob.crash();

  const b3 = await bob.connect({ ack: true });
  await waitPending(b3, 1);
  const back = await b3.fetch();
  assert.deepEqual(back, [e3], 'only the unacknowledged m3 comes back; the acknowledged m1 and m2 never do');
  await assert.rejects(bob.decrypt(alice.userId, back[0].body), isDuplicate, 'm3 was already decrypted: libsignal refuses it');
  assert.deepEqual(await b3.ack([e3.id], { id: 'ack-m3' }), acked('ack-m3', 1));

  // The session goes on both ways, Bob acknowledging as he goes.
  for (let i = 0; i < 5; i++) {
    const ab = await alice.sendText(bob, `a->b #${i}`);
    const ba = await bob.sendText(alice, `b->a #${i}`);
    assert.equal(ab.type, MSG_WHISPER);
    assert.equal(ba.type, MSG_WHISPER);
    const [gb] = await bob.receiveFrom(alice, 1);
    const [ga] = await alice.receiveFrom(bob, 1);
    assert.equal(gb.plaintext, `a->b #${i}`);
    assert.equal(ga.plaintext, `b->a #${i}`);
    assertEnvelope(gb.env, { from: alice, body: ab.body });
    assertEnvelope(ga.env, { from: bob, body: ba.body });
    assert.deepEqual(await b3.ack([gb.env.id], { id: `ack-${i}` }), acked(`ack-${i}`, 1));
  }

  // After the acks: closing the ack-mode connection puts nothing back; reconnect + fetch is empty.
  await bob.disconnect();
  await sleep(SETTLE_MS);
  const b4 = await bob.connect({ ack: true });
  assert.deepEqual(await b4.fetch(), [], 'nothing comes back after the acks');
  assert.equal(await b4.list(), 0);
  assert.equal(alice.socket.inbox.length, 0, 'no stray messages to Alice');
});

test('idempotent sends: a repeat after a lost reply gets the same reply and stores one envelope; the id with other content is refused', async () => {
  const alice = await newUser('alice', { oneTimePreKeys: 2, kyberOneTimePreKeys: 1 });
  const bob = await newUser('bob', { oneTimePreKeys: 2, kyberOneTimePreKeys: 1 });
  await alice.startSession(bob);

  // Case A: the reply reaches Alice's socket but her app dies before handling it.
  const x = await alice.encrypt(bob.userId, 'x: sent once, answered each time');
  assert.equal(x.type, MSG_PREKEY);
  const X = randomUUID();
  const a1 = await alice.connect({ ack: true });
  const lost = await a1.send(bob.userId, x.body, { id: X }); // seen on the wire, never by the app
  assert.equal(lost.type, 'sent', JSON.stringify(lost));
  assert.equal(lost.delivery, 'queued', 'Bob is offline');
  await alice.crash();

  // Alice restarts and sends the very same frame again (twice): the first answer each time.
  const a2 = await alice.connect({ ack: true });
  const repeat = await a2.send(bob.userId, x.body, { id: X });
  assert.deepEqual(repeat, lost, 'the repeat gets exactly the first `sent` reply');
  assert.deepEqual(await a2.send(bob.userId, x.body, { id: X }), lost, 'and so does a third send');

  // Bob holds exactly one envelope, which decrypts.
  const b = await bob.connect({ ack: true });
  assert.equal(await b.list(), 1, 'one envelope stored for three sends');
  const got = await b.fetch();
  assert.equal(got.length, 1, `exactly one envelope: ${JSON.stringify(got).slice(0, 300)}`);
  assertEnvelope(got[0], { from: alice, body: x.body });
  assert.equal((await bob.decrypt(alice.userId, got[0].body)).plaintext, 'x: sent once, answered each time');
  assert.deepEqual(await b.ack([got[0].id], { id: 'ack-x' }), acked('ack-x', 1));

  // Bob is online now, yet a repeat still answers the remembered reply (`queued`) and pushes nothing.
  assert.deepEqual(await a2.send(bob.userId, x.body, { id: X }), lost, 'remembered answer, Bob online');

  // The same id with another ciphertext (or the same body sent online_only) is refused.
  const other = await alice.encrypt(bob.userId, 'x2: other content under the same id');
  assertErrorFrame(await a2.send(bob.userId, other.body, { id: X }), X, 'id_reused');
  assertErrorFrame(await a2.send(bob.userId, x.body, { id: X, onlineOnly: true }), X, 'id_reused');

  // Nothing was stored by the repeats or the refused sends: the next message is the first Bob gets.
  const y = await alice.sendText(bob, 'y: after the repeats');
  assert.equal(y.reply.delivery, 'delivered');
  const [ey] = await b.nextMessages(1);
  assertEnvelope(ey, { from: alice, body: y.body });
  assert.equal((await bob.decrypt(alice.userId, ey.body)).plaintext, 'y: after the repeats', 'decrypts past the never-stored x2');
  assert.deepEqual(await b.ack([ey.id], { id: 'ack-y' }), acked('ack-y', 1));
  assert.equal(b.inbox.length, 0, 'no duplicate of x pushed');

  // Case B: the frame is written and the socket dropped at once (the reply cannot be read).
  const z = await alice.encrypt(bob.userId, 'z: written, then the socket died');
  const Z = randomUUID();
  a2.sendFrame({ action: 'send', to: bob.userId, id: Z, body: z.body });
  await alice.crash();
  const a3 = await alice.connect({ ack: true });
  const rz = await a3.send(bob.userId, z.body, { id: Z });
  assert.equal(rz.type, 'sent', JSON.stringify(rz));
  assert.equal(rz.delivery, 'delivered', 'Bob is connected');
  assert.deepEqual(await a3.send(bob.userId, z.body, { id: Z }), rz, 'a repeat gets the same reply');
  const w = await alice.sendText(bob, 'w: the sentinel');
  const [ez, ew] = await b.nextMessages(2);
  assertEnvelope(ez, { from: alice, body: z.body });
  assertEnvelope(ew, { from: alice, body: w.body });
  assert.equal((await bob.decrypt(alice.userId, ez.body)).plaintext, 'z: written, then the socket died');
  assert.equal((await bob.decrypt(alice.userId, ew.body)).plaintext, 'w: the sentinel');
  assert.deepEqual(await b.ack([ez.id, ew.id], { id: 'ack-zw' }), acked('ack-zw', 2));

  // Bob answers; the session is fine both ways.
  const r = await bob.sendText(alice, 'r: got x, y, z and w once each');
  const [gr] = await alice.receiveFrom(bob, 1);
  assert.equal(gr.plaintext, 'r: got x, y, z and w once each');
  assert.deepEqual(await a3.ack([gr.env.id], { id: 'ack-r' }), acked('ack-r', 1));
  assert.equal(r.type, MSG_WHISPER);
  assert.equal(b.inbox.length + a3.inbox.length, 0, 'no stray messages');
  assert.equal(await b.list(), 0);
});

test('fire-and-forget (no ack=1): a pushed message is gone after the write, acks acknowledge nothing, ids are not deduplicated', async () => {
  const alice = await newUser('alice', { oneTimePreKeys: 2, kyberOneTimePreKeys: 1 });
  const bob = await newUser('bob', { oneTimePreKeys: 2, kyberOneTimePreKeys: 1 });
  await alice.startSession(bob);
  await alice.connect();
  const b1 = await bob.connect();
  assert.equal(b1.ackMode, false);

  const m1 = await alice.sendText(bob, 'm1: lost when bob crashes');
  assert.equal(m1.reply.delivery, 'delivered');
  const [e1] = await b1.nextMessages(1);
  assertEnvelope(e1, { from: alice, body: m1.body });
  await bob.crash(); // before decrypting: as in fire-and-forget mode, the message is lost

  await sleep(SETTLE_MS);
  const b2 = await bob.connect();
  assert.deepEqual(await b2.fetch(), [], 'deleted when it was written');
  assert.equal(await b2.list(), 0);
  // Not in flight either: acking it deletes nothing (with and without a frame id).
  assert.deepEqual(await b2.ack([e1.id], { id: 'ack-ff' }), acked('ack-ff', 0));
  assert.deepEqual(await b2.ack([e1.id], { id: null }), acked(null, 0));
  await bob.disconnect();
  await sleep(SETTLE_MS);
  const b3 = await bob.connect({ ack: true });
  assert.deepEqual(await b3.fetch(), [], 'an ack-mode connection finds nothing either');
  assert.deepEqual(await b3.ack([e1.id], { id: 'ack-ff-2' }), acked('ack-ff-2', 0));

  // A send with a repeated id from a fire-and-forget connection is stored each time.
  const m2 = await alice.encrypt(bob.userId, 'm2: sent twice under one id');
  const M2 = randomUUID();
  const s1 = await alice.socket.send(bob.userId, m2.body, { id: M2 });
  const s2 = await alice.socket.send(bob.userId, m2.body, { id: M2 });
  assert.equal(s1.type, 'sent', JSON.stringify(s1));
  assert.equal(s2.type, 'sent', JSON.stringify(s2));
  const [f1, f2] = await b3.nextMessages(2);
  assertEnvelope(f1, { from: alice, body: m2.body });
  assertEnvelope(f2, { from: alice, body: m2.body });
  assert.notEqual(f1.id, f2.id, 'two envelopes');
  // Bob never saw m1, yet m2 (still a PreKeySignalMessage) starts the session; the copy is a duplicate.
  const d2 = await bob.decrypt(alice.userId, f1.body);
  assert.equal(d2.type, MSG_PREKEY);
  assert.equal(d2.plaintext, 'm2: sent twice under one id');
  await assert.rejects(bob.decrypt(alice.userId, f2.body), isDuplicate);
  assert.deepEqual(await b3.ack([f1.id, f2.id], { id: 'ack-m2' }), acked('ack-m2', 2));

  const r = await bob.sendText(alice, 'r: only m2 arrived');
  const [gr] = await alice.receiveFrom(bob, 1);
  assert.equal(gr.plaintext, 'r: only m2 arrived');
  assert.equal(r.reply.delivery, 'delivered');
  // Alice's fire-and-forget socket: what it was written is gone already.
  assert.deepEqual(await alice.socket.ack([gr.env.id], { id: 'ack-a' }), acked('ack-a', 0));
});
