import { act, render, renderHook, waitFor } from '@testing-library/react';
import { StrictMode, type ReactNode } from 'react';
import { describe, expect, it, vi } from 'vitest';
import {
  MAX_ALERTS,
  MAX_NOTIFICATIONS,
  MAX_SIGNALS,
  prependCapped,
  useAlertNotifications,
  usePortfolio,
  usePriceUpdates,
  useSystemNotifications,
  useTradingSignals,
  useWebSocket,
  type UseWebSocketOptions,
} from '../src/hooks/useWebSocket';
import { alert, FakeWebSocket, notification, price, signal, T } from './fakeSocket';
import { installFakeWebSocket, serverAccepts, serverSends } from './fakeGateway';

const options: UseWebSocketOptions = { baseUrl: 'ws://gw.test:8000', clientId: 'hooks' };
const strict = ({ children }: { children: ReactNode }) => <StrictMode>{children}</StrictMode>;

installFakeWebSocket();

describe('useWebSocket', () => {
  it('reports the connection state and reconnects on demand', async () => {
    const { result } = renderHook(() => useWebSocket(options));
    expect(result.current.connectionState).toBe('connecting');
    expect(result.current.isConnected).toBe(false);
    serverAccepts();
    expect(result.current.isConnected).toBe(true);
    expect(result.current.canReconnect).toBe(false);
    act(() => FakeWebSocket.last.serverClose(4409, 'replaced'));
    expect(result.current.connectionState).toBe('closed');
    expect(result.current.canReconnect).toBe(true);
    act(() => result.current.reconnect());
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(result.current.connectionState).toBe('connecting');
  });

  it('StrictMode double mount opens exactly one socket', async () => {
    renderHook(
      () => {
        useWebSocket(options);
        usePriceUpdates(['AAPL'], options);
        useAlertNotifications(options);
      },
      { wrapper: strict },
    );
    await new Promise((resolve) => setTimeout(resolve, 20)); // past the deferred release
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(FakeWebSocket.live()).toHaveLength(1);
    const socket = serverAccepts();
    // And exactly one subscription per channel reached the wire.
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'prices', symbols: ['AAPL'] },
      { type: 'subscribe', channel: 'alerts' },
    ]);
  });

  it('StrictMode mount while the shared socket is already open sends one subscribe per channel, nothing more', async () => {
    // Something else (a header's status badge, say) already holds the open socket.
    renderHook(() => useWebSocket(options));
    const socket = serverAccepts();
    expect(socket.sent).toEqual([]);
    function Panels() {
      usePriceUpdates(['AAPL', 'MSFT'], options);
      useAlertNotifications(options);
      useTradingSignals(options);
      useSystemNotifications(options);
      usePortfolio(options);
      return null;
    }
    const view = render(
      <StrictMode>
        <Panels />
      </StrictMode>,
    );
    await act(async () => {
      await new Promise((resolve) => setTimeout(resolve, 20)); // past every deferred release
    });
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'prices', symbols: ['AAPL', 'MSFT'] },
      { type: 'subscribe', channel: 'alerts' },
      { type: 'subscribe', channel: 'signals' },
      { type: 'subscribe', channel: 'notifications' },
      { type: 'subscribe', channel: 'portfolio' },
    ]);
    expect(FakeWebSocket.instances).toHaveLength(1);
    // And unmounting releases each once.
    view.unmount();
    await act(async () => {});
    expect(socket.sent.slice(5)).toEqual([
      { type: 'unsubscribe', channel: 'prices' },
      { type: 'unsubscribe', channel: 'alerts' },
      { type: 'unsubscribe', channel: 'signals' },
      { type: 'unsubscribe', channel: 'notifications' },
      { type: 'unsubscribe', channel: 'portfolio' },
    ]);
  });

  it('many components share one socket, which closes after the last unmounts', async () => {
    function Prices({ symbols }: { symbols: string[] }) {
      usePriceUpdates(symbols, options);
      return null;
    }
    const view = render(
      <>
        <Prices symbols={['AAPL']} />
        <Prices symbols={['AAPL', 'MSFT']} />
        <Prices symbols={['MSFT']} />
      </>,
    );
    expect(FakeWebSocket.instances).toHaveLength(1);
    const socket = serverAccepts();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'prices', symbols: ['AAPL', 'MSFT'] }]);
    view.unmount();
    await waitFor(() => expect(FakeWebSocket.live()).toHaveLength(0));
  });

  it('token: every hook on the page authenticates the shared socket, first thing', () => {
    const jwt = 'header.eyJzdWIiOiJhbGljZSJ9.signature';
    renderHook(
      () => {
        useWebSocket({ ...options, token: jwt });
        usePriceUpdates(['AAPL'], options);
      },
      { wrapper: strict },
    );
    const socket = FakeWebSocket.last;
    act(() => socket.serverOpen());
    expect(socket.sent).toEqual([
      { type: 'auth', token: jwt },
      { type: 'subscribe', channel: 'prices', symbols: ['AAPL'] },
    ]);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it('getToken: the latest function given is the one called, and a new one does not reconnect', async () => {
    const calls: string[] = [];
    const { rerender } = renderHook(
      ({ who }: { who: string }) =>
        useWebSocket({
          ...options,
          getToken: async () => {
            calls.push(who);
            return `header.${btoa(JSON.stringify({ sub: who }))}.signature`;
          },
        }),
      { initialProps: { who: 'first' } },
    );
    await act(async () => {});
    expect(calls).toEqual(['first']);
    rerender({ who: 'second' });
    act(() => FakeWebSocket.last.serverClose(4401, 'Unauthorized'));
    await act(async () => {});
    expect(calls).toEqual(['first', 'second']);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it('reconnect options of a second hook on the shared socket are applied', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const { result } = renderHook(() => {
      const first = useWebSocket(options);
      const second = useWebSocket({ ...options, reconnect: { maxAttempts: 2, initialDelayMs: 10 } });
      return { first, second };
    });
    expect(result.current.first.client).toBe(result.current.second.client);
    expect(result.current.first.client.reconnectOptions).toMatchObject({ maxAttempts: 2, initialDelayMs: 10 });
    expect(result.current.first.status.maxAttempts).toBe(2);
    expect(FakeWebSocket.instances).toHaveLength(1);
    warn.mockRestore();
  });

  it('a shared socket reconnects for every hook using it', async () => {
    const { result } = renderHook(() => ({
      prices: usePriceUpdates(['AAPL'], { ...options, reconnect: { initialDelayMs: 1 } }),
      alerts: useAlertNotifications(options),
    }));
    serverAccepts();
    act(() => FakeWebSocket.last.serverClose(1006));
    await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
    const socket = serverAccepts();
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'prices', symbols: ['AAPL'] },
      { type: 'subscribe', channel: 'alerts' },
    ]);
    serverSends(price('AAPL', 7), alert('after-reconnect'));
    await waitFor(() => expect(result.current.prices.prices.get('AAPL')?.price).toBe(7));
    expect(result.current.alerts.alerts[0]?.id).toBe('after-reconnect');
  });

  it('onMessage filters by type and stops after cleanup', () => {
    const { result } = renderHook(() => useWebSocket(options));
    serverAccepts();
    const seen: number[] = [];
    let stop = () => {};
    act(() => {
      stop = result.current.onMessage('price_update', (m) => seen.push(m.data.price));
    });
    serverSends(alert('x'), price('AAPL', 10));
    stop();
    serverSends(price('AAPL', 11));
    expect(seen).toEqual([10]);
  });

  it('subscriptions made through the hook are restored after a reconnect and released on unmount', async () => {
    const { result, unmount } = renderHook(() => useWebSocket(options));
    act(() => {
      result.current.subscribe('signals');
    });
    let socket = serverAccepts();
    act(() => socket.serverClose(1006));
    act(() => result.current.reconnect());
    socket = serverAccepts();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'signals' }]);
    unmount();
    await act(async () => {}); // releases take effect a microtask later
    expect(socket.sent.at(-1)).toEqual({ type: 'unsubscribe', channel: 'signals' });
  });
});

