// The history on the device through a real relay: kept across a restart of the client, encrypted
// at rest (no word of a message in any file of the store; a wrong password does not open it),
// paging, keyword search (nothing goes to the relay), the key-file variant, and deletion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RelayClient, FileStore, MemoryStore, RelayError } from '../src/index.mjs';
import { name, password, record, stackSuite, tempDir, waitFor, watchRelay } from './util.mjs';

const { stack, track } = stackSuite();

async function open(store, username, pw, opts = {}) {
  const c = track(await RelayClient.open({ url: stack().url, store, username, password: pw, ...opts }));
  const r = record(c);
  await c.connect();
  return { c, r };
}

/** Every byte of every file under `dir`. */
function filesOf(dir) {
  return readdirSync(dir, { recursive: true })
    .map((f) => join(dir, String(f)))
    .filter((f) => statSync(f).isFile())
    .map((f) => ({ f, text: readFileSync(f).toString('latin1') }));
}

test('kept across a restart, encrypted at rest, a wrong password does not open it', async () => {
  const dir = join(tempDir(), 'alice');
  const aliceName = name('alice');
  const pw = password();
  let alice = await open(new FileStore(dir), aliceName, pw);
  assert.equal(alice.c.historyPersistent, true);
  const bob = await open(new MemoryStore(), name('bob'), password());

  const s = await alice.c.send(bob.c.username, 'the zebracorn sleeps at noon');
  await bob.r.next();
  await bob.c.send(alice.c.username, 'quokkafish reply');
  const m = await alice.r.next();
  await waitFor(() => alice.c.message(s.id).status === 'delivered', 'the delivered receipt');
  await alice.c.markRead(bob.c.username);
  await alice.c.close();

  // At rest: AES-256-GCM, no word of either message in any file of the store.
  const files = filesOf(dir);
  assert.ok(files.some(({ f }) => f.endsWith('history.enc')));
  for (const { f, text } of files) {
    for (const w of ['zebracorn', 'quokkafish', 'noon']) assert.ok(!text.includes(w), `${f} holds "${w}"`);
  }
  assert.equal(statSync(join(dir, 'history.enc')).mode & 0o777, 0o600);
  const header = JSON.parse(readFileSync(join(dir, 'history.enc'), 'utf8').split('\n')[0]);
  assert.equal(header.kdf, 'scrypt');
  assert.equal(Buffer.from(header.salt, 'base64').length, 16);

  // A wrong password: the refresh token still logs in, the history does not open.
  await assert.rejects(
    RelayClient.open({ url: stack().url, store: new FileStore(dir), password: 'not the password' }),
    (e) => e instanceof RelayError && e.code === 'history_key',
  );
  // Without a password: the account opens, the history is not read (nor written) this run.
  const locked = track(await RelayClient.open({ url: stack().url, store: new FileStore(dir) }));
  assert.equal(locked.historyPersistent, false);
  assert.deepEqual(await locked.history(bob.c.userId), []);
  await locked.close();

  alice = await open(new FileStore(dir), aliceName, pw);
  const h = await alice.c.history(bob.c.username);
  assert.deepEqual(h.map((e) => [e.text, e.outgoing, e.status]), [
    ['the zebracorn sleeps at noon', true, 'delivered'],
    ['quokkafish reply', false, 'read'],
  ]);
  assert.equal(h[1].id, m.messageId);
  assert.equal(h[1].from.userId, bob.c.userId);
  assert.equal(h[0].with, bob.c.username);
  assert.ok(h[0].sentAt instanceof Date);
  // A receipt that comes after the restart still updates it.
  await bob.c.markRead(alice.c.userId);
  await waitFor(() => alice.c.message(s.id).status === 'read', 'the read receipt after the restart');
});

test('a torn last record (a crash mid-write) is dropped; a damaged record before it is refused', async () => {
  const dir = join(tempDir(), 'alice');
  const aliceName = name('alice');
  const pw = password();
  let alice = await open(new FileStore(dir), aliceName, pw);
  const bob = await open(new MemoryStore(), name('bob'), password());
  for (const t of ['first', 'second', 'third']) await alice.c.send(bob.c.username, t);
  await alice.c.close();
  const file = join(dir, 'history.enc');
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  writeFileSync(file, lines.join('\n') + '\n' + lines.at(-1).slice(0, 20)); // half a record at the end
  alice = await open(new FileStore(dir), aliceName, pw);
  assert.deepEqual((await alice.c.history(bob.c.userId)).map((e) => e.text), ['first', 'second', 'third']);
  await alice.c.close();
  const flipped = [...lines];
  const b = Buffer.from(flipped[2], 'base64');
  b[b.length - 1] ^= 1;
  flipped[2] = b.toString('base64');
  writeFileSync(file, flipped.join('\n') + '\n');
  await assert.rejects(
    RelayClient.open({ url: stack().url, store: new FileStore(dir), password: pw }),
    (e) => e instanceof RelayError && e.code === 'history_corrupt',
  );
});

