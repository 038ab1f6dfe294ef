/** Reconnection policy: exponential backoff with full jitter. */
import { FATAL_CLOSE_CODES } from '../protocol';

export interface ReconnectOptions {
  /** Ceiling of the first retry's delay; each later retry doubles it. */
  initialDelayMs: number;
  /** No retry waits longer than this. */
  maxDelayMs: number;
  /** Retries after which the client gives up (a manual `reconnect()` starts over). */
  maxAttempts: number;
  /** A connection that stays open this long resets the attempt count. */
  stableAfterMs: number;
  /**
   * Close codes after which the client never retries. Only a code in the protocol's
   * `RECONNECT_CLOSE_CODES` is ever retried; this list can veto some of those too.
   * Default: the protocol's `FATAL_CLOSE_CODES` (bad id, forbidden, replaced).
   */
  fatalCloseCodes: readonly number[];
}

export const DEFAULT_RECONNECT: Readonly<ReconnectOptions> = Object.freeze({
  initialDelayMs: 2_000,
  maxDelayMs: 30_000,
  maxAttempts: 10,
  stableAfterMs: 5_000,
  fatalCloseCodes: FATAL_CLOSE_CODES,
});

/**
 * Delay before retry number `attempt` (0-based).
 *
 * Full jitter (uniform in [0, ceiling)) rather than a fixed schedule: after a
 * gateway restart thousands of dashboards would otherwise come back in lockstep
 * waves; spreading them over the whole window keeps the restarted node alive.
 */
export function backoffDelay(
  attempt: number,
  options: Pick<ReconnectOptions, 'initialDelayMs' | 'maxDelayMs'>,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** attempt);
  return Math.floor(random() * ceiling);
}
