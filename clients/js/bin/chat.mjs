#!/usr/bin/env node
// A terminal chat on the relay, built on RelayClient only (no raw HTTP here): the messages are
// end-to-end encrypted with the Signal protocol; the relay only sees ciphertext.
//
//   node clients/js/bin/chat.mjs NAME [--url URL] [--link]     (./local/chat is the wrapper)
//
// State (keys, sessions, tokens) lives in a FileStore in $RELAY_CHAT_DIR/NAME (default
// <repo>/.local/chat/NAME). The first run registers NAME (password from RELAY_CHAT_PASSWORD or
// asked without echo); later runs reopen the stored account. With --link, NAME names the local
// profile of a new device of an existing account (the account's username comes with the link).
// The conversations are kept there too (history.enc), encrypted with a key derived from the
// password: a later run asks for it (or takes RELAY_CHAT_PASSWORD) to open them.
import { dirname, join, resolve } from 'node:path';
import { readFile, writeFile, rename as renameFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';
import * as lib from '../src/index.mjs';
import { groupCommands, GROUP_COMMANDS } from './chat-groups.mjs';

const { RelayClient, FileStore } = lib;

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..', '..');
const DEBUG = !!process.env.RELAY_CHAT_DEBUG;
const NAME_RE = /^[a-z0-9_.-]{3,32}$/;
const LAST_LINES = 10; // lines of history shown when a conversation is opened

const USAGE = `usage: ./local/chat NAME [--url URL] [--link]

  ./local/chat alice             opens the account alice (the first run registers it)
  ./local/chat alice2 --link     a new device of an existing account: prints a link string
                                 to type as /link STRING in a running chat of that account
  --url URL                      the relay (default $RELAY_URL, else http://127.0.0.1:8080)

State: $RELAY_CHAT_DIR/NAME (default .local/chat/NAME), the history encrypted with the password.
RELAY_CHAT_PASSWORD: the password (else it is asked for: on the first run, and to open the
history on later runs).`;

const HELP = `commands:
  /to NAME        talk to NAME (every line you type is sent to them, encrypted)
  /group new NAME USER…
                  make a group NAME (the name is yours to pick; the relay never sees it) and
                  invite USERs; you talk in it at once
  /g NAME         talk in the group NAME
  /invites        the groups you are invited to
  /join NAME      accept the invitation to the group NAME (and talk in it)
  /members        who is in the group you talk in
  /kick USER      remove USER from the group you talk in (admins)
  /leave          leave the group you talk in
  /devices        the devices of your account
  /link STRING    link the new device that \`./local/chat OTHER --link\` started
  /more           earlier lines of the conversation you talk in (from the history)
  /search WORD…   the messages of your history holding every WORD (searched on this device)
  /share NAME…    let NAMEs see when you are online; you see theirs once they /share you too
                  (/share alone: whom you share with; /unshare NAME… stops)
  /expire SECONDS|off
                  the messages you send in this conversation from now on disappear SECONDS
                  (at least 5; or 10m, 2h, 1d) after they are sent: the relay never delivers
                  them later, and every history drops them then
  /export FILE    write everything the relay keeps about your account to FILE (JSON)
  /rename NEW     change your username to NEW (the primary device only)
  /me             who and where you are
  /logout         end this device's session on the relay and leave (the keys stay; the next
                  run asks for the password)
  /help           this help
  /quit           leave (Ctrl-D and Ctrl-C too)
a line that does not start with / is a message (start it with // to send a leading /)
marks of your messages: ✓ sent, ✓✓ delivered, ✓✓ read (receipts from the other side)
the prompt shows whether the person you talk to is online (when you share presence both ways)
and the conversation's /expire timer`;

// ---------------------------------------------------------------------------------------------
// Output: one line at a time, above the prompt the person is typing at.

let rl = null; // the readline interface once the chat is open
const tty = !!process.stdout.isTTY;
let termGone = false; // the terminal was closed (SIGHUP, EIO/EPIPE): write nothing more

function out(line) {
  if (termGone) return;
  if (rl && tty) {
    readline.cursorTo(process.stdout, 0);
    readline.clearLine(process.stdout, 0);
    process.stdout.write(line + '\n');
    rl.prompt(true);
  } else {
    process.stdout.write(line + '\n');
  }
}

const note = (s) => out(`-- ${s}`);
const fail = (s) => out(`!! ${s}`);

/** Text from the network, safe to print: no terminal escapes or other control characters. */
function clean(s) {
  return String(s)
    .replace(/\r\n?/g, '\n')
    .replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '\ufffd')
    .replace(/\n/g, '\n        ');
}

function dayTime(d) {
  const t = d instanceof Date && !Number.isNaN(d.getTime()) ? d : new Date();
  const p = (n) => String(n).padStart(2, '0');
  return `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())} ${p(t.getHours())}:${p(t.getMinutes())}`;
}

/** The mark of a message sent: ✓ sent, ✓✓ delivered, ✓✓ read. */
const MARK = { sent: '✓', delivered: '✓✓', read: '✓✓ read' };

/** The start of a message's text, for a status line. */
function snippet(text, n = 40) {
  const s = clean(text ?? '<bytes>').replace(/\n\s*/g, ' ');
  return [...s].length > n ? [...s].slice(0, n - 1).join('') + '…' : s;
}

