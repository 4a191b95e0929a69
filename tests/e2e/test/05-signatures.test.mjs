// Scenario 5: signatures made by libsignal are accepted by the server's XEdDSA
// check; the same registration/upload with one flipped bit in a signature is
// rejected with 400 invalid_signature and nothing is stored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { S, RelayUser, SignalParty, b64, unb64, flipBit, MSG_PREKEY } from '../lib/client.mjs';
import { relaySuite, assertApiError, assertOk, assertEnvelope, counts } from '../lib/testutil.mjs';

const newUser = relaySuite();

// Bit positions to flip: R's first byte, R's last byte, s's first byte, and
// the top bit of the last byte (libsignal's XEdDSA stores the sign bit there).
const FLIPS = [
  [0, 0],
  [31, 7],
  [32, 0],
  [63, 7],
];

const flipSig = (sigB64, [byte, bit]) => b64(flipBit(unb64(sigB64), byte, bit));
const signBit = (sigB64) => unb64(sigB64)[63] & 0x80;

test('registration: libsignal signatures are accepted (identities with both XEdDSA sign-bit values)', async () => {
  // libsignal's XEdDSA puts the sign of the identity's Edwards key in the top
  // bit of a signature's last byte; it is fixed per identity. Register one
  // identity of each kind so a verifier that mishandles it cannot pass by luck.
  for (const wanted of [0, 0x80]) {
    let identity;
    do identity = S.IdentityKeyPair.generate();
    while ((identity.privateKey.sign(new Uint8Array([1]))[63] & 0x80) !== wanted);
    const u = new RelayUser('sig', { identity, oneTimePreKeys: 5, kyberOneTimePreKeys: 4 });
    const sigs = [u.signedPreKey, u.kyberLastResort, ...u.kyberOneTimePreKeys].map((r) => b64(r.signature()));
    assert.ok(sigs.every((s) => signBit(s) === wanted));
    const body = assertOk(await u.registerRaw(), `register with libsignal signatures (sign bit ${wanted})`);
    assert.equal(typeof body.user_id, 'string');
    assert.equal(body.username, u.username);
    u.setUserId(body.user_id);
    await u.login();
    assert.deepEqual(await counts(u), { one_time_prekeys: 5, kyber_one_time_prekeys: 4 });
  }
});

test('registration: one flipped bit in any signature → 400 invalid_signature, nothing stored', async () => {
  const cases = [];
  for (const flip of FLIPS) {
    cases.push({ what: `signed_prekey, bit ${flip}`, tamper: (b) => (b.signed_prekey.signature = flipSig(b.signed_prekey.signature, flip)) });
  }
  cases.push({ what: 'kyber_last_resort_prekey', tamper: (b) => (b.kyber_last_resort_prekey.signature = flipSig(b.kyber_last_resort_prekey.signature, [10, 2])) });
  cases.push({ what: 'last kyber_one_time_prekey', tamper: (b) => {
    const k = b.kyber_one_time_prekeys.at(-1);
    k.signature = flipSig(k.signature, [40, 5]);
  } });
  cases.push({ what: 'kyber one-time signature swapped (valid signature, other key)', tamper: (b) => {
    const [k0, k1] = b.kyber_one_time_prekeys;
    [k0.signature, k1.signature] = [k1.signature, k0.signature];
  } });

  for (const c of cases) {
    const u = new RelayUser('badsig', { oneTimePreKeys: 3, kyberOneTimePreKeys: 2 });
    const body = u.registrationBody();
    c.tamper(body);
    assertApiError(await u.registerRaw(body), 400, 'invalid_signature');
    // Nothing was stored: the very same username registers fine afterwards.
    const ok = assertOk(await u.registerRaw(), `register after rejected (${c.what})`);
    assert.equal(ok.username, u.username, c.what);
    u.setUserId(ok.user_id);
    await u.login();
    assert.deepEqual(await counts(u), { one_time_prekeys: 3, kyber_one_time_prekeys: 2 }, c.what);
  }
});

