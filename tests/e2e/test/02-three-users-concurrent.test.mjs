// Scenario 2: three users in pairs, concurrently; every message decrypts for
// its recipient only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MSG_PREKEY } from '../lib/client.mjs';
import { relaySuite, assertEnvelope } from '../lib/testutil.mjs';

const newUser = relaySuite();
const M = 15; // messages each way per pair after the handshake

/** One pair's conversation; records every (from, to, body, plaintext). */
async function converse(x, y, log) {
  const tag = `${x.role}->${y.role}`;
  await x.startSession(y);
  const first = await x.sendText(y, `${tag} hello`);
  assert.equal(first.type, MSG_PREKEY);
  log.push({ from: x, to: y, body: first.body, plaintext: `${tag} hello` });
  const [h] = await y.receiveFrom(x, 1);
  assertEnvelope(h.env, { from: x, body: first.body });
  assert.equal(h.plaintext, `${tag} hello`);

  const back = `${y.role}->${x.role}`;
  const sends = [];
  for (let i = 0; i < M; i++) {
    const a = await x.sendText(y, `${tag} ${i}`);
    const b = await y.sendText(x, `${back} ${i}`);
    sends.push([a, b]);
    log.push({ from: x, to: y, body: a.body, plaintext: `${tag} ${i}` });
    log.push({ from: y, to: x, body: b.body, plaintext: `${back} ${i}` });
  }
  const gotY = await y.receiveFrom(x, M);
  const gotX = await x.receiveFrom(y, M);
  for (let i = 0; i < M; i++) {
    assert.equal(gotY[i].plaintext, `${tag} ${i}`);
    assert.equal(gotX[i].plaintext, `${back} ${i}`);
    assertEnvelope(gotY[i].env, { from: x, body: sends[i][0].body });
    assertEnvelope(gotX[i].env, { from: y, body: sends[i][1].body });
  }
}

test('three users in pairs, concurrently: each message reaches and decrypts for its recipient only', async () => {
  const [a, b, c] = await Promise.all([
    newUser('ann', { connect: true, kyberOneTimePreKeys: 3 }),
    newUser('ben', { connect: true, kyberOneTimePreKeys: 3 }),
    newUser('cat', { connect: true, kyberOneTimePreKeys: 3 }),
  ]);
  const log = [];
  // Each user starts one session and answers another, all at once.
  await Promise.all([converse(a, b, log), converse(b, c, log), converse(c, a, log)]);
  assert.equal(log.length, 3 * (1 + 2 * M));

  // Nothing was misrouted: every socket was drained exactly by the filters above.
  for (const u of [a, b, c]) {
    assert.equal(u.socket.inbox.length, 0, `${u.role} received no message beyond its own`);
    assert.equal(await u.socket.list(), 0);
  }

  // The third party of each message cannot decrypt it, even with its own
  // session with the sender.
  const users = [a, b, c];
  for (const m of log) {
    const third = users.find((u) => u !== m.from && u !== m.to);
    assert.ok(third.hasSession(m.from.userId), 'third party has a session with the sender');
    await assert.rejects(third.decrypt(m.from.userId, m.body), `${third.role} must not decrypt "${m.plaintext}"`);
  }
  // And those failed attempts broke nothing: the pairs still talk.
  for (const [x, y] of [[a, b], [b, c], [c, a]]) {
    const s = await x.sendText(y, 'still fine');
    const [r] = await y.receiveFrom(x, 1);
    assert.equal(r.plaintext, 'still fine');
    assertEnvelope(r.env, { from: x, body: s.body });
  }
});
