// Where a RelayClient keeps its account: identity, registration id, prekeys, sessions, the
// identities of peers, the account (user id, device id, username) and the refresh token. A store
// holds one JSON document; the client writes it whole after every change that matters (a
// decrypted message, a new session, new keys, a rotated refresh token).
//
//   new MemoryStore()     in this process only (tests, throwaway clients)
//   new FileStore(dir)    one file, <dir>/account.json: written atomically (temporary file,
//                         fsync, rename, fsync of the directory), mode 0600 in a 0700 directory;
//                         <dir>/lock (the pid) keeps a second process from using the account
//                         at the same time (its sessions would diverge)
import { promises as fsp, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { RelayError } from './errors.mjs';

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/** A store in memory: a copy of the document (so a reopen sees only what was saved). */
export class MemoryStore {
  constructor(initial = null) {
    this.doc = initial ? JSON.stringify(initial) : null;
  }
  async load() {
    return this.doc ? JSON.parse(this.doc) : null;
  }
  async save(doc) {
    this.doc = JSON.stringify(doc);
  }
  async clear() {
    this.doc = null;
  }
  toString() {
    return 'MemoryStore';
  }
}

/**
 * A store in one file, `<dir>/account.json` (opts.file names another). The directory is made
 * (0700) when missing; the file is 0600. Writes are serialized and atomic: a crash leaves the old
 * document or the new one, never a mix. Nothing here logs the document (it holds private keys and
 * the refresh token).
 */
export class FileStore {
  constructor(dir, { file = 'account.json' } = {}) {
    if (!dir) throw new TypeError('FileStore needs a directory');
    this.dir = String(dir);
    this.path = join(this.dir, file);
    this.queue = Promise.resolve();
  }

  async ensureDir() {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    // mkdir's mode is masked by the umask and leaves an existing directory as it is.
    await fsp.chmod(this.dir, 0o700);
  }

  async load() {
    let text;
    try {
      text = await fsp.readFile(this.path, 'utf8');
    } catch (e) {
      if (e.code === 'ENOENT') return null;
      throw e;
    }
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`${this.path} is not valid JSON (not a relay-client store?)`);
    }
  }

  save(doc) {
    const text = JSON.stringify(doc);
    const run = () => this.write(text);
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }

  async write(text) {
    await this.ensureDir();
    const tmp = `${this.path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      await fh.writeFile(text, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await fsp.rename(tmp, this.path);
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    // The rename itself is durable once the directory is synced.
    const d = await fsp.open(this.dir, fsc.O_RDONLY);
    try {
      await d.sync();
    } catch {
      /* some filesystems refuse fsync on a directory */
    } finally {
      await d.close();
    }
  }

  async clear() {
    await this.queue;
    await fsp.rm(this.path, { force: true });
  }

  /**
   * Takes <dir>/lock for this process (RelayClient does, while open). Throws RelayError
   * `store_in_use` when a live process holds it; a lock left by a dead process is taken over.
   */
  async acquire() {
    await this.ensureDir();
    const lock = join(this.dir, 'lock');
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await fsp.open(lock, 'wx', 0o600);
        try {
          await fh.writeFile(String(process.pid));
        } finally {
          await fh.close();
        }
        return;
      } catch (e) {
        if (e.code !== 'EEXIST') throw e;
      }
      const pid = Number((await fsp.readFile(lock, 'utf8').catch(() => '')).trim());
      if (pid === process.pid) return;
      if (pid > 0 && alive(pid)) {
        const e = new RelayError(`${this.dir} is in use by another process (pid ${pid})`, { code: 'store_in_use' });
        Object.assign(e, { lock, pid });
        throw e;
      }
      await fsp.rm(lock, { force: true });
    }
    throw Object.assign(new RelayError(`cannot lock ${this.dir}`, { code: 'store_in_use' }), { lock });
  }

  /** Gives <dir>/lock up (only when this process holds it). */
  async release() {
    const lock = join(this.dir, 'lock');
    const pid = Number((await fsp.readFile(lock, 'utf8').catch(() => '')).trim());
    if (pid === process.pid) await fsp.rm(lock, { force: true });
  }

  toString() {
    return `FileStore(${this.dir})`;
  }
}
