// Encrypted attachments (docs/api.md §5.17, §5.18), the client's side: the file is encrypted on
// the device (AES-256-GCM under a fresh random key), the ciphertext goes straight to object storage through
// the URL the relay presigns (POST /v1/attachments → PUT upload_url), and the pointer — id, key,
// IV, digest (SHA-256 of the uploaded bytes), size — travels inside a Signal message. The
// recipient asks the relay for a download URL (GET /v1/attachments/{id}), downloads, checks size
// and digest before anything else, then decrypts. The relay only ever sees the id and the size.
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { request } from './http.mjs';
import { ApiError } from './errors.mjs';

/** Per storage request (PUT or GET of a few MiB through the presigned URL). */
export const STORAGE_TIMEOUT_MS = Number(process.env.RELAY_STORAGE_TIMEOUT_MS || 60000);

export const ATTACHMENT_KEY_BYTES = 32; // AES-256
export const ATTACHMENT_IV_BYTES = 12; // GCM nonce
export const ATTACHMENT_TAG_BYTES = 16; // GCM tag, appended to the ciphertext

export function sha256(bytes) {
  return createHash('sha256').update(bytes).digest();
}

/**
 * Encrypts `plaintext` with AES-256-GCM under a fresh random key and IV. The uploaded blob is
 * ciphertext ‖ tag; `digest` is SHA-256 of that blob. Returns { blob, key, iv, digest } (Buffers).
 */
export function encryptAttachment(plaintext) {
  const key = randomBytes(ATTACHMENT_KEY_BYTES);
  const iv = randomBytes(ATTACHMENT_IV_BYTES);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const blob = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  return { blob, key, iv, digest: sha256(blob) };
}

/** The pointer sent inside the Signal message (JSON-able; binary fields standard base64). */
export function attachmentPointer(id, { key, iv, digest, blob }) {
  return {
    attachment_id: id,
    key: key.toString('base64'),
    iv: iv.toString('base64'),
    digest: digest.toString('base64'),
    size: blob.length,
  };
}

/** A client-side refusal of downloaded bytes: `code` is 'size_mismatch' or 'digest_mismatch'. */
export class AttachmentIntegrityError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * The recipient's checks and decryption: the downloaded `blob` must have the pointer's size and
 * SHA-256 digest (else AttachmentIntegrityError, nothing decrypted), then AES-256-GCM opens it
 * (which would throw on a bad tag). Returns the plaintext (Buffer).
 */
export function openAttachment(blob, pointer) {
  const buf = Buffer.from(blob);
  if (buf.length !== pointer.size) {
    throw new AttachmentIntegrityError('size_mismatch', `downloaded ${buf.length} bytes, the pointer says ${pointer.size}`);
  }
  const want = Buffer.from(pointer.digest, 'base64');
  const got = sha256(buf);
  if (want.length !== got.length || !timingSafeEqual(want, got)) {
    throw new AttachmentIntegrityError('digest_mismatch', `SHA-256 ${got.toString('hex')} is not the pointer's ${want.toString('hex')}`);
  }
  return decryptAttachmentBlob(buf, Buffer.from(pointer.key, 'base64'), Buffer.from(pointer.iv, 'base64'));
}

/** AES-256-GCM open of ciphertext ‖ tag, without the digest check (throws on a bad tag). */
export function decryptAttachmentBlob(blob, key, iv) {
  if (blob.length < ATTACHMENT_TAG_BYTES) throw new Error('attachment shorter than a GCM tag');
  const d = createDecipheriv('aes-256-gcm', key, iv);
  d.setAuthTag(blob.subarray(blob.length - ATTACHMENT_TAG_BYTES));
  return Buffer.concat([d.update(blob.subarray(0, blob.length - ATTACHMENT_TAG_BYTES)), d.final()]);
}

// ---------------------------------------------------------------- the relay's two routes

/** POST /v1/attachments {size}: raw response. */
export function createAttachmentRaw(token, body, { url } = {}) {
  return request('POST', '/v1/attachments', { url, body, token });
}

/**
 * POST /v1/attachments {size}: → { id, upload_url, upload_method, upload_headers, expires_in }.
 * Throws ApiError otherwise (a 503 `unavailable` means the relay has no ATTACHMENTS_BUCKET).
 */
export async function createAttachment(token, size, { url } = {}) {
  const res = await createAttachmentRaw(token, { size }, { url });
  if (res.status !== 200) {
    const err = new ApiError('POST', '/v1/attachments', res);
    if (res.status === 503) err.message += ' (is the relay started with ATTACHMENTS_BUCKET and an S3 server?)';
    throw err;
  }
  return res.json;
}

/** GET /v1/attachments/{id}: raw response. */
export function attachmentDownloadRaw(token, id, { url } = {}) {
  return request('GET', `/v1/attachments/${encodeURIComponent(id)}`, { url, token });
}

/** GET /v1/attachments/{id} → { download_url, expires_in } (throws ApiError otherwise). */
export async function attachmentDownload(token, id, { url } = {}) {
  const res = await attachmentDownloadRaw(token, id, { url });
  if (res.status !== 200) throw new ApiError('GET', `/v1/attachments/${id}`, res);
  return res.json;
}

// ---------------------------------------------------------------- object storage (presigned URLs)

/**
 * Uploads `blob` as POST /v1/attachments told: upload_method to upload_url with exactly
 * upload_headers. Returns { status, headers, text }.
 */
export async function uploadToStorage(upload, blob) {
  const res = await fetch(upload.upload_url, {
    method: upload.upload_method,
    headers: upload.upload_headers,
    body: blob,
    signal: AbortSignal.timeout(STORAGE_TIMEOUT_MS),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** GETs a presigned download URL. Returns { status, headers, bytes (Buffer) }. */
export async function downloadFromStorage(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(STORAGE_TIMEOUT_MS) });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

/**
 * The sender's whole path: encrypt, POST /v1/attachments, PUT the ciphertext. Throws unless the
 * storage answers 2xx. Returns { upload, enc, pointer, put }.
 */
export async function sendAttachmentBytes(token, plaintext, { url } = {}) {
  const enc = encryptAttachment(plaintext);
  const upload = await createAttachment(token, enc.blob.length, { url });
  const put = await uploadToStorage(upload, enc.blob);
  if (put.status < 200 || put.status > 299) {
    throw new Error(`upload to storage -> ${put.status}: ${put.text.slice(0, 300)}`);
  }
  return { upload, enc, pointer: attachmentPointer(upload.id, enc), put };
}

/**
 * The recipient's whole path: GET /v1/attachments/{id}, download, check size and digest, decrypt.
 * Returns { plaintext, blob, download, get }; throws AttachmentIntegrityError on a size or digest
 * mismatch, or an Error when the storage does not answer 200.
 */
export async function receiveAttachmentBytes(token, pointer, { url } = {}) {
  const download = await attachmentDownload(token, pointer.attachment_id, { url });
  const get = await downloadFromStorage(download.download_url);
  if (get.status !== 200) throw new Error(`download from storage -> ${get.status}: ${get.bytes.toString('utf8').slice(0, 300)}`);
  const plaintext = openAttachment(get.bytes, pointer);
  return { plaintext, blob: get.bytes, download, get };
}
