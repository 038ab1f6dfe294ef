/**
 * The browser's WebSocket client for the realtime gateway.
 *
 * Theory of operation. A `WebSocketClient` owns at most one socket at a time and a
 * small state machine:
 *
 *   idle --connect()--> connecting --open--> open
 *   connecting|open --close (retryable) | connect or pong timeout--> reconnecting --timer--> connecting
 *   any --close not retried | attempts exhausted | disconnect()--> closed
 *   closed|reconnecting --reconnect()--> connecting (attempts start over)
 *
 * Retries use exponential backoff with full jitter (`backoff.ts`); the attempt
 * count resets only after a connection has stayed open for `stableAfterMs`, so a
 * server that accepts and then drops at once cannot make clients spin. Only a close
 * with a code in the protocol's `RECONNECT_CLOSE_CODES` (generated from the Python
 * protocol, so the Python client follows the same list) is retried; any other code
 * (1000, 1002, 1009, the fatal 4400, 4403 and 4409, ...) ends in `closed`.
 * Retrying after 4409 in particular would fight the tab that took over the id forever.
 *
 * Tokens (`token.ts`). With `token` and/or `getToken`, the first message of every
 * socket is `{"type":"auth","token":...}` (a browser cannot set `Authorization` on a
 * WebSocket, and a token never goes in the URL). The first socket sends `token` if
 * given; every later one asks `getToken()` first, while `connecting` (bounded by
 * `connectTimeout`). Messages sent after the `auth` wait on the server until it has
 * verified it, so restoring subscriptions need not wait for `welcome`. After each
 * `welcome` a timer asks `getToken` for the next token when 30 s or a tenth of the
 * current one's lifetime is left, and sends it as an `auth` on the open socket (the
 * gateway answers only a refusal: an `unauthorized` error whose `id` starts with
 * `auth:`). A close with 4401 (`REAUTHENTICATE_CLOSE_CODES`: refused or expired) is
 * answered at once, without backoff, by one new socket with a token from `getToken`;
 * a second 4401 before a `welcome`, a 4401 without `getToken`, or `getToken` failing
 * then, ends in `closed` with `lastClose` 4401 and the gateway's reason (or the
 * provider's error). `getToken` failing before another reconnect counts as a failed
 * attempt of the backoff.
 *
 * Liveness (`liveness.ts`). While open, the client sends `{"type":"ping"}` every
 * `pingInterval`; if nothing at all (the `pong`, or any other message) arrives
 * within `pongTimeout` of a ping, the socket is given up: closed, and treated as a
 * lost connection (1006), so the retry schedule above applies. A CONNECTING attempt
 * that has not opened within `connectTimeout` is abandoned the same way. A frozen
 * gateway never closes the socket and the browser reports nothing; without this the
 * page would say "Live" forever.
 *
 * Sending. `send()` writes at once while open; otherwise it queues the message (at
 * most `maxQueuedMessages`, default 32; when full the new message is refused and
 * `send()` returns false, so every `true` is a message that will be written) and
 * the queue is written, in order, right after a new socket opens and the held
 * subscriptions are restored. `disconnect()` drops the queue, except while the first
 * socket is still opening: then it opens, writes what was queued and closes, as
 * `WebSocket.close()` after `send()` delivers what was sent.
 *
 * Subscriptions are remembered (`SubscriptionSet`) and replayed on every new
 * connection. Non-price channels resume with `since` + `epoch` so that alerts,
 * signals and notifications published while the socket was down are delivered
 * (DESIGN.md: nothing within the history window is lost); prices need no replay
 * because the server sends the last price of each symbol on subscribe. Each held
 * non-price channel has a position, `{epoch, seq}`: the `subscribed` ack sets it
 * (its `seq`: what follows the ack is exactly what has a greater one, so a channel
 * where nothing has arrived yet has one too) and each message advances it. A
 * resume the gateway cannot serve (`history_unavailable`: its history restarted
 * under a new epoch, or the window passed) is reported to `onGap` listeners as a
 * `HistoryGap`, and the channel is subscribed afresh: never a silent loss.
 *
 * Sharing. `sharedClient(url)` returns one client per endpoint URL, and hooks
 * `acquire()` it: the socket opens with the first holder and closes a tick after
 * the last one lets go. The deferred close is what keeps React StrictMode's
 * mount/unmount/mount from opening a second socket. Releasing a subscription is
 * deferred by a microtask for the same reason: StrictMode's unmount and remount
 * release and re-take it in one synchronous pass, so nothing reaches the wire (no
 * subscribe, unsubscribe, subscribe on an open socket). Per-hook listeners and
 * subscriptions are the hook's own, so nothing a second user asks for is ignored.
 */
