// HTTP to the relay (global fetch) exactly as docs/api.md describes, and where the relay is.
import { setTimeout as sleep } from 'node:timers/promises';
import { errorFromResponse, ServerUnavailableError } from './errors.mjs';

/** The default base URL: RELAY_URL, else http://127.0.0.1:8080. */
export const RELAY_URL = (process.env.RELAY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');

/**
 * The relay's three addresses for a base URL: { url, wsUrl, provisioningUrl }. With no argument,
 * the environment's: RELAY_WS_URL overrides the WebSocket URL (ws://HOST/ws derived from the base
 * URL otherwise), RELAY_PROVISIONING_URL the provisioning socket's (else `RELAY_WS_URL?provisioning=1`
 * when RELAY_WS_URL is set, else ws://HOST/ws/provisioning). With a base URL, the environment's
 * WebSocket overrides apply only when `url` is the environment's RELAY_URL.
 */
export function relayUrls(url) {
  const base = String(url || RELAY_URL).replace(/\/+$/, '');
  const fromEnv = !url || base === RELAY_URL;
  const envWs = fromEnv ? process.env.RELAY_WS_URL : undefined;
  const wsUrl = (envWs || base.replace(/^http/i, 'ws') + '/ws').replace(/\/+$/, '');
  const provisioningUrl = (fromEnv && process.env.RELAY_PROVISIONING_URL)
    || (envWs ? `${envWs.replace(/\/+$/, '')}?provisioning=1` : base.replace(/^http/i, 'ws') + '/ws/provisioning');
  return { url: base, wsUrl, provisioningUrl };
}

const ENV = relayUrls();
/** ws://HOST/ws locally; override with RELAY_WS_URL (e.g. a wss://…/<stage> URL). */
export const RELAY_WS_URL = ENV.wsUrl;
/** The anonymous provisioning socket of a device being linked (see relayUrls). */
export const RELAY_PROVISIONING_URL = ENV.provisioningUrl;

export const HTTP_TIMEOUT_MS = Number(process.env.RELAY_HTTP_TIMEOUT_MS || 20000);
export const WS_TIMEOUT_MS = Number(process.env.RELAY_WS_TIMEOUT_MS || 15000);

/**
 * One HTTP request to `url` (default RELAY_URL) + `path`. Returns { status, headers, json, text }
 * whatever the status. A 429 is retried (honouring Retry-After, at most 5 s each) `retries429`
 * times (default 5; 0 returns it). A relay that cannot be reached (refused, reset, timed out)
 * throws ServerUnavailableError.
 */
export async function request(method, path, { body, token, rawBody, retries429 = 5, url, timeoutMs = HTTP_TIMEOUT_MS } = {}) {
  const base = url ? String(url).replace(/\/+$/, '') : RELAY_URL;
  const headers = {};
  if (body !== undefined || rawBody !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  for (let attempt = 0; ; attempt++) {
    let res;
    let text;
    try {
      res = await fetch(base + path, {
        method,
        headers,
        body: rawBody !== undefined ? rawBody : body !== undefined ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(timeoutMs),
      });
      text = await res.text();
    } catch (e) {
      const why = e.cause?.code || e.name || e.message;
      throw new ServerUnavailableError(`cannot reach the relay at ${base} (${why})`, { code: 'unreachable', status: 0, cause: e });
    }
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    if (res.status === 429 && attempt < retries429) {
      const ra = Number(res.headers.get('retry-after'));
      const waitS = Number.isFinite(ra) && ra > 0 ? Math.min(ra, 5) : 1;
      await sleep(waitS * 1000);
      continue;
    }
    return { status: res.status, headers: res.headers, json, text };
  }
}

/** Like request() but throws the typed error (errors.mjs) unless the status is 2xx; returns the JSON body. */
export async function call(method, path, opts) {
  const res = await request(method, path, opts);
  if (res.status < 200 || res.status > 299) throw errorFromResponse(method, path, res);
  return res.json;
}

/** Asserts-free helper: the API error code of a response, or undefined. */
export function errorCode(res) {
  return res?.json?.error?.code;
}

/** Waits for GET /healthz to answer 200 (up to `timeoutMs`). */
export async function waitForRelay(timeoutMs = Number(process.env.RELAY_WAIT_MS || 20000), { url } = {}) {
  const base = url ? String(url).replace(/\/+$/, '') : RELAY_URL;
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(base + '/healthz', { signal: AbortSignal.timeout(3000) });
      if (res.status === 200) return;
      last = `status ${res.status}`;
    } catch (e) {
      last = e.cause?.code || e.message;
    }
    await sleep(500);
  }
  throw new ServerUnavailableError(`relay at ${base} is not healthy after ${timeoutMs} ms (${last}); start it with ./local/up or set RELAY_URL`);
}