describe('usePriceUpdates', () => {
  it("keeps the latest price per wanted symbol, as the spec's price objects", async () => {
    const { result, rerender } = renderHook(({ symbols }) => usePriceUpdates(symbols, options), {
      initialProps: { symbols: ['AAPL', 'MSFT'] },
    });
    expect(result.current.isConnected).toBe(false);
    serverAccepts();
    expect(result.current.isConnected).toBe(true);
    serverSends(price('AAPL', 100, 1), price('MSFT', 50, 1), price('AAPL', 101, 2), price('TSLA', 9, 1));
    await waitFor(() => expect(result.current.prices.get('AAPL')?.price).toBe(101));
    expect(result.current.prices.get('AAPL')).toEqual({
      symbol: 'AAPL',
      price: 101,
      change: 1,
      change_pct: 0.5,
      volume: 100,
      bid: 100.99,
      ask: 101.01,
      seq: 2,
      timestamp: T,
    });
    expect(result.current.prices.get('MSFT')?.price).toBe(50);
    expect(result.current.prices.has('TSLA')).toBe(false);
    // Dropping a symbol removes it at once and unsubscribes it.
    const sentBefore = FakeWebSocket.last.sent.length;
    rerender({ symbols: ['AAPL'] });
    expect([...result.current.prices.keys()]).toEqual(['AAPL']);
    await act(async () => {});
    expect(FakeWebSocket.last.sent).toHaveLength(sentBefore + 1);
    expect(FakeWebSocket.last.sent.at(-1)).toEqual({
      type: 'unsubscribe',
      channel: 'prices',
      symbols: ['MSFT'],
    });
  });

  it('with no symbols, subscribes to every symbol', async () => {
    const { result } = renderHook(() => usePriceUpdates(undefined, options));
    const socket = serverAccepts();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'prices' }]);
    serverSends(price('TSLA', 9));
    await waitFor(() => expect(result.current.prices.get('TSLA')?.price).toBe(9));
  });

  it('an empty list subscribes to nothing', () => {
    const { result } = renderHook(() => usePriceUpdates([], options));
    const socket = serverAccepts();
    expect(socket.sent).toEqual([]);
    expect(result.current.prices.size).toBe(0);
  });
});

