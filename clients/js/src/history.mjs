// The conversations kept on the device: every message sent and received (one-to-one and group),
// with the status of the ones sent (sent → delivered → read, from end-to-end receipts). The relay
// deletes what it delivered; this is the only copy, and it never leaves the device.
//
// On disk (FileStore: <dir>/history.enc, mode 0600) it is encrypted at rest with AES-256-GCM:
//
//   line 1   the header, JSON: { "format": "relay-client-history", "v": 1, "kdf": "scrypt",
//            "salt": b64 (16 random bytes), "N": 32768, "r": 8, "p": 1 }  (or "kdf": "keyfile")
//   line 2…  one record per line: base64( nonce (12 random bytes) | ciphertext | tag (16) ),
//            the header line as associated data; line 2 is a check record (a known text), so a
//            wrong key is told from a damaged file even when no message is kept yet
//
// The key: scrypt(password, salt) with the parameters of the header, or (kdf "keyfile") HKDF-SHA256
// of the 32 bytes of a key file with the salt. The salt is not secret; it makes the key of each
// history file different, so one precomputation cannot serve every file. Records are appended
// (one per change: a message, a status); on open the file is read whole, decrypted, replayed into
// memory (where paging and search run), and rewritten as one snapshot when most of it is stale.
//
// A disappearing message (`expiresAt`, from the relay's `expires_at` or the sender's `expiresIn`)
// is dropped when it expires: from memory at once (a timer, and every read checks first, so it is
// never handed out after), and from the file by rewriting it as one snapshot without it (not by
// appending a deletion: the record holding its text must go), at most one rewrite under way.
import { promises as fsp, constants as fsc } from 'node:fs';
import { dirname } from 'node:path';
import { randomBytes, scrypt as scryptCb, hkdfSync, createCipheriv, createDecipheriv } from 'node:crypto';
import { promisify } from 'node:util';
import { RelayError } from './errors.mjs';

const scrypt = promisify(scryptCb);
const FORMAT = 'relay-client-history';
const SCRYPT = { N: 32768, r: 8, p: 1 }; // 32 MiB and about 0.1 s per open
const CHECK = 'relay-client history key check';
const STATUS_RANK = { sent: 0, delivered: 1, read: 2 };
// The expiry timer sleeps at most this long at once (setTimeout takes at most 2^31-1 ms).
const MAX_TIMER_MS = 6 * 3600 * 1000;
// A history in memory only (no file, no key) keeps this many messages, the newest: a long-running
// process of a MemoryStore does not grow without end.
export const MEMORY_KEEP = 10_000;

/** The conversation key of a group. */
export const groupConversation = (groupId) => `group:${String(groupId).toLowerCase()}`;

function historyError(message, code, cause) {
  return new RelayError(message, { code, cause });
}

function seal(key, aad, obj) {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(JSON.stringify(obj), 'utf8'), c.final()]);
  return Buffer.concat([nonce, ct, c.getAuthTag()]).toString('base64');
}

function open(key, aad, line) {
  const b = Buffer.from(line, 'base64');
  if (b.length < 28) throw new Error('short record');
  const d = createDecipheriv('aes-256-gcm', key, b.subarray(0, 12));
  d.setAAD(aad);
  d.setAuthTag(b.subarray(b.length - 16));
  const pt = Buffer.concat([d.update(b.subarray(12, b.length - 16)), d.final()]);
  return JSON.parse(pt.toString('utf8'));
}

async function deriveKey(header, { password, keyFile }) {
  const salt = Buffer.from(header.salt, 'base64');
  if (header.kdf === 'scrypt') {
    if (password == null) throw historyError('the history is encrypted with a key derived from the password: open the client with the password', 'history_locked');
    const { N, r, p } = header;
    return scrypt(String(password).normalize('NFKC'), salt, 32, { N, r, p, maxmem: 256 * N * r });
  }
  if (header.kdf === 'keyfile') {
    if (!keyFile) throw historyError('the history is encrypted with a key file: open the client with history.keyFile', 'history_locked');
    const raw = Buffer.from((await fsp.readFile(keyFile, 'utf8')).trim(), 'hex');
    if (raw.length !== 32) throw historyError(`${keyFile} is not a history key file (64 hex digits)`, 'history_key');
    return Buffer.from(hkdfSync('sha256', raw, salt, 'relay-client history', 32));
  }
  throw historyError(`unknown key derivation ${header.kdf}`, 'history_corrupt');
}

/** A key file: made (32 random bytes, hex, mode 0600) when missing. */
async function ensureKeyFile(path) {
  try {
    await fsp.writeFile(path, randomBytes(32).toString('hex') + '\n', { flag: 'wx', mode: 0o600 });
  } catch (e) {
    if (e.code !== 'EEXIST') throw e;
  }
}