test('paging: the newest page first, then the ones before it', async () => {
  const alice = await open(new MemoryStore(), name('alice'), password());
  const bob = await open(new MemoryStore(), name('bob'), password());
  const sent = [];
  for (let i = 0; i < 25; i++) sent.push((await alice.c.send(bob.c.username, `line ${i}`)).id);
  const last = await alice.c.history(bob.c.userId, { limit: 10 });
  assert.deepEqual(last.map((e) => e.text), Array.from({ length: 10 }, (_, i) => `line ${15 + i}`));
  const before = await alice.c.history(bob.c.userId, { before: last[0].id, limit: 10 });
  assert.deepEqual(before.map((e) => e.id), sent.slice(5, 15));
  const first = await alice.c.history(bob.c.userId, { before: before[0].id, limit: 10 });
  assert.deepEqual(first.map((e) => e.id), sent.slice(0, 5));
  assert.deepEqual(await alice.c.history(bob.c.userId, { before: first[0].id }), []);
  assert.deepEqual((await alice.c.history(bob.c.userId, { before: before[0].sentAt, limit: 3 })).length, 3);
  // Bob's side: the same conversation, received.
  await waitFor(() => bob.r.messages.length === 25, 'bob got them');
  assert.equal((await bob.c.history(alice.c.username, { limit: 100 })).length, 25);
  assert.equal(alice.c.conversations()[0].conversation, bob.c.userId);
});

test('search: every conversation and group, case-insensitive, on the device only', async () => {
  const alice = await open(new MemoryStore(), name('alice'), password());
  const bob = await open(new MemoryStore(), name('bob'), password());
  const carol = await open(new MemoryStore(), name('carol'), password());
  bob.c.on('invite', ({ groupId }) => bob.c.join(groupId).catch(() => {}));
  await alice.c.send(bob.c.username, 'Meet at the LIGHTHOUSE');
  await carol.c.send(alice.c.username, 'the lighthouse is closed today');
  await alice.c.send(carol.c.username, 'nothing to see');
  const g = await alice.c.createGroup([bob.c.username], { name: 'crew' });
  await waitFor(async () => (await alice.c.group(g.groupId)).members.every((x) => x.state === 'member'), 'bob joined');
  await alice.c.sendGroup(g.groupId, 'lighthouse trip on sunday');
  await alice.r.next();

  const watch = watchRelay();
  let talked = 0;
  watch.onRequest(() => talked++);
  watch.onFrame(() => talked++);
  try {
    const hits = await alice.c.search('lighthouse');
    assert.deepEqual(hits.map((e) => [e.text, e.conversation]), [
      ['Meet at the LIGHTHOUSE', bob.c.userId],
      ['the lighthouse is closed today', carol.c.userId],
      ['lighthouse trip on sunday', `group:${g.groupId}`],
    ]);
    assert.ok(hits.every((e) => e.sentAt instanceof Date));
    assert.deepEqual((await alice.c.search('lighthouse closed')).map((e) => e.text), ['the lighthouse is closed today']);
    assert.deepEqual(await alice.c.search('submarine'), []);
    assert.equal((await alice.c.search('lighthouse', { conversation: { groupId: g.groupId } })).length, 1);
    assert.equal(talked, 0, 'a search sends nothing to the relay');
  } finally {
    watch.restore();
  }
});

test('a key file instead of the password; deleting the history deletes it', async () => {
  const base = tempDir();
  const dir = join(base, 'alice');
  const keyFile = join(base, 'history.key');
  const aliceName = name('alice');
  const pw = password();
  let alice = await open(new FileStore(dir), aliceName, pw, { history: { keyFile } });
  const bob = await open(new MemoryStore(), name('bob'), password());
  await alice.c.send(bob.c.username, 'platypus ledger');
  await alice.c.close();
  assert.equal(statSync(keyFile).mode & 0o777, 0o600);
  assert.equal(JSON.parse(readFileSync(join(dir, 'history.enc'), 'utf8').split('\n')[0]).kdf, 'keyfile');
  for (const { f, text } of filesOf(dir)) assert.ok(!text.includes('platypus'), `${f} holds the word`);

  alice = await open(new FileStore(dir), aliceName, undefined, { history: { keyFile } });
  assert.deepEqual((await alice.c.search('platypus')).map((e) => e.text), ['platypus ledger']);
  // The history is a file of the store's directory (deleting the store deletes it);
  // deleteHistory() deletes it on its own.
  assert.ok(existsSync(join(dir, 'history.enc')));
  await alice.c.deleteHistory();
  assert.ok(!existsSync(join(dir, 'history.enc')));
  assert.deepEqual(await alice.c.search('platypus'), []);
  assert.deepEqual(await alice.c.history(bob.c.userId), []);
  for (const { text } of filesOf(dir)) assert.ok(!text.includes('platypus'));
  await alice.c.close();
  alice = await open(new FileStore(dir), aliceName, undefined, { history: { keyFile } });
  assert.deepEqual(await alice.c.history(bob.c.userId), [], 'gone after a restart too');
});
