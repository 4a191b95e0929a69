// RateLimitedError: a stack of its own with a small lookup limit; the error carries retryAfter.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RelayClient, MemoryStore, RateLimitedError, RelayError, UnknownUserError } from '../src/index.mjs';
import { startStack } from './stack.mjs';
import { name, password } from './util.mjs';

let stack;
let client;
before(async () => {
  stack = await startStack({ env: { RATE_LIMIT_LOOKUP: '2/600' } });
});
after(async () => {
  await client?.close().catch(() => {});
  await stack?.stop();
});

test('a rate-limited request throws RateLimitedError with retryAfter', async () => {
  client = await RelayClient.open({ url: stack.url, store: new MemoryStore(), username: name('rl'), password: password() });
  await assert.rejects(client.lookup(name('a')), UnknownUserError);
  await assert.rejects(client.lookup(name('b')), UnknownUserError);
  const t0 = Date.now();
  await assert.rejects(client.lookup(name('c')), (e) => {
    assert.ok(e instanceof RateLimitedError && e instanceof RelayError, `${e}`);
    assert.equal(e.status, 429);
    assert.equal(e.code, 'rate_limited');
    assert.ok(e.retryAfter > 200 && e.retryAfter <= 300, `retryAfter ${e.retryAfter}`);
    return true;
  });
  assert.ok(Date.now() - t0 < 5000, 'thrown at once, not waited out');
});
