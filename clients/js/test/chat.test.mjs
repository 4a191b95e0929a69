// The terminal chat (./local/chat) driven like a person would: real chats in tmux panes against a
// fresh local stack (stack.mjs), keys typed with `send-keys`, the screen read with `capture-pane`.
// A tmux server of its own (tmux.mjs), killed at the end.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startStack, freePort, REPO_ROOT } from './stack.mjs';
import { login } from './util.mjs';
import { useTerminals, closeTerminals, tmux, open, type, screen, mark, waitFor, panePids, waitGone, assertNoTrace } from './tmux.mjs';
import { RelayClient, FileStore, MemoryStore, RelayUser, call } from '../src/index.mjs';

const CHAT = join(REPO_ROOT, 'local/chat');
const PASSWORD = 'correct horse battery';
// Passwords hashed at the Rust harness' test cost: registrations and logins stay quick.
const FAST_ARGON2 = { ARGON2_M_KIB: '4096', ARGON2_T: '1' };
let stack;
let chatDir;

const chat = (name, args = '', password = PASSWORD) =>
  `${password ? `RELAY_CHAT_PASSWORD='${password}' ` : ''}${CHAT} ${name} --url ${stack.url}${args ? ' ' + args : ''}`;

before(async () => {
  // Strict bundles (BUNDLE_WITHOUT_ONE_TIME unset): a recipient without one-time prekeys is a 412.
  stack = await startStack({ env: { ...FAST_ARGON2, BUNDLE_WITHOUT_ONE_TIME: null } });
  chatDir = mkdtempSync(join(tmpdir(), 'relay-chat-'));
  useTerminals(chatDir);
});

after(async () => {
  await closeTerminals(['alice', 'bob', 'alice2']);
  await stack?.stop();
  if (chatDir) rmSync(chatDir, { recursive: true, force: true });
});

test('Alice writes, Bob sees the plaintext (both register on their first run)', async () => {
  open('alice');
  open('bob');
  type('alice', chat('alice'));
  type('bob', chat('bob'));
  await waitFor('alice', /-- online/);
  await waitFor('bob', /-- online/);
  const s = screen('alice');
  assert.match(s, /registered alice/);
  assert.doesNotMatch(s, new RegExp(PASSWORD + '(?!\')'), 'the password is never printed');

  // The state is a FileStore in RELAY_CHAT_DIR/NAME, kept private.
  const dir = join(chatDir, 'alice');
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  for (const f of readdirSync(dir)) {
    if (statSync(join(dir, f)).isFile()) assert.equal(statSync(join(dir, f)).mode & 0o077, 0, `${f} is private`);
  }

  type('alice', '/to bob');
  await waitFor('alice', /-- talking to bob/);
  type('alice', 'hello Bob, this is Alice');
  await waitFor('alice', /→ bob: delivered/);
  await waitFor('bob', /\[\d\d:\d\d\] alice: hello Bob, this is Alice/);

  // Bob had no peer: the first incoming message selects its sender; he answers.
  await waitFor('bob', /-- talking to alice/);
  type('bob', 'hi Alice, got it');
  await waitFor('bob', /→ alice: delivered/);
  await waitFor('alice', /\[\d\d:\d\d\] bob: hi Alice, got it/);
  assertNoTrace('alice');
  assertNoTrace('bob');
});

test('Bob quits, Alice writes (queued), Bob starts again and sees it', async () => {
  let since = mark('bob');
  type('bob', '/quit');
  await waitFor('bob', /^bye$/m, { since });
  await waitFor('bob', /^\$ $/m, { since });
  type('alice', 'are you there? (sent while you were away)');
  await waitFor('alice', /→ bob: queued/);

  // The second run reopens the stored account with its session; the password only opens the
  // history kept on the device (encrypted with it).
  since = mark('bob');
  type('bob', chat('bob', '', null));
  await waitFor('bob', /password of bob \(opens the history kept on this device; Enter: not now\): $/m, { since });
  type('bob', PASSWORD);
  await waitFor('bob', /\[\d\d:\d\d\] alice: are you there\? \(sent while you were away\)/, { since });
  const s = await waitFor('bob', /-- online/, { since });
  assert.doesNotMatch(s, /registered bob/, 'the second run does not register again');
  assert.doesNotMatch(s, new RegExp(PASSWORD), 'the password is not echoed');
  // Once only.
  await sleep(1000);
  assert.equal(screen('bob').split('alice: are you there?').length - 1, 1);
  assertNoTrace('bob');
});

test('an unknown user in /to shows a clear error', async () => {
  type('alice', '/to nobody_here');
  await waitFor('alice', /!! no user named nobody_here/);
  // The peer is unchanged: the next line still goes to Bob.
  type('alice', 'still talking to you');
  await waitFor('bob', /alice: still talking to you/);
  type('alice', '/to x');
  await waitFor('alice', /!! no user named x /);
  type('alice', '/frobnicate');
  await waitFor('alice', /!! unknown command \/frobnicate/);
  type('alice', '/help');
  await waitFor('alice', /\/to NAME +talk to NAME/);
  assertNoTrace('alice');
});

