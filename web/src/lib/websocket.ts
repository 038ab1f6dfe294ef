/**
 * The browser's WebSocket client for the realtime gateway.
 *
 * Theory of operation. A `WebSocketClient` owns at most one socket at a time and a
 * small state machine:
 *
 *   idle --connect()--> connecting --open--> open
 *   connecting|open --close (retryable)--> reconnecting --timer--> connecting
 *   any --close not retried | attempts exhausted | disconnect()--> closed
 *   closed|reconnecting --reconnect()--> connecting (attempts start over)
 *
 * Retries use exponential backoff with full jitter (`backoff.ts`); the attempt
 * count resets only after a connection has stayed open for `stableAfterMs`, so a
 * server that accepts and then drops at once cannot make clients spin. Only a close
 * with a code in the protocol's `RECONNECT_CLOSE_CODES` (generated from the Python
 * protocol, so the Python client follows the same list) is retried; any other code
 * (1000, 1002, 1009, 4401, the fatal 4400, 4403 and 4409, ...) ends in `closed`.
 * Retrying after 4409 in particular would fight the tab that took over the id forever.
 *
 * Subscriptions are remembered (`SubscriptionSet`) and replayed on every new
 * connection. Non-price channels resume with `since` + `epoch` so that alerts,
 * signals and notifications published while the socket was down are delivered
 * (DESIGN.md: nothing within the history window is lost); prices need no replay
 * because the server sends the last price of each symbol on subscribe.
 *
 * Sharing. `sharedClient(url)` returns one client per endpoint URL, and hooks
 * `acquire()` it: the socket opens with the first holder and closes a tick after
 * the last one lets go. The deferred close is what keeps React StrictMode's
 * mount/unmount/mount from opening a second socket. Per-hook listeners and
 * subscriptions are the hook's own, so nothing a second user asks for is ignored.
 */
import type { Channel, ClientMessage, ServerMessage, Welcome } from '../protocol';
import { CloseCode, EVENT_CHANNEL, RECONNECT_CLOSE_CODES } from '../protocol';
import { backoffDelay, DEFAULT_RECONNECT, type ReconnectOptions } from './backoff';
import { SubscriptionSet, type Request } from './subscriptions';
import { defaultBaseUrl, endpointUrl, generateClientId } from './url';

export { DEFAULT_RECONNECT, backoffDelay, type ReconnectOptions } from './backoff';

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

export type MessageListener = (message: ServerMessage) => void;
export type StatusListener = (status: ConnectionStatus) => void;

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

export interface ClientOptions {
  /** Base `ws(s)://host:port`; default: `VITE_WS_URL`, else see `url.ts`. */
  baseUrl?: string;
  /** The `client_id`; default: a random `web-…` id. */
  clientId?: string;
  reconnect?: Partial<ReconnectOptions>;
  /** Jitter source, injectable for tests. */
  random?: () => number;
  /** Socket constructor; default: the global `WebSocket`, looked up when connecting. */
  WebSocket?: SocketFactory;
}

const OPEN = 1;
/** Request ids of resumed subscriptions, to recognise their `history_unavailable`. */
const RESUME_ID_PREFIX = 'resume:';

export class WebSocketClient {
  readonly url: string;
  readonly clientId: string;
  private options: ReconnectOptions;
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
  private status: ConnectionStatus;

  private readonly messageListeners = new Set<MessageListener>();
  private readonly statusListeners = new Set<StatusListener>();
  private readonly subscriptions = new SubscriptionSet();
  /** Last `seq` seen per non-price channel, in the epoch of `welcome`. */
  private readonly lastSeq = new Map<Channel, number>();
  private holders = 0;
  /** Set by a direct `connect()`: the socket stays up after the last hook lets go. */
  private pinned = false;

  constructor(options: ClientOptions = {}) {
    this.clientId = options.clientId ?? generateClientId();
    this.url = endpointUrl(options.baseUrl ?? defaultBaseUrl(), this.clientId);
    this.options = { ...DEFAULT_RECONNECT, ...options.reconnect };
    this.random = options.random ?? Math.random;
    this.socketFactory = options.WebSocket;
    this.status = this.snapshot();
  }

  // --- the seed's API ---------------------------------------------------------

  /** Open the socket (no-op when open or opening) and keep it open until `disconnect()`. */
  connect(): void {
    this.pinned = true;
    this.start();
  }

  /** Close the socket with 1000 and stop retrying. Subscriptions are kept for the next connect. */
  disconnect(): void {
    this.pinned = false;
    this.stop();
  }

  /** Send one message; returns false (and sends nothing) when the socket is not open. */
  send(message: ClientMessage): boolean {
    if (!this.socket || this.socket.readyState !== OPEN || this.state !== 'open') return false;
    this.socket.send(JSON.stringify(message));
    return true;
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
    if (this.state === 'open' || this.state === 'connecting') return;
    this.attempt = 0;
    this.open();
  }

  /** Change the reconnection policy; takes effect from the next retry. */
  configure(reconnect: Partial<ReconnectOptions>): void {
    this.options = { ...this.options, ...reconnect };
    this.publishStatus();
  }

  get reconnectOptions(): Readonly<ReconnectOptions> {
    return this.options;
  }

