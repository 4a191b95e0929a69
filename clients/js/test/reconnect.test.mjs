// Reconnects after the relay restarts: messages sent while it was down, by a client that waits
// for its own reconnect and retries, arrive once. A send whose reply was lost to a dropped
// connection is sent again with the same id after the reconnect, and stored once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore } from '../src/index.mjs';
import { name, password, record, waitFor, sleep, stackSuite, watchRelay } from './util.mjs';

const { stack, clients } = stackSuite();

test('reconnects after a restart; sends made while the relay was down arrive exactly once', async () => {
  const aliceName = name('alice');
  const bobName = name('bob');
  const alice = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: aliceName, password: password(), sendTimeoutMs: 90_000 });
  const bob = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: bobName, password: password() });
  clients.push(alice, bob);
  const a = record(alice);
  const b = record(bob);
  await alice.connect();
  await bob.connect();
  await alice.send(bobName, 'before');
  assert.equal((await b.next()).text, 'before');

  await stack().down();
  await waitFor(() => alice.state !== 'online' && bob.state !== 'online', 'both clients offline');
  const sends = [alice.send(bobName, 'while down 1'), alice.send(bobName, 'while down 2')];
  await sleep(1500); // a few reconnect attempts fail meanwhile
  await stack().up();
  const replies = await Promise.all(sends);
  for (const r of replies) assert.equal(r.deliveries.length, 1);

  const got = [(await b.next(30_000)).text, (await b.next(30_000)).text].sort();
  assert.deepEqual(got, ['while down 1', 'while down 2']);
  await sleep(2000);
  assert.equal(b.messages.length, 3, `exactly once: ${b.messages.map((m) => m.text).join(', ')}`);
  assert.ok(a.states.includes('offline') && a.states.at(-1) === 'online', `alice: ${a.states.join(' → ')}`);
  assert.ok(b.states.includes('offline') && b.states.at(-1) === 'online', `bob: ${b.states.join(' → ')}`);

  // And the other way round, on the restored connections.
  await bob.send(aliceName, 'after');
  assert.equal((await a.next()).text, 'after');
  assert.deepEqual(a.errors.map((e) => e.message), []);
  assert.deepEqual(b.errors.map((e) => e.message), []);
});

test('a reply lost to a dropped connection: the same frame again after the reconnect, stored once', async (t) => {
  const w = watchRelay();
  t.after(() => w.restore());
  const carol = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('carol'), password: password() });
  const dave = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('dave'), password: password() });
  clients.push(carol, dave);
  // The connection is lost right after Carol's first send to Dave left, before its reply is read.
  let drops = 0;
  w.onFrame((f, sock, userId) => {
    if (userId === carol.userId && f.action === 'send' && f.to !== carol.userId && drops++ === 0) sock.ws.terminate();
  });
  const c = record(carol);
  const d = record(dave);
  await carol.connect();
  await dave.connect();
  const r = await carol.send(dave.userId, 'sent twice, stored once');
  assert.equal(drops, 2, 'the frame was sent a second time');
  assert.ok(c.states.includes('offline'), `carol reconnected: ${c.states.join(' → ')}`);
  assert.equal(r.deliveries.length, 1);
  assert.equal((await d.next()).text, 'sent twice, stored once');
  await sleep(1500);
  assert.equal(d.messages.length, 1, 'exactly once');
  assert.deepEqual(d.errors.map((e) => e.message), []);
});
