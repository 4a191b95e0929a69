// The plaintext inside the Signal ciphertext: JSON, padded with spaces (which JSON ignores) to a
// multiple of PAD_BLOCK bytes, as Signal clients pad theirs: a receipt, a group key message and a
// short text message are the same size on the wire, so the relay cannot tell them apart by length.
export const PAD_BLOCK = 160;
export const RECEIPT = 'receipt';
export const RECEIPT_TYPES = new Set(['delivered', 'read']);
// Between the devices of one account: the account's new username after a rename.
export const ACCOUNT = 'account';

/** The bytes of `payload` (an object), padded. */
export function encodeContent(payload) {
  const json = Buffer.from(JSON.stringify(payload), 'utf8');
  const size = Math.ceil((json.length + 1) / PAD_BLOCK) * PAD_BLOCK;
  const out = Buffer.alloc(size, 0x20);
  json.copy(out);
  return out;
}

/** A receipt content ({ type: 'receipt', receipt, ids }) is well formed. */
export function isReceipt(c) {
  return c?.v === 1 && c.type === RECEIPT && RECEIPT_TYPES.has(c.receipt) && Array.isArray(c.ids) &&
    c.ids.length > 0 && c.ids.length <= 1000 && c.ids.every((id) => typeof id === 'string' && id.length <= 100);
}
