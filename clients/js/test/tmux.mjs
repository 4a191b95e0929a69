// Terminals for the chat tests: a tmux server of its own (`tmux -L <unique socket>`), sessions
// running an interactive bash in the repo root, keys typed with `send-keys`, the screen read
// with `capture-pane`, and the end of it all (the server killed, no chat left behind).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from './stack.mjs';

const SOCKET = `relay-chat-test-${process.pid}-${randomBytes(3).toString('hex')}`;
let tmuxUp = false;
let chatDir = null;

/** tmux is required (local/test installs it); the chats of this process keep state in `dir`. */
export function useTerminals(dir) {
  execFileSync('tmux', ['-V'], { stdio: 'ignore' });
  chatDir = dir;
}

export function tmux(...args) {
  return execFileSync('tmux', ['-L', SOCKET, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A new tmux session running an interactive bash in the repo root, 200×50. */
export function open(name) {
  const env = {
    ...process.env,
    RELAY_CHAT_DIR: chatDir,
    PS1: '$ ',
    TERM: 'xterm-256color',
    LANG: process.env.LANG || 'C.UTF-8',
  };
  delete env.RELAY_CHAT_PASSWORD;
  delete env.TMUX;
  execFileSync(
    'tmux',
    ['-L', SOCKET, '-f', '/dev/null', 'new-session', '-d', '-s', name, '-x', '200', '-y', '50', '-c', REPO_ROOT,
      "PS1='$ ' exec bash --noprofile --norc"],
    { env, stdio: 'ignore' },
  );
  tmuxUp = true;
  tmux('set-option', '-t', name, 'history-limit', '10000');
}

/** Types `text` literally into the session, then Enter. */
export function type(name, text) {
  tmux('send-keys', '-t', name, '-l', text);
  tmux('send-keys', '-t', name, 'Enter');
}

/** Everything the pane shows and has scrolled off, wrapped lines joined. */
export function screen(name) {
  return tmux('capture-pane', '-p', '-J', '-t', name, '-S', '-');
}

/** A mark in the pane's text: waitFor(…, { since }) looks only at what came after it. */
export function mark(name) {
  return Math.max(0, screen(name).trimEnd().split('\n').length - 1);
}

/**
 * Waits until the pane matches `re` (a RegExp, or a string found literally) `count` times,
 * looking at the lines from `since` (a mark()) on; returns that text.
 */
export async function waitFor(name, re, { timeoutMs = 30_000, count = 1, since = 0 } = {}) {
  const deadline = Date.now() + timeoutMs;
  const matches = (s) => {
    if (typeof re === 'string') return s.split(re).length - 1 >= count;
    const g = new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g');
    return (s.match(g) ?? []).length >= count;
  };
  let s = '';
  for (;;) {
    s = screen(name).split('\n').slice(since).join('\n');
    if (matches(s)) return s;
    if (Date.now() > deadline) {
      assert.fail(`pane ${name}: no ${re}${count > 1 ? ` ×${count}` : ''} after ${timeoutMs} ms; it shows:\n${s.trimEnd()}`);
    }
    await sleep(150);
  }
}

/** The processes started in the pane's shell (the chat: ./local/chat execs node). */
export function panePids(name) {
  let shell;
  try {
    shell = tmux('display-message', '-p', '-t', name, '#{pane_pid}').trim();
  } catch {
    return [];
  }
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', shell], { encoding: 'utf8' }).split('\n').map((l) => Number(l.trim())).filter(Boolean);
  } catch {
    return []; // no child
  }
}

export const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

export async function waitGone(pids, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(100);
  return pids.filter(alive);
}

/** No stack trace, no raw error object on the screen. */
export function assertNoTrace(name, s = screen(name)) {
  assert.doesNotMatch(s, /^\s+at .+[(:]\d+/m, `pane ${name} shows a stack trace:\n${s}`);
  assert.doesNotMatch(s, /Uncaught|node:internal|\[Error|Error \{/, `pane ${name} shows a raw error:\n${s}`);
}

/**
 * Kills the tmux server and any chat that outlives its terminal; with RELAY_CHAT_TEST_SHOW set,
 * prints the screens of `show` first.
 */
export async function closeTerminals(show = []) {
  if (!tmuxUp) return;
  let pids = [];
  try {
    pids = tmux('list-sessions', '-F', '#{session_name}').split('\n').filter(Boolean).flatMap(panePids);
  } catch { /* no server */ }
  if (process.env.RELAY_CHAT_TEST_SHOW) {
    for (const s of show) {
      try {
        process.stderr.write(`\n----- ${s} -----\n${screen(s).trimEnd()}\n`);
      } catch { /* no such session */ }
    }
  }
  try {
    tmux('kill-server');
  } catch { /* already gone */ }
  // The chats end with their terminal (SIGHUP); any that does not is stopped here.
  for (const pid of await waitGone(pids)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch { /* gone */ }
  }
}