import type { Channel, ClientMessage, ServerEvent, Welcome } from '../protocol';
import { CloseCode, EVENT_CHANNEL, REAUTHENTICATE_CLOSE_CODES, RECONNECT_CLOSE_CODES } from '../protocol';
import { backoffDelay, DEFAULT_RECONNECT, type ReconnectOptions } from './backoff';
import { DEFAULT_LIVENESS, type LivenessOptions } from './liveness';
import { SubscriptionSet, type Request } from './subscriptions';
import { isTokenShaped, retryTimes, tokenTimes, type TokenTimes } from './token';
import { defaultBaseUrl, endpointUrl, generateClientId } from './url';

export { DEFAULT_RECONNECT, backoffDelay, type ReconnectOptions } from './backoff';
export { DEFAULT_LIVENESS, type LivenessOptions } from './liveness';

/** Everything `configure()` can change on a live client: retries and liveness. */
export type ConnectionPolicy = ReconnectOptions & LivenessOptions;

/**
 * Messages `send()` holds while the socket is not open; beyond this it refuses them.
 * The queue is written at once on open, after at most one restored subscribe per
 * channel (5): 5 + 32 stays within the gateway's inbound burst of 40, so flushing a
 * full queue never draws `rate_limited` (ten of which in a minute close with 4429).
 */
export const DEFAULT_MAX_QUEUED_MESSAGES = 32;

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface CloseInfo {
  code: number;
  reason: string;
}

/** An immutable snapshot: a new object on every change, so React can compare by identity. */
export interface ConnectionStatus {
  state: ConnectionState;
  url: string;
  clientId: string;
  /** Retries made since the last stable connection. */
  attempt: number;
  maxAttempts: number;
  /** Delay of the retry now scheduled, if any. */
  retryInMs: number | null;
  lastClose: CloseInfo | null;
  /** The last `welcome`: the server's channels, symbol universe and history epoch. */
  welcome: Welcome | null;
  /** True when `reconnect()` would open a socket: nothing is open or opening now. */
  canReconnect: boolean;
}

/**
 * Messages on `channel` after `since` in history `epoch` (the client's position) could
 * not be replayed after a reconnect: the gateway no longer holds them, or its history
 * was reset (a restart: the new `welcome` has another epoch). Some may have been
 * published; none will arrive. The subscription was restored without them, so a page
 * that must not miss any reloads what it shows from elsewhere.
 */
export interface HistoryGap {
  channel: Channel;
  since: number;
  epoch: string;
}

/**
 * Returns a token (a JWT) for the next socket or refresh: called before every socket
 * after the first and ahead of each token's `exp`, so it should cache its token and
 * return it until close to its expiry. May return it directly or as a promise.
 */
export type TokenProvider = () => string | Promise<string>;

export type MessageListener = (message: ServerEvent) => void;
export type StatusListener = (status: ConnectionStatus) => void;
export type GapListener = (gap: HistoryGap) => void;

/** Where a channel's stream stands: everything up to `seq` of history `epoch` was received. */
interface Position {
  epoch: string;
  seq: number;
}

