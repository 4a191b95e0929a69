// End-to-end receipts, going out: `delivered` for every ordinary message received (one-to-one and
// group), `read` when the application marks messages read. A receipt is an ordinary Signal message
// whose content is { v: 1, type: 'receipt', receipt: 'delivered' | 'read', ids: [message ids] }:
// the relay sees a `send` frame like any other (the content padded like every other, content.mjs).
// They are gathered per sender account and type: one receipt message (one frame, a ciphertext per
// device of that account) carries every id that waited `delayMs`, or `maxIds` at once. A receipt
// is never answered with a receipt.
import { RECEIPT } from './content.mjs';

export const DEFAULT_RECEIPTS = Object.freeze({ delivered: true, read: true, delayMs: 250, maxIds: 100 });

export function receiptOptions(o = {}) {
  if (o === false) return { ...DEFAULT_RECEIPTS, delivered: false, read: false };
  return { ...DEFAULT_RECEIPTS, ...o };
}

/**
 * The receipts waiting to leave. `send(userId, payload)` sends one receipt message (the client's
 * 1:1 path); `onError(e)` hears of one that failed (its ids are not sent again).
 */
export class ReceiptSender {
  #opts;
  #send;
  #onError;
  #batches = new Map(); // `${type} ${userId}` → { userId, type, ids: Set, timer }
  #inFlight = new Set();

  constructor({ options, send, onError }) {
    this.#opts = options;
    this.#send = send;
    this.#onError = onError;
  }

  /** Queues receipts of `type` for `ids`, messages of the account `userId`. */
  queue(userId, type, ids) {
    if (!this.#opts[type] || !ids.length) return;
    if (type === 'read') {
      // Read says delivered too: a delivered receipt still waiting for these ids is not sent.
      const d = this.#batches.get(`delivered ${userId}`);
      if (d) {
        for (const id of ids) d.ids.delete(id);
        if (!d.ids.size) {
          clearTimeout(d.timer);
          this.#batches.delete(`delivered ${userId}`);
        }
      }
    }
    const k = `${type} ${userId}`;
    let b = this.#batches.get(k);
    if (!b) {
      b = { userId, type, ids: new Set(), timer: null };
      this.#batches.set(k, b);
    }
    for (const id of ids) b.ids.add(id);
    if (b.ids.size >= this.#opts.maxIds) this.#flush(k);
    else if (!b.timer) {
      b.timer = setTimeout(() => this.#flush(k), this.#opts.delayMs);
      b.timer.unref?.();
    }
  }

  #flush(k) {
    const b = this.#batches.get(k);
    if (!b) return;
    this.#batches.delete(k);
    clearTimeout(b.timer);
    const ids = [...b.ids];
    for (let i = 0; i < ids.length; i += this.#opts.maxIds) {
      const payload = { type: RECEIPT, receipt: b.type, ids: ids.slice(i, i + this.#opts.maxIds) };
      const p = Promise.resolve()
        .then(() => this.#send(b.userId, payload))
        .catch((e) => this.#onError(e))
        .finally(() => this.#inFlight.delete(p));
      this.#inFlight.add(p);
    }
  }

  /** Sends everything gathered now; resolves once it has left (or failed). */
  async flush() {
    for (const k of [...this.#batches.keys()]) this.#flush(k);
    await Promise.all([...this.#inFlight]);
  }

  /** Drops what waits (the client closes without the relay). */
  clear() {
    for (const b of this.#batches.values()) clearTimeout(b.timer);
    this.#batches.clear();
  }
}
