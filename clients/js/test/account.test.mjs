// Registration, sending between two clients, reopening an account from a FileStore in a new
// RelayClient, and the typed errors (wrong password, unknown user, username taken, server down).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import {
  RelayClient,
  FileStore,
  MemoryStore,
  RelayError,
  AuthError,
  UnknownUserError,
  UsernameTakenError,
  ServerUnavailableError,
  call,
} from '../src/index.mjs';
import { freePort } from './stack.mjs';
import { name, password, tempDir, record, stackSuite, login } from './util.mjs';

const { stack, track } = stackSuite();

test('registers into a FileStore, exchanges messages, reopens from the store in a new client', async () => {
  const aliceName = name('alice');
  const alicePw = password();
  const dir = join(tempDir(), 'alice');
  const alice = track(await RelayClient.open({ url: stack().url, store: new FileStore(dir), username: aliceName, password: alicePw }));
  assert.equal(alice.username, aliceName);
  assert.equal(alice.deviceId, 1);
  assert.match(alice.userId, /^[0-9a-f-]{36}$/);

  const file = join(dir, 'account.json');
  assert.equal(statSync(file).mode & 0o777, 0o600, 'the store file is 0600');
  assert.equal(statSync(dir).mode & 0o777, 0o700, 'its directory is 0700');
  const text = readFileSync(file, 'utf8');
  assert.ok(!text.includes(alicePw), 'the password is not kept unless asked');
  const doc = JSON.parse(text);
  assert.equal(doc.account.userId, alice.userId);
  assert.equal(typeof doc.refreshToken, 'string');

  const bobName = name('bob');
  const bob = track(await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: bobName, password: password() }));
  const bobSeen = record(bob);
  const states = [];
  alice.on('state', (s) => states.push(s));
  await alice.connect();
  await bob.connect();
  assert.deepEqual(states, ['connecting', 'online']);

  const r = await alice.send(bobName, 'hello bob');
  assert.equal(typeof r.id, 'string');
  assert.deepEqual(r.deliveries, [{ deviceId: 1, delivery: 'delivered' }]);
  const m = await bobSeen.next();
  assert.equal(m.text, 'hello bob');
  assert.deepEqual(Buffer.from(m.bytes).toString(), 'hello bob');
  assert.deepEqual(m.from, { userId: alice.userId, deviceId: 1, username: aliceName });
  assert.equal(m.sync, false);
  assert.ok(m.sentAt instanceof Date && Math.abs(m.sentAt - Date.now()) < 60_000);
  assert.equal(await bob.lookup(aliceName.toUpperCase()), alice.userId, 'lookup is case-insensitive');

  // The same account, reopened from the file by another RelayClient (no password needed).
  await alice.close();
  assert.ok(!existsSync(join(dir, 'lock')), 'close() gives the lock up');

  // Not while another live process holds the store; a dead one's lock is taken over.
  const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  writeFileSync(join(dir, 'lock'), String(other.pid));
  await assert.rejects(RelayClient.open({ url: stack().url, store: new FileStore(dir) }), (e) => e instanceof RelayError && e.code === 'store_in_use');
  other.kill('SIGKILL');
  await new Promise((res) => other.once('exit', res));
  const alice2 = track(await RelayClient.open({ url: stack().url, store: new FileStore(dir) }));
  assert.equal(alice2.userId, alice.userId);
  assert.equal(alice2.username, aliceName);
  const aliceSeen = record(alice2);
  await alice2.connect();

  // Bob answers by user id, with bytes; then the reopened Alice continues the same session.
  await bob.send(alice.userId, new Uint8Array([0, 1, 2, 255]));
  const back = await aliceSeen.next();
  assert.equal(back.text, null);
  assert.deepEqual([...back.bytes], [0, 1, 2, 255]);
  assert.equal(back.from.username, bobName);
  await alice2.send(bobName, 'after reopening');
  assert.equal((await bobSeen.next()).text, 'after reopening');
  assert.deepEqual(bobSeen.errors.map((e) => e.message), []);
  assert.deepEqual(aliceSeen.errors.map((e) => e.message), []);

  const devices = await alice2.devices();
  assert.equal(devices.length, 1);
  assert.equal(devices[0].id, 1);
  assert.ok(devices[0].createdAt instanceof Date);
  assert.equal(devices[0].current, true);
});