test('PUT /v1/keys: libsignal signatures accepted; one flipped bit → 400 invalid_signature, nothing stored', async () => {
  const dave = await newUser('dave', { oneTimePreKeys: 10, kyberOneTimePreKeys: 2, connect: true });
  const eve = await newUser('eve', { oneTimePreKeys: 1, kyberOneTimePreKeys: 0, connect: true });
  const before = await counts(dave);
  assert.deepEqual(before, { one_time_prekeys: 10, kyber_one_time_prekeys: 2 });

  // A batch with valid EC one-time keys and one bad Kyber signature: all refused.
  const ec = dave.newPreKeys(5);
  const ky = dave.newKyberPreKeys(3);
  const kyJson = ky.map(SignalParty.signedPreKeyJson);
  kyJson[1].signature = flipSig(kyJson[1].signature, [7, 4]);
  assertApiError(
    await dave.uploadKeysRaw({ one_time_prekeys: ec.map(SignalParty.preKeyJson), kyber_one_time_prekeys: kyJson }),
    400,
    'invalid_signature',
  );
  assert.deepEqual(await counts(dave), before, 'nothing stored from the rejected batch');

  // A replacement signed prekey with a flipped bit: refused, old one still served.
  const oldSpk = dave.signedPreKey;
  const newSpk = dave.newSignedPreKey();
  for (const flip of FLIPS) {
    const spk = SignalParty.signedPreKeyJson(newSpk);
    spk.signature = flipSig(spk.signature, flip);
    assertApiError(await dave.uploadKeysRaw({ signed_prekey: spk }), 400, 'invalid_signature');
  }
  // A replacement Kyber last-resort key with a flipped bit: refused too.
  const oldLr = dave.kyberLastResort;
  const newLr = dave.newKyberPreKeys(1, { lastResort: true })[0];
  const lr = SignalParty.signedPreKeyJson(newLr);
  lr.signature = flipSig(lr.signature, [20, 1]);
  assertApiError(await dave.uploadKeysRaw({ kyber_last_resort_prekey: lr }), 400, 'invalid_signature');
  assert.deepEqual(await counts(dave), before);

  const b1 = await eve.fetchBundle(dave.userId);
  assert.equal(b1.signed_prekey.key_id, oldSpk.id(), 'the old signed prekey is still served');
  assert.equal(b1.signed_prekey.public_key, b64(oldSpk.publicKey().serialize()));

  // The same uploads, untampered: accepted.
  const put = assertOk(
    await dave.uploadKeysRaw({
      one_time_prekeys: ec.map(SignalParty.preKeyJson),
      kyber_one_time_prekeys: ky.map(SignalParty.signedPreKeyJson),
      signed_prekey: SignalParty.signedPreKeyJson(newSpk),
      kyber_last_resort_prekey: SignalParty.signedPreKeyJson(newLr),
    }),
    'valid PUT /v1/keys',
  );
  // b1 consumed one EC and one Kyber one-time key.
  assert.equal(put.one_time_prekeys, 10 - 1 + 5);
  assert.equal(put.kyber_one_time_prekeys, 2 - 1 + 3);
  assert.deepEqual(await counts(dave), { one_time_prekeys: 14, kyber_one_time_prekeys: 4 });

  const b2 = await eve.fetchBundle(dave.userId);
  assert.equal(b2.signed_prekey.key_id, newSpk.id(), 'the new signed prekey is served');
  assert.equal(b2.signed_prekey.signature, b64(newSpk.signature()));
  dave.signedPreKey = newSpk;
  dave.kyberLastResort = newLr;
  // The server's bundle verifies in libsignal and a session runs on it.
  await eve.processBundle(b2);
  const m = await eve.sendText(dave, 'on the new signed prekey');
  assert.equal(m.type, MSG_PREKEY);
  const [r] = await dave.receiveFrom(eve, 1);
  assertEnvelope(r.env, { from: eve, body: m.body });
  assert.equal(r.plaintext, 'on the new signed prekey');
  assert.ok(oldLr.id() !== newLr.id());
});
