/**
 * Liveness: how long the client waits before it calls a connection dead.
 *
 * A gateway that is frozen (SIGSTOP, a hung process, a half-open TCP path through a
 * NAT or proxy that lost its state) neither closes the socket nor answers: the
 * browser's `WebSocket` then reports nothing, possibly for hours. The gateway's own
 * heartbeat (a WebSocket ping every 20 s, close after two missed) protects the
 * server, not the page: browsers answer pings but never tell a page about them, and
 * never send their own. So the client pings at the application level
 * (`{"type":"ping"}`, answered by `pong`) and gives up on a socket that stays silent.
 */
export interface LivenessOptions {
  /**
   * Milliseconds between application-level pings while the socket is open (the spec's
   * `pingInterval`; raise it on a slow connection). 0 turns pings off.
   */
  pingInterval: number;
  /**
   * Milliseconds after a ping within which something must arrive (its `pong`, or any
   * other message: a busy socket is a live one); otherwise the socket is closed and
   * the client reconnects with its backoff, as after a lost connection (1006).
   */
  pongTimeout: number;
  /**
   * Milliseconds a connection attempt may stay CONNECTING (TCP, TLS, the upgrade)
   * before it is abandoned and retried with backoff. 0 waits for the browser.
   */
  connectTimeout: number;
}

/**
 * Defaults.
 *
 * - `pingInterval` 5 s and `pongTimeout` 5 s: a frozen gateway is noticed within
 *   10 s at worst (a ping just after the last reply, then its timeout), inside the
 *   15 s within which the dashboard must stop saying "Live". A ping is ~20 bytes
 *   each way every 5 s: nothing next to the price stream, and far below the
 *   gateway's rate limit (20 messages/s). A 5 s round trip is already a broken link
 *   for a live-prices page.
 * - `connectTimeout` 10 s: the Python client's `connect_timeout`. A handshake on a
 *   slow mobile link with TLS takes a few seconds; one that hangs for 10 s (a frozen
 *   gateway still accepts TCP into its listen backlog) is better retried.
 */
export const DEFAULT_LIVENESS: Readonly<LivenessOptions> = Object.freeze({
  pingInterval: 5_000,
  pongTimeout: 5_000,
  connectTimeout: 10_000,
});
