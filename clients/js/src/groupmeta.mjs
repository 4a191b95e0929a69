// The group's `meta` as the relay stores it: the application's data about the group (its name…)
// sealed with a per-group key the members hand each other inside end-to-end encrypted 1:1
// messages, so the relay keeps an opaque blob it cannot read.
//   meta (base64) = 0x01 ‖ IV (12 bytes) ‖ AES-256-GCM(key, IV, JSON) ‖ tag (16 bytes)
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
// The relay's GROUP_META_MAX_BYTES (decoded): a larger meta is refused with 400.
export const META_MAX_BYTES = 4096;

/** A fresh per-group key (32 random bytes, base64). */
export function newMetaKey() {
  return randomBytes(32).toString('base64');
}

/** Seals `value` (anything JSON can hold) with the base64 `key`: the `meta` to send, base64. */
export function sealMeta(key, value) {
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', Buffer.from(key, 'base64'), iv);
  const ct = Buffer.concat([c.update(JSON.stringify(value ?? null), 'utf8'), c.final()]);
  const out = Buffer.concat([Buffer.from([VERSION]), iv, ct, c.getAuthTag()]);
  if (out.length > META_MAX_BYTES) throw new RangeError(`the group's meta is ${out.length} bytes sealed; the relay keeps at most ${META_MAX_BYTES}`);
  return out.toString('base64');
}

/** Opens a `meta` sealed with `key`; undefined when it was not (another key, tampered, not ours). */
export function openMeta(key, meta) {
  if (!key || typeof meta !== 'string') return undefined;
  const raw = Buffer.from(meta, 'base64');
  if (raw.length < 1 + IV_BYTES + TAG_BYTES || raw[0] !== VERSION) return undefined;
  try {
    const d = createDecipheriv('aes-256-gcm', Buffer.from(key, 'base64'), raw.subarray(1, 1 + IV_BYTES));
    d.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
    const pt = Buffer.concat([d.update(raw.subarray(1 + IV_BYTES, raw.length - TAG_BYTES)), d.final()]);
    return JSON.parse(pt.toString('utf8'));
  } catch {
    return undefined;
  }
}
