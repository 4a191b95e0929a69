// Encrypted attachments through presigned object-storage URLs with real Signal
// clients: Alice encrypts a 5 MiB file with AES-256-GCM under a fresh random key, uploads the
// ciphertext straight to object storage through the URL the relay presigned, and sends the
// pointer (id, key, IV, digest, size) inside a Signal message; Bob gets it over the WebSocket,
// decrypts it, downloads through his own presigned URL, checks size and digest, decrypts and has
// Alice's bytes. The relay never sees the key (the envelope is opaque, the URLs name no user); a
// flipped byte fails Bob's digest check; an id never uploaded is a 404 of the storage.
//
// Needs only RELAY_URL: the relay hands out URLs of its S3 server (ATTACHMENTS_BUCKET set).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MSG_PREKEY, MSG_WHISPER, unb64 } from '../lib/client.mjs';
import { relaySuite, assertEnvelope, assertApiError } from '../lib/testutil.mjs';
import {
  ATTACHMENT_IV_BYTES,
  ATTACHMENT_KEY_BYTES,
  ATTACHMENT_TAG_BYTES,
  AttachmentIntegrityError,
  attachmentDownload,
  attachmentDownloadRaw,
  attachmentPointer,
  createAttachment,
  decryptAttachmentBlob,
  downloadFromStorage,
  encryptAttachment,
  openAttachment,
  receiveAttachmentBytes,
  sendAttachmentBytes,
  sha256,
  uploadToStorage,
} from '../lib/attachments.mjs';

const newUser = relaySuite();

const FILE_BYTES = 5 * 1024 * 1024; // 5 MiB of plaintext
const ID_RE = /^[A-Za-z0-9_-]{22}$/; // 128 random bits, base64url

/** Every spelling of a user id (UUID) that could hide in a URL. */
function userIdForms(user) {
  const id = String(user.userId);
  const hex = id.replace(/-/g, '').toLowerCase();
  const forms = [id, id.toLowerCase(), id.toUpperCase(), encodeURIComponent(id), hex];
  if (/^[0-9a-f]{32}$/.test(hex)) {
    const raw = Buffer.from(hex, 'hex');
    forms.push(raw.toString('base64url'), raw.toString('base64').replace(/=+$/, ''), encodeURIComponent(raw.toString('base64')));
  }
  return forms;
}

/** Asserts that `url` (a string) names neither user: no user id in any form, no username. */
function assertNamesNoUser(url, users, what) {
  for (const u of users) {
    for (const form of userIdForms(u)) assert.ok(!url.includes(form), `${what} contains ${u.role}'s user id (${form}): ${url}`);
    assert.ok(!url.toLowerCase().includes(u.username.toLowerCase()), `${what} contains ${u.role}'s username: ${url}`);
  }
}

/** Every spelling of a secret that could appear in a text (base64, base64url, hex). */
function secretForms(buf) {
  return [buf.toString('base64'), buf.toString('base64url'), buf.toString('hex'), buf.toString('hex').toUpperCase()];
}

/** Asserts the POST /v1/attachments answer: id, a PUT bound to `size`, a lifetime. */
function assertUploadOut(up, size) {
  assert.match(up.id, ID_RE, `attachment id: 22 characters of base64url: ${JSON.stringify(up)}`);
  assert.equal(up.upload_method, 'PUT');
  assert.equal(typeof up.upload_url, 'string');
  const url = new URL(up.upload_url);
  assert.match(url.protocol, /^https?:$/);
  assert.ok(url.pathname.endsWith(`/attachments/${up.id}`), `the object is attachments/<id>: ${url.pathname}`);
  assert.equal(typeof up.upload_headers, 'object');
  assert.equal(up.upload_headers['content-length'], String(size), 'the upload is bound to the exact size');
  assert.ok(Number.isInteger(up.expires_in) && up.expires_in > 0 && up.expires_in <= 604800, `expires_in ${up.expires_in}`);
  const signed = url.searchParams.get('X-Amz-SignedHeaders');
  if (signed) assert.ok(signed.split(';').includes('content-length'), `content-length is signed: ${signed}`);
  const expires = url.searchParams.get('X-Amz-Expires');
  if (expires) assert.equal(Number(expires), up.expires_in, 'the URL expires when the relay says');
}

