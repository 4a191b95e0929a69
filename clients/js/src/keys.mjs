// Prekey upkeep of one device: one-time prekeys (EC and Kyber) topped up when the relay holds too
// few, and the signed prekey with the Kyber last-resort prekey replaced on Signal's schedule. New
// private keys are always saved before their public halves are uploaded.
import { RelayDevice } from './devices.mjs';

export const DEFAULT_REFILL = Object.freeze({ below: 20, oneTime: 100, kyberBelow: 5, kyber: 20 });
// Signal's schedule: a new signed prekey (and Kyber last-resort prekey) every 2 days; retired
// ones kept 30 days, as long as the relay keeps a message.
export const DEFAULT_ROTATE = Object.freeze({ everyMs: 2 * 86_400_000, keepMs: 30 * 86_400_000 });
const KEYS_PER_UPLOAD = 100; // the relay's cap per PUT /v1/keys and per kind

/** `refill` options over the defaults. */
export function refillOptions(refill = {}) {
  return { ...DEFAULT_REFILL, ...refill };
}

/** `rotate` options over the defaults; intervals must be positive numbers of milliseconds. */
export function rotateOptions(rotate = {}) {
  const r = { ...DEFAULT_ROTATE, ...rotate };
  for (const k of ['everyMs', 'keepMs']) {
    if (typeof r[k] !== 'number' || !(r[k] > 0)) throw new TypeError(`rotate.${k} must be a positive number of milliseconds`);
  }
  return Object.freeze(r);
}

/**
 * The prekeys of `session`'s device. Changes to the Signal state run under `signal` (a Lock);
 * `isClosed()` stops rotations once the client is closed. One refill and one rotation at a time:
 * a second caller gets the running one.
 */
export class KeyUpkeep {
  #session;
  #signal;
  #refill;
  #rotate;
  #isClosed;
  #rotating = null;
  #refilling = null;

  constructor({ session, signal, refill, rotate, isClosed }) {
    this.#session = session;
    this.#signal = signal;
    this.#refill = refill;
    this.#rotate = rotate;
    this.#isClosed = isClosed;
  }

  /** At connect and after a PreKey message: the rotation when due, then the refill (both tried). */
  async check() {
    let failed = null;
    await this.rotateIfDue().catch((e) => {
      failed = e;
    });
    await this.refillIfLow();
    if (failed) throw failed;
  }

  /**
   * Replaces the signed prekey and the Kyber last-resort prekey once the current signed prekey is
   * `rotate.everyMs` old: the new keys are saved, uploaded (PUT /v1/keys), then made current.
   * Retired ones are deleted once `rotate.keepMs` old, except the newest retired one (a message
   * built from a bundle fetched before the rotation still decrypts). Resolves to the new key ids,
   * or null when not due.
   */
  rotateIfDue() {
    if (this.#rotating) return this.#rotating;
    const current = this.#session.device.signedPreKey;
    if (this.#isClosed() || (current && Date.now() - current.timestamp() < this.#rotate.everyMs)) return Promise.resolve(null);
    this.#rotating = this.#rotateNow().finally(() => {
      this.#rotating = null;
    });
    return this.#rotating;
  }

  async #rotateNow() {
    const session = this.#session;
    const device = session.device;
    const next = await this.#signal.run(async () => {
      const n = device.newRotation();
      await session.persist(); // the private halves first
      return n;
    });
    await session.call('PUT', '/v1/keys', {
      signed_prekey: RelayDevice.signedPreKeyJson(next.signed),
      kyber_last_resort_prekey: RelayDevice.signedPreKeyJson(next.kyber),
    });
    return this.#signal.run(async () => {
      device.adoptRotation(next);
      device.pruneRetired(this.#rotate.keepMs);
      await session.persist();
      return { signedPreKeyId: next.signed.id(), kyberLastResortId: next.kyber.id() };
    });
  }

  /** Tops up one-time prekeys (EC, Kyber) when the relay holds fewer than the thresholds. */
  refillIfLow() {
    this.#refilling ??= this.#refillNow().finally(() => {
      this.#refilling = null;
    });
    return this.#refilling;
  }

  async #refillNow() {
    const session = this.#session;
    const device = session.device;
    const c = await session.withAuth(() => device.keyCount());
    const ecN = c.one_time_prekeys < this.#refill.below ? this.#refill.oneTime : 0;
    const kyN = c.kyber_one_time_prekeys < this.#refill.kyberBelow ? this.#refill.kyber : 0;
    for (let ec = ecN, ky = kyN; ec > 0 || ky > 0; ec -= KEYS_PER_UPLOAD, ky -= KEYS_PER_UPLOAD) {
      const body = await this.#signal.run(async () => {
        const b = {};
        const ecKeys = device.newPreKeys(Math.max(0, Math.min(KEYS_PER_UPLOAD, ec)));
        const kyKeys = device.newKyberPreKeys(Math.max(0, Math.min(KEYS_PER_UPLOAD, ky)));
        if (ecKeys.length) b.one_time_prekeys = ecKeys.map(RelayDevice.preKeyJson);
        if (kyKeys.length) b.kyber_one_time_prekeys = kyKeys.map(RelayDevice.signedPreKeyJson);
        await session.persist(); // the private halves first
        return b;
      });
      await session.call('PUT', '/v1/keys', body);
    }
    return { ...c, refilled: { oneTime: ecN, kyber: kyN } };
  }

  /** Resolves once a running rotation has finished (an uploaded rotation is made current and saved). */
  settled() {
    return this.#rotating?.catch(() => {});
  }
}
