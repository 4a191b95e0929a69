// Groups with libsignal sender keys, on the wire: three users, Alice with two devices.
//  1. Alice makes a group, Bob and Carol join. Alice's device 1 makes a sender key (a
//     distribution id), hands its distribution message to every other member device over the
//     1:1 sessions, and sends ONE group frame: every member device (her own device 2 included)
//     gets the same envelope (same id, same body, `group_id`) and decrypts it.
//  2. Alice removes Carol: a map still naming Carol is refused (mismatched_devices, extra), the
//     right one is accepted; Alice rotates (a new distribution id, handed to Bob and her device
//     2 only); they decrypt; Carol's devices receive nothing, could not read it anyway, and her
//     own group sends are refused.
//  3. Bob links a second device: Alice's next send, with her old map, is refused
//     (mismatched_devices, missing [2]); she starts a session with it, hands it the sender key and
//     sends again under the same frame id; Bob's two devices and her device 2 read it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { request, unb64 } from '../lib/client.mjs';
import { distributionMessage, processDistribution, groupEncrypt, groupDecrypt, distributionIdOf } from '../lib/groups.mjs';
import { deviceSuite, assertOk, assertErrorFrame, assertDeviceEnvelope } from '../lib/testutil.mjs';

const { primary, link } = deviceSuite();

/** An authenticated call of `dev` (raw response). */
const api = (dev, method, path, body) => request(method, path, { url: dev.url, token: dev.token, body });

const ids = (list) => [...(list ?? [])].sort((a, b) => a - b);
/** The `users` of a mismatched_devices frame, empty lists filled in, device ids sorted. */
const mismatch = (f) => (f.users ?? []).map((u) => ({ user_id: u.user_id, missing: ids(u.missing), extra: ids(u.extra) }));

/** The device map of a group send: { user id: [{ device_id, registration_id }] } from `devs`. */
function deviceMap(devs) {
  const map = {};
  for (const d of devs) (map[d.userId] ??= []).push({ device_id: d.deviceId, registration_id: d.registrationId });
  return map;
}

/**
 * `sender` hands its sender key for `distributionId` to every device of `to` (a user's primary
 * device object; the 1:1 multi-device send, its device list repaired as a Signal client does)
 * as the library's group key message; each device in `receivers` decrypts it and processes the
 * distribution message.
 */
async function handKey(sender, to, groupId, distributionId, receivers) {
  const skdm = Buffer.from(await distributionMessage(sender, distributionId)).toString('base64');
  const content = JSON.stringify({ v: 1, type: 'group_key', group_id: groupId, skdm });
  const { reply } = await sender.sendToUser(to, content);
  assert.equal(reply.type, 'sent', JSON.stringify(reply));
  for (const r of receivers) {
    const [env] = await r.socket.nextMessages(1, { filter: (e) => !e.group_id && e.from === sender.userId });
    const d = await r.decryptFrom(sender.address, env.body);
    const c = JSON.parse(d.plaintext);
    assert.equal(c.type, 'group_key');
    assert.equal(await processDistribution(r, sender.userId, sender.deviceId, c.skdm), distributionId, `${r.label()}: the distribution id`);
  }
}

/** Own other devices: the sync path of sendToUser (its own account) reaches them. */
const own = (dev) => ({ userId: dev.userId });

/**
 * Every device in `devs` gets one group envelope with `body` from `from` (the same envelope id
 * and `sent_at` for all: the payload is stored once), and reads `text`.
 */
async function readGroup(devs, from, { groupId, body, text }) {
  const envs = [];
  for (const d of devs) {
    const [env] = await d.socket.nextMessages(1, { filter: (e) => e.group_id === groupId });
    assertDeviceEnvelope(env, { from, body });
    assert.deepEqual(Object.keys(env).sort(), ['body', 'from', 'group_id', 'id', 'sent_at', 'source_device'], JSON.stringify(env));
    assert.equal(env.group_id, groupId);
    const pt = await groupDecrypt(d, from.userId, from.deviceId, env.body);
    assert.equal(Buffer.from(pt).toString('utf8'), text, `${d.label()} decrypts`);
    envs.push(env);
  }
  assert.equal(new Set(envs.map((e) => e.id)).size, 1, `one envelope id for every member device: ${JSON.stringify(envs.map((e) => e.id))}`);
  assert.equal(new Set(envs.map((e) => e.sent_at)).size, 1, 'one sent_at');
}

/**
 * `dev` received nothing from the group: a 1:1 marker sent now is the first envelope it holds
 * (an inbox is delivered in order), and nothing waits.
 */
async function assertNoGroupEnvelope(dev, sender, groupId) {
  await sender.sendToUser(dev, 'marker');
  await dev.socket.nextMessages(1, { filter: (e) => e.from === sender.userId && !e.group_id });
  assert.deepEqual(dev.socket.inbox.filter((e) => e.group_id === groupId), [], `${dev.label()}: no group envelope`);
  assert.equal(await dev.socket.list(), 0, `${dev.label()}: nothing waiting`);
}