test('a second device: --link prints a link string, /link on the primary; both devices get messages', async () => {
  open('alice2');
  type('alice2', chat('alice2', '--link', null));
  const s = await waitFor('alice2', /^ {2}\/link (\S+)$/m);
  const linkString = /^ {2}\/link (\S+)$/m.exec(s)[1];
  type('alice', `/link ${linkString}`);
  await waitFor('alice', /^-- linked device 2$/m);
  await waitFor('alice2', /-- linked: this is device 2 of alice/);
  await waitFor('alice2', /-- online/);

  type('alice', '/devices');
  await waitFor('alice', /device 1 \(primary\).*← this one/);
  await waitFor('alice', /device 2/);

  // Bob's session covers device 1 only: his send finds device 2 and reaches both.
  type('bob', 'to both of your devices');
  await waitFor('bob', /→ alice: device 1 delivered, device 2 delivered/);
  await waitFor('alice', /bob: to both of your devices/);
  await waitFor('alice2', /bob: to both of your devices/);

  // The new device writes to Bob; the primary sees the sync copy.
  type('alice2', '/to bob');
  await waitFor('alice2', /-- talking to bob/);
  type('alice2', 'from my second device');
  await waitFor('bob', /alice: from my second device/);
  await waitFor('alice', /\[\d\d:\d\d\] you → bob: from my second device/);
  assertNoTrace('alice');
  assertNoTrace('alice2');
});

test('the chat shows when it goes offline and online again; messages flow after', async () => {
  await stack.down();
  await waitFor('alice', /-- offline: cannot reach the relay at http:\/\/127\.0\.0\.1:\d+; reconnecting/, { timeoutMs: 60_000 });
  await waitFor('bob', /-- offline/, { timeoutMs: 60_000 });
  await stack.up();
  await waitFor('alice', /-- online again/, { timeoutMs: 90_000 });
  await waitFor('bob', /-- online again/, { timeoutMs: 90_000 });
  type('alice', 'back after the restart');
  await waitFor('bob', /alice: back after the restart/, { timeoutMs: 60_000 });
  assertNoTrace('alice');
  assertNoTrace('bob');
});

test('a taken username on a first run gives a clear error, not a trace', async () => {
  const since = mark('bob');
  type('bob', '/quit');
  await waitFor('bob', /^bye$/m, { since });
  await waitFor('bob', /^\$ $/m, { since });
  type('bob', `RELAY_CHAT_DIR=${chatDir}/other ${chat('alice')}`);
  await waitFor('bob', /chat: the username alice is taken, and its keys are not in .*other\/alice; if the account is yours, link this terminal/, { since });
  await waitFor('bob', /^\$ $/m, { since });
  type('bob', 'echo "exit=$?"');
  await waitFor('bob', /^exit=1$/m, { since });
  assertNoTrace('bob');
});

test('a second chat with the same NAME says the first one has it open, and exits non-zero', async () => {
  const since = mark('bob');
  type('bob', chat('alice', '', null)); // alice's chat runs in the pane 'alice'
  await waitFor('bob', `chat: alice is open in another chat (${join(chatDir, 'alice', 'lock')}); quit that one first`, { since });
  await waitFor('bob', /^\$ $/m, { since });
  type('bob', 'echo "exit=$?"');
  await waitFor('bob', /^exit=1$/m, { since });
  assertNoTrace('bob');
  // The first chat is untouched.
  type('alice', '/me');
  await waitFor('alice', /-- alice, user [0-9a-f-]{36}, device 1/);
});

test('a chat against a stopped server shows the "cannot reach" message', async () => {
  const port = await freePort(); // nothing listens there
  let since = mark('bob');
  type('bob', `RELAY_CHAT_PASSWORD='${PASSWORD}' ${CHAT} carol --url http://127.0.0.1:${port}`);
  await waitFor('bob', `chat: cannot reach the relay at http://127.0.0.1:${port} — is ./local/up running?`, { since });
  await waitFor('bob', /^\$ $/m, { since });
  type('bob', 'echo "exit=$?"');
  await waitFor('bob', /^exit=1$/m, { since });
  // The stored account, its relay gone: the same message.
  since = mark('bob');
  type('bob', `${CHAT} bob --url http://127.0.0.1:${port}`);
  await waitFor('bob', `chat: cannot reach the relay at http://127.0.0.1:${port} — is ./local/up running?`, { since });
  assertNoTrace('bob');
});

test('a first run without RELAY_CHAT_PASSWORD asks for the password, without echoing it', async () => {
  const since = mark('bob');
  type('bob', `${CHAT} erin --url ${stack.url}`);
  await waitFor('bob', /new password for erin \(8 to 128 characters\): $/m, { since });
  type('bob', 'short');
  await waitFor('bob', /the password must be 8 to 128 characters/, { since });
  await waitFor('bob', /new password for erin/, { since, count: 2 });
  type('bob', 'erin-Secret-pw');
  await waitFor('bob', /^again: $/m, { since });
  type('bob', 'erin-Secret-pw');
  const s = await waitFor('bob', /-- online/, { since });
  assert.match(s, /-- registered erin/);
  assert.doesNotMatch(s, /erin-Secret-pw|short/, 'the password is not echoed');
});

