// What arrives on the socket: envelopes decrypted in arrival order, the session state and the
// envelope ids saved, the messages reported, and only then acknowledged (ack mode), gathered into
// quiet acks. A redelivery of an envelope already processed is acknowledged, not reported again.
// A group envelope (`group_id`) is decrypted with the sender's sender key; a group key message
// (1:1) is handed to the groups, never reported as a message.
import { deviceAddress, MSG_PREKEY } from './signal.mjs';
import { groupDecrypt } from './senderkeys.mjs';
import { Groups } from './groups.mjs';
import { RelayError } from './errors.mjs';
import { isReceipt, RECEIPT, ACCOUNT } from './content.mjs';
import { groupConversation } from './history.mjs';

const PROCESSED_KEEP = 2000; // envelope ids remembered for deduplication (ack-mode redeliveries)
// Acknowledgements are gathered (docs/api.md §6.9): one quiet ack once the oldest has waited
// this long, or once a frame's worth of ids waits.
const ACK_GATHER_MS = 20;
const ACK_MAX_IDS = 100;

const utf8 = new TextDecoder();

/** Our JSON content, or null (raw bytes). */
function jsonContent(bytes) {
  if (bytes.length === 0 || bytes[0] !== 0x7b) return null; // not a JSON object
  try {
    const c = JSON.parse(utf8.decode(bytes));
    return c && typeof c === 'object' && c.v === 1 ? c : null;
  } catch {
    return null;
  }
}

/**
 * The receiving side of `session`'s device. Decryption runs under `signal` (a Lock); names are
 * checked with `directory`; group key messages go to `groups`. Reports through
 * `onMessage(message)` (awaited: the message is kept before it is acknowledged),
 * `onReceipt({ from, type, ids, sentAt })`, `onGroupKey({ groupId, from, invite, distributionId })`,
 * `onError(e)` and `onPreKeyMessage()` (a session was started with one of this device's prekeys).
 */
export class Inbound {
  #session;
  #signal;
  #directory;
  #groups;
  #ack;
  #on;
  #processed;
  #rx = Promise.resolve(); // envelopes are processed one batch at a time, in arrival order
  #acks = null; // { sock, ids, timer }: acknowledgements being gathered

  constructor({ session, signal, directory, groups, ack, processed = [], onMessage, onReceipt = () => {}, onAccount = () => {}, beforeAck = async () => {}, onGroupKey, onError, onPreKeyMessage }) {
    this.#session = session;
    this.#signal = signal;
    this.#directory = directory;
    this.#groups = groups;
    this.#ack = Boolean(ack);
    this.#processed = new Set(processed);
    this.#on = { beforeAck, message: onMessage, receipt: onReceipt, account: onAccount, groupKey: onGroupKey, error: onError, preKeyMessage: onPreKeyMessage };
  }

