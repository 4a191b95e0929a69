// Groups through the library against a real stack: the meta sealed (the relay never sees the
// name), invitations, one group send read by every member device under a sender key handed over
// the 1:1 sessions, invitees and removed members reading nothing, a new sender key after a
// removal or a leave, a device linked by a member repaired (mismatched_devices) under the same
// frame id, and the group state surviving a reopen of the store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore, RelayError, call } from '../src/index.mjs';
import { name, password, record, stackSuite, waitFor, watchRelay, login } from './util.mjs';

const { stack, track } = stackSuite();

/** A registered, connected client with its events recorded (`keys`: group key events, `invites`). */
async function user(role, store = new MemoryStore()) {
  const username = name(role);
  const pw = password();
  const c = track(await RelayClient.open({ url: stack().url, store, username, password: pw }));
  const r = record(c);
  r.keys = [];
  r.invites = [];
  c.on('groupKey', (k) => r.keys.push(k));
  c.on('invite', (i) => r.invites.push(i));
  await c.connect();
  return { c, r, username, password: pw, store };
}

/** A new device of `u`'s account, linked by `u`, connected and recorded. */
async function linkTo(u) {
  const store = new MemoryStore();
  const { linkString, done } = await RelayClient.startLinking({ url: stack().url, store });
  await u.c.linkDevice(linkString);
  const c = track(await done);
  const r = record(c);
  r.keys = [];
  c.on('groupKey', (k) => r.keys.push(k));
  await c.connect();
  return { c, r, username: u.username, store };
}

/** The next group message of `r` in `groupId` (skipping nothing: it must be the next message). */
async function nextIn(r, groupId) {
  const m = await r.next();
  assert.equal(m.groupId, groupId, `a message of the group: ${JSON.stringify({ text: m.text, groupId: m.groupId })}`);
  return m;
}

/**
 * Proves `r` got no group message: a 1:1 marker sent now arrives as its very next message (an
 * inbox is delivered in order), so nothing from the group was waiting before it.
 */
async function assertNothingFromGroup(r, sender, recipient, what) {
  const marker = `marker ${Math.random()}`;
  await sender.c.send(recipient.username, marker);
  const m = await r.next();
  assert.equal(m.text, marker, `${what}: the next message is the marker, not ${JSON.stringify({ text: m.text, groupId: m.groupId })}`);
}

test('create, invite, join: the name sealed in meta (the relay sees ciphertext), invitees read it', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const carol = await user('carol');
  const g = await alice.c.createGroup([bob.username, carol.c.userId], { name: 'climbing crew' });
  assert.equal(g.version, 1);
  assert.deepEqual(g.meta, { name: 'climbing crew' });
  assert.deepEqual(g.members.map((m) => [m.userId, m.role, m.state]), [
    [alice.c.userId, 'admin', 'member'],
    [bob.c.userId, 'member', 'invited'],
    [carol.c.userId, 'member', 'invited'],
  ]);
  assert.equal(g.role, 'admin');
  assert.equal(g.state, 'member');

  // The relay's copy: opaque bytes, not the name.
  const raw = await call('GET', `/v1/groups/${g.groupId}`, { url: stack().url, token: await login(stack().url, alice.username, alice.password) });
  assert.equal(typeof raw.meta, 'string');
  assert.ok(!Buffer.from(raw.meta, 'base64').toString('latin1').includes('climbing'), 'the name is not in the clear');

  // Bob is told (over his 1:1 session with Alice) and can open the meta.
  const inv = await waitFor(() => bob.r.invites.find((i) => i.groupId === g.groupId), 'bob\'s invitation');
  assert.equal(inv.from.userId, alice.c.userId);
  assert.equal(inv.from.username, alice.username);
  const seen = await bob.c.group(g.groupId);
  assert.deepEqual(seen.meta, { name: 'climbing crew' });
  assert.equal(seen.state, 'invited');
  assert.deepEqual(await bob.c.groups(), [{ groupId: g.groupId, role: 'member', state: 'invited' }]);
  const joined = await bob.c.join(g.groupId);
  assert.equal(joined.state, 'member');
  assert.equal(joined.version, 2);
  assert.deepEqual(bob.r.messages, [], 'a group key message is not an application message');

  // A stranger cannot read it; a member cannot invite.
  const dave = await user('dave');
  await assert.rejects(dave.c.group(g.groupId), (e) => e instanceof RelayError && e.code === 'group_not_found' && e.status === 404);
  await assert.rejects(bob.c.invite(g.groupId, [dave.username]), (e) => e.code === 'not_an_admin' && e.status === 403);
  await assert.rejects(dave.c.sendGroup(g.groupId, 'let me in'), (e) => e.code === 'not_a_member' || e.code === 'group_not_found');

  // A new name, sealed again; Bob made an admin invites Dave, who gets the key and reads it.
  const renamed = await alice.c.setMeta(g.groupId, { name: 'bouldering crew' });
  assert.equal(renamed.version, 3);
  assert.deepEqual((await bob.c.group(g.groupId)).meta, { name: 'bouldering crew' });
  await alice.c.setRole(g.groupId, bob.username, 'admin');
  const withDave = await bob.c.invite(g.groupId, [dave.username]);
  assert.deepEqual(withDave.members.map((m) => [m.userId, m.role, m.state]).slice(1), [
    [bob.c.userId, 'admin', 'member'],
    [carol.c.userId, 'member', 'invited'],
    [dave.c.userId, 'member', 'invited'],
  ]);
  await waitFor(() => dave.r.invites.find((i) => i.groupId === g.groupId), 'dave\'s invitation');
  assert.deepEqual((await dave.c.group(g.groupId)).meta, { name: 'bouldering crew' });
});