/** What the client needs of `WebSocket`; tests substitute a fake. */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((event: Event) => void) | null;
  onclose: ((event: CloseEvent) => void) | null;
  onmessage: ((event: MessageEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type SocketFactory = new (url: string) => SocketLike;

export interface ClientOptions extends Partial<LivenessOptions> {
  /** Base `ws(s)://host:port`; default: `VITE_WS_URL`, else see `url.ts`. */
  baseUrl?: string;
  /** The `client_id`; default: a random `web-…` id. */
  clientId?: string;
  reconnect?: Partial<ReconnectOptions>;
  /** How many messages `send()` queues while not open (default 32); more are refused. */
  maxQueuedMessages?: number;
  /** Jitter source, injectable for tests. */
  random?: () => number;
  /** Socket constructor; default: the global `WebSocket`, looked up when connecting. */
  WebSocket?: SocketFactory;
  /** A token (JWT) for the first socket, sent as its first message (see the module comment). */
  token?: string;
  /** Fetches a token for every later socket and each refresh ahead of `exp`. */
  getToken?: TokenProvider;
}

const OPEN = 1;
/** Request ids of resumed subscriptions, to recognise their `history_unavailable`. */
const RESUME_ID_PREFIX = 'resume:';
/** Request ids of token refreshes, to recognise the gateway's refusal of one. */
const REFRESH_ID_PREFIX = 'auth:';
const PING = JSON.stringify({ type: 'ping' } satisfies ClientMessage);

/** The liveness options given in `options`, leaving out the ones not given. */
export function livenessOptions(options: Partial<LivenessOptions>): Partial<LivenessOptions> {
  const given: Partial<LivenessOptions> = {};
  if (options.pingInterval !== undefined) given.pingInterval = options.pingInterval;
  if (options.pongTimeout !== undefined) given.pongTimeout = options.pongTimeout;
  if (options.connectTimeout !== undefined) given.connectTimeout = options.connectTimeout;
  return given;
}

export class WebSocketClient {
  readonly url: string;
  readonly clientId: string;
  readonly maxQueuedMessages: number;
  private options: ConnectionPolicy;
  private readonly random: () => number;
  private readonly socketFactory: SocketFactory | undefined;

  private socket: SocketLike | null = null;
  private state: ConnectionState = 'idle';
  private attempt = 0;
  private retryInMs: number | null = null;
  private lastClose: CloseInfo | null = null;
  private welcome: Welcome | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private stableTimer: ReturnType<typeof setTimeout> | null = null;
  private releaseTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  /** Pending while a ping waits for anything from the server. */
  private pongTimer: ReturnType<typeof setTimeout> | null = null;
  /** When to ask `getToken` for the next token, while open. */
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private status: ConnectionStatus;

  /** The token of the current socket (or the next one): refreshes replace it. */
  private token: string | null;
  /** Whether `token` was sent once: later sockets ask `getToken`, if there is one. */
  private tokenSent = false;
  private getToken: TokenProvider | null;
  /** Set by a 4401 answered with a new socket; cleared by the next `welcome`. */
  private reauthenticating = false;
  /** The gateway's last `unauthorized` error on this socket, for the 4401 that follows. */
  private unauthorized: string | null = null;
  private refreshTimes: TokenTimes | null = null;
  private refreshes = 0;
  /** Counts `open()`s: a token that arrives for an older one is dropped. */
  private generation = 0;

  private readonly messageListeners = new Set<MessageListener>();
  private readonly statusListeners = new Set<StatusListener>();
  private readonly gapListeners = new Set<GapListener>();
  private readonly subscriptions = new SubscriptionSet();
  /** The position of each non-price channel subscribed (see the module comment). */
  private readonly positions = new Map<Channel, Position>();
  /** The positions the current socket's resumes asked from, until answered. */
  private readonly resuming = new Map<Channel, Position>();
  /** Serialized messages `send()` accepted while not open, oldest first. */
  private readonly queue: string[] = [];
  private holders = 0;
  /** Set by a direct `connect()`: the socket stays up after the last hook lets go. */
  private pinned = false;
  /** `disconnect()` while the socket was opening with messages queued: write them, then close. */
  private closeWhenFlushed = false;

  constructor(options: ClientOptions = {}) {
    this.clientId = options.clientId ?? generateClientId();
    this.url = endpointUrl(options.baseUrl ?? defaultBaseUrl(), this.clientId);
    this.options = { ...DEFAULT_RECONNECT, ...DEFAULT_LIVENESS, ...options.reconnect, ...livenessOptions(options) };
    this.maxQueuedMessages = options.maxQueuedMessages ?? DEFAULT_MAX_QUEUED_MESSAGES;
    this.random = options.random ?? Math.random;
    this.socketFactory = options.WebSocket;
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.status = this.snapshot();
  }

  // --- the seed's API ---------------------------------------------------------

  /** Open the socket (no-op when open or opening) and keep it open until `disconnect()`. */
  connect(): void {
    this.pinned = true;
    this.closeWhenFlushed = false;
    this.start();
  }

  /**
   * Undo `connect()`: close the socket with 1000 and stop retrying, unless hooks still
   * hold it (then it stays theirs, and closes after the last one lets go).
   * Subscriptions are kept for the next connect. Queued messages are dropped, except
   * while the socket is still opening: then they are written once it opens, and it
   * closes right after.
   */
  disconnect(): void {
    this.pinned = false;
    if (this.holders > 0) return;
    if (this.state === 'connecting' && this.queue.length > 0) {
      this.closeWhenFlushed = true;
      return;
    }
    this.stop();
  }

  /**
   * Close the socket with 1000 and stop retrying now, whoever holds it: for a page's
   * teardown and for tests. Hooks that mount later open it again.
   */
  close(): void {
    this.pinned = false;
    this.stop();
  }

  /**
   * Send one message: at once while open; otherwise queued and written, in order,
   * when the next socket opens. Returns false only when the queue already holds
   * `maxQueuedMessages` (the new message is refused, the queued ones kept) or
   * `disconnect()` is closing the socket.
   */
  send(message: ClientMessage): boolean {
    const frame = JSON.stringify(message);
    if (this.isOpen()) {
      this.socket?.send(frame);
      return true;
    }
    if (this.closeWhenFlushed || this.queue.length >= this.maxQueuedMessages) return false;
    this.queue.push(frame);
    return true;
  }

  /** Messages `send()` has queued for the next open socket. */
  get queuedCount(): number {
    return this.queue.length;
  }

  /** Call `listener` with every parsed server message; returns the unsubscribe function. */
  subscribe(listener: MessageListener): () => void {
    this.messageListeners.add(listener);
    return () => {
      this.messageListeners.delete(listener);
    };
  }

  // --- connection management ---------------------------------------------------

  /** Connect now, starting the attempt count over; also after a fatal close. */
  reconnect(): void {
    this.closeWhenFlushed = false;
    if (this.state === 'open' || this.state === 'connecting') return;
    this.attempt = 0;
    this.reauthenticating = false;
    this.open();
  }

  /**
   * Use `token` (a JWT) from now on: the next socket sends it first, and an open one
   * sends it at once as a refresh (the gateway keeps the connection if it names the
   * same user). `null` forgets it. A page that took a token from its user calls this,
   * then `reconnect()` after a 4401.
   */
  setToken(token: string | null): void {
    if (token === this.token) return;
    this.token = token;
    this.tokenSent = false;
    if (token !== null && this.isOpen()) {
      this.tokenSent = true;
      this.sendRefresh(token);
      this.scheduleRefresh();
    }
  }

  /** Fetch tokens with `getToken` for later sockets and refreshes; `null` stops that. */
  setTokenProvider(getToken: TokenProvider | null): void {
    const had = this.getToken !== null;
    this.getToken = getToken;
    if (!had && getToken !== null && this.isOpen()) this.scheduleRefresh();
  }

  /** Change the reconnection and liveness policy; takes effect from the next retry or socket. */
  configure(policy: Partial<ConnectionPolicy>): void {
    this.options = { ...this.options, ...policy };
    this.publishStatus();
  }

  /** The policy in force: reconnect options and liveness timeouts. */
  get policy(): Readonly<ConnectionPolicy> {
    return this.options;
  }

  /** The same as `policy` (the name from before liveness joined it). */
  get reconnectOptions(): Readonly<ConnectionPolicy> {
    return this.options;
  }

  getStatus = (): ConnectionStatus => this.status;

  /**
   * Call `listener` with every `HistoryGap`: a channel resumed after a reconnect
   * without the messages it missed. Returns the unsubscribe function.
   */
  onGap = (listener: GapListener): (() => void) => {
    this.gapListeners.add(listener);
    return () => {
      this.gapListeners.delete(listener);
    };
  };

  onStatus = (listener: StatusListener): (() => void) => {
    this.statusListeners.add(listener);
    return () => {
      this.statusListeners.delete(listener);
    };
  };

  // --- sharing ----------------------------------------------------------------

  /**
   * Take a hold on the connection: the first hold connects, and the socket closes
   * one tick after the last hold is released (unless `connect()` pinned it).
   * The returned release function is idempotent.
   */
  acquire(): () => void {
    this.holders += 1;
    this.closeWhenFlushed = false;
    if (this.releaseTimer !== null) {
      clearTimeout(this.releaseTimer);
      this.releaseTimer = null;
    }
    this.start();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holders -= 1;
      if (this.holders === 0 && !this.pinned) {
        // Deferred: StrictMode (and a route change) releases and re-acquires in one tick.
        this.releaseTimer = setTimeout(() => {
          this.releaseTimer = null;
          if (this.holders === 0 && !this.pinned) this.stop();
        }, 0);
      }
    };
  }

  get holderCount(): number {
    return this.holders;
  }

  /**
   * Hold a channel subscription (prices: `symbols`, or every symbol when omitted).
   * Restored after every reconnect; the returned release function is idempotent.
   *
   * The release takes effect a microtask later: a hold released and taken again in
   * the same synchronous pass (React StrictMode's unmount and remount, a list of
   * symbols replaced by an overlapping one) sends nothing for what stays held.
   */
  addSubscription(channel: Channel, symbols?: readonly string[]): () => void {
    const frozen = symbols === undefined ? undefined : [...symbols];
    this.sendAll(this.subscriptions.add(channel, frozen));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      queueMicrotask(() => this.sendAll(this.subscriptions.remove(channel, frozen)));
    };
  }

  // --- internals ----------------------------------------------------------------

  private isOpen(): boolean {
    return this.socket !== null && this.socket.readyState === OPEN && this.state === 'open';
  }

  private start(): void {
    if (this.state === 'idle' || this.state === 'closed') {
      this.attempt = 0;
      this.open();
    }
  }

  private stop(): void {
    this.clearTimers();
    this.closeWhenFlushed = false;
    this.queue.length = 0;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      detach(socket);
      socket.close(CloseCode.NORMAL, 'client disconnect');
    }
    if (this.state !== 'idle') this.setState('closed');
  }

  private open(): void {
    this.clearTimers();
    const generation = ++this.generation;
    const old = this.socket;
    this.socket = null;
    if (old) {
      detach(old);
      old.close(CloseCode.NORMAL, 'reconnecting');
    }
    this.unauthorized = null;
    const token = this.nextToken();
    if (!(token instanceof Promise)) {
      this.createSocket(token);
      return;
    }
    // No socket until the token is there: the gateway's --auth-timeout starts at the upgrade.
    this.startConnectTimer(null);
    this.retryInMs = null;
    this.setState('connecting');
    token.then(
      (value) => {
        if (generation !== this.generation || this.state !== 'connecting') return;
        if (!isTokenShaped(value)) {
          this.tokenFailed(new TypeError('getToken must return a JWT (printable ASCII without spaces)'));
          return;
        }
        this.token = value;
        this.createSocket(value);
      },
      (error: unknown) => {
        if (generation === this.generation && this.state === 'connecting') this.tokenFailed(error);
      },
    );
  }

  /** The token for the next socket: `token` once (always, without `getToken`), else `getToken()`. */
  private nextToken(): string | null | Promise<string> {
    if (this.token !== null && (this.getToken === null || !this.tokenSent)) {
      this.tokenSent = true;
      return this.token;
    }
    const getToken = this.getToken;
    if (getToken === null) return null;
    this.tokenSent = true;
    try {
      return Promise.resolve(getToken());
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /**
   * `getToken` gave no token. Before the one reconnect a 4401 allows it is fatal (a
   * provider that keeps failing); before any other it is a failed attempt, retried.
   */
  private tokenFailed(error: unknown): void {
    const reason = `getToken failed: ${error instanceof Error ? error.message : String(error)}`;
    console.error(`[WebSocket] ${reason}`);
    if (this.reauthenticating) {
      this.socket = null;
      this.clearTimers();
      this.lastClose = { code: CloseCode.UNAUTHORIZED, reason };
      this.setState('closed');
      return;
    }
    this.lost({ code: CloseCode.ABNORMAL_CLOSURE, reason });
  }

  private createSocket(token: string | null): void {
    const Factory = this.socketFactory ?? (globalThis.WebSocket as unknown as SocketFactory);
    let socket: SocketLike;
    try {
      socket = new Factory(this.url);
    } catch (error) {
      // The same URL would be refused again (e.g. ws: from an https page): say why, once.
      console.error(`[WebSocket] cannot connect to ${this.url}`, error);
      this.lastClose = {
        code: CloseCode.ABNORMAL_CLOSURE,
        reason: error instanceof Error ? error.message : String(error),
      };
      this.setState('closed');
      return;
    }
    this.socket = socket;
    socket.onopen = () => this.handleOpen(socket, token);
    socket.onmessage = (event) => this.handleMessage(socket, event);
    socket.onclose = (event) => this.handleClose(socket, event);
    socket.onerror = () => {}; // a close event always follows; that is where we decide
    if (this.connectTimer === null) this.startConnectTimer(socket);
    this.retryInMs = null;
    this.setState('connecting');
  }

  /** Bound the attempt, the token's fetch included: abandoned and retried as after 1006. */
  private startConnectTimer(socket: SocketLike | null): void {
    const { connectTimeout } = this.options;
    if (connectTimeout <= 0) return;
    const generation = this.generation;
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      if (this.socket !== null) {
        this.abandon(this.socket, `not open within ${connectTimeout} ms`);
      } else if (socket === null && generation === this.generation && this.state === 'connecting') {
        this.generation += 1; // the token, should it come now, is for no one
        this.tokenFailed(new Error(`no token within ${connectTimeout} ms`));
      }
    }, connectTimeout);
  }

  private handleOpen(socket: SocketLike, token: string | null): void {
    if (socket !== this.socket) return;
    this.clearTimer('connectTimer');
    // First, always: a gateway with authentication on reads nothing else before it.
    if (token !== null) socket.send(JSON.stringify({ type: 'auth', token } satisfies ClientMessage));
    if (this.closeWhenFlushed) {
      for (const frame of this.queue.splice(0)) socket.send(frame);
      this.stop();
      return;
    }
    this.stableTimer = setTimeout(() => {
      this.stableTimer = null;
      this.attempt = 0;
      this.publishStatus();
    }, this.options.stableAfterMs);
    this.setState('open');
    if (!this.isOpen()) return; // a status listener closed it again
    this.resuming.clear();
    for (const request of this.subscriptions.restore()) this.sendNow(this.resumable(request));
    for (const frame of this.queue.splice(0)) socket.send(frame);
    this.startPings(socket);
  }

  /** Ping every `pingInterval`; a ping unanswered for `pongTimeout` abandons the socket. */
  private startPings(socket: SocketLike): void {
    const { pingInterval, pongTimeout } = this.options;
    if (pingInterval <= 0 || !this.isOpen()) return;
    this.pingTimer = setInterval(() => {
      if (socket !== this.socket || !this.isOpen()) return;
      socket.send(PING);
      // While an earlier ping still waits, its (earlier) deadline stands.
      if (this.pongTimer === null && pongTimeout > 0) {
        this.pongTimer = setTimeout(() => {
          this.pongTimer = null;
          this.abandon(socket, `no pong within ${pongTimeout} ms`);
        }, pongTimeout);
      }
    }, pingInterval);
  }

  /** Give up on a socket that does not open or answer: close it, and retry as after 1006. */
  private abandon(socket: SocketLike, reason: string): void {
    if (socket !== this.socket) return;
    detach(socket);
    socket.close(CloseCode.NORMAL, reason);
    this.lost({ code: CloseCode.ABNORMAL_CLOSURE, reason });
  }

  /**
   * A restored subscription on a non-price channel asks for what it missed since its
   * position. It is sent before this socket's `welcome`, and always with the epoch the
   * position counts in: when the gateway's is another, it answers `history_unavailable`.
   */
  private resumable(request: Request): Request {
    if (request.type !== 'subscribe' || request.channel === 'prices') return request;
    const position = this.positions.get(request.channel);
    if (position === undefined) return request;
    this.resuming.set(request.channel, position);
    return {
      ...request,
      since: position.seq,
      epoch: position.epoch,
      id: `${RESUME_ID_PREFIX}${request.channel}`,
    };
  }

  private handleMessage(socket: SocketLike, event: MessageEvent): void {
    if (socket !== this.socket || typeof event.data !== 'string') return;
    // Anything from the server proves it alive: a busy socket needs no pong.
    this.clearTimer('pongTimer');
    let message: ServerEvent;
    try {
      message = JSON.parse(event.data) as ServerEvent;
    } catch {
      return; // the gateway only sends JSON; anything else is not ours to interpret
    }
    if (typeof message !== 'object' || message === null || typeof message.type !== 'string') {
      return;
    }
    this.track(message);
    for (const listener of [...this.messageListeners]) {
      try {
        listener(message);
      } catch (error) {
        // One broken listener must not starve the others of messages.
        console.error('[WebSocket] listener failed', error);
      }
    }
  }

  private track(message: ServerEvent): void {
    switch (message.type) {
      case 'welcome':
        // Positions keep their own epoch: a new one here is reported as a gap when the
        // gateway refuses to resume from them, never silently forgotten.
        this.welcome = message;
        this.reauthenticating = false;
        this.scheduleRefresh();
        this.publishStatus();
        return;
      case 'subscribed':
        if (message.channel === 'prices') return;
        this.resuming.delete(message.channel);
        // What follows the ack is exactly what has a greater seq (on a resume, the
        // since we sent): so this is the position even before a message arrives.
        if (typeof message.seq === 'number' && this.welcome) {
          this.positions.set(message.channel, { epoch: this.welcome.epoch, seq: message.seq });
        }
        return;
      case 'unsubscribed':
        if (message.channel !== 'prices') this.positions.delete(message.channel);
        return;
      case 'error':
        if (message.code === 'unauthorized') {
          if (typeof message.id === 'string' && message.id.startsWith(REFRESH_ID_PREFIX)) {
            // The current token holds until its exp; then 4401, and one new token.
            console.warn(`[WebSocket] token refresh refused: ${message.error}`);
          } else {
            this.unauthorized = message.error; // the 4401 follows
          }
          return;
        }
        if (
          message.code === 'history_unavailable' &&
          typeof message.id === 'string' &&
          message.id.startsWith(RESUME_ID_PREFIX)
        ) {
          this.resumeFailed(message.id.slice(RESUME_ID_PREFIX.length) as Channel);
        }
        return;
    }
    const channel = EVENT_CHANNEL[message.type];
    // seq 0 is no message of a stream: a cluster node's notice to its own connections
    // (its link to Redis is down or back, it drains). Delivered; it moves no position.
    if (channel && channel !== 'prices' && 'seq' in message && message.seq > 0 && this.welcome) {
      const epoch = this.welcome.epoch;
      const position = this.positions.get(channel);
      const seq = position?.epoch === epoch ? Math.max(position.seq, message.seq) : message.seq;
      this.positions.set(channel, { epoch, seq });
    }
  }

  /** The gateway cannot replay what `channel` missed: say so, then subscribe afresh. */
  private resumeFailed(channel: Channel): void {
    const lost = this.resuming.get(channel);
    this.resuming.delete(channel);
    this.positions.delete(channel);
    if (lost !== undefined) {
      const gap: HistoryGap = { channel, since: lost.seq, epoch: lost.epoch };
      for (const listener of [...this.gapListeners]) {
        try {
          listener(gap);
        } catch (error) {
          console.error('[WebSocket] gap listener failed', error);
        }
      }
    }
    // Rather than not at all; the ack starts a new position.
    if (this.subscriptions.holds(channel)) this.sendNow({ type: 'subscribe', channel });
  }

  private handleClose(socket: SocketLike, event: CloseEvent): void {
    if (socket !== this.socket) return;
    detach(socket);
    this.lost({ code: event.code, reason: event.reason });
  }

  /** The current socket is gone: retry after a reconnect code, else end in `closed`. */
  private lost(close: CloseInfo): void {
    this.socket = null;
    this.clearTimers();
    const reauthenticate: readonly number[] = REAUTHENTICATE_CLOSE_CODES;
    if (reauthenticate.includes(close.code) && !this.closeWhenFlushed) {
      // The gateway's error says why (expired, bad signature, no token); the close only "Unauthorized".
      this.lastClose = { code: close.code, reason: this.unauthorized ?? close.reason };
      if (this.getToken !== null && !this.reauthenticating) {
        this.reauthenticating = true;
        this.open();
      } else {
        this.setState('closed');
      }
      return;
    }
    this.lastClose = close;
    if (this.closeWhenFlushed) {
      // disconnect() was only waiting for the socket to open; it never will now.
      this.closeWhenFlushed = false;
      this.queue.length = 0;
      this.setState('closed');
    } else if (!this.retries(close.code)) {
      this.setState('closed');
    } else if (this.attempt >= this.options.maxAttempts) {
      this.setState('closed');
    } else {
      const delay = backoffDelay(this.attempt, this.options, this.random);
      this.attempt += 1;
      this.retryInMs = delay;
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.open();
      }, delay);
      this.setState('reconnecting');
    }
  }

  /** The protocol's reconnect policy, less the codes the caller made fatal. */
  private retries(code: number): boolean {
    const reconnectCodes: readonly number[] = RECONNECT_CLOSE_CODES;
    return reconnectCodes.includes(code) && !this.options.fatalCloseCodes.includes(code);
  }

  /** Subscription bookkeeping is written only to an open socket: `restore()` covers the rest. */
  private sendNow(message: ClientMessage): void {
    if (this.isOpen()) this.socket?.send(JSON.stringify(message));
  }

  private sendAll(requests: Request[]): void {
    for (const request of requests) this.sendNow(request);
  }

  // --- token refresh (token.ts) -------------------------------------------------

  /** After a `welcome`, or a new token: ask `getToken` ahead of the current token's exp. */
  private scheduleRefresh(): void {
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.refreshTimes = this.token === null ? null : tokenTimes(this.token, Date.now());
    this.armRefresh();
  }

  private armRefresh(): void {
    const times = this.refreshTimes;
    const socket = this.socket;
    if (times === null || this.getToken === null || socket === null) return;
    this.refreshTimer = setTimeout(
      () => {
        this.refreshTimer = null;
        this.refresh(socket, times);
      },
      Math.max(0, times.refreshAtMs - Date.now()),
    );
  }

  private refresh(socket: SocketLike, times: TokenTimes): void {
    const getToken = this.getToken;
    const current = this.token;
    if (getToken === null) return;
    const again = (why: string) => {
      if (socket !== this.socket) return;
      if (why) console.warn(`[WebSocket] token refresh: ${why}`);
      this.refreshTimes = retryTimes(times, Date.now());
      this.armRefresh();
    };
    let pending: Promise<string>;
    try {
      pending = Promise.resolve(getToken());
    } catch (error) {
      pending = Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    pending.then(
      (token) => {
        if (socket !== this.socket || !this.isOpen()) return;
        if (!isTokenShaped(token)) {
          again('getToken must return a JWT (printable ASCII without spaces)');
          return;
        }
        const next = tokenTimes(token, Date.now());
        if (token === current || (next !== null && next.expMs <= times.expMs)) {
          again(''); // getToken's cache is behind ours: ask again later, quietly
          return;
        }
        this.token = token;
        this.sendRefresh(token);
        this.refreshTimes = next;
        this.armRefresh();
      },
      (error: unknown) => again(`getToken failed: ${error instanceof Error ? error.message : String(error)}`),
    );
  }

  private sendRefresh(token: string): void {
    this.refreshes += 1;
    this.sendNow({ type: 'auth', token, id: `${REFRESH_ID_PREFIX}${this.refreshes}` });
  }

  private clearTimer(name: 'connectTimer' | 'pongTimer'): void {
    const timer = this[name];
    if (timer !== null) clearTimeout(timer);
    this[name] = null;
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.stableTimer !== null) clearTimeout(this.stableTimer);
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.clearTimer('connectTimer');
    this.clearTimer('pongTimer');
    this.retryTimer = null;
    this.stableTimer = null;
    this.pingTimer = null;
    this.retryInMs = null;
  }

  private setState(state: ConnectionState): void {
    this.state = state;
    this.publishStatus();
  }

  private snapshot(): ConnectionStatus {
    return {
      state: this.state,
      url: this.url,
      clientId: this.clientId,
      attempt: this.attempt,
      maxAttempts: this.options.maxAttempts,
      retryInMs: this.retryInMs,
      lastClose: this.lastClose,
      welcome: this.welcome,
      canReconnect: this.state !== 'open' && this.state !== 'connecting',
    };
  }

  private publishStatus(): void {
    this.status = this.snapshot();
    for (const listener of [...this.statusListeners]) listener(this.status);
  }
}

