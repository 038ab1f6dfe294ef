/**
 * React hooks over the shared WebSocket client: the spec's names and shapes.
 *
 * The spec's samples run as written against this module: `usePriceUpdates(symbols)`
 * gives `{ prices, isConnected }` with `prices` a Map from symbol to the spec's price
 * object; alerts, signals and notifications are the spec's flat objects (`alert.id`,
 * `alert.severity`, `signal.action`, `notif.message`, ...) plus `seq` and
 * `timestamp`; `Channel` and `MessageType` are exported as values.
 *
 * Every hook that names the same endpoint shares one socket (`sharedClient`); each
 * hook's subscriptions and handlers are its own and are released when it unmounts.
 * Every hook takes the same optional options as `useWebSocket` (endpoint, client id,
 * reconnect and liveness policy, `token` / `getToken`). Lists are capped (alerts 50, signals 20,
 * notifications 30) so a page left open for a week holds no more than a screenful.
 */
import {
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from 'react';
import type {
  AlertData,
  Channel,
  MessageOfType,
  NotificationData,
  PortfolioData,
  PriceData,
  ServerMessageType,
  SignalData,
} from '../protocol';
import type { ReconnectOptions } from '../lib/backoff';
import type { LivenessOptions } from '../lib/liveness';
import {
  livenessOptions,
  sharedClient,
  type ConnectionPolicy,
  type ConnectionState,
  type ConnectionStatus,
  type TokenProvider,
  type WebSocketClient,
} from '../lib/websocket';
import { scheduleFrame } from './frame';

// The spec's samples import these from here: `Channel.PRICES`, `MessageType.PRICE_UPDATE`.
export { Channel, MessageType } from '../protocol';

export const MAX_ALERTS = 50;
export const MAX_SIGNALS = 20;
export const MAX_NOTIFICATIONS = 30;

export interface UseWebSocketOptions extends Partial<LivenessOptions> {
  /** Base `ws(s)://host:port`; default: the page's gateway (see lib/url.ts). */
  baseUrl?: string;
  clientId?: string;
  reconnect?: Partial<ReconnectOptions>;
  /** Use this client instead of the shared one for the endpoint. */
  client?: WebSocketClient;
  /**
   * A token (JWT) for a gateway with authentication on, sent as the socket's first
   * message. A new value is sent at once on the open socket. Shared: the socket of the
   * endpoint uses the token any of its hooks gave last.
   */
  token?: string;
  /** Fetches tokens for later sockets and for refreshes ahead of `exp` (the latest one given is called). */
  getToken?: TokenProvider;
}

export interface UseWebSocketResult {
  isConnected: boolean;
  connectionState: ConnectionState;
  canReconnect: boolean;
  reconnect: () => void;
  /** Hold a subscription until the returned cleanup runs or the component unmounts. */
  subscribe: (channel: Channel, symbols?: readonly string[]) => () => void;
  /** Call `handler` for each message of `type`; returns the cleanup. */
  onMessage: <T extends ServerMessageType>(
    type: T,
    handler: (message: MessageOfType<T>) => void,
  ) => () => void;
  status: ConnectionStatus;
  client: WebSocketClient;
}

export function useWebSocket(options: UseWebSocketOptions = {}): UseWebSocketResult {
  const { baseUrl, clientId, client: given, token, getToken } = options;
  const policyKey = JSON.stringify({ ...options.reconnect, ...livenessOptions(options) });
  // The latest getToken is called, so an inline function neither reconnects nor re-renders.
  const getTokenRef = useRef(getToken);
  getTokenRef.current = getToken;
  const hasTokenProvider = getToken !== undefined;
  const client = useMemo(
    () =>
      given ??
      sharedClient({
        ...(baseUrl === undefined ? {} : { baseUrl }),
        ...(clientId === undefined ? {} : { clientId }),
      }),
    [given, baseUrl, clientId],
  );

  // Before the acquire below opens the first socket, so that it authenticates.
  useEffect(() => {
    if (token !== undefined) client.setToken(token);
  }, [client, token]);
  useEffect(() => {
    if (!hasTokenProvider) return;
    client.setTokenProvider(() => {
      const latest = getTokenRef.current;
      if (latest === undefined) throw new Error('getToken was removed');
      return latest();
    });
  }, [client, hasTokenProvider]);

  // Options reach the client even when it is shared (a known failure of other libraries),
  // before the acquire below opens the first socket.
  useEffect(() => {
    const policy = JSON.parse(policyKey) as Partial<ConnectionPolicy>;
    if (Object.keys(policy).length > 0) client.configure(policy);
  }, [client, policyKey]);

  useEffect(() => client.acquire(), [client]);

  // What this hook holds, released on unmount even if the caller forgot a cleanup.
  const held = useRef(new Set<() => void>());
  useEffect(() => {
    const releases = held.current;
    return () => {
      for (const release of releases) release();
      releases.clear();
    };
  }, [client]);

  const status = useSyncExternalStore(client.onStatus, client.getStatus, client.getStatus);

  const subscribe = useCallback(
    (channel: Channel, symbols?: readonly string[]) => {
      const release = client.addSubscription(channel, symbols);
      const releases = held.current;
      const cleanup = () => {
        releases.delete(cleanup);
        release();
      };
      releases.add(cleanup);
      return cleanup;
    },
    [client],
  );

  const onMessage = useCallback(
    <T extends ServerMessageType>(type: T, handler: (message: MessageOfType<T>) => void) => {
      const unsubscribe = client.subscribe((message) => {
        if (message.type === type) handler(message as MessageOfType<T>);
      });
      const releases = held.current;
      const cleanup = () => {
        releases.delete(cleanup);
        unsubscribe();
      };
      releases.add(cleanup);
      return cleanup;
    },
    [client],
  );

  const reconnect = useCallback(() => client.reconnect(), [client]);

  return {
    isConnected: status.state === 'open',
    connectionState: status.state,
    canReconnect: status.canReconnect,
    reconnect,
    subscribe,
    onMessage,
    status,
    client,
  };
}

// --- prices --------------------------------------------------------------------

/** The spec's price object: `price.symbol`, `price.price`, `price.change`, `price.change_pct`, ... */
export interface LivePrice extends PriceData {
  symbol: string;
  seq: number;
  timestamp: string;
}

export interface PriceUpdates {
  /** The latest price of each wanted symbol that has had one. */
  prices: Map<string, LivePrice>;
  isConnected: boolean;
  connectionState: ConnectionState;
}

/**
 * The latest price of each of `symbols` (every symbol when omitted).
 *
 * Updates are applied once per animation frame: at 16 symbols × 5 ticks/s a
 * render per message would be 80 renders a second for no visible gain.
 */
export function usePriceUpdates(
  symbols?: readonly string[],
  options: UseWebSocketOptions = {},
): PriceUpdates {
  const { subscribe, onMessage, isConnected, connectionState } = useWebSocket(options);
  const [prices, setPrices] = useState<Map<string, LivePrice>>(() => new Map());
  const symbolKey = symbols === undefined ? null : [...new Set(symbols)].sort().join(',');

  useEffect(() => {
    const wanted = symbolKey === null ? null : new Set(symbolKey ? symbolKey.split(',') : []);
    if (wanted !== null && wanted.size === 0) {
      setPrices(new Map());
      return;
    }
    // Drop symbols no longer wanted, at once rather than at the next tick.
    setPrices((current) => filterMap(current, wanted));
    const pending = new Map<string, LivePrice>();
    let cancelFrame: (() => void) | null = null;
    const flush = () => {
      cancelFrame = null;
      const batch = [...pending.values()];
      pending.clear();
      setPrices((current) => {
        const next = new Map(current);
        for (const price of batch) next.set(price.symbol, price);
        return next;
      });
    };
    const stopMessages = onMessage('price_update', (message) => {
      if (wanted !== null && !wanted.has(message.symbol)) return;
      pending.set(message.symbol, {
        ...message.data,
        symbol: message.symbol,
        seq: message.seq,
        timestamp: message.timestamp,
      });
      cancelFrame ??= scheduleFrame(flush);
    });
    // The client releases a microtask later, after the next effect (if any) has
    // subscribed to the new list: going from [A, B] to [A] unsubscribes B only,
    // instead of dropping the channel and subscribing to A again.
    const release = subscribe('prices', wanted === null ? undefined : [...wanted]);
    return () => {
      cancelFrame?.();
      stopMessages();
      release();
    };
  }, [symbolKey, subscribe, onMessage]);

  return useMemo(() => ({ prices, isConnected, connectionState }), [prices, isConnected, connectionState]);
}

function filterMap<V>(map: Map<string, V>, keep: Set<string> | null): Map<string, V> {
  if (keep === null) return map;
  let changed = false;
  const next = new Map<string, V>();
  for (const [key, value] of map) {
    if (keep.has(key)) next.set(key, value);
    else changed = true;
  }
  return changed ? next : map;
}

// --- capped event lists ----------------------------------------------------------

/** What a message carried, flat as the spec reads it, with its `seq` and `timestamp`. */
export type Stamped<D> = D & { seq: number; timestamp: string };

/** Newest first, at most `cap` items, an item with a known `key` replacing the old one. */
export function prependCapped<T>(list: readonly T[], item: T, cap: number, key: (t: T) => string): T[] {
  const id = key(item);
  const rest = list.filter((existing) => key(existing) !== id);
  return [item, ...rest].slice(0, cap);
}

/** What each event message carries in `data`. */
interface EventData {
  alert_triggered: AlertData;
  trading_signal: SignalData;
  notification: NotificationData;
}
type EventType = keyof EventData;
type EventItem<T extends EventType> = Stamped<EventData[T]>;

function useEventList<T extends EventType>(
  channel: Channel,
  type: T,
  cap: number,
  key: (item: EventItem<T>) => string,
  options: UseWebSocketOptions,
): [EventItem<T>[], React.Dispatch<React.SetStateAction<EventItem<T>[]>>] {
  const { subscribe, onMessage } = useWebSocket(options);
  const [items, setItems] = useState<EventItem<T>[]>([]);
  const keyRef = useRef(key);
  keyRef.current = key;
  useEffect(() => {
    const stop = onMessage(type, (message) => {
      // MessageOfType<T> cannot be resolved for a generic T; EventData pins what it is.
      const { data, seq, timestamp } = message as unknown as { data: EventData[T]; seq: number; timestamp: string };
      const item: EventItem<T> = { ...data, seq, timestamp };
      setItems((list) => prependCapped(list, item, cap, keyRef.current));
    });
    const release = subscribe(channel);
    return () => {
      stop();
      release();
    };
  }, [channel, type, cap, subscribe, onMessage]);
  return [items, setItems];
}

/** `alert.id`, `alert.symbol`, `alert.type`, `alert.message`, `alert.severity`, `seq`, `timestamp`. */
export type AlertItem = Stamped<AlertData>;

export function useAlertNotifications(options: UseWebSocketOptions = {}): {
  alerts: AlertItem[];
  clearAlerts: () => void;
} {
  const [alerts, setAlerts] = useEventList('alerts', 'alert_triggered', MAX_ALERTS, (item) => item.id, options);
  const clearAlerts = useCallback(() => setAlerts([]), [setAlerts]);
  return { alerts, clearAlerts };
}

/** `signal.symbol`, `signal.action`, `signal.confidence`, `signal.reasoning`, `seq`, `timestamp`. */
export type SignalItem = Stamped<SignalData>;

export function useTradingSignals(options: UseWebSocketOptions = {}): { signals: SignalItem[] } {
  const [signals] = useEventList(
    'signals',
    'trading_signal',
    MAX_SIGNALS,
    // Signals carry no id; the seq is unique within the channel's epoch.
    (item) => `${item.seq}:${item.timestamp}`,
    options,
  );
  return { signals };
}

/** `notif.id`, `notif.message`, `notif.type`, `seq`, `timestamp`. */
export type NotificationItem = Stamped<NotificationData>;

export function useSystemNotifications(options: UseWebSocketOptions = {}): {
  notifications: NotificationItem[];
  dismissNotification: (id: string) => void;
  clearAll: () => void;
} {
  const [notifications, setNotifications] = useEventList(
    'notifications',
    'notification',
    MAX_NOTIFICATIONS,
    (item) => item.id,
    options,
  );
  const dismissNotification = useCallback(
    (id: string) => setNotifications((list) => list.filter((item) => item.id !== id)),
    [setNotifications],
  );
  const clearAll = useCallback(() => setNotifications([]), [setNotifications]);
  return { notifications, dismissNotification, clearAll };
}

export interface PortfolioSnapshot {
  data: PortfolioData;
  timestamp: string;
}

/** The latest portfolio snapshot, or null until the first one arrives. */
export function usePortfolio(options: UseWebSocketOptions = {}): PortfolioSnapshot | null {
  const { subscribe, onMessage } = useWebSocket(options);
  const [portfolio, setPortfolio] = useState<PortfolioSnapshot | null>(null);
  useEffect(() => {
    const stop = onMessage('portfolio_update', (message) =>
      setPortfolio({ data: message.data, timestamp: message.timestamp }),
    );
    const release = subscribe('portfolio');
    return () => {
      stop();
      release();
    };
  }, [subscribe, onMessage]);
  return portfolio;
}