describe('event lists', () => {
  it('useAlertNotifications: newest first, capped at 50, cleared on demand', () => {
    const { result } = renderHook(() => useAlertNotifications(options));
    const socket = serverAccepts();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'alerts' }]);
    serverSends(...Array.from({ length: MAX_ALERTS + 10 }, (_, i) => alert(`a${i}`, i + 1)));
    expect(result.current.alerts).toHaveLength(50);
    expect(result.current.alerts[0]).toEqual({
      id: 'a59',
      symbol: 'AAPL',
      type: 'price_above',
      message: 'alert a59',
      severity: 'warning',
      seq: 60,
      timestamp: T,
    });
    expect(result.current.alerts.at(-1)?.id).toBe('a10');
    act(() => result.current.clearAlerts());
    expect(result.current.alerts).toEqual([]);
  });

  it('useAlertNotifications: a replayed alert is not shown twice', () => {
    const { result } = renderHook(() => useAlertNotifications(options));
    serverAccepts();
    serverSends(alert('dup', 1), alert('dup', 1));
    expect(result.current.alerts).toHaveLength(1);
  });

  it('useTradingSignals: capped at 20', () => {
    const { result } = renderHook(() => useTradingSignals(options));
    serverAccepts();
    serverSends(...Array.from({ length: MAX_SIGNALS + 5 }, (_, i) => signal(i + 1)));
    expect(result.current.signals).toHaveLength(20);
    expect(result.current.signals[0]).toEqual({
      symbol: 'AAPL',
      action: 'buy',
      confidence: 0.8,
      reasoning: 'reason 25',
      seq: 25,
      timestamp: T,
    });
  });

  it('useSystemNotifications: capped at 30, dismiss one, clear all', () => {
    const { result } = renderHook(() => useSystemNotifications(options));
    serverAccepts();
    serverSends(...Array.from({ length: MAX_NOTIFICATIONS + 3 }, (_, i) => notification(`n${i}`, i + 1)));
    expect(result.current.notifications).toHaveLength(30);
    act(() => result.current.dismissNotification('n32'));
    expect(result.current.notifications).toHaveLength(29);
    expect(result.current.notifications[0]).toEqual({
      id: 'n31',
      message: 'note n31',
      type: 'info',
      seq: 32,
      timestamp: T,
    });
    act(() => result.current.clearAll());
    expect(result.current.notifications).toEqual([]);
  });

  it('usePortfolio: the latest snapshot', () => {
    const { result } = renderHook(() => usePortfolio(options));
    serverAccepts();
    expect(result.current).toBeNull();
    serverSends({
      type: 'portfolio_update',
      data: { total_value: 10, cash: 5, day_change: 1, day_change_pct: 0.1, positions: [] },
      seq: 1,
      timestamp: T,
    });
    expect(result.current?.data.total_value).toBe(10);
  });

  it('prependCapped never exceeds its cap', () => {
    let list: number[] = [];
    for (let i = 0; i < 1000; i += 1) list = prependCapped(list, i, 7, String);
    expect(list).toEqual([999, 998, 997, 996, 995, 994, 993]);
  });
});
