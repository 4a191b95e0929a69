// The chat's group commands driven like a person would (tmux, tmux.mjs) against a fresh stack:
// /group new, the invitation line, /invites, /join, lines in the group, /members, /kick (the
// removed member reads nothing more and cannot send), /leave.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, REPO_ROOT } from './stack.mjs';
import { useTerminals, closeTerminals, open, type, screen, mark, waitFor, assertNoTrace } from './tmux.mjs';

const CHAT = join(REPO_ROOT, 'local/chat');
const PASSWORD = 'correct horse battery';
const FAST_ARGON2 = { ARGON2_M_KIB: '4096', ARGON2_T: '1' };
let stack;
let chatDir;

const chat = (name) => `RELAY_CHAT_PASSWORD='${PASSWORD}' ${CHAT} ${name} --url ${stack.url}`;

before(async () => {
  stack = await startStack({ env: FAST_ARGON2 });
  chatDir = mkdtempSync(join(tmpdir(), 'relay-chat-groups-'));
  useTerminals(chatDir);
});

after(async () => {
  await closeTerminals(['alice', 'bob', 'carol']);
  await stack?.stop();
  if (chatDir) rmSync(chatDir, { recursive: true, force: true });
});

const LINE = (group, who, text) => new RegExp(`\\[\\d\\d:\\d\\d\\] #${group} ${who}: ${text}`);

test('/group new invites; the invitee sees the invitation, /invites, /join; lines in the group reach the members', async () => {
  for (const n of ['alice', 'bob', 'carol']) {
    open(n);
    type(n, chat(n));
  }
  for (const n of ['alice', 'bob', 'carol']) await waitFor(n, /-- online/);

  type('alice', '/group new crew bob carol');
  await waitFor('alice', '-- made the group #crew, invited bob, carol (they type /join crew); talking in it');
  await waitFor('alice', /\(alice\) #crew> /);
  await waitFor('bob', '-- alice invited you to #crew (/join crew)');
  await waitFor('carol', '-- alice invited you to #crew (/join crew)');

  type('bob', '/invites');
  await waitFor('bob', /^ {2}#crew {2}\(\/join crew\)$/m);
  type('bob', '/g crew');
  await waitFor('bob', '!! you are invited to #crew: /join crew first');
  type('bob', '/join crew');
  await waitFor('bob', '-- joined #crew; talking in it');

  type('alice', 'hello crew');
  await waitFor('alice', /→ #crew: 1 delivered/);
  await waitFor('bob', LINE('crew', 'alice', 'hello crew'));

  type('carol', '/join crew');
  await waitFor('carol', '-- joined #crew; talking in it');
  type('bob', 'hi all');
  await waitFor('bob', /→ #crew: 2 delivered/);
  await waitFor('alice', LINE('crew', 'bob', 'hi all'));
  await waitFor('carol', LINE('crew', 'bob', 'hi all'));
  // Carol joined after Alice's line: she never had it.
  assert.doesNotMatch(screen('carol'), /hello crew/);

  type('alice', '/members');
  await waitFor('alice', /^ {2}alice \(you\) \[admin\]$/m);
  await waitFor('alice', /^ {2}bob$/m);
  await waitFor('alice', /^ {2}carol$/m);
  for (const n of ['alice', 'bob', 'carol']) assertNoTrace(n);
});

test('/kick: the removed member reads nothing more and cannot send; /leave', async () => {
  type('bob', '/kick carol');
  await waitFor('bob', '!! only an admin of #crew can remove members');
  type('alice', '/kick carol');
  await waitFor('alice', '-- removed carol from #crew');

  type('alice', 'carol has gone');
  await waitFor('bob', LINE('crew', 'alice', 'carol has gone'));
  // A 1:1 line after it: Carol's chat prints what arrives in order, so once the marker shows,
  // a group line sent before it would show too.
  type('alice', '/to carol');
  await waitFor('alice', '-- talking to carol');
  type('alice', 'a marker for carol');
  await waitFor('carol', /\[\d\d:\d\d\] alice: a marker for carol/);
  assert.doesNotMatch(screen('carol'), /carol has gone/);

  const since = mark('carol');
  type('carol', 'let me back in');
  await waitFor('carol', '!! not sent: you are no longer a member of #crew', { since });
  type('carol', '/g crew');
  await waitFor('carol', '!! no group named crew', { since });

  type('bob', '/leave');
  await waitFor('bob', '-- you left #crew');
  await waitFor('bob', /\(bob\)> /);
  type('alice', '/g crew');
  await waitFor('alice', '-- talking in #crew');
  type('alice', 'anyone?');
  await waitFor('alice', '→ #crew: sent (no other member device yet)');
  type('alice', '/members');
  await waitFor('alice', /^ {2}alice \(you\) \[admin\]$/m, { count: 2 });
  for (const n of ['alice', 'bob', 'carol']) assertNoTrace(n);
});