function hhmmss(d) {
  const t = d instanceof Date && !Number.isNaN(d.getTime()) ? d : new Date();
  return [t.getHours(), t.getMinutes(), t.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** `  (disappears at 12:00:35)` for a disappearing message, else ''. */
const disappears = (m) => (m?.expiresAt ? `  (disappears at ${hhmmss(m.expiresAt)})` : '');

/** 45 → '45 s', 600 → '10 min', 7200 → '2 h', 86400 → '1 day'. */
function duration(sec) {
  if (sec % 86400 === 0) return `${sec / 86400} day${sec === 86400 ? '' : 's'}`;
  if (sec % 3600 === 0) return `${sec / 3600} h`;
  if (sec % 60 === 0 && sec >= 60) return `${sec / 60} min`;
  return `${sec} s`;
}

/** '30', '30s', '10m', '2h', '1d' → seconds; null when not one of those. */
function parseDuration(s) {
  const m = /^(\d{1,9})\s*(s|m|min|h|d)?$/i.exec(s.trim());
  if (!m) return null;
  const unit = { s: 1, m: 60, min: 60, h: 3600, d: 86400 }[(m[2] ?? 's').toLowerCase()];
  return Number(m[1]) * unit;
}

function hhmm(d) {
  const t = d instanceof Date && !Number.isNaN(d.getTime()) ? d : new Date();
  return `${String(t.getHours()).padStart(2, '0')}:${String(t.getMinutes()).padStart(2, '0')}`;
}

// ---------------------------------------------------------------------------------------------
// Errors: one clear line each, never a stack trace (RELAY_CHAT_DEBUG=1 shows them).

function is(e, cls) {
  const C = lib[cls];
  return (typeof C === 'function' && e instanceof C) || e?.name === cls || e?.constructor?.name === cls;
}

let URL_ = '';

/** One line for an error; `ctx` names what was being done (peer, username…). */
function describe(e, ctx = {}) {
  if (DEBUG && e?.stack) process.stderr.write(e.stack + '\n');
  if (is(e, 'ServerUnavailableError')) return `cannot reach the relay at ${URL_} — is ./local/up running?`;
  if (is(e, 'RateLimitedError')) {
    const s = Number(e.retryAfter);
    return `rate limited by the relay: retry in ${Number.isFinite(s) && s > 0 ? Math.ceil(s) : 'a few'} s`;
  }
  if (is(e, 'UnknownUserError')) return ctx.peer ? `no user named ${ctx.peer}` : 'unknown user';
  if (is(e, 'UsernameTakenError')) return `the username ${ctx.username ?? ''} is taken`;
  if (e?.code === 'store_in_use' && e.lock) {
    return `${ctx.name ?? 'this account'} is open in another chat (${e.lock}); quit that one first`;
  }
  if (is(e, 'AuthError') && e.code === 'account_unknown') return firstLine(e.message);
  if (is(e, 'AuthError')) return ctx.auth ?? 'the relay refused the credentials (wrong password, or the session was ended)';
  if (is(e, 'PreKeysExhaustedError')) {
    return `${ctx.peer ?? 'the recipient'} has no prekeys left: they must come online once (their client refills them), then try again`;
  }
  if (is(e, 'MismatchedDevicesError')) return `the devices of ${ctx.peer ?? 'the recipient'} kept changing while sending; try again`;
  if (is(e, 'ApiError')) {
    const code = e.code && e.code !== 'error' ? ` (${e.code})` : '';
    return `the relay refused: ${firstLine(e.message)}${code}`;
  }
  return firstLine(e?.message ?? String(e));
}

function firstLine(s) {
  return String(s ?? '').split('\n')[0] || 'unknown error';
}

class Exit extends Error {
  constructor(message, code = 1) {
    super(message);
    this.exitCode = code;
  }
}

// ---------------------------------------------------------------------------------------------
// Arguments, password prompt.

function parseArgs(argv) {
  const o = { name: null, url: null, link: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--link') o.link = true;
    else if (a === '--url') {
      if (i + 1 >= argv.length) throw new Exit(`--url needs a URL\n${USAGE}`, 2);
      o.url = argv[++i];
    } else if (a.startsWith('--url=')) o.url = a.slice(6);
    else if (a === '-h' || a === '--help') throw new Exit(USAGE, 0);
    else if (a.startsWith('-')) throw new Exit(`unknown option ${a}\n${USAGE}`, 2);
    else if (o.name === null) o.name = a;
    else throw new Exit(`one NAME only (got ${o.name} and ${a})\n${USAGE}`, 2);
  }
  if (!o.name) throw new Exit(USAGE, 2);
  o.name = o.name.toLowerCase();
  if (!NAME_RE.test(o.name)) throw new Exit(`NAME must be 3 to 32 characters of a-z 0-9 _ . - (got ${JSON.stringify(o.name)})`, 2);
  o.url = (o.url || process.env.RELAY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]+/.test(o.url)) throw new Exit(`--url must be an http:// or https:// URL (got ${o.url})`, 2);
  return o;
}

/** Reads a line from the terminal without echoing it (a plain line when stdin is not a TTY). */
function askHidden(prompt) {
  const stdin = process.stdin;
  process.stdout.write(prompt);
  if (!stdin.isTTY) {
    return new Promise((res, rej) => {
      const r = readline.createInterface({ input: stdin });
      r.once('line', (l) => { r.close(); process.stdout.write('\n'); res(l); });
      r.once('close', () => rej(new Exit('no password given (stdin closed)', 1)));
    });
  }
  return new Promise((res, rej) => {
    let buf = '';
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const done = (err, v) => {
      stdin.removeListener('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stdout.write('\n');
      err ? rej(err) : res(v);
    };
    const onData = (chunk) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done(null, buf);
        if (ch === '\u0003') return done(new Exit('cancelled', 130));
        if (ch === '\u0004') return buf ? undefined : done(new Exit('cancelled', 130));
        if (ch === '\u007f' || ch === '\b') buf = buf.slice(0, -1);
        else if (ch === '\u0015') buf = '';
        else if (ch >= ' ') buf += ch;
      }
    };
    stdin.on('data', onData);
  });
}

