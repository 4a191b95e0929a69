// A throwaway in-memory stand-in for the relay, used only to develop the e2e
// suite itself (it is NOT what the suite tests). It follows SPEC.md's HTTP and
// WebSocket shapes closely enough for the scenarios; no persistence, no rate
// limits, no expiry. Run: node dev/mock-relay.mjs [port]  (default 18080),
// then RELAY_URL=http://127.0.0.1:18080 npm test.
import http from 'node:http';
import { randomUUID, randomBytes } from 'node:crypto';
import { WebSocketServer } from 'ws';
import * as S from '@signalapp/libsignal-client';

const port = Number(process.argv[2] || 18080);
const users = new Map(); // id -> user
const byName = new Map(); // lower username -> id
const tokens = new Map(); // token -> user id
const sockets = new Map(); // user id -> ws

class HttpErr extends Error {
  constructor(status, code, message = code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}
const bad = (code = 'invalid_request', m) => new HttpErr(400, code, m);
const dec = (s, len, prefix, what) => {
  if (typeof s !== 'string') throw bad('invalid_request', `${what} missing`);
  const b = Buffer.from(s, 'base64');
  if (len && b.length !== len) throw bad('invalid_request', `${what} length`);
  if (prefix !== undefined && b[0] !== prefix) throw bad('invalid_request', `${what} prefix`);
  return new Uint8Array(b);
};
const keyId = (k) => {
  if (!Number.isInteger(k) || k < 0 || k > 2 ** 31 - 1) throw bad('invalid_request', 'key_id');
  return k;
};
function ecKey(k, what) {
  if (!k || typeof k !== 'object') throw bad('invalid_request', what);
  return { key_id: keyId(k.key_id), public_key: b64(dec(k.public_key, 33, 5, what)) };
}
function signedKey(k, identity, len, prefix, what) {
  if (!k || typeof k !== 'object') throw bad('invalid_request', what);
  const pub = dec(k.public_key, len, prefix, what);
  const sig = dec(k.signature, 64, undefined, `${what}.signature`);
  if (!identity.verify(pub, sig)) throw bad('invalid_signature', `${what}: bad signature`);
  return { key_id: keyId(k.key_id), public_key: b64(pub), signature: b64(sig) };
}
const b64 = (u) => Buffer.from(u).toString('base64');

function parseKeys(body, identity, { registration }) {
  const out = {};
  if (registration || body.signed_prekey) out.signed_prekey = signedKey(body.signed_prekey, identity, 33, 5, 'signed_prekey');
  if (body.kyber_last_resort_prekey) out.kyber_last_resort_prekey = signedKey(body.kyber_last_resort_prekey, identity, 1569, 8, 'kyber_last_resort_prekey');
  if (registration || body.one_time_prekeys) {
    const l = body.one_time_prekeys;
    if (!Array.isArray(l) || (registration && l.length < 1) || l.length > 100) throw bad('invalid_request', 'one_time_prekeys');
    out.one_time_prekeys = l.map((k) => ecKey(k, 'one_time_prekey'));
  }
  if (body.kyber_one_time_prekeys) {
    const l = body.kyber_one_time_prekeys;
    if (!Array.isArray(l) || l.length > 100) throw bad('invalid_request', 'kyber_one_time_prekeys');
    out.kyber_one_time_prekeys = l.map((k) => signedKey(k, identity, 1569, 8, 'kyber_one_time_prekey'));
  }
  return out;
}
function applyKeys(u, k) {
  if (k.signed_prekey) u.signed_prekey = k.signed_prekey;
  if (k.kyber_last_resort_prekey) u.kyber_last_resort_prekey = k.kyber_last_resort_prekey;
  for (const x of k.one_time_prekeys || []) u.otk.set(x.key_id, x);
  for (const x of k.kyber_one_time_prekeys || []) u.kotk.set(x.key_id, x);
}
const counts = (u) => ({ one_time_prekeys: u.otk.size, kyber_one_time_prekeys: u.kotk.size });

function auth(req) {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization || '');
  const id = m && tokens.get(m[1]);
  if (!id || !users.has(id)) throw new HttpErr(401, 'unauthorized');
  return users.get(id);
}