function detach(socket: SocketLike): void {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onclose = null;
  socket.onerror = null;
}

// --- one client per endpoint ------------------------------------------------------

const registry = new Map<string, WebSocketClient>();

export interface SharedClientOptions extends Omit<ClientOptions, 'clientId'> {
  clientId?: string;
}

/**
 * The one client for this base URL and client id, created on first use.
 *
 * Reconnect and liveness options given here are applied to the shared client even when it
 * already exists (the later caller wins, with a console warning when two callers
 * disagree), never silently dropped.
 */
export function sharedClient(options: SharedClientOptions = {}): WebSocketClient {
  const baseUrl = options.baseUrl ?? defaultBaseUrl();
  const clientId = options.clientId ?? defaultClientId();
  const key = endpointUrl(baseUrl, clientId);
  const existing = registry.get(key);
  if (existing) {
    const policy: Partial<ConnectionPolicy> = { ...options.reconnect, ...livenessOptions(options) };
    if (Object.keys(policy).length > 0) {
      const current = existing.policy;
      const conflicts = Object.entries(policy).filter(
        ([name, value]) =>
          JSON.stringify(current[name as keyof ConnectionPolicy]) !== JSON.stringify(value),
      );
      if (conflicts.length > 0 && existing.holderCount > 0) {
        console.warn(
          `[WebSocket] ${key}: connection options changed by a second user of the shared socket:`,
          Object.fromEntries(conflicts),
        );
      }
      existing.configure(policy);
    }
    if (options.token !== undefined) existing.setToken(options.token);
    if (options.getToken !== undefined) existing.setTokenProvider(options.getToken);
    return existing;
  }
  const client = new WebSocketClient({ ...options, baseUrl, clientId });
  registry.set(key, client);
  return client;
}

