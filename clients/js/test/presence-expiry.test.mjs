// Presence, disappearing messages, the account export and a rename, through the library against a
// fresh stack: `presence` events between two clients that share both ways (online and offline
// within 1 s), none without a mutual share; a message sent with expiresIn reaching a client online
// with expiresAt, never a client that connects after its expiry, and gone from both histories
// (live, and after a reopen); exportAccount() and changeUsername(). Then the chat in tmux: /share
// on both sides shows the partner's online/offline lines, /expire makes a line disappear, /export
// writes the export, /rename renames.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RelayClient, MemoryStore, FileStore, UnknownUserError, UsernameTakenError } from '../src/index.mjs';
import { startStack, REPO_ROOT } from './stack.mjs';
import { name, password, record, tempDir, waitFor } from './util.mjs';
import { useTerminals, closeTerminals, open, type, screen, mark, waitFor as waitScreen, assertNoTrace } from './tmux.mjs';

const FAST_ARGON2 = { ARGON2_M_KIB: '4096', ARGON2_T: '1' };
const CHAT = join(REPO_ROOT, 'local/chat');
let stack;
const clients = [];
const dirs = [];

before(async () => {
  stack = await startStack({ env: FAST_ARGON2 });
});

after(async () => {
  await closeTerminals(['pa', 'pb']);
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  await stack?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A client with its events recorded (`r.presence`, `r.expired` besides record()'s). */
async function user(role, { store = new MemoryStore(), pw = password(), connect = true } = {}) {
  const c = await RelayClient.open({ url: stack.url, store, username: name(role), password: pw });
  clients.push(c);
  const r = record(c);
  r.presence = [];
  r.expired = [];
  c.on('presence', (p) => r.presence.push({ ...p, at: Date.now() }));
  c.on('expired', (list) => r.expired.push(...list));
  c.on('invite', ({ groupId }) => c.join(groupId).catch(() => {}));
  if (connect) await c.connect();
  return { c, r, pw };
}

const presenceOf = (r, userId, online) => r.presence.find((p) => p.userId === userId && p.online === online);

test('presence: events between mutual sharers within 1 s, none without a mutual share', async () => {
  const alice = await user('alice');
  const bob = await user('bob', { connect: false });
  const carol = await user('carol', { connect: false }); // shares with alice; alice does not share back
  assert.deepEqual(await alice.c.presenceShares(), { userIds: [], lastSeen: false }, 'nobody by default');
  assert.deepEqual(await alice.c.setPresenceShares([bob.c.username]), { userIds: [bob.c.userId], lastSeen: false });
  await bob.c.setPresenceShares([alice.c.userId], { lastSeen: true });
  await carol.c.setPresenceShares([alice.c.username]);
  assert.deepEqual(await bob.c.presenceShares(), { userIds: [alice.c.userId], lastSeen: true });

  // Carol's connection first: the relay writes a transition's frames before it answers the
  // handshake, so once bob's frame is in, carol's would have come before it.
  await carol.c.connect();
  let t0 = Date.now();
  await bob.c.connect();
  const online = await waitFor(() => presenceOf(alice.r, bob.c.userId, true), 'bob online at alice', 5000, 10);
  const onlineMs = online.at - t0;
  assert.equal(online.username, bob.c.username);
  assert.equal(alice.r.presence.filter((p) => p.userId === carol.c.userId).length, 0, 'carol shares one way only: no frame');
  assert.deepEqual(bob.r.presence, [], 'alice was online before: no transition for bob to see');
  // Read: bob (mutual) is listed, carol (one way) is not.
  assert.deepEqual((await alice.c.presence([bob.c.username, carol.c.userId])).map((p) => [p.userId, p.online]), [[bob.c.userId, true]]);
  assert.deepEqual(await carol.c.presence([alice.c.userId]), [], 'carol is not shared with');

  t0 = Date.now();
  await bob.c.close();
  const offline = await waitFor(() => presenceOf(alice.r, bob.c.userId, false), 'bob offline at alice', 5000, 10);
  const offlineMs = offline.at - t0;
  assert.ok(offline.lastSeen instanceof Date, 'bob shows when he was last seen');
  assert.equal(offline.lastSeen.getTime() % 60_000, 0, 'rounded down to the minute');
  assert.ok(offline.lastSeen.getTime() <= Date.now() && offline.lastSeen.getTime() > Date.now() - 120_000);
  const [read] = await alice.c.presence([bob.c.userId]);
  assert.equal(read.online, false);
  assert.equal(read.lastSeen.getTime(), offline.lastSeen.getTime());
  console.log(`# presence: online seen after ${onlineMs} ms, offline after ${offlineMs} ms`);
  assert.ok(onlineMs < 1000, `online within 1 s (${onlineMs} ms)`);
  assert.ok(offlineMs < 1000, `offline within 1 s (${offlineMs} ms)`);
  assert.equal(alice.r.presence.filter((p) => p.userId === carol.c.userId).length, 0);
  assert.deepEqual(carol.r.presence, []);
});

test('disappearing messages: expiresAt online, never delivered after the expiry, gone from the histories', async () => {
  const dir = tempDir('relay-expiry-');
  dirs.push(dir);
  const alice = await user('alice', { store: new FileStore(join(dir, 'alice')) });
  const bob = await user('bob', { store: new FileStore(join(dir, 'bob')) });
  const carol = await user('carol', { connect: false }); // connects after the expiry
  const g = await alice.c.createGroup([bob.c.username]);
  await waitFor(async () => (await alice.c.group(g.groupId)).members.every((m) => m.state === 'member'), 'bob joined');

  const keep = await alice.c.send(bob.c.username, 'this one stays');
  const t0 = Date.now();
  const s = await alice.c.send(bob.c.username, 'this line self-destructs', { expiresIn: 5 });
  const gs = await alice.c.sendGroup(g.groupId, 'so does this group line', { expiresIn: 5 });
  const late = await alice.c.send(carol.c.username, 'carol never reads this', { expiresIn: 5 });
  assert.ok(s.expiresAt instanceof Date && Math.abs(s.expiresAt - (t0 + 5000)) < 2000, 'send() says when it expires');
  assert.ok(gs.expiresAt instanceof Date);
  assert.equal(alice.c.message(s.id).expiresAt.getTime(), s.expiresAt.getTime());

  const m1 = await waitFor(() => bob.r.messages.find((m) => m.messageId === s.id), 'the 1:1 disappearing message');
  const m2 = await waitFor(() => bob.r.messages.find((m) => m.messageId === gs.id), 'the group disappearing message');
  for (const m of [m1, m2]) {
    assert.ok(m.expiresAt instanceof Date, 'received with expiresAt');
    const ttl = m.expiresAt - m.sentAt;
    assert.equal(ttl, 5000, 'expires_at is sent_at + 5 s');
  }
  assert.equal(bob.r.messages.find((m) => m.messageId === keep.id).expiresAt, undefined);
  assert.equal(bob.c.message(s.id).text, 'this line self-destructs');
  assert.equal((await bob.c.search('self-destructs')).length, 1);

  // The records of bob's history file now: rewritten without the expired messages, none stays.
  const bobFile = join(dir, 'bob', 'history.enc');
  const recordsBefore = readFileSync(bobFile, 'utf8').split('\n').slice(1).filter(Boolean);
  assert.ok(recordsBefore.length >= 2, 'the check record and the messages');
  // Alice's client is closed before the expiry, and reopened after it.
  await alice.c.close();
  // Bob's stays open: the messages leave his history when they expire (polled; about 5 s).
  await waitFor(() => bob.c.message(s.id) === undefined && bob.c.message(gs.id) === undefined, 'expired in bob\'s history', 15_000, 50);
  const goneAt = Date.now();
  assert.ok(goneAt >= m1.expiresAt.getTime(), 'not before its time');
  assert.ok(goneAt - m1.expiresAt.getTime() < 1000, `dropped within 1 s of the expiry (${goneAt - m1.expiresAt.getTime()} ms)`);
  assert.deepEqual(new Set(bob.r.expired.map((e) => e.id)), new Set([s.id, gs.id]), 'expired events');
  assert.deepEqual((await bob.c.history(alice.c.username)).map((e) => e.text), ['this one stays']);
  assert.deepEqual(await bob.c.search('self-destructs'), []);
  assert.deepEqual(await bob.c.history({ groupId: g.groupId }), []);
  await waitFor(() => {
    const now = new Set(readFileSync(bobFile, 'utf8').split('\n'));
    return recordsBefore.every((l) => !now.has(l));
  }, 'bob\'s history file rewritten', 5000, 50);

  // Carol connects after the expiry: what alice sent her later comes, the expired message never.
  const after = await (async () => {
    const a2 = await RelayClient.open({ url: stack.url, store: new FileStore(join(dir, 'alice')), password: alice.pw });
    clients.push(a2);
    return a2;
  })();
  assert.equal(after.message(s.id), undefined, 'gone from alice\'s history on the reopen');
  assert.equal(after.message(keep.id)?.text, 'this one stays');
  assert.equal(after.message(late.id), undefined);
  await after.connect();
  const marker = await after.send(carol.c.username, 'sent after the expiry');
  await carol.c.connect();
  await waitFor(() => carol.r.messages.find((m) => m.messageId === marker.id), 'the later message');
  assert.deepEqual(carol.r.messages.map((m) => m.text), ['sent after the expiry'], 'the expired message never arrives');

  // Bob's history file, reopened: the expired messages are not in it.
  await bob.c.close();
  const b2 = await RelayClient.open({ url: stack.url, store: new FileStore(join(dir, 'bob')), password: bob.pw });
  clients.push(b2);
  assert.equal(b2.message(s.id), undefined);
  assert.equal(b2.message(keep.id)?.text, 'this one stays');
});

test('exportAccount() and changeUsername()', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  await alice.c.setPresenceShares([bob.c.userId], { lastSeen: true });
  const x = await alice.c.exportAccount();
  assert.equal(x.account.user_id, alice.c.userId);
  assert.equal(x.account.username, alice.c.username);
  assert.deepEqual(x.devices.map((d) => d.device_id), [alice.c.deviceId]);
  assert.equal(x.sessions.length, 1);
  assert.deepEqual(x.groups, []);
  assert.deepEqual(x.presence, { shares: [bob.c.userId], last_seen: true });
  assert.ok(!JSON.stringify(x).includes(alice.pw), 'no password in the export');

  // A second device of alice's, told of the new name by the first.
  const { linkString, done } = await RelayClient.startLinking({ url: stack.url, store: new MemoryStore() });
  await alice.c.linkDevice(linkString);
  const alice2 = await done;
  clients.push(alice2);
  const renamedEvents = [];
  alice2.on('renamed', (e) => renamedEvents.push(e));
  await alice2.connect();
  await assert.rejects(alice2.changeUsername(name('nope')), (e) => e.status === 403, 'a linked device cannot rename');

  const old = alice.c.username;
  const renamed = name('ren');
  assert.deepEqual(await alice.c.changeUsername(renamed), { userId: alice.c.userId, username: renamed });
  assert.equal(alice.c.username, renamed);
  await waitFor(() => renamedEvents.length, 'the rename at the other device');
  assert.deepEqual(renamedEvents, [{ username: renamed }]);
  assert.equal(alice2.username, renamed);
  assert.equal(await bob.c.lookup(renamed), alice.c.userId);
  await assert.rejects(bob.c.lookup(old), UnknownUserError);
  await assert.rejects(alice.c.changeUsername(bob.c.username), UsernameTakenError);
  const s = await alice.c.send(bob.c.userId, 'under my new name');
  const m = await waitFor(() => bob.r.messages.find((x2) => x2.messageId === s.id), 'the message');
  assert.equal(m.from.username, renamed, 'the new name checks out at the recipient');
  assert.equal((await alice.c.exportAccount()).account.username, renamed);
});

test('chat: /share on both sides shows online and offline; /expire makes a line disappear', async () => {
  const chatDir = tempDir('relay-chat-presence-');
  dirs.push(chatDir);
  useTerminals(chatDir);
  const pw = 'correct horse battery';
  const chat = (n) => `RELAY_CHAT_PASSWORD='${pw}' ${CHAT} ${n} --url ${stack.url}`;
  const a = name('pa');
  const b = name('pb');
  open('pa');
  open('pb');
  type('pa', chat(a));
  type('pb', chat(b));
  await waitScreen('pa', /-- online/);
  await waitScreen('pb', /-- online/);

  type('pa', `/share ${b}`);
  await waitScreen('pa', new RegExp(`-- sharing your presence with ${b}`));
  await waitScreen('pa', new RegExp(`-- ${b} does not share theirs with you`));
  type('pb', `/share ${a}`);
  await waitScreen('pb', new RegExp(`-- ${a} is online`));
  // The other side learns it from the frames: b leaves and comes back.
  let since = mark('pb');
  type('pb', '/quit');
  await waitScreen('pb', /^bye$/m, { since });
  await waitScreen('pa', new RegExp(`-- ${b} is offline`));
  type('pb', chat(b));
  await waitScreen('pa', new RegExp(`-- ${b} is online`));
  await waitScreen('pb', new RegExp(`-- ${a} is online`), { since });
  type('pa', `/to ${b}`);
  await waitScreen('pa', new RegExp(`-- talking to ${b} \\(online\\)`));

  since = mark('pa');
  type('pa', '/expire 5');
  await waitScreen('pa', /disappear 5 s after they are sent/, { since });
  type('pa', 'this line disappears');
  await waitScreen('pa', /→ .*: delivered ✓ {2}\(disappears in 5 s\)$/m, { since });
  await waitScreen('pb', new RegExp(`${a}: this line disappears {2}\\(disappears at \\d\\d:\\d\\d:\\d\\d\\)`));
  await waitScreen('pb', new RegExp(`-- gone: 1 disappearing message with ${a}`), { timeoutMs: 15_000 });
  since = mark('pb');
  type('pb', '/search disappears');
  await waitScreen('pb', /-- nothing found for disappears/, { since });
  type('pa', '/expire off');
  await waitScreen('pa', /messages to .* no longer disappear/, { since: 0 });
  since = mark('pa');
  const exported = join(chatDir, 'pa-export.json');
  type('pa', `/export ${exported}`);
  await waitScreen('pa', /-- wrote .*pa-export\.json \(\d+ bytes\): 1 device\(s\), 1 session\(s\)/, { since });
  const x = JSON.parse(readFileSync(exported, 'utf8'));
  assert.equal(x.account.username, a);
  assert.equal(x.presence.shares.length, 1);
  assert.equal(statSync(exported).mode & 0o777, 0o600, 'the export is readable by its owner only');
  const a2 = name('pa2');
  type('pa', `/rename ${a2}`);
  await waitScreen('pa', new RegExp(`-- you are ${a2} now \\(was ${a}\\)`), { since });
  await waitScreen('pa', new RegExp(`^\\(${a2}\\) ${b} \\(online\\)> `, 'm'), { since });
  type('pa', '/help');
  const help = await waitScreen('pa', /\/rename NEW/);
  for (const c of ['/share NAME', '/expire SECONDS|off', '/export FILE']) assert.ok(help.includes(c), `/help lists ${c}`);
  assertNoTrace('pa');
  assertNoTrace('pb');
  if (process.env.RELAY_CHAT_TEST_SHOW) process.stderr.write(screen('pa'));
});
