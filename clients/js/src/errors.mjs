// Typed errors of the client library. Every error the library raises on purpose is a RelayError
// with a stable `code` (the API's error code when the relay gave one) and `status` (the HTTP
// status, the error frame's internal status, or 0 when the relay could not be reached).

export class RelayError extends Error {
  constructor(message, { code = 'error', status = 0, cause, res, frame } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    if (res) this.res = res;
    if (frame) this.frame = frame;
  }
}

/** 429: `retryAfter` is the wait in seconds (Retry-After, or the error frame's "retry after N s"). */
export class RateLimitedError extends RelayError {
  constructor(message, { retryAfter = 1, ...rest } = {}) {
    super(message, { code: 'rate_limited', status: 429, ...rest });
    this.retryAfter = retryAfter;
  }
}

/** 412 on a bundle: a device of the recipient has no one-time prekey left. `devices` when named. */
export class PreKeysExhaustedError extends RelayError {
  constructor(message, { devices, ...rest } = {}) {
    super(message, { code: 'prekeys_exhausted', status: 412, ...rest });
    if (devices) this.devices = devices;
  }
}

/** No such user (a lookup or a bundle: 404 user_not_found; a send: unknown_recipient). */
export class UnknownUserError extends RelayError {
  constructor(message, opts = {}) {
    super(message, { code: 'user_not_found', status: 404, ...opts });
  }
}

/** Wrong password, unknown account at login, revoked or expired session (401). */
export class AuthError extends RelayError {
  constructor(message, opts = {}) {
    super(message, { code: 'unauthorized', status: 401, ...opts });
  }
}

/** 409 username_taken at registration. */
export class UsernameTakenError extends RelayError {
  constructor(message, opts = {}) {
    super(message, { code: 'username_taken', status: 409, ...opts });
  }
}

/** The relay cannot be reached (connection refused, timeout) or answers 5xx. */
export class ServerUnavailableError extends RelayError {
  constructor(message, opts = {}) {
    super(message, { code: 'unavailable', status: 503, ...opts });
  }
}

/** `send` still refused with mismatched_devices / stale_devices after every attempt. */
export class MismatchedDevicesError extends RelayError {
  constructor(message, opts = {}) {
    super(message, { code: 'mismatched_devices', status: 409, ...opts });
  }
}

/**
 * Any other refusal. The low-level form `new ApiError(method, path, res)` (res from request())
 * names the request; the library's other callers pass (message, { code, status }).
 */
export class ApiError extends RelayError {
  constructor(methodOrMessage, path, res) {
    if (typeof path === 'string' && res && typeof res.status === 'number') {
      const code = res.json?.error?.code;
      super(`${methodOrMessage} ${path} -> ${res.status}${code ? ` ${code}` : ''}: ${String(res.text ?? '').slice(0, 300)}`, {
        code: code ?? 'error',
        status: res.status,
        res,
      });
    } else {
      super(methodOrMessage, path && typeof path === 'object' ? path : {});
    }
  }
}

function retryAfterOf(res) {
  const ra = Number(res?.headers?.get?.('retry-after'));
  return Number.isFinite(ra) && ra > 0 ? ra : 1;
}

/** "too many requests; retry after 172 s" → 172 (1 when absent). */
export function retryAfterFromMessage(message) {
  const m = /retry after (\d+)/i.exec(String(message ?? ''));
  return m ? Number(m[1]) : 1;
}

/** The typed error for a non-2xx HTTP response of request(). */
export function errorFromResponse(method, path, res) {
  const code = res.json?.error?.code;
  const apiMessage = res.json?.error?.message;
  const what = `${method} ${path.split('?')[0]} -> ${res.status}${code ? ` ${code}` : ''}${apiMessage ? `: ${apiMessage}` : ''}`;
  const base = { res, status: res.status, code: code ?? 'error' };
  if (res.status === 429) return new RateLimitedError(`rate limited, retry in ${retryAfterOf(res)} s (${what})`, { ...base, retryAfter: retryAfterOf(res) });
  if (res.status === 412 || code === 'prekeys_exhausted') return new PreKeysExhaustedError(what, { ...base, devices: res.json?.error?.devices });
  if (code === 'user_not_found') return new UnknownUserError(what, base);
  if (res.status === 401) return new AuthError(what, base);
  if (code === 'username_taken') return new UsernameTakenError(what, base);
  if (res.status >= 500) return new ServerUnavailableError(what, base);
  const e = new ApiError(method, path, res);
  return e;
}

/** The typed error for a WebSocket error frame (`frame.code`, `frame.message`). */
export function errorFromFrame(frame, what = 'frame') {
  const msg = `${what}: ${frame.code}: ${frame.message}`;
  switch (frame.code) {
    case 'rate_limited':
      return new RateLimitedError(`rate limited, retry in ${retryAfterFromMessage(frame.message)} s (${msg})`, { frame, retryAfter: retryAfterFromMessage(frame.message) });
    case 'unknown_recipient':
      return new UnknownUserError(msg, { code: 'unknown_recipient', frame });
    case 'unauthorized':
      return new AuthError(msg, { frame });
    case 'unavailable':
    case 'internal':
      return new ServerUnavailableError(msg, { code: frame.code, frame, status: frame.code === 'internal' ? 500 : 503 });
    case 'not_a_member':
      return new ApiError(msg, { code: frame.code, status: 403, frame });
    case 'mismatched_devices':
    case 'stale_devices':
      return new MismatchedDevicesError(msg, { code: frame.code, frame, status: frame.code === 'stale_devices' ? 410 : 409 });
    default:
      return new ApiError(msg, { code: frame.code ?? 'error', status: 400, frame });
  }
}
