// Sender keys (libsignal's group ciphers): one symmetric chain per sending device and
// distribution id, handed to the other members in a SenderKeyDistributionMessage over the 1:1
// sessions, so that a group message is encrypted once for every member device. Nothing here
// talks to the network: signal.mjs keeps the store (MemSenderKeyStore) in the party's state,
// groups.mjs decides who gets which key when.
import * as S from '@signalapp/libsignal-client';
import { b64, unb64, frame, unframe, deviceAddress } from './signal.mjs';

/** The wire type byte of a group ciphertext (CiphertextMessageType.SenderKey, 7). */
export const MSG_SENDER_KEY = S.CiphertextMessageType.SenderKey;

/**
 * The SenderKeyDistributionMessage of `party`'s chain for `distributionId` (created on first
 * use), serialized: what each member device must process before it can read this party's sends.
 */
export async function distributionMessage(party, distributionId) {
  const m = await S.SenderKeyDistributionMessage.create(party.localAddress, distributionId, party.senderKeyStore);
  return m.serialize();
}

/** Processes a distribution message that `userId`.`deviceId` sent; returns its distribution id. */
export async function processDistribution(party, userId, deviceId, bytes) {
  const m = S.SenderKeyDistributionMessage.deserialize(bytes instanceof Uint8Array ? new Uint8Array(bytes) : unb64(bytes));
  await S.processSenderKeyDistributionMessage(deviceAddress(userId, deviceId), m, party.senderKeyStore);
  return m.distributionId();
}

/** groupEncrypt under `distributionId`: the framed wire body, base64. */
export async function groupEncrypt(party, distributionId, plaintext) {
  const data = typeof plaintext === 'string' ? new TextEncoder().encode(plaintext) : new Uint8Array(plaintext);
  const ct = await S.groupEncrypt(party.localAddress, distributionId, party.senderKeyStore, data);
  return b64(frame(ct.type(), ct.serialize()));
}

/** The distribution id a framed group body (base64 or bytes) was encrypted under. */
export function distributionIdOf(body) {
  const { type, payload } = unframe(typeof body === 'string' ? unb64(body) : new Uint8Array(body));
  if (type !== MSG_SENDER_KEY) throw new Error(`not a group ciphertext (type byte ${type})`);
  return S.SenderKeyMessage.deserialize(payload).distributionId();
}

/** groupDecrypt of a framed body from `userId`.`deviceId`; returns the plaintext bytes. */
export async function groupDecrypt(party, userId, deviceId, body) {
  const { type, payload } = unframe(typeof body === 'string' ? unb64(body) : new Uint8Array(body));
  if (type !== MSG_SENDER_KEY) throw new Error(`not a group ciphertext (type byte ${type})`);
  return S.groupDecrypt(deviceAddress(userId, deviceId), party.senderKeyStore, payload);
}