async function newPassword(name) {
  const env = process.env.RELAY_CHAT_PASSWORD;
  if (env) return env;
  if (!process.stdin.isTTY) throw new Exit('set RELAY_CHAT_PASSWORD (no terminal to ask for a password on)');
  for (;;) {
    const p = await askHidden(`new password for ${name} (8 to 128 characters): `);
    if ([...p].length < 8 || [...p].length > 128) { process.stdout.write('the password must be 8 to 128 characters\n'); continue; }
    const again = await askHidden('again: ');
    if (again === p) return p;
    process.stdout.write('the two passwords differ\n');
  }
}

// ---------------------------------------------------------------------------------------------
// Opening the account: stored, registered, or linked.

async function storeHasAccount(store) {
  const doc = await store.load();
  return Boolean(doc?.account);
}

async function openAccount(o, store, dir) {
  const base = { url: o.url, store };
  if (await storeHasAccount(store)) {
    const password = process.env.RELAY_CHAT_PASSWORD || undefined;
    try {
      return await RelayClient.open({ ...base, password, register: false });
    } catch (e) {
      if (e?.code === 'history_key') throw new Exit(`RELAY_CHAT_PASSWORD does not open the history in ${dir} (a wrong password)`);
      if (!is(e, 'AuthError')) throw e;
      // The relay refused the stored session, and the password too (or none was given): the
      // account is gone (./local/up --reset, deleted). Asking for a password would not help.
      if (e.code === 'account_unknown') throw new Exit(unknownAccount(e, dir, o));
      if (password || !process.stdin.isTTY) {
        throw new Exit(password ? wrongPassword(dir) : `the stored session of ${o.name} has ended (logged out or revoked); run again with RELAY_CHAT_PASSWORD`);
      }
      note(`the stored session of ${o.name} has ended (logged out or revoked elsewhere): log in again`);
      const p = await askHidden(`password: `);
      try {
        return await RelayClient.open({ ...base, password: p, register: false });
      } catch (e2) {
        if (e2?.code === 'history_key') throw new Exit(wrongPassword(dir));
        if (is(e2, 'AuthError') && e2.code === 'account_unknown') throw new Exit(unknownAccount(e2, dir, o));
        if (is(e2, 'AuthError')) throw new Exit(wrongPassword(dir));
        throw e2;
      }
    }
  }
  const password = await newPassword(o.name);
  try {
    const c = await RelayClient.open({ ...base, username: o.name, password, register: true });
    note(`registered ${o.name} (its keys are kept in ${dir})`);
    return c;
  } catch (e) {
    if (is(e, 'UsernameTakenError')) {
      throw new Exit(`the username ${o.name} is taken, and its keys are not in ${dir}; if the account is yours, link this terminal as a new device of it: ./local/chat ${o.name}2 --link`);
    }
    if (is(e, 'AuthError')) throw new Exit(`wrong password for ${o.name}`);
    throw e;
  }
}

function unknownAccount(e, dir, o) {
  const m = /^the account (\S+)/.exec(e.message);
  const name = m?.[1] ?? o.name;
  const wrong = /or the password given is wrong/.test(e.message) ? ' (or RELAY_CHAT_PASSWORD is wrong)' : '';
  return `the account ${name} in ${dir} is not known to the relay at ${o.url} (was its data reset?); remove ${dir} to start again${wrong}`;
}

function wrongPassword(dir) {
  return `wrong password for the account in ${dir} (or the relay no longer has that account: ./local/up --reset deletes them; then delete ${dir} too)`;
}

async function linkAccount(o, store, dir) {
  if (await storeHasAccount(store)) {
    throw new Exit(`${dir} already holds an account: run ./local/chat ${o.name} (without --link), or pick another NAME for the new device`);
  }
  const { linkString, done, cancel } = await RelayClient.startLinking({ url: o.url, store });
  out('To make this terminal a new device of your account, type this line in a running chat');
  out('of that account (./local/chat NAME):');
  out('');
  out(`  /link ${linkString}`);
  out('');
  out('waiting for it (Ctrl-C cancels)…');
  let onInt;
  const stop = new Promise((_, rej) => {
    onInt = () => {
      Promise.resolve(cancel?.()).catch(() => {});
      rej(new Exit('cancelled', 130));
    };
    process.once('SIGINT', onInt);
  });
  let client;
  try {
    client = await Promise.race([done, stop]);
  } finally {
    process.removeListener('SIGINT', onInt);
  }
  note(`linked: this is device ${client.deviceId} of ${client.username ?? client.userId}`);
  return client;
}