  getStatus = (): ConnectionStatus => this.status;

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
   */
  addSubscription(channel: Channel, symbols?: readonly string[]): () => void {
    const frozen = symbols === undefined ? undefined : [...symbols];
    this.sendAll(this.subscriptions.add(channel, frozen));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.sendAll(this.subscriptions.remove(channel, frozen));
    };
  }

  // --- internals ----------------------------------------------------------------

  private start(): void {
    if (this.state === 'idle' || this.state === 'closed') {
      this.attempt = 0;
      this.open();
    }
  }

  private stop(): void {
    this.clearTimers();
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
    const Factory = this.socketFactory ?? (globalThis.WebSocket as unknown as SocketFactory);
    const old = this.socket;
    if (old) {
      detach(old);
      old.close(CloseCode.NORMAL, 'reconnecting');
    }
    const socket = new Factory(this.url);
    this.socket = socket;
    socket.onopen = () => this.handleOpen(socket);
    socket.onmessage = (event) => this.handleMessage(socket, event);
    socket.onclose = (event) => this.handleClose(socket, event);
    socket.onerror = () => {}; // a close event always follows; that is where we decide
    this.retryInMs = null;
    this.setState('connecting');
  }

  private handleOpen(socket: SocketLike): void {
    if (socket !== this.socket) return;
    this.stableTimer = setTimeout(() => {
      this.stableTimer = null;
      this.attempt = 0;
      this.publishStatus();
    }, this.options.stableAfterMs);
    this.setState('open');
    for (const request of this.subscriptions.restore()) this.send(this.resumable(request));
  }

  /** A restored subscription on a non-price channel asks for what it missed. */
  private resumable(request: Request): Request {
    if (request.type !== 'subscribe' || request.channel === 'prices') return request;
    const since = this.lastSeq.get(request.channel);
    const epoch = this.welcome?.epoch;
    if (since === undefined || epoch === undefined) return request;
    return { ...request, since, epoch, id: `${RESUME_ID_PREFIX}${request.channel}` };
  }

  private handleMessage(socket: SocketLike, event: MessageEvent): void {
    if (socket !== this.socket || typeof event.data !== 'string') return;
    let message: ServerMessage;
    try {
      message = JSON.parse(event.data) as ServerMessage;
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

  private track(message: ServerMessage): void {
    if (message.type === 'welcome') {
      if (this.welcome && this.welcome.epoch !== message.epoch) this.lastSeq.clear();
      this.welcome = message;
      this.publishStatus();
      return;
    }
    if (
      message.type === 'error' &&
      message.code === 'history_unavailable' &&
      typeof message.id === 'string' &&
      message.id.startsWith(RESUME_ID_PREFIX)
    ) {
      // The gap cannot be replayed: subscribe afresh rather than not at all.
      const channel = message.id.slice(RESUME_ID_PREFIX.length) as Channel;
      this.lastSeq.delete(channel);
      if (this.subscriptions.holds(channel)) this.send({ type: 'subscribe', channel });
      return;
    }
    const channel = EVENT_CHANNEL[message.type];
    if (channel && channel !== 'prices' && 'seq' in message) {
      this.lastSeq.set(channel, Math.max(this.lastSeq.get(channel) ?? 0, message.seq));
    }
  }

  private handleClose(socket: SocketLike, event: CloseEvent): void {
    if (socket !== this.socket) return;
    this.socket = null;
    detach(socket);
    this.clearTimers();
    this.lastClose = { code: event.code, reason: event.reason };
    if (!this.retries(event.code)) {
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

  private sendAll(requests: Request[]): void {
    for (const request of requests) this.send(request);
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.stableTimer !== null) clearTimeout(this.stableTimer);
    this.retryTimer = null;
    this.stableTimer = null;
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
 * Reconnect options given here are applied to the shared client even when it
 * already exists (the later caller wins, with a console warning when two callers
 * disagree), never silently dropped.
 */
export function sharedClient(options: SharedClientOptions = {}): WebSocketClient {
  const baseUrl = options.baseUrl ?? defaultBaseUrl();
  const clientId = options.clientId ?? defaultClientId();
  const key = endpointUrl(baseUrl, clientId);
  const existing = registry.get(key);
  if (existing) {
    if (options.reconnect) {
      const current = existing.reconnectOptions;
      const conflicts = Object.entries(options.reconnect).filter(
        ([name, value]) =>
          JSON.stringify(current[name as keyof ReconnectOptions]) !== JSON.stringify(value),
      );
      if (conflicts.length > 0 && existing.holderCount > 0) {
        console.warn(
          `[WebSocket] ${key}: reconnect options changed by a second user of the shared socket:`,
          Object.fromEntries(conflicts),
        );
      }
      existing.configure(options.reconnect);
    }
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
  for (const client of registry.values()) client.disconnect();
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
 */
export const wsClient = {
  connect: (): void => getDefaultClient().connect(),
  disconnect: (): void => getDefaultClient().disconnect(),
  send: (message: ClientMessage): boolean => getDefaultClient().send(message),
  subscribe: (listener: MessageListener): (() => void) => getDefaultClient().subscribe(listener),
  reconnect: (): void => getDefaultClient().reconnect(),
  get canReconnect(): boolean {
    return getDefaultClient().getStatus().canReconnect;
  },
  get isConnected(): boolean {
    return getDefaultClient().getStatus().state === 'open';
  },
};
