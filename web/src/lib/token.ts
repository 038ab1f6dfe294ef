/**
 * Tokens as the browser client sees them: when one expires, and when to refresh it.
 *
 * The client never verifies a token (the gateway does, and a page holds no key): it
 * reads the payload's `exp` and `iat` only to know when to ask `getToken` for the next
 * one. A token whose payload cannot be read, or has no numeric `exp`, is sent as it
 * is and never refreshed ahead; the gateway closes with 4401 when it expires, which the
 * client answers as it answers any 4401.
 *
 * The rule, the Python client's (`realtime/client/_tokens.py`): refresh when
 * `min(30 s, 10 % of the lifetime)` is left before `exp`. Thirty seconds covers
 * `getToken`'s round trip and clock skew for an hour-long token; a token of a few
 * minutes is refreshed after 90 % of its life, not every few seconds. Times are
 * milliseconds since the epoch (`Date.now()`), passed in, so fake timers drive them.
 */

/** Longest time before `exp` a token is refreshed. */
export const REFRESH_MARGIN_MS = 30_000;
/** Share of a token's lifetime left when it is refreshed, if that is less than the margin. */
export const REFRESH_FRACTION = 0.1;
/** Shortest wait before asking again when `getToken` failed or returned no newer token. */
export const RETRY_AFTER_MS = 1_000;

/** When a token expires and when to refresh it, in milliseconds since the epoch. */
export interface TokenTimes {
  expMs: number;
  refreshAtMs: number;
}

/**
 * When `token` (a JWT) expires and when to refresh it, as received at `nowMs`. The
 * lifetime counts from `iat` when the token has one in the past, else from `nowMs`.
 * `null` when the payload is not a JSON object with a numeric `exp`.
 */
export function tokenTimes(token: string, nowMs: number): TokenTimes | null {
  const payload = readPayload(token);
  if (payload === null) return null;
  const { exp, iat } = payload;
  if (!isNumber(exp)) return null;
  const expMs = exp * 1000;
  const issuedMs = isNumber(iat) && iat * 1000 <= nowMs ? iat * 1000 : nowMs;
  const lifetimeMs = Math.max(0, expMs - issuedMs);
  return { expMs, refreshAtMs: expMs - Math.min(REFRESH_MARGIN_MS, REFRESH_FRACTION * lifetimeMs) };
}

/**
 * The times for asking again at `nowMs`, after a refresh that produced no newer token:
 * half way to `exp`, at least `RETRY_AFTER_MS` later. `null` once `exp` has passed (the
 * gateway closes with 4401 then).
 */
export function retryTimes(times: TokenTimes, nowMs: number): TokenTimes | null {
  if (nowMs >= times.expMs) return null;
  return { expMs: times.expMs, refreshAtMs: nowMs + Math.max(RETRY_AFTER_MS, (times.expMs - nowMs) / 2) };
}

/** Whether `token` can travel in a message as a JWT: printable ASCII, no spaces. */
export function isTokenShaped(token: unknown): token is string {
  return typeof token === 'string' && /^[!-~]+$/.test(token);
}

function isNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function readPayload(token: string): Record<string, unknown> | null {
  const parts = token.split('.');
  const segment = parts[1];
  if (parts.length !== 3 || segment === undefined) return null;
  try {
    const base64 = segment.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    const payload: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof payload === 'object' && payload !== null && !Array.isArray(payload)
      ? (payload as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}