/**
 * The history of a reopened account: encrypted with a key derived from the password, which a run
 * reopening with the stored session was not given. Asked for on a terminal (Enter: none this run).
 */
async function unlockHistory(client, o, dir) {
  if (client.historyPersistent) return;
  const env = process.env.RELAY_CHAT_PASSWORD;
  if (env) {
    try {
      return await client.openHistory({ password: env });
    } catch (e) {
      if (e?.code === 'history_key') throw new Exit(`RELAY_CHAT_PASSWORD does not open the history in ${dir} (a wrong password)`);
      throw e;
    }
  }
  if (!process.stdin.isTTY) return note('the history stays closed this run (no RELAY_CHAT_PASSWORD, no terminal to ask on)');
  for (let attempt = 0; attempt < 3; attempt++) {
    const p = await askHidden(`password of ${o.name} (opens the history kept on this device; Enter: not now): `);
    if (!p) return note('the history stays closed this run: nothing of it is shown, nothing of this run is kept');
    try {
      return await client.openHistory({ password: p });
    } catch (e) {
      if (e?.code !== 'history_key') throw e;
      process.stdout.write('that password does not open it\n');
    }
  }
  note('the history stays closed this run');
}

// ---------------------------------------------------------------------------------------------
// The chat.

async function chat(o, client, dir) {
  let me = client.username ?? o.name;
  let peer = null; // { name, userId }
  let lastState = null;
  let closing = false;
  let sessionEnded = false; // an AuthError: the client stopped reconnecting

  const who = (u) => clean(u?.username ?? u?.userId ?? '?');
  // Lines go to the group selected with /g (or made, or joined) when there is one, else to peer.
  const groups = groupCommands(client, { out, note, fail, clean, hhmm, describe, disappears }, (g) => {
    setPrompt();
    if (g?.opened) return showLast({ groupId: g.groupId }, `#${clean(g.name)}`);
  });
  const setPrompt = () => {
    const g = groups.current;
    const timer = expireOf(current()) ? ` [expire ${duration(expireOf(current()))}]` : '';
    const state = !g && peer && presence.has(peer.userId) ? ` (${presence.get(peer.userId).online ? 'online' : 'offline'})` : '';
    rl?.setPrompt(g ? `(${me}) #${clean(g.name)}${timer}> ` : peer ? `(${me}) ${peer.name}${state}${timer}> ` : `(${me})> `);
  };

  // ---- presence: the users this account shares with, and what is known of theirs
  const presence = new Map(); // user id → { online, lastSeen? } of users who share both ways
  const names = new Map(); // user id → username, of the users named in /share, /to and messages
  let shares = null; // { userIds: Set, lastSeen } once read from the relay
  // The relay's share list holds user ids only: the names of those shared with are kept in the
  // profile (0600), so that a later run can say who came online.
  const NAMES_FILE = join(dir, 'presence-names.json');
  const sharedNames = await readFile(NAMES_FILE, 'utf8').then((t) => JSON.parse(t), () => ({}));
  for (const [id, n] of Object.entries(sharedNames)) if (typeof n === 'string') names.set(id, n);
  async function keepSharedNames() {
    const doc = {};
    for (const id of shares?.userIds ?? []) if (names.has(id)) doc[id] = names.get(id);
    const tmp = `${NAMES_FILE}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify(doc) + '\n', { mode: 0o600 });
    await renameFile(tmp, NAMES_FILE);
  }
  const nameOf = (userId) => clean(names.get(userId) ?? client.conversations().find((c) => c.conversation === userId)?.last?.with ?? `user ${userId.slice(0, 8)}`);
  const stateLine = (p) => (p.online ? 'online' : `offline${p.lastSeen ? ` (last seen ${dayTime(p.lastSeen)})` : ''}`);

  /** A user's presence as now known: a line when it changed (or was not known). */
  function showPresence(p) {
    if (p.username) names.set(p.userId, p.username);
    const before = presence.get(p.userId);
    presence.set(p.userId, { online: p.online, lastSeen: p.lastSeen });
    if (before?.online === p.online) return;
    note(`${nameOf(p.userId)} is ${stateLine(p)}`);
    setPrompt();
  }

  async function loadShares() {
    const s = await client.presenceShares();
    shares = { userIds: new Set(s.userIds), lastSeen: s.lastSeen };
    return shares;
  }

  /** The presence of everyone shared with, read again (the frames only say what changes). */
  async function refreshPresence() {
    const s = shares ?? (await loadShares());
    if (!s.userIds.size) return;
    const seen = await client.presence([...s.userIds]);
    for (const p of seen) showPresence(p);
    // No longer answered: they stopped sharing back.
    for (const id of [...presence.keys()]) if (!seen.some((p) => p.userId === id)) presence.delete(id);
    setPrompt();
  }

  // ---- /expire: the disappearing timer of each conversation (this run only)
  const expiry = new Map(); // conversation → seconds
  const current = () => (groups.current ? `group:${groups.current.groupId}` : peer?.userId ?? null);
  const expireOf = (conversation) => (conversation ? expiry.get(conversation) : undefined);

  // A message printed in the conversation on screen is read (read receipts go for it); one of
  // another conversation is read once that conversation is opened (/to, /g: its last lines).
  const isCurrent = (conversation) => {
    const g = groups.current;
    return g ? conversation === `group:${g.groupId}` : peer !== null && conversation === peer.userId;
  };
  const seen = (m) => {
    if (!m.sync && isCurrent(m.conversation)) client.markRead(m.conversation, [m.messageId]).catch(() => {});
  };
  client.on('invite', (ev) => groups.invited(ev, who));
  client.on('status', (st) => {
    const e = st.message;
    const to = e.groupId ? `${who(st.by)} in ${groups.label(e.groupId)}` : who(st.by);
    groups.inOrder(() => out(`  ${MARK.delivered} ${st.status === 'read' ? 'read by' : 'delivered to'} ${to}: ${snippet(e.text)}`));
  });
  client.on('message', (m) => {
    const body = m.text != null ? clean(m.text) : `<${m.bytes?.length ?? 0} bytes>`;
    if (m.groupId) {
      groups.show(m, body, who);
      return groups.inOrder(() => seen(m));
    }
    // After any group line before it (those may wait for the group's name).
    groups.inOrder(() => {
      if (m.sync) {
        out(`[${hhmm(m.sentAt)}] you → ${who(m.to)}: ${body}${disappears(m)}`);
        return;
      }
      if (m.from?.username) names.set(m.from.userId, m.from.username);
      out(`[${hhmm(m.sentAt)}] ${who(m.from)}: ${body}${disappears(m)}`);
      if (!peer && !groups.current && m.from?.username) {
        peer = { name: m.from.username, userId: m.from.userId };
        setPrompt();
        note(`talking to ${peer.name} (/to NAME to change)`);
      }
      seen(m);
    });
  });
  client.on('presence', (p) => groups.inOrder(() => showPresence(p)));
  client.on('expired', (list) => {
    // The history dropped them; what the terminal printed stays on the screen.
    const per = new Map();
    for (const e of list) per.set(e.conversation, (per.get(e.conversation) ?? 0) + 1);
    groups.inOrder(() => {
      for (const [conv, n] of per) {
        const label = conv.startsWith('group:') ? groups.label(conv.slice(6)) : nameOf(conv);
        note(`gone: ${n} disappearing message${n === 1 ? '' : 's'} with ${label} (from the history on this device)`);
      }
    });
  });
  client.on('state', (s) => {
    if (closing || s === lastState) return;
    // Connected (again): the presence of those shared with, read afresh.
    if (s === 'online') refreshPresence().catch((e) => DEBUG && fail(describe(e)));
    if (s === 'online') note(lastState === 'offline' ? 'online again' : 'online');
    else if (s === 'offline') {
      note(sessionEnded ? 'offline: the session has ended (/quit, then run the chat again)' : `offline: cannot reach the relay at ${URL_}; reconnecting…`);
    }
    else if (s === 'connecting' && lastState === null) note(`connecting to ${URL_}…`);
    if (s !== 'connecting') lastState = s;
  });
  client.on('error', (e) => {
    // Unreachable while offline: the offline line says it already.
    if (is(e, 'ServerUnavailableError') && lastState === 'offline') return;
    if (is(e, 'AuthError')) {
      if (sessionEnded) return;
      sessionEnded = true;
    }
    fail(describe(e, { auth: 'the session has ended (logged out or revoked elsewhere): /quit, then run the chat again (it asks for the password)' }));
  });

  rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: tty, historySize: 200 });
  started = true; // from here on, a stray error is one line in the chat
  setPrompt();
  out(`${me}, device ${client.deviceId} (/help for the commands)`);

  let quitting = false;
  const quit = async (code = 0) => {
    if (quitting) return;
    quitting = closing = true;
    // Whatever happens below, the process ends (a socket that does not close holds nothing up).
    setTimeout(() => process.exit(code), 4000);
    try {
      await Promise.race([client.close(), new Promise((r) => setTimeout(r, 3000))]);
    } catch { /* closing anyway */ }
    try {
      const r = rl;
      rl = null;
      r?.close();
      if (!termGone) {
        if (tty) {
          readline.cursorTo(process.stdout, 0);
          readline.clearLine(process.stdout, 0);
        }
        process.stdout.write('bye\n');
      }
    } catch { /* the terminal is gone */ }
    process.exit(code);
  };
  quitChat = quit;
  rl.on('close', () => quit(0));
  rl.on('SIGINT', () => quit(0));
  process.on('SIGTERM', () => quit(0));
  process.on('SIGHUP', () => {
    termGone = true; // the terminal was closed: leave without a word
    quit(0);
  });

  try {
    await client.connect();
  } catch (e) {
    fail(describe(e));
  }
  rl.prompt();

  let queue = Promise.resolve(); // lines are handled in order (sends stay in order)
  rl.on('line', (line) => {
    // /quit at once, even behind a send that waits for the relay to come back.
    if (/^\/(quit|exit|q)\s*$/i.test(line.trim())) return void quit(0);
    queue = queue.then(() => handle(line)).catch((e) => fail(describe(e))).finally(() => { if (rl && !closing) rl.prompt(true); });
  });

  async function handle(raw) {
    const line = raw.replace(/\s+$/, '');
    if (!line.trim()) return;
    if (line.startsWith('/') && !line.startsWith('//')) {
      const [cmd, ...rest] = line.trim().split(/\s+/);
      const arg = rest.join(' ');
      if (GROUP_COMMANDS.has(cmd.toLowerCase())) return groups.command(cmd.toLowerCase(), rest);
      switch (cmd.toLowerCase()) {
        case '/to': return to(arg);
        case '/search': return search(arg);
        case '/share': return share(rest);
        case '/unshare': return unshare(rest);
        case '/expire': return expire(arg);
        case '/export': return exportData(arg);
        case '/rename': return rename(arg);
        case '/more': return more();
        case '/devices': return devices();
        case '/link': return link(arg);
        case '/me': case '/whoami':
          return note(`${me}, user ${client.userId}, device ${client.deviceId}, relay ${URL_}${groups.current ? `, talking in #${clean(groups.current.name)}` : peer ? `, talking to ${peer.name}` : ''}`);
        case '/help': case '/?': return out(HELP);
        case '/logout': return logout();
        case '/quit': case '/exit': case '/q': return quit(0);
        default: return fail(`unknown command ${cmd} (/help lists them)`);
      }
    }
    const text = line.startsWith('//') ? line.slice(1) : line;
    const expiresIn = expireOf(current());
    const timed = expiresIn ? `  (disappears in ${duration(expiresIn)})` : '';
    if (groups.current) return groups.send(text, expiresIn ? { expiresIn } : {}, timed);
    if (!peer) return fail('nobody to send to yet: /to NAME first (or /g NAME for a group)');
    if (lastState === 'offline') note('offline: the message goes out when the relay is back (if within 30 s)');
    try {
      const r = await client.send(peer.name, text, expiresIn ? { expiresIn } : {});
      out(`  → ${peer.name}: ${deliveries(r)} ${MARK.sent}${timed}`);
    } catch (e) {
      fail(`not sent: ${describe(e, { peer: peer.name })}`);
    }
  }

  async function logout() {
    try {
      closing = true;
      await client.logout();
      note(`logged out: the session of this device has ended (its keys stay in the store; the next run asks for the password)`);
    } catch (e) {
      closing = false;
      return fail(`logout failed: ${describe(e)}`);
    }
    closing = false;
    return quit(0);
  }

  async function to(arg) {
    const name = arg.trim().toLowerCase();
    if (!name) return fail(peer ? `talking to ${peer.name}; /to NAME to change` : 'usage: /to NAME');
    if (!NAME_RE.test(name)) return fail(`no user named ${name} (usernames are 3 to 32 characters of a-z 0-9 _ . -)`);
    try {
      const userId = await client.lookup(name);
      peer = { name, userId };
      names.set(userId, name);
      groups.clear();
      if (!presence.has(userId) && shares?.userIds.has(userId)) {
        for (const p of await client.presence([userId]).catch(() => [])) presence.set(p.userId, { online: p.online, lastSeen: p.lastSeen });
      }
      setPrompt();
      const state = presence.has(userId) ? ` (${stateLine(presence.get(userId))})` : '';
      const timer = expireOf(userId) ? `; your messages disappear ${duration(expireOf(userId))} after they are sent` : '';
      note(`talking to ${name}${state}${name === me ? ' (yourself: your other devices get it)' : ''}${timer}`);
      await showLast(userId, name);
    } catch (e) {
      fail(describe(e, { peer: name }));
    }
  }

  let shown = null; // { conversation, label, oldest }: the history shown of the conversation opened

  /** The last lines of a conversation from the history, as it is opened; they are read now. */
  async function showLast(conversation, label) {
    let lines;
    try {
      lines = await client.history(conversation, { limit: LAST_LINES });
    } catch (e) {
      return fail(describe(e));
    }
    shown = { conversation, label, oldest: lines[0]?.id ?? null };
    if (!lines.length) return;
    out(`-- the last ${lines.length === 1 ? 'line' : `${lines.length} lines`} with ${label}:`);
    for (const e of lines) out(historyLine(e));
    await client.markRead(conversation).catch(() => {});
  }

  /** The page of history before what was shown of the conversation talked in. */
  async function more() {
    const g = groups.current;
    const conversation = g ? `group:${g.groupId}` : peer?.userId;
    if (!conversation) return fail('no conversation open: /to NAME or /g NAME first');
    if (shown?.conversation !== conversation) {
      // Opened by a message that arrived, not by /to or /g: its last lines first.
      await showLast(conversation, g ? `#${clean(g.name)}` : peer.name);
      return shown?.oldest ? undefined : note(`nothing in the history with ${shown?.label ?? 'them'}`);
    }
    if (!shown.oldest) return note(`nothing earlier with ${shown.label}`);
    let lines;
    try {
      lines = await client.history(conversation, { before: shown.oldest, limit: LAST_LINES });
    } catch (e) {
      return fail(describe(e));
    }
    if (!lines.length) return note(`nothing earlier with ${shown.label}`);
    shown.oldest = lines[0].id;
    out(`-- ${lines.length === 1 ? 'the line' : `${lines.length} lines`} before, with ${shown.label}:`);
    for (const e of lines) out(historyLine(e));
  }

  function historyLine(e, where = '') {
    const body = e.text != null ? clean(e.text) : '<bytes>';
    const mark = e.outgoing ? `  ${MARK[e.status] ?? MARK.sent}` : '';
    return `[${e.sentAt && where ? dayTime(e.sentAt) : hhmm(e.sentAt)}]${where} ${e.outgoing ? 'you' : who(e.from)}: ${body}${mark}${disappears(e)}`;
  }

  /** Usernames typed → [{ name, userId }] (a line for each unknown one). */
  async function usersNamed(list) {
    const found = [];
    for (const raw of list) {
      const n = raw.toLowerCase();
      if (!NAME_RE.test(n)) {
        fail(`no user named ${clean(n)} (usernames are 3 to 32 characters of a-z 0-9 _ . -)`);
        continue;
      }
      try {
        const userId = await client.lookup(n);
        names.set(userId, n);
        found.push({ name: n, userId });
      } catch (e) {
        fail(describe(e, { peer: n }));
      }
    }
    return found;
  }

  async function share(list) {
    try {
      const s = shares ?? (await loadShares());
      if (!list.length) {
        if (!s.userIds.size) return note('you share your presence with nobody (/share NAME… to let them see when you are online)');
        const ids = [...s.userIds];
        const seen = new Map((await client.presence(ids)).map((p) => [p.userId, p]));
        const each = ids.map((id) => `${nameOf(id)} (${seen.has(id) ? stateLine(seen.get(id)) : 'not sharing back'})`);
        return note(`you share your presence with: ${each.join(', ')}`);
      }
      const users = (await usersNamed(list)).filter((u) => u.userId !== client.userId);
      if (!users.length) return;
      const stored = await client.setPresenceShares([...new Set([...s.userIds, ...users.map((u) => u.userId)])], { lastSeen: s.lastSeen });
      shares = { userIds: new Set(stored.userIds), lastSeen: stored.lastSeen };
      await keepSharedNames().catch(() => {});
      note(`sharing your presence with ${users.map((u) => u.name).join(', ')} (they see it once they share theirs with you: /share ${me})`);
      const seen = new Map((await client.presence(users.map((u) => u.userId))).map((p) => [p.userId, p]));
      for (const u of users) {
        if (seen.has(u.userId)) showPresence(seen.get(u.userId));
        else note(`${u.name} does not share theirs with you (yet): no presence until they /share ${me}`);
      }
    } catch (e) {
      fail(`presence: ${describe(e)}`);
    }
  }

  async function unshare(list) {
    if (!list.length) return fail('usage: /unshare NAME… (they no longer see when you are online, nor you theirs)');
    try {
      const s = shares ?? (await loadShares());
      const users = await usersNamed(list);
      const drop = new Set(users.map((u) => u.userId));
      const stored = await client.setPresenceShares([...s.userIds].filter((id) => !drop.has(id)), { lastSeen: s.lastSeen });
      shares = { userIds: new Set(stored.userIds), lastSeen: stored.lastSeen };
      await keepSharedNames().catch(() => {});
      for (const id of drop) presence.delete(id);
      setPrompt();
      if (users.length) note(`no longer sharing your presence with ${users.map((u) => u.name).join(', ')}`);
    } catch (e) {
      fail(`presence: ${describe(e)}`);
    }
  }

  function expire(arg) {
    const conversation = current();
    const label = groups.current ? `#${clean(groups.current.name)}` : peer?.name;
    if (!conversation) return fail('no conversation open: /to NAME or /g NAME first');
    const a = arg.trim().toLowerCase();
    if (!a) {
      const t = expireOf(conversation);
      return note(t ? `your messages to ${label} disappear ${duration(t)} after they are sent (/expire off to stop)` : `your messages to ${label} do not disappear (/expire SECONDS to make them)`);
    }
    if (a === 'off' || a === '0') {
      expiry.delete(conversation);
      setPrompt();
      return note(`messages to ${label} no longer disappear`);
    }
    const sec = parseDuration(a);
    if (sec === null) return fail('usage: /expire SECONDS|off (or 10m, 2h, 1d)');
    if (sec < 5) return fail('/expire: at least 5 seconds');
    expiry.set(conversation, sec);
    setPrompt();
    note(`the messages you send to ${label} from now on disappear ${duration(sec)} after they are sent (/expire off to stop)`);
  }

  async function exportData(arg) {
    const file = arg.trim();
    if (!file) return fail('usage: /export FILE (everything the relay keeps about your account, as JSON)');
    const path = resolve(file);
    let data;
    try {
      data = await client.exportAccount();
    } catch (e) {
      return fail(`export: ${describe(e)}`);
    }
    const text = JSON.stringify(data, null, 2) + '\n';
    try {
      // Personal data: readable by this user only, and never over an existing file.
      await writeFile(path, text, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      return fail(e?.code === 'EEXIST' ? `${clean(path)} exists: pick another FILE` : `cannot write ${clean(path)}: ${firstLine(e?.message)}`);
    }
    const n = (k) => (Array.isArray(data?.[k]) ? data[k].length : 0);
    note(`wrote ${clean(path)} (${Buffer.byteLength(text)} bytes): ${n('devices')} device(s), ${n('sessions')} session(s), ${n('groups')} group(s), the keys' ids and your inboxes' sizes`);
  }

  async function rename(arg) {
    const name = arg.trim().toLowerCase();
    if (!name) return fail('usage: /rename NEW (your new username)');
    if (!NAME_RE.test(name)) return fail(`${clean(name)} is not a username (3 to 32 characters of a-z 0-9 _ . -)`);
    try {
      const old = me;
      const r = await client.changeUsername(name);
      me = r.username;
      setPrompt();
      note(`you are ${me} now (was ${old}); log in as ${me} from now on. This profile stays where it is: ./local/chat ${o.name} opens it`);
    } catch (e) {
      if (e?.status === 403) return fail('only the primary device (device 1) can rename the account');
      fail(`not renamed: ${describe(e, { username: name })}`);
    }
  }

  async function search(arg) {
    if (!arg.trim()) return fail('usage: /search WORD… (the messages kept on this device holding every WORD)');
    let hits;
    try {
      hits = await client.search(arg);
    } catch (e) {
      return fail(describe(e));
    }
    if (!client.historyPersistent && !hits.length) return note(`nothing found for ${clean(arg)} (the history is closed this run: only this run's messages are searched)`);
    if (!hits.length) return note(`nothing found for ${clean(arg)}`);
    note(`${hits.length} message${hits.length === 1 ? '' : 's'} with ${clean(arg)}:`);
    for (const e of hits) {
      const where = e.groupId ? groups.label(e.groupId) : `@${clean(e.with ?? e.conversation.slice(0, 8))}`;
      out('  ' + historyLine(e, ` ${where}`));
    }
  }

  async function devices() {
    try {
      const list = await client.devices();
      for (const d of list) {
        const id = d.id ?? d.deviceId ?? d.device_id;
        const created = d.createdAt ?? d.created_at;
        const when = created ? new Date(created) : null;
        const at = when && !Number.isNaN(when.getTime()) ? ` linked ${when.toISOString().slice(0, 16).replace('T', ' ')} UTC` : '';
        out(`  device ${id}${id === 1 ? ' (primary)' : ''}${at}${id === client.deviceId ? '  ← this one' : ''}`);
      }
    } catch (e) {
      fail(describe(e));
    }
  }

  async function link(arg) {
    const s = arg.trim();
    if (!s) return fail('usage: /link STRING (the string `./local/chat NAME --link` printed)');
    try {
      note('sending the account to the new device…');
      const r = await client.linkDevice(s);
      const id = r?.deviceId ?? r?.device_id ?? r?.id ?? (typeof r === 'number' ? r : null);
      if (id) note(`linked device ${id}`);
      else note('sent the account to the new device, but it has not linked itself yet (/devices lists the devices)');
    } catch (e) {
      fail(`linking failed: ${describe(e)}`);
    }
  }
}

