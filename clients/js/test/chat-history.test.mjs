// The chat's receipts and history driven in tmux (tmux.mjs) against a fresh stack: ✓ when the
// relay took a message, ✓✓ when the recipient's device got it, ✓✓ read once its conversation is
// on the recipient's screen; the last lines of a conversation shown when it is opened (after a
// restart too, the history opened with the password); /search; the history file holds no word.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, REPO_ROOT } from './stack.mjs';
import { useTerminals, closeTerminals, open, type, screen, mark, waitFor, assertNoTrace } from './tmux.mjs';
import { RelayClient, MemoryStore } from '../src/index.mjs';

const CHAT = join(REPO_ROOT, 'local/chat');
const PASSWORD = 'correct horse battery';
const FAST_ARGON2 = { ARGON2_M_KIB: '4096', ARGON2_T: '1' };
let stack;
let chatDir;
let carol;

const chat = (name, password = PASSWORD) => `${password ? `RELAY_CHAT_PASSWORD='${password}' ` : ''}${CHAT} ${name} --url ${stack.url}`;

before(async () => {
  stack = await startStack({ env: FAST_ARGON2 });
  chatDir = mkdtempSync(join(tmpdir(), 'relay-chat-history-'));
  useTerminals(chatDir);
  // Someone else for bob to talk to (a library client).
  carol = await RelayClient.open({ url: stack.url, store: new MemoryStore(), username: 'carol', password: PASSWORD });
  await carol.connect();
});

after(async () => {
  await closeTerminals(['alice', 'bob']);
  await carol?.close();
  await stack?.stop();
  if (chatDir) rmSync(chatDir, { recursive: true, force: true });
});

/** The index of the first match of `re` in `s` (-1 when none). */
const at = (s, re) => s.search(re);

test('✓ sent, ✓✓ delivered, then read once the conversation is on the recipient\'s screen', async () => {
  open('alice');
  open('bob');
  type('alice', chat('alice'));
  type('bob', chat('bob'));
  await waitFor('alice', /-- online/);
  await waitFor('bob', /-- online/);
  // Bob looks at another conversation.
  type('bob', '/to carol');
  await waitFor('bob', /-- talking to carol/);

  const since = mark('alice');
  type('alice', '/to bob');
  await waitFor('alice', /-- talking to bob/);
  type('alice', 'hello bob, are receipts working?');
  await waitFor('alice', /→ bob: delivered ✓$/m, { since });
  await waitFor('bob', /\[\d\d:\d\d\] alice: hello bob, are receipts working\?/);
  await waitFor('alice', /^ {2}✓✓ delivered to bob: hello bob, are receipts working\?$/m, { since });
  // Not read while bob's screen shows carol's conversation.
  type('bob', '/me');
  await waitFor('bob', /talking to carol/, { count: 2 });
  assert.doesNotMatch(screen('alice'), /read by bob/);

  type('bob', '/to alice');
  await waitFor('bob', /-- the last line with alice:\n\[\d\d:\d\d\] alice: hello bob, are receipts working\?$/m);
  const s = await waitFor('alice', /^ {2}✓✓ read by bob: hello bob, are receipts working\?$/m, { since });
  assert.ok(at(s, /delivered ✓$/m) < at(s, /✓✓ delivered to bob/m) && at(s, /✓✓ delivered to bob/m) < at(s, /✓✓ read by bob/m), s);

  // A line that arrives in the conversation on screen is read at once.
  type('alice', 'second line');
  await waitFor('bob', /alice: second line/);
  await waitFor('alice', /✓✓ read by bob: second line/, { since });
  type('bob', 'got both');
  await waitFor('bob', /→ alice: delivered ✓$/m);
  await waitFor('alice', /bob: got both/);
  await waitFor('bob', /✓✓ read by alice: got both/);
  assertNoTrace('alice');
  assertNoTrace('bob');
});