test('one send reaches every member device (sync copy included); invitees get nothing; the key goes once', async () => {
  // Watching the frames the clients send (their sockets are wrapped as they open).
  const watch = watchRelay();
  const frames = [];
  const alice = await user('alice');
  const alice2 = await linkTo(alice);
  const bob = await user('bob');
  const carol = await user('carol');
  const { groupId } = await alice.c.createGroup([bob.username, carol.username], { name: 'g' });
  await waitFor(() => bob.r.invites.length, 'bob\'s invitation');
  await bob.c.join(groupId);

  watch.onFrame((f, _sock, userId) => userId === alice.c.userId && f.action === 'send' && frames.push(f));
  frames.length = 0;
  try {
    const r = await alice.c.sendGroup(groupId, 'hello group');
    assert.equal(r.groupId, groupId);
    assert.equal(r.delivered + r.queued, 2, `bob's device and Alice's second device: ${JSON.stringify(r)}`);
    const toBob = await nextIn(bob.r, groupId);
    assert.equal(toBob.text, 'hello group');
    assert.deepEqual(toBob.from, { userId: alice.c.userId, deviceId: 1, username: alice.username });
    assert.equal(toBob.sync, false);
    const copy = await nextIn(alice2.r, groupId);
    assert.equal(copy.text, 'hello group');
    assert.equal(copy.sync, true);
    // Bob's device and Alice's device 2 got the sender key first, over 1:1 sends.
    const keySends = frames.filter((f) => f.to);
    assert.deepEqual(new Set(keySends.map((f) => f.to)), new Set([bob.c.userId, alice.c.userId]), JSON.stringify(keySends.map((f) => f.to)));
    const groupFrames = frames.filter((f) => f.group_id);
    assert.equal(groupFrames.length, 1);
    assert.deepEqual(Object.keys(groupFrames[0].devices).sort(), [alice.c.userId, bob.c.userId].sort(), 'the map: joined members only');
    assert.deepEqual(groupFrames[0].devices[alice.c.userId].map((d) => d.device_id), [2]);

    // The second send: no key message, one frame.
    frames.length = 0;
    await alice.c.sendGroup(groupId, 'second');
    assert.deepEqual(frames.map((f) => Boolean(f.group_id)), [true], 'one group frame, no key resent');
    assert.equal((await nextIn(bob.r, groupId)).text, 'second');
    assert.equal((await nextIn(alice2.r, groupId)).text, 'second');
  } finally {
    watch.restore();
  }

  // Bob answers: Alice's two devices read it.
  await bob.c.sendGroup(groupId, 'hi from bob');
  for (const r of [alice.r, alice2.r]) {
    const m = await nextIn(r, groupId);
    assert.equal(m.text, 'hi from bob');
    assert.equal(m.from.username, bob.username);
  }
  // Carol, only invited, received no group message.
  await assertNothingFromGroup(carol.r, alice, carol, 'the invitee');
  for (const x of [alice, alice2, bob, carol]) assert.deepEqual(x.r.errors.map((e) => e.message), []);
});

