// The group commands of the terminal chat (chat.mjs): /group new, /g, /invites, /join, /members,
// /kick, /leave, and the group lines it prints. A group's NAME is what its creator typed: it
// travels sealed in the group's meta (the library seals it with a key only members get), so the
// relay never sees it; the chat finds a group by the name its meta opens to.

/** The commands groupCommands().command() takes. */
export const GROUP_COMMANDS = new Set(['/group', '/g', '/invites', '/join', '/members', '/kick', '/leave']);

/**
 * The group half of one chat. `ui` gives what the chat prints with (out, note, fail, clean, hhmm,
 * describe) and `select(group)` makes { groupId, name } (or null) the group lines go to.
 */
export function groupCommands(client, ui, select) {
  const { out, note, fail, clean, hhmm, describe, disappears = () => '' } = ui;
  const names = new Map(); // group id → the name its meta holds (null: none this device can open)
  let printing = Promise.resolve(); // lines that wait for a name stay in arrival order
  let current = null;

  const label = (g) => `#${clean(g.name)}`;
  const short = (id) => String(id).slice(0, 8);

  /** Selects a group; `opened` (by /g or /join): its last lines are shown from the history. */
  function setCurrent(g) {
    current = g && { groupId: g.groupId, name: g.name, state: g.state };
    return select(g);
  }

  /** The name of a group (its meta opened), cached; `#1a2b3c4d` (the id's start) when unknown. */
  async function nameOf(groupId, { fresh = false } = {}) {
    if (!fresh && names.get(groupId)) return names.get(groupId);
    try {
      const g = await client.group(groupId);
      const n = typeof g.meta?.name === 'string' && g.meta.name ? g.meta.name : null;
      names.set(groupId, n);
      return n ?? short(groupId);
    } catch {
      return names.get(groupId) ?? short(groupId);
    }
  }

  /** This account's group named `name` (in state `state` when given), or null. */
  async function find(name, state) {
    const list = await client.groups();
    for (const g of list) {
      if (state && g.state !== state) continue;
      const n = await nameOf(g.groupId);
      if (n === name || g.groupId === name || short(g.groupId) === name) return { groupId: g.groupId, name: n, state: g.state };
    }
    return null;
  }

  async function create(args) {
    const [name, ...users] = args;
    if (!name) return fail('usage: /group new NAME USER… (NAME is yours to pick: the relay never sees it)');
    try {
      const g = await client.createGroup(users, { name });
      names.set(g.groupId, name);
      setCurrent({ groupId: g.groupId, name });
      const invited = users.length ? `, invited ${users.map((u) => clean(u.toLowerCase())).join(', ')} (they type /join ${name})` : '';
      note(`made the group ${label({ name })}${invited}; talking in it`);
    } catch (e) {
      fail(`no group made: ${describe(e, { peer: users.length === 1 ? users[0] : 'a user named' })}`);
    }
  }

  async function talkIn(name) {
    if (!name) return fail(current ? `talking in ${label(current)}; /g NAME to change` : 'usage: /g NAME');
    try {
      const g = await find(name);
      if (!g) return fail(`no group named ${clean(name)} (/invites lists your invitations)`);
      if (g.state === 'invited') return fail(`you are invited to ${label(g)}: /join ${clean(g.name)} first`);
      note(`talking in ${label(g)}`);
      await setCurrent({ ...g, opened: true });
    } catch (e) {
      fail(describe(e));
    }
  }

  async function invites() {
    try {
      const list = (await client.groups()).filter((g) => g.state === 'invited');
      if (!list.length) return note('no invitations');
      for (const g of list) {
        const n = await nameOf(g.groupId);
        out(`  #${clean(n)}  (/join ${clean(n)})`);
      }
    } catch (e) {
      fail(describe(e));
    }
  }

  async function join(name) {
    if (!name) return fail('usage: /join NAME');
    try {
      const g = await find(name, 'invited');
      if (!g) return fail(`no invitation to a group named ${clean(name)} (/invites lists them)`);
      await client.join(g.groupId);
      note(`joined ${label(g)}; talking in it`);
      await setCurrent({ ...g, opened: true });
    } catch (e) {
      fail(describe(e));
    }
  }

  async function members() {
    if (!current) return fail('not in a group: /g NAME first');
    try {
      const g = await client.group(current.groupId);
      for (const m of g.members) {
        const who = m.userId === client.userId ? `${clean(client.username)} (you)` : clean(m.username ?? `user ${short(m.userId)}`);
        const tags = [m.role === 'admin' ? 'admin' : null, m.state === 'invited' ? 'invited' : null].filter(Boolean);
        out(`  ${who}${tags.length ? ` [${tags.join(', ')}]` : ''}`);
      }
    } catch (e) {
      fail(describe(e));
    }
  }

  async function kick(user) {
    if (!current) return fail('not in a group: /g NAME first');
    if (!user) return fail('usage: /kick USER');
    try {
      await client.remove(current.groupId, user);
      note(`removed ${clean(user.toLowerCase())} from ${label(current)}`);
    } catch (e) {
      if (e?.code === 'not_an_admin') return fail(`only an admin of ${label(current)} can remove members`);
      fail(describe(e, { peer: user }));
    }
  }

  async function leave() {
    if (!current) return fail('not in a group: /g NAME first');
    try {
      const g = current;
      await client.leave(g.groupId);
      setCurrent(null);
      note(`you left ${label(g)}`);
    } catch (e) {
      fail(describe(e));
    }
  }

  /** A line typed while talking in a group (`opts`: sendGroup's; `suffix` ends the line shown). */
  async function send(text, opts = {}, suffix = '') {
    const g = current;
    try {
      const r = await client.sendGroup(g.groupId, text, opts);
      out(`  → ${label(g)}: ${summary(r)} ✓${suffix}`);
    } catch (e) {
      // Removed (the relay no longer shows the group to this account) or never joined.
      if (e?.code === 'not_a_member' || e?.code === 'group_not_found') {
        if (current === g) setCurrent(null);
        return fail(`not sent: you are no longer a member of ${label(g)}`);
      }
      fail(`not sent: ${describe(e, { peer: label(g) })}`);
    }
  }

  /** `[HH:MM] #group alice: …` for a group message (`you` for one from your other device). */
  function show(m, body, who) {
    inOrder(async () => {
      const n = await nameOf(m.groupId);
      out(`[${hhmm(m.sentAt)}] #${clean(n)} ${m.sync ? 'you' : who(m.from)}: ${body}${disappears(m)}`);
    });
  }

  /** An invitation arrived. */
  function invited(ev, who) {
    inOrder(async () => {
      const n = await nameOf(ev.groupId, { fresh: true });
      note(`${who(ev.from)} invited you to #${clean(n)} (/join ${clean(n)})`);
    });
  }

  /** Runs one of GROUP_COMMANDS. */
  function command(cmd, rest) {
    switch (cmd) {
      case '/group':
        if ((rest[0] ?? '').toLowerCase() !== 'new') return fail('usage: /group new NAME USER…');
        return create(rest.slice(1));
      case '/g': return talkIn(rest.join(' '));
      case '/invites': return invites();
      case '/join': return join(rest.join(' '));
      case '/members': return members();
      case '/kick': return kick(rest[0]);
      case '/leave': return leave();
      default: return fail(`unknown command ${cmd}`);
    }
  }

  /** Prints with `fn` once every line before it is out (a group line may wait for its name). */
  function inOrder(fn) {
    printing = printing.then(fn).catch(() => {});
  }

  /** `#name` of a group whose name is known here, else `#` and the start of its id. */
  function labelOf(groupId) {
    return `#${clean(names.get(groupId) ?? short(groupId))}`;
  }

  return { command, send, show, invited, inOrder, label: labelOf, get current() { return current; }, clear: () => setCurrent(null) };
}

function summary(r) {
  const parts = [];
  if (r.delivered) parts.push(`${r.delivered} delivered`);
  if (r.queued) parts.push(`${r.queued} queued`);
  if (r.dropped) parts.push(`${r.dropped} dropped`);
  return parts.length ? parts.join(', ') : 'sent (no other member device yet)';
}
