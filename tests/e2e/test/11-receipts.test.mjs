// End-to-end receipts between two real clients (the client library, libsignal sessions) through
// the relay:
//  1. Alice writes three lines to Bob while he is offline. Bob comes online: his client sends ONE
//     `delivered` receipt naming the three message ids, as an ordinary Signal message (a `send`
//     frame); Alice's client reports it and raises the three to delivered.
//  2. Bob marks the conversation read: one `read` receipt; Alice's messages are read. Alice's
//     client answers no receipt with a receipt (she sent her three lines and nothing else).
//  3. What the relay sees: the receipt's `send` frame and the envelope Alice fetched are shaped as
//     those of an ordinary message of Bob's, their ciphertexts of the same size (every content is
//     padded to a multiple of 160 bytes: a receipt naming three ids is the size of a line of
//     about 150 characters).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore, RelaySocket, uniqueUsername, randomPassword, waitForRelay } from '../../../clients/js/src/index.mjs';

/** Frames sent and envelopes received by each user's sockets, watched from the outside. */
const sent = new Map();
const received = new Map();
const connect = RelaySocket.connect;
RelaySocket.connect = async function (token, ...rest) {
  const sock = await connect.call(this, token, ...rest);
  const userId = JSON.parse(Buffer.from(String(token).split('.')[1], 'base64url').toString('utf8')).sub;
  const sendFrame = sock.sendFrame.bind(sock);
  sock.sendFrame = (frame) => {
    if (frame.action === 'send') (sent.get(userId) ?? sent.set(userId, []).get(userId)).push(frame);
    return sendFrame(frame);
  };
  const onFrame = sock.onFrame.bind(sock);
  sock.onFrame = (data, isBinary) => {
    try {
      const f = JSON.parse(data.toString());
      if (f.type === 'messages') (received.get(userId) ?? received.set(userId, []).get(userId)).push(...(f.messages ?? []));
    } catch {
      /* not JSON: the socket reports it */
    }
    return onFrame(data, isBinary);
  };
  return sock;
};

const clients = [];
after(async () => {
  RelaySocket.connect = connect;
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
});

async function client(role) {
  const c = await RelayClient.open({ store: new MemoryStore(), username: uniqueUsername(role), password: randomPassword() });
  clients.push(c);
  c.receipts = [];
  c.messages = [];
  c.on('receipt', (r) => c.receipts.push(r));
  c.on('message', (m) => c.messages.push(m));
  return c;
}

async function until(fn, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('delivered and read receipts end to end, one receipt message per batch, indistinguishable on the wire', async () => {
  await waitForRelay();
  const alice = await client('alice');
  const bob = await client('bob');
  await alice.connect();

  // 1. Three lines while Bob is offline; his client acknowledges them in one receipt.
  const ids = [];
  for (const t of ['one', 'two', 'three']) {
    const r = await alice.send(bob.username, `line ${t}`);
    assert.equal(r.delivery, 'queued');
    ids.push(r.id);
  }
  await bob.connect();
  await until(() => bob.messages.length === 3, 'bob decrypts the three lines');
  assert.deepEqual(bob.messages.map((m) => m.messageId), ids, 'each carries its sender-side id');
  await until(() => ids.every((id) => alice.message(id)?.status === 'delivered'), 'the delivered receipt');
  // Gathered: one receipt message (two at most, should the lines come in batches further apart
  // than the gathering delay on a loaded machine).
  const delivered = sent.get(bob.userId).length;
  assert.ok(delivered >= 1 && delivered < 3, `${delivered} receipt messages for three lines`);
  assert.deepEqual(alice.receipts.map((r) => [r.type, r.from.userId]), Array(delivered).fill(['delivered', bob.userId]));
  assert.deepEqual(alice.receipts.flatMap((r) => r.ids).sort(), [...ids].sort());

  // 2. Read, then nothing answered.
  assert.deepEqual((await bob.markRead(alice.username)).sort(), [...ids].sort());
  await until(() => ids.every((id) => alice.message(id)?.status === 'read'), 'the read receipt');
  assert.equal(sent.get(bob.userId).length, delivered + 1, 'one read receipt for the three');
  await alice.flushReceipts();
  assert.equal(sent.get(alice.userId).length, 3, 'alice sent her lines and no receipt');
  assert.equal(alice.messages.length, 0, 'receipts are not messages');

  // 3. An ordinary message of Bob's beside his receipts, as the relay sees them.
  await bob.send(alice.username, 'an ordinary line, as long as a receipt naming three messages: '.padEnd(150, '.'));
  await until(() => alice.messages.length === 1, 'alice gets the line');
  const receiptFrame = sent.get(bob.userId)[delivered]; // the read receipt, naming the three
  const messageFrame = sent.get(bob.userId).at(-1);
  const frameShape = (f) => ({
    keys: Object.keys(f).sort(),
    messages: f.messages.map((m) => ({ keys: Object.keys(m).sort(), type: m.type, size: Buffer.from(m.body, 'base64').length })),
  });
  assert.deepEqual(frameShape(receiptFrame), frameShape(messageFrame));
  const fromBob = received.get(alice.userId).filter((e) => e.from === bob.userId);
  assert.equal(fromBob.length, delivered + 2);
  const receiptEnv = fromBob[delivered];
  const messageEnv = fromBob.at(-1);
  const envShape = (e) => ({ keys: Object.keys(e).sort(), size: Buffer.from(e.body, 'base64').length });
  assert.deepEqual(envShape(receiptEnv), envShape(messageEnv));
});