let pageClientId: string | null = null;

/** One generated id per page load, shared by every hook that does not name one. */
export function defaultClientId(): string {
  pageClientId ??= generateClientId();
  return pageClientId;
}

/** Tests only: forget every shared client (closing their sockets). */
export function resetSharedClients(): void {
  for (const client of registry.values()) client.close();
  registry.clear();
  pageClientId = null;
  defaultClient = null;
}

let defaultClient: WebSocketClient | null = null;

/** The page's default client, created on first use (`wsClient` in the seed). */
export function getDefaultClient(): WebSocketClient {
  defaultClient ??= sharedClient();
  return defaultClient;
}

/**
 * The seed's `wsClient`: the shared default client, resolved lazily so that merely
 * importing this module opens nothing and reads no `window`.
 *
 * `connect()` / `disconnect()` take and drop a hold of their own: hooks on the same
 * page keep their socket through a `disconnect()`. `send()` before the socket opens
 * is queued (see `WebSocketClient.send`).
 */
export const wsClient = {
  connect: (): void => getDefaultClient().connect(),
  disconnect: (): void => getDefaultClient().disconnect(),
  send: (message: ClientMessage): boolean => getDefaultClient().send(message),
  subscribe: (listener: MessageListener): (() => void) => getDefaultClient().subscribe(listener),
  reconnect: (): void => getDefaultClient().reconnect(),
  /** Authenticate with `token` (see `WebSocketClient.setToken`). */
  setToken: (token: string | null): void => getDefaultClient().setToken(token),
  /** Fetch tokens with `getToken` (see `WebSocketClient.setTokenProvider`). */
  setTokenProvider: (getToken: TokenProvider | null): void => getDefaultClient().setTokenProvider(getToken),
  get canReconnect(): boolean {
    return getDefaultClient().getStatus().canReconnect;
  },
  get isConnected(): boolean {
    return getDefaultClient().getStatus().state === 'open';
  },
};