test('sender keys: one group frame read by every member device; removal rotates; a new device is repaired', async () => {
  const alice1 = await primary('alice', { oneTimePreKeys: 20, kyberOneTimePreKeys: 5 });
  const alice2 = await link(alice1, 'alice', { oneTimePreKeys: 20, kyberOneTimePreKeys: 5 });
  const bob1 = await primary('bob', { oneTimePreKeys: 20, kyberOneTimePreKeys: 5 });
  const carol1 = await primary('carol', { oneTimePreKeys: 20, kyberOneTimePreKeys: 5 });
  for (const d of [alice1, alice2, bob1, carol1]) await d.connect();

  // The group: Alice admin, Bob and Carol invited, then members.
  const created = await api(alice1, 'POST', '/v1/groups', { members: [bob1.userId, carol1.userId] });
  assert.equal(created.status, 201, created.text);
  const groupId = created.json.group_id;
  assert.deepEqual(created.json.members.map((m) => [m.user_id, m.role, m.state]), [
    [alice1.userId, 'admin', 'member'],
    [bob1.userId, 'member', 'invited'],
    [carol1.userId, 'member', 'invited'],
  ]);
  for (const d of [bob1, carol1]) assertOk(await api(d, 'POST', `/v1/groups/${groupId}/join`, {}), 'join');

  // 1. Alice's sender key to the four other member devices, then one frame.
  const d1 = randomUUID();
  await handKey(alice1, bob1, groupId, d1, [bob1]);
  await handKey(alice1, carol1, groupId, d1, [carol1]);
  await handKey(alice1, own(alice1), groupId, d1, [alice2]);
  const body1 = await groupEncrypt(alice1, d1, 'hello group');
  assert.equal(distributionIdOf(body1), d1);
  assert.ok(!Buffer.from(unb64(body1)).includes(Buffer.from('hello group')), 'the relay sees ciphertext');
  const id1 = randomUUID();
  const sent1 = await alice1.socket.sendGroup(groupId, body1, deviceMap([alice2, bob1, carol1]), { id: id1 });
  assert.equal(sent1.type, 'sent', JSON.stringify(sent1));
  assert.equal(sent1.id, id1);
  assert.equal(sent1.group_id, groupId);
  assert.equal(sent1.delivered + sent1.queued, 3, JSON.stringify(sent1));
  await readGroup([alice2, bob1, carol1], alice1, { groupId, body: body1, text: 'hello group' });

  // 2. Carol removed.
  assertOk(await api(alice1, 'DELETE', `/v1/groups/${groupId}/members/${carol1.userId}`), 'remove');
  const gone = await alice1.socket.sendGroup(groupId, body1, deviceMap([alice2, bob1, carol1]));
  assertErrorFrame(gone, gone.id, 'mismatched_devices');
  assert.deepEqual(mismatch(gone), [{ user_id: carol1.userId, missing: [], extra: [1] }], JSON.stringify(gone));
  const d2 = randomUUID();
  assert.notEqual(d2, d1);
  await handKey(alice1, bob1, groupId, d2, [bob1]);
  await handKey(alice1, own(alice1), groupId, d2, [alice2]);
  const body2 = await groupEncrypt(alice1, d2, 'carol has left');
  assert.equal(distributionIdOf(body2), d2, 'a new distribution id after the removal');
  const id2 = randomUUID();
  const sent2 = await alice1.socket.sendGroup(groupId, body2, deviceMap([alice2, bob1]), { id: id2 });
  assert.equal(sent2.type, 'sent', JSON.stringify(sent2));
  assert.equal(sent2.delivered + sent2.queued, 2, JSON.stringify(sent2));
  await readGroup([alice2, bob1], alice1, { groupId, body: body2, text: 'carol has left' });
  await assertNoGroupEnvelope(carol1, alice1, groupId);
  await assert.rejects(groupDecrypt(carol1, alice1.userId, 1, body2), 'Carol holds no key of the new chain');
  const carolChain = randomUUID();
  await distributionMessage(carol1, carolChain); // a chain of her own, to encrypt with
  const refused = await carol1.socket.sendGroup(groupId, await groupEncrypt(carol1, carolChain, 'still here?'), deviceMap([alice1, alice2, bob1]));
  assertErrorFrame(refused, refused.id, 'not_a_member');

  // 3. Bob links a second device; Alice's map does not know it yet.
  const bob2 = await link(bob1, 'bob', { oneTimePreKeys: 20, kyberOneTimePreKeys: 5 });
  await bob2.connect();
  const body3 = await groupEncrypt(alice1, d2, 'with your new device');
  const id3 = randomUUID();
  const missing = await alice1.socket.sendGroup(groupId, body3, deviceMap([alice2, bob1]), { id: id3 });
  assertErrorFrame(missing, id3, 'mismatched_devices');
  assert.deepEqual(mismatch(missing), [
    { user_id: bob1.userId, missing: [2], extra: [] },
  ], JSON.stringify(missing));
  // A Signal client's repair: a session with the new device, the sender key to it (the 1:1
  // send reaches both of Bob's devices), the message encrypted again (the distribution message
  // starts the new device at the chain's current step, past the refused ciphertext) and sent
  // under the same id: nothing was stored for it.
  await alice1.startDeviceSessions(bob1.userId, 2);
  await handKey(alice1, bob1, groupId, d2, [bob1, bob2]);
  const body3b = await groupEncrypt(alice1, d2, 'with your new device');
  const sent3 = await alice1.socket.sendGroup(groupId, body3b, deviceMap([alice2, bob1, bob2]), { id: id3 });
  assert.equal(sent3.type, 'sent', JSON.stringify(sent3));
  assert.equal(sent3.id, id3);
  assert.equal(sent3.delivered + sent3.queued, 3, JSON.stringify(sent3));
  await readGroup([alice2, bob1, bob2], alice1, { groupId, body: body3b, text: 'with your new device' });
  await assertNoGroupEnvelope(carol1, alice1, groupId);
});