test('libsignal end to end: Alice sends a 5 MiB AES-256-GCM attachment, Bob downloads, checks the digest and decrypts', async () => {
  const alice = await newUser('alice', { oneTimePreKeys: 2, kyberOneTimePreKeys: 1 });
  const bob = await newUser('bob', { oneTimePreKeys: 2, kyberOneTimePreKeys: 1 });

  // A real libsignal session (PQXDH + Double Ratchet), both online.
  await alice.startSession(bob);
  await alice.connect();
  await bob.connect();
  const hello = await alice.sendText(bob, 'hello bob, a file follows');
  assert.equal(hello.type, MSG_PREKEY);
  const [gotHello] = await bob.receiveFrom(alice, 1);
  assert.equal(gotHello.plaintext, 'hello bob, a file follows');
  const ack = await bob.sendText(alice, 'go ahead');
  assert.equal((await alice.receiveFrom(bob, 1))[0].plaintext, 'go ahead');
  assert.equal(ack.type, MSG_WHISPER);

  // Alice: 5 MiB of random plaintext, AES-256-GCM under a fresh random key, digest of the ciphertext.
  const plaintext = randomBytes(FILE_BYTES);
  const enc = encryptAttachment(plaintext);
  assert.equal(enc.key.length, ATTACHMENT_KEY_BYTES);
  assert.equal(enc.iv.length, ATTACHMENT_IV_BYTES);
  assert.equal(enc.blob.length, FILE_BYTES + ATTACHMENT_TAG_BYTES, 'ciphertext ‖ GCM tag');
  assert.ok(!enc.blob.subarray(0, FILE_BYTES).equals(plaintext), 'the upload is not the plaintext');

  // POST /v1/attachments {size}: the relay learns the ciphertext length, nothing else.
  const upload = await createAttachment(alice.token, enc.blob.length);
  assertUploadOut(upload, enc.blob.length);
  assertNamesNoUser(upload.upload_url, [alice, bob], 'upload_url');
  for (const [k, v] of Object.entries(upload.upload_headers)) assertNamesNoUser(`${k}: ${v}`, [alice, bob], 'an upload header');

  // PUT the ciphertext straight to the storage, with exactly the headers the relay gave.
  const put = await uploadToStorage(upload, enc.blob);
  assert.ok(put.status >= 200 && put.status < 300, `upload to storage -> ${put.status}: ${put.text.slice(0, 300)}`);

  // The pointer (with key and digest) goes inside a Signal message.
  const pointer = attachmentPointer(upload.id, enc);
  assert.deepEqual(Object.keys(pointer).sort(), ['attachment_id', 'digest', 'iv', 'key', 'size']);
  const msg = await alice.sendText(bob, JSON.stringify(pointer));
  assert.equal(msg.type, MSG_WHISPER);
  assert.equal(msg.reply.delivery, 'delivered', 'Bob is online: pushed over his WebSocket');

  // Bob: the envelope over the WebSocket, byte-for-byte what Alice sent.
  const [env] = await bob.socket.nextMessages(1, { filter: (e) => e.from === alice.userId });
  assertEnvelope(env, { from: alice, body: msg.body });

  // The relay never saw the key: the envelope body is opaque ciphertext.
  const wire = Buffer.from(unb64(env.body));
  for (const [name, secret] of [['key', enc.key], ['iv', enc.iv], ['digest', enc.digest]]) {
    assert.ok(!wire.includes(secret), `the raw ${name} bytes are not in the envelope body`);
    for (const form of secretForms(secret)) {
      assert.ok(!wire.includes(Buffer.from(form)), `the ${name} (${form.slice(0, 12)}…) is not in the envelope body`);
      assert.ok(!JSON.stringify(env).includes(form), `the ${name} is nowhere in the envelope`);
    }
  }
  assert.ok(!wire.includes(Buffer.from(pointer.attachment_id)), 'nor is the attachment id');
  assert.ok(!wire.includes(Buffer.from('attachment_id')), 'nor any of the pointer JSON');
  for (const form of secretForms(enc.key)) {
    assert.ok(!JSON.stringify(upload).includes(form), 'the relay answer to POST /v1/attachments holds no key');
  }

  // Bob decrypts the Signal message and reads the pointer.
  const dec = await bob.decrypt(alice.userId, env.body);
  assert.equal(dec.type, MSG_WHISPER);
  const got = JSON.parse(dec.plaintext);
  assert.deepEqual(got, pointer, 'the pointer arrives intact');

  // GET /v1/attachments/{id} (Bob's own token: ids are not tied to users) → a presigned GET.
  const download = await attachmentDownload(bob.token, got.attachment_id);
  assert.equal(typeof download.download_url, 'string');
  assert.ok(Number.isInteger(download.expires_in) && download.expires_in > 0, `expires_in ${download.expires_in}`);
  assert.ok(new URL(download.download_url).pathname.endsWith(`/attachments/${got.attachment_id}`));
  assertNamesNoUser(download.download_url, [alice, bob], 'download_url');

  // Download, check the size and the digest, then decrypt.
  const res = await downloadFromStorage(download.download_url);
  assert.equal(res.status, 200, `download from storage -> ${res.status}: ${res.bytes.toString('utf8').slice(0, 300)}`);
  const len = res.headers.get('content-length');
  if (len !== null) assert.equal(Number(len), got.size, 'Content-Length is the pointer size');
  assert.equal(res.bytes.length, got.size, 'size as in the pointer');
  assert.ok(sha256(res.bytes).equals(Buffer.from(got.digest, 'base64')), 'SHA-256 of the download is the pointer digest');
  assert.ok(res.bytes.equals(enc.blob), 'the storage returns the uploaded ciphertext byte for byte');
  const file = openAttachment(res.bytes, got);
  assert.equal(file.length, FILE_BYTES);
  assert.ok(file.equals(plaintext), "Bob has Alice's 5 MiB, byte for byte");

  // The session goes on after the attachment.
  const thanks = await bob.sendText(alice, 'got the file');
  assert.equal((await alice.receiveFrom(bob, 1))[0].plaintext, 'got the file');
  assert.equal(thanks.type, MSG_WHISPER);
  assert.equal(alice.socket.inbox.length + bob.socket.inbox.length, 0, 'no stray messages');
});