test('typed errors: wrong password, unknown user, username taken, empty store', async () => {
  const carolName = name('carol');
  const pw = password();
  const store = new MemoryStore();
  const carol = track(await RelayClient.open({ url: stack().url, store, username: carolName, password: pw }));

  await assert.rejects(carol.lookup(name('nobody')), (e) => e instanceof UnknownUserError && e instanceof RelayError && e.status === 404);
  await assert.rejects(carol.send(name('nobody'), 'hi'), UnknownUserError);
  await assert.rejects(carol.send('00000000-0000-4000-8000-000000000000', 'hi'), UnknownUserError);

  await assert.rejects(
    RelayClient.open({ url: stack().url, store: new MemoryStore(), username: carolName, password: password() }),
    (e) => e instanceof UsernameTakenError && e.code === 'username_taken' && e.status === 409,
  );
  await assert.rejects(
    RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('x'), password: password(), register: false }),
    UnknownUserError,
  );

  // After a logout the store's refresh token is dead: the password is needed, a wrong one is refused.
  await carol.logout();
  await assert.rejects(RelayClient.open({ url: stack().url, store }), (e) => e instanceof AuthError && e.status === 401);
  await assert.rejects(
    RelayClient.open({ url: stack().url, store, password: 'wrong-password' }),
    (e) => e instanceof AuthError && e.code === 'invalid_credentials',
  );
  const again = track(await RelayClient.open({ url: stack().url, store, password: pw }));
  assert.equal(again.userId, carol.userId);
});

test('typed errors: server down', async () => {
  const port = await freePort();
  await assert.rejects(
    RelayClient.open({ url: `http://127.0.0.1:${port}`, store: new MemoryStore(), username: name('down'), password: password() }),
    (e) => e instanceof ServerUnavailableError && e instanceof RelayError && /cannot reach the relay/.test(e.message),
  );

  const store = new MemoryStore();
  const dave = track(await RelayClient.open({ url: stack().url, store, username: name('dave'), password: password(), sendTimeoutMs: 2000 }));
  const erin = track(await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('erin'), password: password() }));
  await dave.connect();
  await stack().down();
  try {
    await assert.rejects(dave.send(erin.userId, 'while down'), ServerUnavailableError);
    await assert.rejects(RelayClient.open({ url: stack().url, store }), ServerUnavailableError);
    const fresh = await RelayClient.open({ url: stack().url, store: new MemoryStore(), username: name('f'), password: password() }).catch((e) => e);
    assert.ok(fresh instanceof ServerUnavailableError);
  } finally {
    await stack().up();
  }
  // Back up: the same client reconnects by itself and sends.
  const r = await dave.send(erin.userId, 'after the outage', { timeoutMs: 60_000 });
  assert.deepEqual(r.deliveries, [{ deviceId: 1, delivery: 'queued' }]);
});

test('an account the relay no longer knows (deleted, or its data reset): a clear error, no password asked', async () => {
  const n = name('gone');
  const pw = password();
  const dir = join(tempDir(), 'gone');
  const c = await RelayClient.open({ url: stack().url, store: new FileStore(dir), username: n, password: pw });
  // The account is deleted behind the store's back (the low-level layer: DELETE /v1/users/me).
  await call('DELETE', '/v1/users/me', { url: stack().url, token: await login(stack().url, n, pw) });
  await c.close();

  const expected = `the account ${n} in ${dir} is not known to the relay at ${stack().url} (was its data reset?); remove ${dir} to start again`;
  await assert.rejects(RelayClient.open({ url: stack().url, store: new FileStore(dir) }), (e) => {
    assert.ok(e instanceof AuthError, `${e.name}: ${e.message}`);
    assert.equal(e.code, 'account_unknown');
    assert.equal(e.message, expected);
    return true;
  });
  assert.ok(!existsSync(join(dir, 'lock')), 'the lock is given up');
  // A password does not help (it cannot tell a wrong password from a deleted account: both 401).
  await assert.rejects(
    RelayClient.open({ url: stack().url, store: new FileStore(dir), password: pw }),
    (e) => e instanceof AuthError && e.code === 'account_unknown' && e.message.startsWith(expected),
  );
  // A store that was logged out (no refresh token) still asks for the password: not this error.
  const store = new MemoryStore();
  const d = await RelayClient.open({ url: stack().url, store, username: name('out'), password: pw });
  await d.logout();
  await assert.rejects(RelayClient.open({ url: stack().url, store }), (e) => e instanceof AuthError && e.code === 'unauthorized');
});