test('/logout ends the session: the next run asks for the password, a wrong one is refused clearly', async () => {
  let since = mark('bob');
  type('bob', '/logout');
  await waitFor('bob', /-- logged out/, { since });
  await waitFor('bob', /^bye$/m, { since });
  await waitFor('bob', /^\$ $/m, { since });

  since = mark('bob');
  type('bob', `${CHAT} erin --url ${stack.url}`);
  await waitFor('bob', /the stored session of erin has ended/, { since });
  await waitFor('bob', /^password: $/m, { since });
  type('bob', 'not-the-password');
  await waitFor('bob', /chat: wrong password for the account in \S+\/erin/, { since });
  await waitFor('bob', /^\$ $/m, { since });


  since = mark('bob');
  type('bob', `${CHAT} erin --url ${stack.url}`);
  await waitFor('bob', /^password: $/m, { since });
  type('bob', 'erin-Secret-pw');
  const s = await waitFor('bob', /-- online/, { since });
  assert.doesNotMatch(s, /erin-Secret-pw|not-the-password/);
  type('bob', '/quit');
  await waitFor('bob', /^bye$/m, { since });
  await waitFor('bob', /^\$ $/m, { since });
  assertNoTrace('bob');
});

test('an account the relay no longer knows (its data reset): a clear message, no password prompt', async () => {
  // gina registered (through the library, the chat's own store format), then deleted on the relay.
  const dir = join(chatDir, 'gina');
  const gina = await RelayClient.open({ url: stack.url, store: new FileStore(dir), username: 'gina', password: PASSWORD });
  await call('DELETE', '/v1/users/me', { url: stack.url, token: await login(stack.url, 'gina', PASSWORD) });
  await gina.close();
  const since = mark('bob');
  type('bob', `${CHAT} gina --url ${stack.url}`);
  const s = await waitFor('bob', `chat: the account gina in ${dir} is not known to the relay at ${stack.url} (was its data reset?); remove ${dir} to start again`, { since });
  assert.doesNotMatch(s, /password/i);
  await waitFor('bob', /^\$ $/m, { since });
  type('bob', 'echo "exit=$?"');
  await waitFor('bob', /^exit=1$/m, { since });
  assertNoTrace('bob');
});

test('rate limited: the chat says when to retry', async () => {
  // A stack of its own with a budget of one username lookup per hour.
  const limited = await startStack({ env: { ...FAST_ARGON2, RATE_LIMIT_LOOKUP: '1/3600' } });
  try {
    const dir = `${chatDir}/limited`;
    const since = mark('bob');
    type('bob', `RELAY_CHAT_DIR=${dir} RELAY_CHAT_PASSWORD='${PASSWORD}' ${CHAT} dave --url ${limited.url}`);
    await waitFor('bob', /-- online/, { since });
    type('bob', '/to nobody_one');
    await waitFor('bob', /!! no user named nobody_one/, { since });
    type('bob', '/to nobody_two');
    const s = await waitFor('bob', /!! rate limited by the relay: retry in \d+ s/, { since });
    const n = Number(/retry in (\d+) s/.exec(s)[1]);
    assert.ok(n > 60 && n <= 3600, `retry in ${n} s`);
    type('bob', '/quit');
    await waitFor('bob', /^bye$/m, { since });
    await waitFor('bob', /^\$ $/m, { since });
    assertNoTrace('bob');
  } finally {
    await limited.stop();
  }
});

test('a recipient whose one-time prekeys are used up: a clear line, not a trace', async () => {
  // hank registers with one one-time prekey and is not running; someone takes it.
  const hank = await RelayClient.open({ url: stack.url, store: new MemoryStore(), username: 'hank', password: PASSWORD, refill: { oneTime: 1, kyber: 1 } });
  await hank.close();
  const taker = await RelayUser.create('taker', { url: stack.url, oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });
  await taker.fetchBundle(hank.userId);
  await taker.dispose();
  const since = mark('alice');
  type('alice', '/to hank');
  await waitFor('alice', /-- talking to hank/, { since });
  type('alice', 'are you there?');
  await waitFor('alice', '!! not sent: hank has no prekeys left: they must come online once (their client refills them), then try again', { since });
  type('alice', '/to bob');
  await waitFor('alice', /-- talking to bob/, { since });
  assertNoTrace('alice');
});

test('closing the terminal ends the chat (no process left behind)', async () => {
  const pids = panePids('alice2');
  assert.equal(pids.length, 1, 'the linked chat runs in alice2');
  tmux('kill-session', '-t', 'alice2');
  assert.deepEqual(await waitGone(pids), [], 'the chat exits when its terminal closes');
  // And a chat whose terminal stays open ends on SIGTERM.
  const [alice] = panePids('alice');
  const since = mark('alice');
  process.kill(alice, 'SIGTERM');
  await waitFor('alice', /^bye$/m, { since });
  assert.deepEqual(await waitGone([alice]), []);
});
