// End-to-end receipts through a real relay: `delivered` sent by the recipient's client on its own,
// `read` after markRead, one-to-one and in a group; gathered (N messages, fewer receipt
// messages); never a receipt for a receipt; and on the wire a receipt is a `send` frame like a
// message's, of the same size (the relay cannot tell them apart).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore } from '../src/index.mjs';
import { name, password, record, stackSuite, waitFor, watchRelay } from './util.mjs';

const { stack, track } = stackSuite();

/** Frames each user's sockets sent (watched from the outside), by user id. */
const watch = watchRelay();
const sent = new Map();
watch.onFrame((frame, _sock, userId) => {
  if (!sent.has(userId)) sent.set(userId, []);
  sent.get(userId).push(frame);
});
const sends = (c) => (sent.get(c.userId) ?? []).filter((f) => f.action === 'send');

async function user(role, opts = {}) {
  const c = track(await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name(role), password: password(), ...opts }));
  const r = record(c);
  r.receipts = [];
  r.statuses = [];
  c.on('receipt', (x) => r.receipts.push(x));
  c.on('status', (x) => r.statuses.push(x));
  c.on('invite', ({ groupId }) => c.join(groupId).catch(() => {}));
  await c.connect();
  return { c, r };
}

const idsOf = (receipts, type) => new Set(receipts.filter((x) => x.type === type).flatMap((x) => x.ids));

test('delivered arrives by itself, read after markRead; the history shows sent → delivered → read', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const s = await alice.c.send(bob.c.username, 'hello bob');
  assert.equal(alice.c.message(s.id).status, 'sent');
  const m = await bob.r.next();
  assert.equal(m.messageId, s.id, 'the message carries the sender-side id');
  assert.equal(m.conversation, alice.c.userId);

  await waitFor(() => idsOf(alice.r.receipts, 'delivered').has(s.id), 'the delivered receipt');
  const d = alice.r.receipts.find((x) => x.type === 'delivered');
  assert.equal(d.from.userId, bob.c.userId);
  assert.equal(d.from.username, bob.c.username);
  assert.equal(alice.c.message(s.id).status, 'delivered');
  assert.deepEqual(alice.r.statuses.map((x) => [x.id, x.status]), [[s.id, 'delivered']]);
  assert.equal(idsOf(alice.r.receipts, 'read').size, 0, 'no read receipt before markRead');

  assert.deepEqual(await bob.c.markRead(alice.c.username), [s.id]);
  assert.equal(bob.c.message(s.id).status, 'read');
  await waitFor(() => idsOf(alice.r.receipts, 'read').has(s.id), 'the read receipt');
  assert.equal(alice.c.message(s.id).status, 'read');
  assert.deepEqual(alice.r.statuses.map((x) => x.status), ['delivered', 'read']);
  // Marking again sends nothing more.
  assert.deepEqual(await bob.c.markRead(alice.c.username, [s.id]), []);
});

test('group messages: every member device sends its receipts to the sender', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const carol = await user('carol');
  const g = await alice.c.createGroup([bob.c.username, carol.c.username], { name: 'crew' });
  await waitFor(async () => (await alice.c.group(g.groupId)).members.every((x) => x.state === 'member'), 'both joined');
  const s = await alice.c.sendGroup(g.groupId, 'hello crew');
  for (const u of [bob, carol]) {
    const m = await u.r.next();
    assert.equal(m.messageId, s.id);
    assert.equal(m.conversation, `group:${g.groupId}`);
  }
  await waitFor(() => alice.c.message(s.id)?.deliveredTo?.length === 2, 'delivered receipts from both');
  assert.equal(alice.c.message(s.id).status, 'delivered');
  await carol.c.markRead({ groupId: g.groupId });
  await waitFor(() => alice.c.message(s.id).status === 'read', 'the read receipt of carol');
  assert.deepEqual(alice.c.message(s.id).readBy, [carol.c.userId]);
  assert.deepEqual((await alice.c.history({ groupId: g.groupId })).map((e) => e.text), ['hello crew']);
});

test('gathered: N messages are acknowledged by fewer receipt messages; no receipt for a receipt', async (t) => {
  const N = 12;
  const alice = await user('alice');
  const bob = await user('bob');
  const ids = [];
  for (let i = 0; i < N; i++) ids.push((await alice.c.send(bob.c.username, `message ${i}`)).id);
  await waitFor(() => ids.every((id) => alice.c.message(id).status === 'delivered'), 'every message delivered');
  const deliveredFrames = sends(bob.c).length;
  assert.ok(deliveredFrames >= 1 && deliveredFrames < N, `${N} messages, ${deliveredFrames} receipt messages`);
  t.diagnostic(`${N} messages sent one after the other: ${deliveredFrames} delivered receipt message(s), 1 read receipt message`);

  assert.equal((await bob.c.markRead(alice.c.userId)).length, N);
  await waitFor(() => ids.every((id) => alice.c.message(id).status === 'read'), 'every message read');
  assert.equal(sends(bob.c).length - deliveredFrames, 1, 'one read receipt message for all of them');
  assert.deepEqual(idsOf(alice.r.receipts, 'read'), new Set(ids));

  // Alice received receipts: whatever she would answer is sent now, and it is nothing.
  await alice.c.flushReceipts();
  await bob.c.flushReceipts();
  assert.equal(sends(alice.c).length, N, 'alice sent her messages and nothing else');
  assert.equal(bob.r.messages.length, N, 'bob was shown the messages only');
  assert.equal(alice.r.messages.length, 0, 'receipts are not messages');
});

test('on the wire a receipt is an ordinary send frame of the same size as a short message', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  await alice.c.send(bob.c.username, 'hi');
  await bob.r.next();
  await waitFor(() => sends(bob.c).length === 1, 'the receipt frame');
  const receipt = sends(bob.c)[0];
  await bob.c.send(alice.c.username, 'ok, thanks');
  const message = sends(bob.c)[1];
  await alice.r.next();

  const shape = (f) => ({
    keys: Object.keys(f).sort(),
    to: f.to,
    messages: f.messages.map((x) => ({ keys: Object.keys(x).sort(), type: x.type, bytes: Buffer.from(x.body, 'base64').length })),
  });
  assert.deepEqual(shape(receipt), shape(message));
  assert.doesNotMatch(JSON.stringify(receipt), /receipt|delivered/i);
});

test('receipts: false sends none (incoming receipts still update the history)', async () => {
  const alice = await user('alice');
  const bob = await user('bob', { receipts: false });
  const s = await alice.c.send(bob.c.username, 'quiet');
  await bob.r.next();
  await bob.c.markRead(alice.c.userId);
  await bob.c.flushReceipts();
  assert.equal(sends(bob.c).length, 0);
  const t = await bob.c.send(alice.c.username, 'still here');
  await alice.r.next();
  await waitFor(() => bob.c.message(t.id).status === 'delivered', 'alice delivered receipt to bob');
  assert.equal(alice.c.message(s.id).status, 'sent');
});