test('a tampered ciphertext (one byte flipped, uploaded under a new id) fails the digest check on the recipient', async () => {
  const alice = await newUser('alice', { oneTimePreKeys: 1, kyberOneTimePreKeys: 1 });
  const bob = await newUser('bob', { oneTimePreKeys: 1, kyberOneTimePreKeys: 1 });
  await alice.startSession(bob);
  await alice.connect();
  await bob.connect();

  // The genuine attachment.
  const plaintext = randomBytes(FILE_BYTES);
  const genuine = await sendAttachmentBytes(alice.token, plaintext);
  assertUploadOut(genuine.upload, genuine.enc.blob.length);

  // The same ciphertext with one byte flipped (in the middle of the file), uploaded as a NEW
  // attachment: the storage holds different bytes behind an id Bob is pointed at, while the
  // digest Bob holds is the genuine one (what a storage that swapped the object would serve).
  const tampered = Buffer.from(genuine.enc.blob);
  tampered[tampered.length >> 1] ^= 0x01;
  assert.ok(!sha256(tampered).equals(genuine.enc.digest));
  const second = await createAttachment(alice.token, tampered.length);
  assertUploadOut(second, tampered.length);
  assert.notEqual(second.id, genuine.upload.id, 'a fresh id');
  const put = await uploadToStorage(second, tampered);
  assert.ok(put.status >= 200 && put.status < 300, `upload to storage -> ${put.status}: ${put.text.slice(0, 300)}`);

  const swapped = { ...genuine.pointer, attachment_id: second.id };
  const sent = [];
  for (const p of [swapped, genuine.pointer]) sent.push(await alice.sendText(bob, JSON.stringify(p)));
  const got = await bob.receiveFrom(alice, 2);
  assert.equal(got[0].type, MSG_PREKEY);
  assertEnvelope(got[0].env, { from: alice, body: sent[0].body });
  assertEnvelope(got[1].env, { from: alice, body: sent[1].body });
  const [pSwapped, pGenuine] = got.map((g) => JSON.parse(g.plaintext));
  assert.deepEqual(pSwapped, swapped);

  // Bob's client detects it: the download is the right size but not the digest; nothing decrypted.
  await assert.rejects(
    receiveAttachmentBytes(bob.token, pSwapped),
    (e) => e instanceof AttachmentIntegrityError && e.code === 'digest_mismatch',
    'the digest check refuses the tampered bytes',
  );
  const raw = await downloadFromStorage((await attachmentDownload(bob.token, pSwapped.attachment_id)).download_url);
  assert.equal(raw.status, 200);
  assert.ok(raw.bytes.equals(tampered), 'the storage served the flipped byte');
  assert.equal(raw.bytes.length, pSwapped.size, 'same size: only the digest tells');
  // (AES-GCM's tag would refuse it too, were the digest check skipped.)
  assert.throws(() => decryptAttachmentBlob(raw.bytes, genuine.enc.key, genuine.enc.iv), /unable to authenticate|auth/i);

  // The genuine pointer still downloads, verifies and decrypts.
  const ok = await receiveAttachmentBytes(bob.token, pGenuine);
  assert.ok(ok.plaintext.equals(plaintext), "the untampered attachment decrypts to Alice's file");
});

test('a download of an id never uploaded answers 404 from the storage; a malformed id is 404 attachment_not_found', async () => {
  const carol = await newUser('carol', { oneTimePreKeys: 1, kyberOneTimePreKeys: 0 });

  // The relay signs a GET without looking: the storage answers that nothing is there.
  const issued = await createAttachment(carol.token, 1024); // an id issued, never PUT to
  const neverIssued = randomBytes(16).toString('base64url'); // well-formed, never issued
  for (const id of [issued.id, neverIssued]) {
    const d = await attachmentDownload(carol.token, id);
    assertNamesNoUser(d.download_url, [carol], 'download_url');
    const res = await downloadFromStorage(d.download_url);
    const text = res.bytes.toString('utf8');
    const aws = /\.amazonaws\.com$/i.test(new URL(d.download_url).hostname);
    if (aws && res.status === 403) {
      // On AWS the presigning role has no s3:ListBucket (infra/template.yaml), so S3 answers
      // 403 AccessDenied for a missing key instead of 404 NoSuchKey.
      assert.match(text, /<Code>AccessDenied<\/Code>/, `storage answer: ${text.slice(0, 300)}`);
    } else {
      assert.equal(res.status, 404, `download of ${id}: expected 404 from the storage, got ${res.status}: ${text.slice(0, 300)}`);
      assert.match(text, /<Code>NoSuchKey<\/Code>/, `storage answer: ${text.slice(0, 300)}`);
    }
  }

  // A malformed id never reaches the storage.
  assertApiError(await attachmentDownloadRaw(carol.token, 'not-an-attachment-id'), 404, 'attachment_not_found');
});
