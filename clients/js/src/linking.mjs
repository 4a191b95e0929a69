// Linking a new device to an account (docs/api.md §3.5). The new device opens the anonymous
// provisioning socket and shows a link string (the socket's address and an ephemeral public key);
// the primary seals the identity key pair and a linking code to that key, so the relay cannot
// read it, and the new device presents the code to become a device of the account.
import { setTimeout as sleep } from 'node:timers/promises';
import { S, b64, unb64 } from './signal.mjs';
import { ProvisioningSocket } from './socket.mjs';
import { RelayDevice } from './devices.mjs';
import { sealProvisioningMessage, openProvisioningMessage } from './provisioning.mjs';
import { RelayError, RateLimitedError, ServerUnavailableError } from './errors.mjs';
import { handshakeError } from './connection.mjs';

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const DEFAULT_ADDRESS_TTL_SECS = 600;

/** `address.publicKey` (base64url) → { address, publicKey } or throws RelayError('invalid_link_string'). */
export function parseLinkString(linkString) {
  const s = String(linkString ?? '').trim();
  const m = /^([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43,45})$/.exec(s);
  const bad = () => new RelayError('not a link string (expected what `startLinking` printed: ADDRESS.KEY)', { code: 'invalid_link_string' });
  if (!m) throw bad();
  const key = Buffer.from(m[2], 'base64url');
  if (key.length !== 33 || key[0] !== 0x05) throw bad();
  try {
    return { address: m[1], publicKey: S.PublicKey.deserialize(new Uint8Array(key)) };
  } catch {
    throw bad();
  }
}

/**
 * On the new device: takes `store` (which must be empty), opens the provisioning socket and
 * returns { linkString, address, done, cancel }. `done` resolves to what `finish(device, tokens)`
 * makes of the linked device and its first token pair; the store is given up when it fails.
 */
export async function startLinking({ url, store, refill, finish }) {
  const release = () => store.release?.().catch(() => {});
  await store.acquire?.();
  const existing = await store.load().catch(async (e) => {
    await release();
    throw e;
  });
  if (existing?.account) {
    await release();
    throw new RelayError(`${store} already holds the account ${existing.account.username}`, { code: 'store_in_use' });
  }
  const ephemeral = S.PrivateKey.generate();
  let prov;
  try {
    prov = await ProvisioningSocket.connect({ url });
  } catch (e) {
    await release();
    throw handshakeError(e, url);
  }
  let addr;
  try {
    addr = await prov.provision();
  } catch (e) {
    await prov.close().catch(() => {});
    await release();
    throw new ServerUnavailableError(`provisioning failed: ${e.message}`, { cause: e });
  }
  const linkString = `${addr.address}.${b64url(ephemeral.getPublicKey().serialize())}`;
  const done = (async () => {
    try {
      let msg;
      try {
        msg = await prov.provisioningMessage((addr.expires_in ?? DEFAULT_ADDRESS_TTL_SECS) * 1000);
      } catch (e) {
        throw new RelayError(`no provisioning message arrived: ${e.message}`, { code: 'link_failed', cause: e });
      }
      const payload = openProvisioningMessage(ephemeral, unb64(msg.body), { address: addr.address });
      const device = new RelayDevice('me', {
        url,
        identity: S.IdentityKeyPair.deserialize(unb64(payload.identity_key_pair)),
        username: payload.username,
        oneTimePreKeys: Math.min(100, refill.oneTime),
        kyberOneTimePreKeys: Math.min(100, refill.kyber),
        retries429: 0,
      });
      device.password = null;
      const res = await device.postLink(payload.code);
      if (res?.user_id !== payload.user_id) throw new RelayError(`POST /v1/devices: user_id ${res?.user_id} is not ${payload.user_id}`, { code: 'link_failed' });
      device.setUserId(res.user_id, res.device_id);
      return await finish(device, res);
    } catch (e) {
      await release();
      throw e;
    } finally {
      await prov.close().catch(() => {});
    }
  })();
  done.catch(() => {}); // the caller awaits it; no unhandled rejection when they stop waiting
  return { linkString, address: addr.address, done, cancel: () => prov.close() };
}

/**
 * On the primary (`session`'s device): links the device that printed `linkString`. Resolves
 * { deviceId }: the id the relay gave the new device, as GET /v1/devices shows it once the new
 * device has presented the code (null when it did not show up within `timeoutMs`, or the client
 * closed meanwhile).
 */
export async function linkDevice({ session, directory, isClosed }, linkString, { timeoutMs = 60_000 } = {}) {
  const { address, publicKey } = parseLinkString(linkString);
  const before = new Set((await directory.devices()).map((d) => d.id));
  const code = await session.call('POST', '/v1/devices/provisioning');
  const sealed = sealProvisioningMessage(publicKey, session.device.provisioningPayload(code.code), { address });
  await session.call('PUT', `/v1/provisioning/${encodeURIComponent(address)}`, { body: b64(sealed) });
  directory.forgetOwnDevices();
  // The relay tells the new device its id (POST /v1/devices), not the primary: it shows in
  // the device list as soon as the new device has linked itself.
  const deadline = Date.now() + timeoutMs;
  for (let wait = 100; !isClosed(); wait = Math.min(1000, wait * 2)) {
    let added = [];
    try {
      added = (await directory.devices()).filter((d) => !before.has(d.id));
    } catch (e) {
      if (!(e instanceof ServerUnavailableError) && !(e instanceof RateLimitedError)) throw e;
    }
    if (added.length) {
      added.sort((a, b) => b.createdAt - a.createdAt || b.id - a.id);
      return { deviceId: added[0].id };
    }
    if (Date.now() + wait > deadline) break;
    await sleep(wait);
  }
  return { deviceId: null };
}