/** The entry the API hands out: a copy, times as Dates. */
function view(e) {
  const out = { ...e, sentAt: new Date(e.sentAt), from: { ...e.from } };
  if (e.expiresAt != null) out.expiresAt = new Date(e.expiresAt);
  if (e.readBy) out.readBy = [...e.readBy];
  if (e.deliveredTo) out.deliveredTo = [...e.deliveredTo];
  return out;
}

/**
 * The history of one device. `History.open({ file, password | keyFile })` reads (or starts) an
 * encrypted file; `History.memory()` keeps it in this process only. Entries:
 *   { id, conversation, groupId?, with?, from: { userId, username? }, outgoing, text, b64?,
 *     sentAt, status, expiresAt? }
 * An entry with `expiresAt` (ms) is dropped then; `onExpire([{ id, conversation }])` hears of it.
 * `status`: outgoing 'sent' | 'delivered' | 'read'; incoming 'received' | 'read'.
 */
export class History {
  #file = null;
  #key = null;
  #aad = null;
  #byId = new Map();
  #byConv = new Map(); // conversation → entries, oldest first
  #queue = Promise.resolve();
  #pending = [];
  #records = 0;
  #closed = false;
  #fresh = null; // the header of a file not written yet (it is, with the first change)
  #max = Infinity;
  #expiring = new Map(); // id → expiresAt (ms) of the disappearing messages kept
  #nextExpiry = Infinity;
  #expiryTimer = null;
  #compacting = false; // a rewrite without the expired messages is queued
  #droppedExpired = false; // open() skipped expired messages: the file is rewritten without them
  /** Told of the messages dropped on expiry: [{ id, conversation }]. */
  onExpire = null;

  /** A history in this process only, of at most `max` messages (the oldest added go first). */
  static memory({ max = MEMORY_KEEP } = {}) {
    const h = new History();
    h.#max = max;
    return h;
  }

