// The provisioning message of a device being linked (docs/api.md §3.5): encrypted by the primary
// to the new device's ephemeral key, so that the relay, which forwards it, cannot read it.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { S } from './signal.mjs';

// ---------------------------------------------------------------- provisioning crypto
//
// The provisioning message travels through the relay, which must not be able to
// read it. The new device shows (out of band, a QR code in real clients) its
// provisioning address and an ephemeral X25519 public key; the primary makes its
// own ephemeral key pair, agrees on a shared secret (ECDH), derives an AES-256-GCM
// key with HKDF-SHA256 and encrypts the payload (identity key pair, linking code).
//
// Wire: version(1) ‖ primary ephemeral public key (33) ‖ IV (12) ‖ ciphertext ‖ GCM tag (16),
// AAD = version ‖ UTF-8 provisioning address (a message is bound to the address it was sent to).

export const PROVISIONING_VERSION = 1;
// (The HKDF info string predates the library; changing it would break linking across versions.)
const PROVISIONING_INFO = Buffer.from('relay-e2e provisioning v1 aes-256-gcm');

function provisioningKey(shared, ephemeralPub, recipientPub) {
  const salt = Buffer.concat([Buffer.from(ephemeralPub), Buffer.from(recipientPub)]);
  return Buffer.from(hkdfSync('sha256', Buffer.from(shared), salt, PROVISIONING_INFO, 32));
}

function provisioningAad(addressStr) {
  return Buffer.concat([Buffer.from([PROVISIONING_VERSION]), Buffer.from(String(addressStr), 'utf8')]);
}

/**
 * Encrypts `payload` (a JSON-able object) to the new device's ephemeral public key
 * (`recipientPub`: libsignal PublicKey). Returns the raw bytes (Buffer).
 */
export function sealProvisioningMessage(recipientPub, payload, { address }) {
  const eph = S.PrivateKey.generate();
  const ephPub = eph.getPublicKey().serialize();
  const shared = eph.agree(recipientPub);
  const key = provisioningKey(shared, ephPub, recipientPub.serialize());
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(provisioningAad(address));
  const ct = Buffer.concat([c.update(Buffer.from(JSON.stringify(payload), 'utf8')), c.final()]);
  return Buffer.concat([Buffer.from([PROVISIONING_VERSION]), Buffer.from(ephPub), iv, ct, c.getAuthTag()]);
}

/** The new device's side: decrypts with its ephemeral private key; throws on any tampering. */
export function openProvisioningMessage(privateKey, bytes, { address }) {
  const buf = Buffer.from(bytes);
  if (buf.length < 1 + 33 + 12 + 16 + 1) throw new Error('provisioning message too short');
  if (buf[0] !== PROVISIONING_VERSION) throw new Error(`provisioning message version ${buf[0]}`);
  const ephPub = new Uint8Array(buf.subarray(1, 34));
  const iv = buf.subarray(34, 46);
  const tag = buf.subarray(buf.length - 16);
  const ct = buf.subarray(46, buf.length - 16);
  const shared = privateKey.agree(S.PublicKey.deserialize(ephPub));
  const key = provisioningKey(shared, ephPub, privateKey.getPublicKey().serialize());
  const d = createDecipheriv('aes-256-gcm', key, iv);
  d.setAAD(provisioningAad(address));
  d.setAuthTag(tag);
  const pt = Buffer.concat([d.update(ct), d.final()]);
  return JSON.parse(pt.toString('utf8'));
}