test('after a removal the removed member reads nothing and the others get a new sender key; a leave too', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const carol = await user('carol');
  const { groupId } = await alice.c.createGroup([bob.username, carol.username], { name: 'rotating' });
  await waitFor(() => bob.r.invites.length && carol.r.invites.length, 'the invitations');
  await bob.c.join(groupId);
  await carol.c.join(groupId);
  await alice.c.sendGroup(groupId, 'to all three');
  assert.equal((await nextIn(bob.r, groupId)).text, 'to all three');
  assert.equal((await nextIn(carol.r, groupId)).text, 'to all three');
  const firstKey = bob.r.keys.find((k) => k.from.userId === alice.c.userId && k.distributionId);
  assert.ok(firstKey, 'bob got alice\'s sender key');

  const after = await alice.c.remove(groupId, carol.username);
  assert.deepEqual(after.members.map((m) => m.userId), [alice.c.userId, bob.c.userId]);
  await alice.c.sendGroup(groupId, 'carol is gone');
  assert.equal((await nextIn(bob.r, groupId)).text, 'carol is gone');
  const keys = bob.r.keys.filter((k) => k.from.userId === alice.c.userId && k.distributionId);
  assert.equal(keys.length, 2, 'a second sender key from alice');
  assert.notEqual(keys[1].distributionId, firstKey.distributionId, 'a new distribution id');
  await assertNothingFromGroup(carol.r, alice, carol, 'the removed member');
  assert.equal(carol.r.keys.filter((k) => k.distributionId).length, 1, 'carol never got the new key');
  await assert.rejects(carol.c.sendGroup(groupId, 'still here?'), (e) => e.code === 'not_a_member' || e.code === 'group_not_found');

  // Bob leaves: Alice's next send uses yet another key (to nobody else: zero deliveries).
  await bob.c.leave(groupId);
  const r = await alice.c.sendGroup(groupId, 'alone');
  assert.equal(r.delivered + r.queued + r.dropped, 0, JSON.stringify(r));
  await assertNothingFromGroup(bob.r, alice, bob, 'the member who left');
});

test('a member links a device: the next send is refused (mismatched_devices), the key reaches it, the send goes through', async () => {
  const watch = watchRelay();
  const frames = [];
  const alice = await user('alice');
  const bob = await user('bob');
  const { groupId } = await alice.c.createGroup([bob.username], { name: 'devices' });
  await waitFor(() => bob.r.invites.length, 'bob\'s invitation');
  await bob.c.join(groupId);
  await alice.c.sendGroup(groupId, 'before');
  assert.equal((await nextIn(bob.r, groupId)).text, 'before');

  const bob2 = await linkTo(bob);
  watch.onFrame((f, _sock, userId) => userId === alice.c.userId && f.group_id && frames.push(f));
  try {
    const r = await alice.c.sendGroup(groupId, 'after the link');
    assert.equal(r.delivered + r.queued, 2, JSON.stringify(r));
  } finally {
    watch.restore();
  }
  assert.equal(frames.length, 2, 'refused once, sent again');
  assert.equal(frames[1].id, frames[0].id, 'under the same frame id');
  assert.deepEqual(frames[1].devices[bob.c.userId].map((d) => d.device_id), [1, 2]);
  assert.equal((await nextIn(bob.r, groupId)).text, 'after the link');
  const m = await nextIn(bob2.r, groupId);
  assert.equal(m.text, 'after the link');
  assert.equal(m.from.username, alice.username);

  // The new device sends too: Alice and Bob's device 1 (a sync copy) read it.
  await bob2.c.sendGroup(groupId, 'from the new device');
  assert.equal((await nextIn(alice.r, groupId)).text, 'from the new device');
  const copy = await nextIn(bob.r, groupId);
  assert.equal(copy.sync, true);
  assert.equal(copy.from.deviceId, 2);
});

test('the group state (keys, sender-key chain) survives a reopen of the store', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const { groupId } = await alice.c.createGroup([bob.username], { name: 'kept' });
  await waitFor(() => bob.r.invites.length, 'bob\'s invitation');
  await bob.c.join(groupId);
  await alice.c.sendGroup(groupId, 'one');
  assert.equal((await nextIn(bob.r, groupId)).text, 'one');

  await alice.c.close();
  await bob.c.close();
  const watch = watchRelay();
  const alice2 = track(await RelayClient.open({ url: stack().url, store: alice.store, password: alice.password }));
  const bob2 = track(await RelayClient.open({ url: stack().url, store: bob.store, password: bob.password }));
  const br = record(bob2);
  await alice2.connect();
  await bob2.connect();
  assert.deepEqual((await bob2.group(groupId)).meta, { name: 'kept' }, 'the key that opens the meta was kept');
  const frames = [];
  watch.onFrame((f, _sock, userId) => userId === alice2.userId && f.action === 'send' && frames.push(f));
  try {
    await alice2.sendGroup(groupId, 'two');
  } finally {
    watch.restore();
  }
  assert.deepEqual(frames.map((f) => Boolean(f.group_id)), [true], 'the chain and its holders were kept: no key resent');
  assert.equal((await nextIn(br, groupId)).text, 'two');
  assert.deepEqual(br.errors.map((e) => e.message), []);
});
