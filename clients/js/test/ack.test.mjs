// Ack mode: a client killed before acknowledging gets the message again when the account is
// reopened, and reports it exactly once (deduplicated by envelope id once it was processed); and
// acknowledgements are gathered into quiet acks, each envelope acknowledged once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { RelayClient, MemoryStore, FileStore, RelaySocket } from '../src/index.mjs';
import { name, password, record, tempDir, waitFor, sleep, stackSuite, watchRelay, login } from './util.mjs';

const { stack, track } = stackSuite();
const KILLED_CLIENT = fileURLToPath(new URL('./killed-client.mjs', import.meta.url));

/**
 * Runs test/killed-client.mjs (a client in a process of its own that kills itself at `die`):
 * its events as they come, and `exited`, the signal that ended it.
 */
function killedClient(opts) {
  const child = spawn(process.execPath, [KILLED_CLIENT, JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const seen = { messages: [], states: [], errors: [] };
  createInterface({ input: child.stdout }).on('line', (line) => {
    const e = JSON.parse(line);
    if (e.message) seen.messages.push(e.message);
    if (e.state) seen.states.push(e.state);
    if (e.error) seen.errors.push(e.error);
  });
  // 'close': the process has ended and its output is read.
  seen.exited = new Promise((resolve) => child.once('close', (code, signal) => resolve(signal ?? code)));
  return seen;
}

test('killed before decrypting or before acknowledging: the message comes back, reported once', async (t) => {
  const w = watchRelay();
  t.after(() => w.restore());
  const bobName = name('bob');
  const bobPw = password();
  const dir = join(tempDir(), 'bob');
  const alice = track(await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('alice'), password: password() }));
  await alice.connect();

  // 1. Bob's process dies as the envelope arrives, before decrypting it.
  const s1 = killedClient({ url: stack().url, dir, username: bobName, password: bobPw, die: 'on-arrival' });
  await waitFor(() => s1.states.includes('online'), 'bob1 online');
  await alice.send(bobName, 'm1');
  assert.equal(await s1.exited, 'SIGKILL', 'bob1 killed');
  assert.equal(s1.messages.length, 0);

  // 2. Reopened: m1 again; this one dies after saving and reporting, before acknowledging.
  const s2 = killedClient({ url: stack().url, dir, die: 'after-report' });
  assert.equal(await s2.exited, 'SIGKILL', 'bob2 killed');
  assert.deepEqual(s2.messages.map((m) => m.text), ['m1']);

  // 3. Reopened again: the relay delivers m1 again (never acknowledged), the client drops it.
  const bob3 = track(await RelayClient.open({ url: stack().url, store: new FileStore(dir) }));
  const s3 = record(bob3);
  await bob3.connect();
  await sleep(2000);
  assert.deepEqual(s3.messages, [], 'the redelivered m1 is not reported again');
  await alice.send(bobName, 'm2');
  assert.equal((await s3.next()).text, 'm2', 'the session goes on');
  await sleep(500);
  await bob3.close();

  // 4. Everything was acknowledged: a fourth opening gets nothing.
  const bob4 = track(await RelayClient.open({ url: stack().url, store: new FileStore(dir) }));
  const s4 = record(bob4);
  await bob4.connect();
  assert.equal(await w.sockets(bob4.userId).at(-1).list(), 0, 'nothing waits in the inbox');
  await sleep(1500);
  assert.deepEqual(s4.messages, []);
  for (const s of [s1, s2]) assert.deepEqual(s.errors, []);
  for (const s of [s3, s4]) assert.deepEqual(s.errors.map((e) => e.message), []);
});

test('acknowledgements are gathered into quiet acks of at most 100 ids; each envelope acknowledged once, none left', async (t) => {
  const bobName = name('bob');
  const bobPw = password();
  const store = new MemoryStore();
  const alice = track(await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('alice'), password: password() }));
  const bob = track(await RelayClient.open({ url: stack().url, store, username: bobName, password: bobPw }));
  const seen = record(bob);
  await alice.connect();
  // 150 wait in the inbox (fetched in batches at connect), 30 more arrive live.
  for (let i = 0; i < 150; i++) await alice.send(bobName, `queued ${i}`);
  const acks = [];
  const w = watchRelay();
  t.after(() => w.restore());
  w.onFrame((f, _sock, userId) => {
    if (userId === bob.userId && f?.action === 'ack') acks.push(f);
  });
  await bob.connect();
  await Promise.all(Array.from({ length: 30 }, (_, i) => alice.send(bobName, `live ${i}`)));
  await waitFor(() => seen.messages.length === 180, '180 messages');
  await waitFor(() => acks.reduce((n, f) => n + f.ids.length, 0) === 180, 'every id acknowledged');
  await sleep(200);
  const ids = acks.flatMap((f) => f.ids);
  assert.deepEqual([...new Set(ids)].sort(), seen.messages.map((m) => m.id).sort(), 'each envelope acknowledged exactly once');
  assert.equal(ids.length, 180);
  for (const f of acks) {
    assert.equal(f.quiet, true, 'quiet');
    assert.ok(f.ids.length >= 1 && f.ids.length <= 100, `${f.ids.length} ids in one frame`);
  }
  assert.ok(acks.length < 180, `gathered: ${acks.length} ack frames for 180 envelopes`);
  const [socket] = w.sockets(bob.userId);
  assert.ok(socket.frames.length <= 400, 'the socket keeps a bounded history of frames');
  assert.equal(socket.unmatched.filter((f) => f.type === 'acked' || f.type === 'error').length, 0, 'quiet acks get no replies');
  await bob.close();

  // Nothing left in flight: the closed ack-mode connection would have put it back in the inbox.
  const raw = await RelaySocket.connect(await login(stack().url, bobName, bobPw), { url: stack().url, ack: true });
  assert.deepEqual(await raw.fetch(), []);
  await raw.close();
  assert.deepEqual(seen.errors.map((e) => e.message), []);
});