test('reopened: the history asks for the password, shows the last lines with their marks; /search', async () => {
  let since = mark('bob');
  type('bob', '/quit');
  await waitFor('bob', /^bye$/m, { since });
  await waitFor('bob', /^\$ $/m, { since });

  // At rest: no word of the conversation in any file of bob's store.
  const file = readFileSync(join(chatDir, 'bob', 'history.enc'), 'latin1');
  for (const w of ['receipts', 'second line', 'got both']) assert.ok(!file.includes(w), `history.enc holds "${w}"`);

  since = mark('bob');
  type('bob', chat('bob', null));
  await waitFor('bob', /password of bob \(opens the history kept on this device; Enter: not now\): $/m, { since });
  type('bob', 'not the password');
  await waitFor('bob', /that password does not open it/, { since });
  type('bob', PASSWORD);
  let s = await waitFor('bob', /-- online/, { since });
  assert.doesNotMatch(s, /not the password|correct horse/, 'the password is not echoed');

  type('bob', '/to alice');
  s = await waitFor('bob', /-- the last 3 lines with alice:/, { since });
  s = await waitFor('bob', /you: got both {2}✓✓ read$/m, { since });
  assert.match(s, /^\[\d\d:\d\d\] alice: hello bob, are receipts working\?$/m);
  assert.match(s, /^\[\d\d:\d\d\] alice: second line$/m);

  since = mark('bob');
  type('bob', '/search RECEIPTS');
  s = await waitFor('bob', /-- 1 message with RECEIPTS:/, { since });
  await waitFor('bob', /^ {2}\[\d{4}-\d\d-\d\d \d\d:\d\d\] @alice alice: hello bob, are receipts working\?$/m, { since });
  type('bob', '/search got both');
  await waitFor('bob', /^ {2}\[\d{4}-\d\d-\d\d \d\d:\d\d\] @alice you: got both {2}✓✓ read$/m, { since });
  type('bob', '/search zeppelin');
  await waitFor('bob', /-- nothing found for zeppelin/, { since });

  // Alice's side: her outgoing lines with their marks when she opens the conversation again.
  since = mark('alice');
  type('alice', '/to bob');
  await waitFor('alice', /you: hello bob, are receipts working\? {2}✓✓ read$/m, { since });
  assertNoTrace('bob');
});

test('groups: ✓✓ per member and read marks, the group\'s last lines when opened', async () => {
  let since = mark('alice');
  type('alice', '/group new crew bob');
  await waitFor('alice', /talking in it/, { since });
  await waitFor('bob', /alice invited you to #crew/);
  type('bob', '/join crew');
  await waitFor('bob', /-- joined #crew; talking in it/);
  type('alice', 'crew meeting at nine');
  await waitFor('alice', /→ #crew: 1 delivered ✓$/m, { since });
  await waitFor('alice', /✓✓ read by bob in #crew: crew meeting at nine/, { since });
  type('bob', '/to alice');
  await waitFor('bob', /-- talking to alice/);
  since = mark('bob');
  type('bob', '/g crew');
  await waitFor('bob', /-- the last line with #crew:\n\[\d\d:\d\d\] alice: crew meeting at nine$/m, { since });
  type('bob', '/search nine');
  await waitFor('bob', /^ {2}\[\d{4}-\d\d-\d\d \d\d:\d\d\] #crew alice: crew meeting at nine$/m, { since });
  assertNoTrace('alice');
  assertNoTrace('bob');
});

test('/more pages back through the history of the conversation', async () => {
  let since = mark('alice');
  type('alice', '/to bob');
  await waitFor('alice', /-- talking to bob/, { since });
  for (let i = 0; i < 12; i++) type('alice', `page line ${i}`);
  await waitFor('alice', /→ bob: delivered ✓$/m, { since, count: 12 });
  await waitFor('bob', /alice: page line 11$/m);
  type('bob', '/to carol');
  await waitFor('bob', /-- talking to carol/, { count: 2 });
  since = mark('bob');
  type('bob', '/to alice');
  // The last ten lines with alice: page lines 2 to 11.
  let s = await waitFor('bob', /-- the last 10 lines with alice:\n(\[\d\d:\d\d\] alice: page line \d+\n){10}/, { since });
  assert.match(s, /alice: page line 2\n/);
  assert.doesNotMatch(s, /alice: page line 1\n/);
  since = mark('bob');
  type('bob', '/more');
  s = await waitFor('bob', /-- 5 lines before, with alice:\n/, { since });
  s = await waitFor('bob', /\[\d\d:\d\d\] alice: page line 1$/m, { since });
  assert.match(s, /alice: hello bob, are receipts working\?\n(.*\n){2}.*alice: page line 0\n.*alice: page line 1$/m);
  type('bob', '/more');
  await waitFor('bob', /-- nothing earlier with alice/, { since });
  assertNoTrace('bob');
});
