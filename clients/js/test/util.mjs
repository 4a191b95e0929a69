// Helpers of the library's tests (not the library's API).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, after } from 'node:test';
import { uniqueUsername } from '../src/index.mjs';
import { startStack } from './stack.mjs';

export { sleep };

export function name(role) {
  return uniqueUsername(role);
}

export function password() {
  return randomBytes(12).toString('base64url');
}

export function tempDir(prefix = 'relay-client-test-') {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Records a client's 'message', 'state' and 'error' events; next() waits for the next message. */
export function record(client) {
  const r = { messages: [], states: [], errors: [], waiters: [] };
  client.on('message', (m) => {
    r.messages.push(m);
    for (const w of r.waiters.splice(0)) w();
  });
  client.on('state', (s) => r.states.push(s));
  client.on('error', (e) => r.errors.push(e));
  let read = 0;
  /** The next message not returned yet (waits up to timeoutMs). */
  r.next = async (timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (r.messages.length <= read) {
      if (Date.now() > deadline) throw new Error(`no message within ${timeoutMs} ms (errors: ${r.errors.map((e) => e.message).join('; ')})`);
      await new Promise((res) => {
        r.waiters.push(res);
        setTimeout(res, 200);
      });
    }
    return r.messages[read++];
  };
  return r;
}

/** Polls `fn` until it returns a truthy value (returned), or throws after timeoutMs. */
export async function waitFor(fn, what, timeoutMs = 20_000, stepMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/**
 * The per-file stack of a test file: started before its first test (`startStack(opts)`), stopped
 * after its last, with every client passed to `track` (or pushed to `clients`) closed first.
 * `stack()` is the running stack.
 */
export function stackSuite(opts) {
  let running;
  const clients = [];
  before(async () => {
    running = await startStack(opts);
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await running?.stop();
  });
  return {
    stack: () => running,
    clients,
    track: (c) => (clients.push(c), c),
  };
}
