// A fresh local relay stack for one test file: the repo's ./local/up (redis-server, the Dynoxide
// engine in the gateway, s3s-fs when installed) on free ports, with its data in a temporary
// directory, rate limits off (tests/limits-off.env) unless told otherwise.
//
//   const stack = await startStack({ env: { ACCESS_TOKEN_TTL_SECS: '5' } });
//   stack.url                 http://127.0.0.1:<port>
//   await stack.down()        SIGTERM to ./local/up's process group, wait: the relay is gone
//   await stack.up()          start again on the same ports and data dir (data kept)
//   await stack.restart()     down() then up()
//   await stack.stop()        down() and delete the data dir (call it in `after`)
//
// Needs target/debug/local-gateway (cargo build -p local-gateway; RELAY_GATEWAY_BIN overrides).
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** A TCP port free right now on 127.0.0.1. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** tests/limits-off.env as an object (KEY=VALUE lines, # comments). */
export function limitsOffEnv() {
  const out = {};
  for (const line of readFileSync(join(REPO_ROOT, 'tests/limits-off.env'), 'utf8').split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]] = m[2].trim();
  }
  return out;
}

function executable(p) {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts ./local/up. opts:
 *   env        extra environment for the relay (e.g. ACCESS_TOKEN_TTL_SECS, a RATE_LIMIT_*)
 *   limitsOff  source tests/limits-off.env first (default true; `env` wins over it)
 *   timeoutMs  how long to wait for /healthz (default 120 s)
 */
export async function startStack({ env = {}, limitsOff = true, timeoutMs = 120_000 } = {}) {
  const gateway = process.env.RELAY_GATEWAY_BIN || join(REPO_ROOT, 'target/debug/local-gateway');
  if (!existsSync(gateway)) {
    throw new Error(`no gateway binary at ${gateway}: run \`cargo build -p local-gateway\` first (or set RELAY_GATEWAY_BIN)`);
  }
  const dataDir = mkdtempSync(join(tmpdir(), 'relay-stack-'));
  const [httpPort, redisPort, dynamoPort, s3Port] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const childEnv = { ...process.env };
  // Whatever the calling shell points at, this stack starts its own servers.
  for (const k of ['REDIS_URL', 'REDIS_CLUSTER', 'AWS_ENDPOINT_URL_DYNAMODB', 'AWS_ENDPOINT_URL_S3', 'JWT_SECRET', 'RELAY_URL', 'RELAY_WS_URL', 'RELAY_PROVISIONING_URL']) {
    delete childEnv[k];
  }
  Object.assign(childEnv, limitsOff ? limitsOffEnv() : {}, {
    RELAY_DATA_DIR: dataDir,
    RELAY_LISTEN: `127.0.0.1:${httpPort}`,
    RELAY_REDIS_PORT: String(redisPort),
    RELAY_DYNAMODB_PORT: String(dynamoPort),
    RELAY_S3_PORT: String(s3Port),
    RELAY_GATEWAY_BIN: gateway,
    RUST_LOG: process.env.RUST_LOG || 'warn',
  });
  // s3s-fs (attachments) when installed; otherwise an address nothing answers on, so that
  // ./local/up does not stop to `cargo install` it (these tests need no attachments).
  const s3 = process.env.RELAY_S3_SERVER || join(REPO_ROOT, '.local/s3s/bin/s3s-fs');
  if (!executable(s3)) childEnv.AWS_ENDPOINT_URL_S3 = 'http://127.0.0.1:9';
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || v === null) delete childEnv[k];
    else childEnv[k] = String(v);
  }
  const url = `http://127.0.0.1:${httpPort}`;
  const logPath = join(dataDir, 'up.log');
  let child = null;
  let exited = null;

  const logTail = () => {
    try {
      return readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '(no log)';
    }
  };

  async function up() {
    if (child) return;
    const fd = openSync(logPath, 'a');
    child = spawn(join(REPO_ROOT, 'local/up'), [], {
      cwd: REPO_ROOT,
      env: childEnv,
      stdio: ['ignore', fd, fd],
      detached: true, // its own process group: down() signals all of it
    });
    exited = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
    const me = child;
    let gone = null;
    exited.then((r) => {
      gone = r;
    });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (gone) {
        child = null;
        throw new Error(`./local/up exited (${JSON.stringify(gone)}) before the relay was healthy:\n${logTail()}`);
      }
      try {
        const res = await fetch(url + '/healthz', { signal: AbortSignal.timeout(2000) });
        if (res.status === 200) return;
      } catch {
        /* not yet */
      }
      if (Date.now() > deadline) {
        await down();
        throw new Error(`relay at ${url} not healthy after ${timeoutMs} ms:\n${logTail()}`);
      }
      if (me !== child) throw new Error('stack stopped while starting');
      await sleep(200);
    }
  }

  async function down() {
    if (!child) return;
    const c = child;
    child = null;
    try {
      process.kill(-c.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
    const t = setTimeout(() => {
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 15_000);
    await exited;
    clearTimeout(t);
    // The servers of the group may outlive the script by a moment: wait for the port to close.
    for (let i = 0; i < 100; i++) {
      try {
        await fetch(url + '/healthz', { signal: AbortSignal.timeout(500) });
      } catch {
        break;
      }
      await sleep(100);
    }
  }

  const stack = {
    url,
    wsUrl: `ws://127.0.0.1:${httpPort}/ws`,
    dataDir,
    logPath,
    ports: { http: httpPort, redis: redisPort, dynamodb: dynamoPort, s3: s3Port },
    env: childEnv,
    up,
    down,
    get running() {
      return child !== null;
    },
    async restart() {
      await down();
      await up();
    },
    async stop({ keepData = Boolean(process.env.RELAY_KEEP_STACK) } = {}) {
      await down();
      if (!keepData) rmSync(dataDir, { recursive: true, force: true });
    },
    logTail,
  };
  // A test run that dies must not leave servers behind.
  process.once('exit', () => {
    if (child) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
  });
  await up();
  return stack;
}
