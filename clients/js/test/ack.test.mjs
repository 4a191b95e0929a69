// Ack mode: a client killed before acknowledging gets the message again when the account is
// reopened, and reports it exactly once (deduplicated by envelope id once it was processed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { RelayClient, MemoryStore, FileStore } from '../src/index.mjs';
import { name, password, record, tempDir, waitFor, sleep, stackSuite } from './util.mjs';

const { stack, track } = stackSuite();

test('killed before decrypting or before acknowledging: the message comes back, reported once', async () => {
  const bobName = name('bob');
  const bobPw = password();
  const dir = join(tempDir(), 'bob');
  const alice = track(await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('alice'), password: password() }));
  await alice.connect();

  // 1. Bob dies as the envelope arrives, before decrypting it.
  const bob1 = track(await RelayClient.open({
    url: stack().url, store: new FileStore(dir), username: bobName, password: bobPw,
    hooks: { beforeDecrypt: () => 'crash' },
  }));
  const s1 = record(bob1);
  await bob1.connect();
  await alice.send(bobName, 'm1');
  await waitFor(() => bob1.crashed, 'bob1 killed');
  assert.equal(s1.messages.length, 0);

  // 2. Reopened: m1 again; this one dies after saving and reporting, before acknowledging.
  const bob2 = track(await RelayClient.open({
    url: stack().url, store: new FileStore(dir),
    hooks: { beforeAck: () => 'crash' },
  }));
  const s2 = record(bob2);
  await bob2.connect();
  assert.equal((await s2.next()).text, 'm1');
  await waitFor(() => bob2.crashed, 'bob2 killed');

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
  assert.equal(await bob4.socket.list(), 0, 'nothing waits in the inbox');
  await sleep(1500);
  assert.deepEqual(s4.messages, []);
  for (const s of [s1, s2, s3, s4]) assert.deepEqual(s.errors.map((e) => e.message), []);
});