  /**
   * Opens (or creates) the encrypted history in `file`. RelayError `history_key` when the key does
   * not open it (a wrong password), `history_locked` when no key was given, `history_corrupt`
   * when a record in its middle is damaged.
   */
  static async open({ file, password, keyFile } = {}) {
    const h = new History();
    h.#file = file;
    await fsp.mkdir(dirname(file), { recursive: true, mode: 0o700 });
    if (keyFile) await ensureKeyFile(keyFile);
    let text = null;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    if (text === null || text.trim() === '') {
      const header = { format: FORMAT, v: 1, kdf: keyFile ? 'keyfile' : 'scrypt', salt: randomBytes(16).toString('base64') };
      if (!keyFile) Object.assign(header, SCRYPT);
      h.#key = await deriveKey(header, { password, keyFile });
      h.#aad = Buffer.from(JSON.stringify(header), 'utf8');
      h.#fresh = header;
      return h;
    }
    const lines = text.split('\n');
    let header;
    try {
      header = JSON.parse(lines[0]);
    } catch (e) {
      throw historyError(`${file} is not a relay-client history`, 'history_corrupt', e);
    }
    if (header?.format !== FORMAT) throw historyError(`${file} is not a relay-client history`, 'history_corrupt');
    h.#key = await deriveKey(header, { password, keyFile });
    h.#aad = Buffer.from(lines[0], 'utf8');
    const records = lines.slice(1).filter((l) => l.length > 0);
    try {
      if (open(h.#key, h.#aad, records[0]).check !== CHECK) throw new Error('check');
    } catch (e) {
      throw historyError(`the history in ${file} does not open with this ${header.kdf === 'keyfile' ? 'key file' : 'password'}`, 'history_key', e);
    }
    for (let i = 1; i < records.length; i++) {
      let op;
      try {
        op = open(h.#key, h.#aad, records[i]);
      } catch (e) {
        if (i === records.length - 1) break; // the last append was torn by a crash: dropped
        throw historyError(`${file}: record ${i} is damaged`, 'history_corrupt', e);
      }
      h.#apply(op);
    }
    h.#records = records.length - 1;
    if (h.#droppedExpired || h.#records > 2 * h.#byId.size + 64) await h.#rewrite(header, [...h.#byId.values()]);
    h.#droppedExpired = false;
    h.#armExpiry();
    return h;
  }

  /** True when the history is kept on disk (encrypted), false when only in memory. */
  get persistent() {
    return this.#file !== null;
  }

  get file() {
    return this.#file;
  }

  #apply(op) {
    if (op.op === 'add') this.#add(op.e);
    else if (op.op === 'snapshot') for (const e of op.entries) this.#add(e);
    else if (op.op === 'status') this.#status(op.id, op.status, op.by);
  }

  #add(e) {
    if (this.#byId.has(e.id)) return false;
    if (e.expiresAt != null && e.expiresAt <= Date.now()) {
      this.#droppedExpired = true;
      return false;
    }
    this.#byId.set(e.id, e);
    if (e.expiresAt != null) {
      this.#expiring.set(e.id, e.expiresAt);
      if (e.expiresAt < this.#nextExpiry) this.#nextExpiry = e.expiresAt;
    }
    let list = this.#byConv.get(e.conversation);
    if (!list) this.#byConv.set(e.conversation, (list = []));
    // Kept in time order (arrival order among equal times): appended, or inserted when late.
    let i = list.length;
    while (i > 0 && list[i - 1].sentAt > e.sentAt) i--;
    list.splice(i, 0, e);
    if (this.#byId.size > this.#max) this.#forget(this.#byId.keys().next().value);
    return true;
  }

  #forget(id) {
    const e = this.#byId.get(id);
    this.#byId.delete(id);
    this.#expiring.delete(id);
    const list = this.#byConv.get(e.conversation);
    list.splice(list.indexOf(e), 1);
    if (!list.length) this.#byConv.delete(e.conversation);
  }

  #status(id, status, by) {
    const e = this.#byId.get(id);
    if (!e) return false;
    if (by) {
      const field = status === 'read' ? 'readBy' : status === 'delivered' ? 'deliveredTo' : null;
      if (field) {
        e[field] ??= [];
        if (!e[field].includes(by)) e[field].push(by);
        if (status === 'read' && !(e.deliveredTo ??= []).includes(by)) e.deliveredTo.push(by);
      }
    }
    const rank = (s) => (s === 'received' ? 0 : STATUS_RANK[s] ?? 0);
    if (rank(status) <= rank(e.status)) return false;
    e.status = status;
    return true;
  }

  /** Appends `op` (gathered with the others of this tick into one write). */
  #log(op) {
    if (!this.#file) return;
    this.#pending.push(op);
    if (this.#pending.length > 1) return;
    const run = async () => {
      const ops = this.#pending.splice(0);
      if (!ops.length || this.#closed) return;
      if (this.#fresh) {
        await this.#rewrite(this.#fresh, []);
        this.#fresh = null;
      }
      const text = ops.map((o) => seal(this.#key, this.#aad, o) + '\n').join('');
      const fh = await fsp.open(this.#file, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT, 0o600);
      try {
        await fh.write(text);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      this.#records += ops.length;
    };
    this.#queue = this.#queue.then(run, run);
  }

  /**
   * Drops the messages whose time is up (from memory now, from the file by a rewrite queued
   * behind the writes under way) and sets the timer for the next one.
   */
  #sweep() {
    const now = Date.now();
    if (this.#nextExpiry > now) return;
    const gone = [];
    let next = Infinity;
    for (const [id, at] of this.#expiring) {
      if (at <= now) {
        gone.push({ id, conversation: this.#byId.get(id).conversation });
        this.#forget(id);
      } else if (at < next) next = at;
    }
    this.#nextExpiry = next;
    if (gone.length) {
      this.#compact();
      try {
        this.onExpire?.(gone);
      } catch {
        /* the listener's own failure */
      }
    }
    this.#armExpiry();
  }

  #armExpiry() {
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = null;
    if (this.#closed || this.#nextExpiry === Infinity) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, this.#nextExpiry - Date.now()));
    this.#expiryTimer = setTimeout(() => this.#sweep(), delay);
    this.#expiryTimer.unref?.();
  }

  /**
   * The file rewritten as one snapshot of what memory holds (expired messages gone), behind the
   * appends queued before it; the appends it covers are not written again.
   */
  #compact() {
    if (!this.#file || this.#compacting) return;
    this.#compacting = true;
    const run = async () => {
      this.#compacting = false;
      if (this.#closed) return;
      this.#pending.length = 0; // in memory already, so in the snapshot
      const header = this.#fresh ?? JSON.parse(this.#aad.toString('utf8'));
      await this.#rewrite(header, [...this.#byId.values()]);
      this.#fresh = null;
    };
    this.#queue = this.#queue.then(run, run);
  }

  /** Replaces the file by the header, the check record and one snapshot (atomically). */
  async #rewrite(header, entries) {
    const headerLine = JSON.stringify(header);
    this.#aad = Buffer.from(headerLine, 'utf8');
    let text = headerLine + '\n' + seal(this.#key, this.#aad, { check: CHECK }) + '\n';
    if (entries.length) text += seal(this.#key, this.#aad, { op: 'snapshot', entries }) + '\n';
    const tmp = `${this.#file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      await fh.writeFile(text, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, this.#file);
    this.#records = entries.length ? 1 : 0;
  }

  /** Resolves once every change so far is on disk. */
  flushed() {
    return this.#queue;
  }

  /** Adds a message (false when its id is kept already). */
  add(entry) {
    const e = { ...entry, sentAt: +new Date(entry.sentAt ?? Date.now()) };
    if (e.text === undefined) e.text = null;
    if (entry.expiresAt != null) e.expiresAt = +new Date(entry.expiresAt);
    else delete e.expiresAt;
    if (!this.#add(e)) return false;
    this.#log({ op: 'add', e });
    if (e.expiresAt != null) this.#armExpiry();
    return true;
  }

  /** Takes in what `other` (a history in memory) holds: its entries and their statuses. */
  merge(other) {
    for (const e of other.#byId.values()) {
      if (!this.add(e)) {
        for (const by of e.deliveredTo ?? []) this.setStatus(e.id, 'delivered', by);
        for (const by of e.readBy ?? []) this.setStatus(e.id, 'read', by);
        this.setStatus(e.id, e.status);
      }
    }
  }

  /** The entry with this id, or undefined. */
  get(id) {
    this.#sweep();
    const e = this.#byId.get(id);
    return e ? view(e) : undefined;
  }

  /**
   * Raises an entry's status (never lowers it): outgoing sent → delivered → read, incoming
   * received → read. `by`: the user whose receipt it is. Returns the entry when it changed.
   */
  setStatus(id, status, by) {
    this.#sweep();
    const e = this.#byId.get(id);
    if (!e) return undefined;
    const before = JSON.stringify([e.status, e.readBy, e.deliveredTo]);
    const changed = this.#status(id, status, by);
    if (JSON.stringify([e.status, e.readBy, e.deliveredTo]) !== before) this.#log({ op: 'status', id, status, by });
    return changed ? view(e) : undefined;
  }

  /** The conversations kept: [{ conversation, last: entry, count }], the most recent first. */
  conversations() {
    this.#sweep();
    return [...this.#byConv.entries()]
      .filter(([, l]) => l.length)
      .map(([conversation, l]) => ({ conversation, count: l.length, last: view(l[l.length - 1]) }))
      .sort((a, b) => b.last.sentAt - a.last.sentAt);
  }

  /**
   * A page of one conversation, oldest first: the `limit` newest entries before `before` (a time,
   * a Date, or an entry's id; default: the end).
   */
  page(conversation, { before, limit = 50 } = {}) {
    this.#sweep();
    const list = this.#byConv.get(conversation) ?? [];
    let end = list.length;
    if (before !== undefined && before !== null) {
      if (typeof before === 'string' && this.#byId.has(before)) {
        end = list.indexOf(this.#byId.get(before));
        if (end < 0) end = list.length;
      } else {
        const t = +new Date(before);
        while (end > 0 && list[end - 1].sentAt >= t) end--;
      }
    }
    const n = Math.max(0, Math.min(Number(limit) || 0, 1000));
    return list.slice(Math.max(0, end - n), end).map(view);
  }

  /**
   * Entries whose text holds every word of `query` (case-insensitive), oldest first, at most
   * `limit`, in `conversation` only when given.
   */
  search(query, { conversation, limit = 100 } = {}) {
    this.#sweep();
    const words = String(query).toLowerCase().split(/\s+/).filter(Boolean);
    if (!words.length) return [];
    const lists = conversation ? [this.#byConv.get(conversation) ?? []] : [...this.#byConv.values()];
    const hits = [];
    for (const l of lists) {
      for (const e of l) {
        if (typeof e.text !== 'string') continue;
        const t = e.text.toLowerCase();
        if (words.every((w) => t.includes(w))) hits.push(e);
      }
    }
    hits.sort((a, b) => a.sentAt - b.sentAt);
    return hits.slice(-limit).map(view);
  }

  /** Waits for what is being written; nothing is written after. */
  async close() {
    this.#sweep();
    await this.#queue;
    this.#closed = true;
    clearTimeout(this.#expiryTimer);
  }

  /** Forgets everything and deletes the file. */
  async delete() {
    await this.#queue.catch(() => {});
    this.#pending = [];
    this.#byId.clear();
    this.#byConv.clear();
    this.#expiring.clear();
    this.#nextExpiry = Infinity;
    this.#armExpiry();
    if (this.#file) await fsp.rm(this.#file, { force: true });
    // Still open: the file starts over with the next change (same header and key: a new salt
    // would need the password again).
    if (this.#file && !this.#closed) this.#fresh = JSON.parse(this.#aad.toString('utf8'));
  }
}
