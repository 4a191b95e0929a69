// Helpers of the library's tests (not the library's API).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, after } from 'node:test';
import { uniqueUsername, call, RelaySocket } from '../src/index.mjs';
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

/** The claims of one of the relay's access tokens (a JWT): `sub` the user id, `exp` its end in seconds. */
export function tokenClaims(token) {
  return JSON.parse(Buffer.from(String(token).split('.')[1], 'base64url').toString('utf8'));
}

/** The access token of a new session of `username` (POST /v1/sessions), for the low-level calls of a test. */
export async function login(url, username, pw) {
  return (await call('POST', '/v1/sessions', { url, body: { username, password: pw } })).access_token;
}

/**
 * Watches, from the outside, what the clients of this process say to the relay: the global fetch
 * and RelaySocket.connect are wrapped until restore(). Sockets and tokens are told apart by the
 * user id their access token names.
 *   sockets(userId)        the RelaySockets opened with that user's tokens, oldest first
 *   accessTokens(userId)   the access tokens the relay issued to that user over HTTP, oldest first
 *   refreshTokens(userId)  the refresh tokens issued with them
 *   onRequest(fn)          fn({ method, path, body }) as each HTTP request leaves
 *   onFrame(fn)            fn(frame, socket, userId) once each frame has left a watched socket
 */
export function watchRelay() {
  const opened = []; // { userId, sock }
  const issued = []; // { userId, access, refresh }
  const requestHooks = [];
  const frameHooks = [];
  const fetch = globalThis.fetch;
  const connect = RelaySocket.connect;
  globalThis.fetch = async (input, init = {}) => {
    const path = new URL(typeof input === 'string' || input instanceof URL ? input : input.url).pathname;
    let body;
    try {
      body = typeof init.body === 'string' ? JSON.parse(init.body) : undefined;
    } catch {
      /* not JSON */
    }
    for (const h of requestHooks) h({ method: init.method ?? 'GET', path, body });
    const res = await fetch(input, init);
    if (res.ok && (init.method ?? 'GET') === 'POST') {
      const json = await res.clone().json().catch(() => null);
      if (typeof json?.access_token === 'string') {
        issued.push({ userId: tokenClaims(json.access_token).sub, access: json.access_token, refresh: json.refresh_token });
      }
    }
    return res;
  };
  RelaySocket.connect = async function (token, ...rest) {
    const sock = await connect.call(this, token, ...rest);
    const userId = tokenClaims(token).sub;
    opened.push({ userId, sock });
    const sendFrame = sock.sendFrame.bind(sock);
    sock.sendFrame = (frame) => {
      const r = sendFrame(frame);
      for (const h of frameHooks) h(frame, sock, userId);
      return r;
    };
    return sock;
  };
  return {
    sockets: (userId) => opened.filter((o) => o.userId === userId).map((o) => o.sock),
    accessTokens: (userId) => issued.filter((t) => t.userId === userId).map((t) => t.access),
    refreshTokens: (userId) => issued.filter((t) => t.userId === userId).map((t) => t.refresh),
    onRequest: (fn) => requestHooks.push(fn),
    onFrame: (fn) => frameHooks.push(fn),
    restore() {
      globalThis.fetch = fetch;
      RelaySocket.connect = connect;
    },
  };
}