async function route(req, body) {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (req.method === 'GET' && p === '/healthz') return { status: 'ok' };
  if (req.method === 'POST' && p === '/v1/users') {
    const name = String(body.username || '').toLowerCase();
    if (!/^[a-z0-9_.-]{3,32}$/.test(name)) throw bad('invalid_request', 'username');
    if (typeof body.password !== 'string' || body.password.length < 8 || body.password.length > 128) throw bad('invalid_request', 'password');
    const identity = S.PublicKey.deserialize(dec(body.identity_key, 33, 5, 'identity_key'));
    const keys = parseKeys(body, identity, { registration: true });
    if (byName.has(name)) throw new HttpErr(409, 'username_taken');
    const u = { id: randomUUID(), username: name, password: body.password, registration_id: body.registration_id, identity_key: b64(identity.serialize()), identity, otk: new Map(), kotk: new Map() };
    applyKeys(u, keys);
    users.set(u.id, u);
    byName.set(name, u.id);
    return { user_id: u.id, username: name };
  }
  if (req.method === 'POST' && p === '/v1/sessions') {
    const id = byName.get(String(body.username || '').toLowerCase());
    if (!id || users.get(id).password !== body.password) throw new HttpErr(401, 'invalid_credentials');
    const t = randomBytes(24).toString('base64url');
    tokens.set(t, id);
    return { user_id: id, access_token: t, token_type: 'Bearer', expires_in: 900, refresh_token: randomBytes(24).toString('base64url') };
  }
  const me = auth(req);
  if (req.method === 'GET' && p === '/v1/keys/count') return counts(me);
  if (req.method === 'PUT' && p === '/v1/keys') {
    applyKeys(me, parseKeys(body, me.identity, { registration: false }));
    return counts(me);
  }
  let m;
  if (req.method === 'GET' && (m = /^\/v1\/users\/([^/]+)\/bundle$/.exec(p))) {
    const u = users.get(decodeURIComponent(m[1]));
    if (!u) throw new HttpErr(404, 'user_not_found');
    if (u.otk.size === 0) throw new HttpErr(412, 'prekeys_exhausted');
    const [otkId, otk] = u.otk.entries().next().value;
    u.otk.delete(otkId);
    let kyber = u.kyber_last_resort_prekey || null;
    if (u.kotk.size) {
      const [kid, k] = u.kotk.entries().next().value;
      u.kotk.delete(kid);
      kyber = k;
    }
    return { user_id: u.id, registration_id: u.registration_id, identity_key: u.identity_key, signed_prekey: u.signed_prekey, one_time_prekey: otk, kyber_prekey: kyber };
  }
  if (req.method === 'GET' && p === '/v1/users') {
    const id = byName.get(String(url.searchParams.get('username') || '').toLowerCase());
    if (!id) throw new HttpErr(404, 'user_not_found');
    return { user_id: id, username: users.get(id).username };
  }
  throw new HttpErr(404, 'not_found');
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    let status = 200;
    let out;
    try {
      const raw = Buffer.concat(chunks).toString();
      let body = {};
      if (raw) {
        try {
          body = JSON.parse(raw);
        } catch {
          throw bad('invalid_request', 'bad json');
        }
      }
      out = await route(req, body);
    } catch (e) {
      status = e.status || 500;
      out = { error: { code: e.code || 'internal', message: e.message } };
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(out));
  });
});

const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, sock, head) => {
  const url = new URL(req.url, 'http://x');
  const id = tokens.get(url.searchParams.get('token') || '');
  if (url.pathname !== '/ws' || !id) {
    sock.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, sock, head, (ws) => {
    const u = users.get(id);
    u.inbox ??= [];
    sockets.set(id, ws);
    ws.on('close', () => sockets.get(id) === ws && sockets.delete(id));
    ws.on('message', (data) => {
      let f;
      try {
        f = JSON.parse(data.toString());
      } catch {
        return ws.send(JSON.stringify({ type: 'error', code: 'invalid_frame', message: 'bad json' }));
      }
      if (f.action === 'ping') return ws.send(JSON.stringify({ type: 'pong' }));
      if (f.action === 'list') return ws.send(JSON.stringify({ type: 'inbox', pending: u.inbox.length }));
      if (f.action === 'fetch') {
        const msgs = u.inbox.splice(0);
        for (let i = 0; i < msgs.length; i += 10) ws.send(JSON.stringify({ type: 'messages', messages: msgs.slice(i, i + 10) }));
        return ws.send(JSON.stringify({ type: 'drained' }));
      }
      if (f.action === 'send') {
        const to = users.get(f.to);
        if (!to) return ws.send(JSON.stringify({ type: 'error', id: f.id, code: 'unknown_recipient', message: 'no such user' }));
        if (Buffer.from(String(f.body), 'base64').length > 65536) return ws.send(JSON.stringify({ type: 'error', id: f.id, code: 'too_large', message: 'too large' }));
        const env = { id: randomUUID(), from: id, sent_at: Date.now(), body: b64(Buffer.from(f.body, 'base64')) };
        const live = sockets.get(f.to);
        if (live) {
          live.send(JSON.stringify({ type: 'messages', messages: [env] }));
          return ws.send(JSON.stringify({ type: 'sent', id: f.id, delivery: 'delivered' }));
        }
        if (f.online_only) return ws.send(JSON.stringify({ type: 'sent', id: f.id, delivery: 'dropped' }));
        (to.inbox ??= []).push(env);
        return ws.send(JSON.stringify({ type: 'sent', id: f.id, delivery: 'queued' }));
      }
      ws.send(JSON.stringify({ type: 'error', code: 'invalid_frame', message: 'unknown action' }));
    });
  });
});

server.listen(port, '127.0.0.1', () => console.log(`mock relay on http://127.0.0.1:${port}`));