function deliveries(r) {
  const list = [...(r?.deliveries ?? [])];
  if (!list.length) return 'sent';
  if (list.length === 1) return String(list[0].delivery);
  list.sort((a, b) => a.deviceId - b.deviceId);
  return list.map((d) => `device ${d.deviceId} ${d.delivery}`).join(', ');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const o = parseArgs(process.argv.slice(2));
  URL_ = o.url;
  const dir = join(process.env.RELAY_CHAT_DIR || join(REPO, '.local', 'chat'), o.name);
  const store = new FileStore(dir);
  let client;
  try {
    // The lock first: a chat that has the account open already is said before any question.
    if (!o.link) await store.acquire();
    client = o.link ? await linkAccount(o, store, dir) : await openAccount(o, store, dir);
    if (o.link) {
      if (process.env.RELAY_CHAT_PASSWORD) await client.openHistory({ password: process.env.RELAY_CHAT_PASSWORD }).catch(() => {});
    } else await unlockHistory(client, o, dir);
  } catch (e) {
    if (e?.code === 'store_in_use' && !(e instanceof Exit)) {
      throw new Exit(`${o.name} is open in another chat (${e.lock ?? join(dir, 'lock')}); quit that one first`);
    }
    throw e;
  }
  await chat(o, client, dir);
}

