// Token refresh: with 6-second access tokens (no leeway) the client refreshes and `renew`s its
// socket before each token ends, so it stays online and sends long after the first one expired.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore } from '../src/index.mjs';
import { name, password, record, sleep, waitFor, stackSuite, watchRelay, tokenClaims } from './util.mjs';

const { stack, clients } = stackSuite({ env: { ACCESS_TOKEN_TTL_SECS: 6, JWT_LEEWAY_SECS: 0, WS_SESSION_CHECK_SECS: 0 } });

test('stays online across token expiries (refresh + renew) and sends after the first token expired', async (t) => {
  const w = watchRelay();
  t.after(() => w.restore());
  const aliceStore = new MemoryStore();
  const alice = await RelayClient.open({ url: stack().url, store: aliceStore, username: name('alice'), password: password() });
  const bob = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('bob'), password: password() });
  clients.push(alice, bob);
  const a = record(alice);
  const b = record(bob);
  await alice.connect();
  await bob.connect();
  const firstToken = w.accessTokens(alice.userId).at(-1);
  const firstRefresh = (await aliceStore.load()).refreshToken;
  const [socket] = w.sockets(alice.userId);

  await sleep(14_000); // more than two token lifetimes
  assert.notEqual(w.accessTokens(alice.userId).at(-1), firstToken, 'a new access token');
  assert.notEqual((await aliceStore.load()).refreshToken, firstRefresh, 'the rotated refresh token is in the store');
  assert.deepEqual(a.states, ['connecting', 'online'], 'alice never went offline');
  assert.deepEqual(b.states, ['connecting', 'online'], 'bob never went offline');
  assert.ok(w.sockets(alice.userId).length === 1 && !socket.closed, 'the same connection (renewed, not reconnected)');

  const r = await alice.send(bob.userId, 'after the first token expired');
  assert.deepEqual(r.deliveries, [{ deviceId: 1, delivery: 'delivered' }]);
  assert.equal((await b.next()).text, 'after the first token expired');
  await bob.send(alice.userId, 'and back');
  assert.equal((await a.next()).text, 'and back');
  assert.equal((await alice.devices()).length, 1, 'HTTP with a fresh token');
  assert.deepEqual(a.errors.map((e) => e.message), []);
  assert.deepEqual(b.errors.map((e) => e.message), []);
});

test('offline: no token refreshes and no errors while the relay is down; the reconnect refreshes the expired token first', async (t) => {
  const w = watchRelay(); // from the start: every token Carol is issued
  t.after(() => w.restore());
  const carol = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('carol'), password: password() });
  const dave = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('dave'), password: password() });
  clients.push(carol, dave);
  const c = record(carol);
  const d = record(dave);
  await carol.connect();
  await dave.connect();
  // Refreshes outside a reconnect attempt (a reconnect sets the state to 'connecting' first).
  let offlineRefreshes = 0;
  w.onRequest(({ method, path, body }) => {
    const carols = (path === '/v1/sessions/refresh' && w.refreshTokens(carol.userId).includes(body?.refresh_token))
      || (path === '/v1/sessions' && body?.username === carol.username);
    if (method === 'POST' && carols && carol.state === 'offline') offlineRefreshes++;
  });
  const tokenEnd = () => tokenClaims(w.accessTokens(carol.userId).at(-1)).exp * 1000;

  await stack().down();
  try {
    await waitFor(() => carol.state === 'offline' && dave.state === 'offline', 'both offline', 30_000);
    await sleep(9_000); // more than a token's life, and the 5 s retry period of the timer
    assert.ok(Date.now() > tokenEnd(), 'the access token expired while offline');
    assert.equal(offlineRefreshes, 0, 'no refresh while offline (only a reconnect attempt refreshes)');
    assert.deepEqual(c.errors.map((e) => `${e.name}: ${e.message}`), [], 'no error events while offline');
    assert.deepEqual(d.errors.map((e) => `${e.name}: ${e.message}`), []);
  } finally {
    await stack().up();
  }
  await waitFor(() => carol.state === 'online' && dave.state === 'online', 'both online again', 90_000, 200);
  assert.ok(tokenEnd() > Date.now(), 'a new token before the reconnect');
  await carol.send(dave.userId, 'after the outage');
  assert.equal((await d.next(30_000)).text, 'after the outage');
  // Online again, the timer runs: still online after two more token lifetimes.
  const sockets = w.sockets(carol.userId).length;
  const socket = w.sockets(carol.userId).at(-1);
  await sleep(8_000);
  assert.ok(w.sockets(carol.userId).length === sockets && !socket.closed && carol.state === 'online', 'renewed on the same connection');
  assert.deepEqual(c.errors.map((e) => `${e.name}: ${e.message}`), []);
  assert.deepEqual(d.errors.map((e) => `${e.name}: ${e.message}`), []);
});