  /** The envelope ids to keep in the store (the newest PROCESSED_KEEP). */
  processedIds() {
    return [...this.#processed].slice(-PROCESSED_KEEP);
  }

  /** Envelopes received on `sock`, processed after those received before them. */
  enqueue(envs, sock) {
    this.#rx = this.#rx.then(() => this.#process(envs, sock)).catch((e) => this.#on.error(e));
  }

  /** Resolves once everything enqueued so far is processed, saved and its acknowledgement queued. */
  drained() {
    return this.#rx;
  }

  async #process(envs, sock) {
    const device = this.#session.device;
    const ackIds = [];
    const out = [];
    const keys = [];
    const receipts = [];
    const accounts = [];
    let preKeyMessage = false;
    await this.#signal.run(async () => {
      for (const env of envs) {
        if (this.#processed.has(env.id)) {
          ackIds.push(env.id); // a redelivery of what was already processed and saved
          continue;
        }
        const from = { userId: env.from, deviceId: env.source_device ?? 1 };
        try {
          if (env.group_id) {
            out.push({ env, bytes: await groupDecrypt(device, from.userId, from.deviceId, env.body) });
          } else {
            const d = await device.decryptFrom(deviceAddress(from.userId, from.deviceId), env.body);
            if (d.type === MSG_PREKEY) preKeyMessage = true;
            const c = jsonContent(d.bytes);
            // Processed here, in arrival order: a group message right behind it decrypts.
            if (c && Groups.isKeyMessage(c) && this.#groups) keys.push({ ...(await this.#groups.receiveKey(from.userId, from.deviceId, c)), from });
            else if (c?.type === RECEIPT) {
              if (isReceipt(c)) receipts.push({ from, type: c.receipt, ids: [...new Set(c.ids)], sentAt: new Date(env.sent_at) });
            } else if (c?.type === ACCOUNT) {
              // Only another device of this account speaks for it.
              if (from.userId === device.userId && typeof c.username === 'string') accounts.push({ username: c.username });
            } else out.push({ env, bytes: d.bytes });
          }
        } catch (e) {
          this.#on.error(new RelayError(
            `could not decrypt message ${env.id} from ${env.from}.${env.source_device ?? 1}: ${e.message}`,
            { code: 'decrypt_failed', cause: e },
          ));
        }
        this.#processed.add(env.id);
        ackIds.push(env.id);
      }
      if (this.#processed.size > PROCESSED_KEEP * 2) this.#processed = new Set(this.processedIds());
      await this.#session.persist(); // sessions and processed ids saved before anything is acknowledged
    });
    for (const k of keys) this.#on.groupKey?.(k);
    for (const { env, bytes } of out) {
      try {
        await this.#on.message(await this.#toMessage(env, bytes));
      } catch (e) {
        this.#on.error(e);
      }
    }
    for (const r of receipts) this.#on.receipt(r);
    for (const a of accounts) {
      try {
        await this.#on.account(a);
      } catch (e) {
        this.#on.error(e);
      }
    }
    try {
      await this.#on.beforeAck(); // what the application keeps of them (the history) is on disk first
    } catch (e) {
      this.#on.error(e);
    }
    if (this.#ack) this.#queueAcks(ackIds, sock);
    if (preKeyMessage) this.#on.preKeyMessage();
  }

  /**
   * Acknowledges processed (decrypted and saved) envelopes received on `sock`: gathered for
   * ACK_GATHER_MS, or until ACK_MAX_IDS wait, into one quiet ack (docs/api.md §6.9).
   */
  #queueAcks(ids, sock) {
    if (!ids.length) return;
    if (this.#acks && this.#acks.sock !== sock) this.flushAcks();
    this.#acks ??= { sock, ids: [], timer: null };
    this.#acks.ids.push(...ids);
    if (this.#acks.ids.length >= ACK_MAX_IDS) {
      this.flushAcks();
    } else if (!this.#acks.timer) {
      this.#acks.timer = setTimeout(() => this.flushAcks(), ACK_GATHER_MS);
      this.#acks.timer.unref?.();
    }
  }

  /**
   * Sends the gathered acknowledgements now. On a closed socket they are dropped: the envelopes
   * come again and are deduplicated.
   */
  flushAcks() {
    const q = this.#acks;
    this.#acks = null;
    if (!q) return;
    clearTimeout(q.timer);
    for (let i = 0; i < q.ids.length && !q.sock.closed; i += ACK_MAX_IDS) {
      try {
        q.sock.quietAck(q.ids.slice(i, i + ACK_MAX_IDS));
      } catch {
        return;
      }
    }
  }

  /** The `message` event of a decrypted envelope: our JSON content, or raw bytes. */
  async #toMessage(env, bytes) {
    const { userId, username } = this.#session.device;
    let content = jsonContent(bytes);
    if (content && typeof content.text !== 'string' && typeof content.b64 !== 'string') content = null; // not ours: raw bytes
    const m = {
      id: env.id,
      from: { userId: env.from, deviceId: env.source_device ?? 1 },
      text: null,
      bytes: null,
      sentAt: new Date(env.sent_at),
      sync: env.from === userId,
    };
    if (env.group_id) m.groupId = env.group_id;
    // A disappearing message: the relay's expiry (the history drops it then).
    if (Number.isFinite(env.expires_at)) m.expiresAt = new Date(env.expires_at);
    // The sender's own id of the message (what receipts name); the envelope id for content without one.
    const mid = typeof content?.mid === 'string' && content.mid.length <= 100 ? content.mid : null;
    m.messageId = mid ?? env.id;
    Object.defineProperty(m, 'receiptable', { value: mid !== null && !m.sync, enumerable: false });
    if (content && typeof content.text === 'string') {
      m.text = content.text;
      m.bytes = new Uint8Array(Buffer.from(content.text, 'utf8'));
    } else if (content) {
      m.bytes = new Uint8Array(Buffer.from(content.b64, 'base64'));
    } else {
      m.bytes = new Uint8Array(bytes);
      m.text = utf8.decode(bytes);
    }
    if (m.sync) {
      m.from.username = username;
      if (content?.to) {
        m.to = { userId: String(content.to) };
        if (typeof content.to_name === 'string') m.to.username = content.to_name;
      }
    } else if (typeof content?.name === 'string') {
      const name = await this.#directory.verifyName(content.name, env.from);
      if (name) m.from.username = name;
    } else if (this.#directory.nameOf(env.from) !== undefined) {
      m.from.username = this.#directory.nameOf(env.from);
    }
    // The conversation it belongs to: the group, or the other account (the recipient of a sync copy).
    m.conversation = m.groupId ? groupConversation(m.groupId) : m.sync ? (m.to?.userId ?? userId) : env.from;
    return m;
  }
}