let started = false;
let quitChat = null; // the chat's quit(), once it runs

// A closed terminal (EIO, EPIPE): nothing can be written any more; leave at once.
function terminalGone() {
  termGone = true;
  if (quitChat) quitChat(0);
  else process.exit(1);
}
const isTerminalError = (e) => ['EIO', 'EPIPE', 'ENXIO', 'EBADF', 'ERR_STREAM_DESTROYED'].includes(e?.code);
process.stdout.on('error', terminalGone);
process.stdin.on('error', terminalGone);

process.on('unhandledRejection', (e) => {
  if (termGone || isTerminalError(e)) return terminalGone();
  if (!started) { process.stderr.write(`chat: ${describe(e)}\n`); process.exit(1); }
  fail(describe(e));
});
process.on('uncaughtException', (e) => {
  if (termGone || isTerminalError(e)) return terminalGone();
  if (!started) { process.stderr.write(`chat: ${describe(e)}\n`); process.exit(1); }
  fail(describe(e));
});

main().catch((e) => {
  if (e instanceof Exit) {
    (e.exitCode === 0 ? process.stdout : process.stderr).write(`${e.exitCode === 0 ? '' : 'chat: '}${e.message}\n`);
    process.exit(e.exitCode);
  }
  process.stderr.write(`chat: ${describe(e)}\n`);
  process.exit(1);
});
