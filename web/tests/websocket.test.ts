import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  DEFAULT_LIVENESS,
  DEFAULT_MAX_QUEUED_MESSAGES,
  DEFAULT_RECONNECT,
  resetSharedClients,
  sharedClient,
  WebSocketClient,
  type ClientOptions,
  type HistoryGap,
} from '../src/lib/websocket';
import { CloseCode, FATAL_CLOSE_CODES, RECONNECT_CLOSE_CODES } from '../src/protocol';
import { SubscriptionSet } from '../src/lib/subscriptions';
import { alert, FakeWebSocket, price, T, welcome } from './fakeSocket';

/** Let queued microtasks run (subscription releases are deferred by one). */
async function settle(): Promise<void> {
  await Promise.resolve();
  await Promise.resolve();
}

function makeClient(options: Partial<ClientOptions> = {}): WebSocketClient {
  return new WebSocketClient({
    baseUrl: 'ws://gw.test:8000',
    clientId: 'tester',
    WebSocket: FakeWebSocket,
    random: () => 0.5,
    ...options,
  });
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
});

afterEach(() => {
  resetSharedClients();
  vi.useRealTimers();
});

describe('connect, send, subscribe', () => {
  it('connects to /ws/{clientId} and delivers parsed messages to every listener', () => {
    const client = makeClient();
    const seen: string[] = [];
    const other: string[] = [];
    const stop = client.subscribe((m) => seen.push(m.type));
    client.subscribe((m) => other.push(m.type));
    client.connect();
    expect(FakeWebSocket.last.url).toBe('ws://gw.test:8000/ws/tester');
    expect(client.getStatus().state).toBe('connecting');
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend(welcome());
    stop();
    FakeWebSocket.last.serverSend(price('AAPL', 1));
    expect(seen).toEqual(['welcome']);
    expect(other).toEqual(['welcome', 'price_update']);
    expect(client.getStatus().welcome?.epoch).toBe('e1');
  });

  it('ignores frames that are not JSON objects, and survives a throwing listener', () => {
    const client = makeClient();
    const seen: string[] = [];
    client.subscribe(() => {
      throw new Error('boom');
    });
    client.subscribe((m) => seen.push(m.type));
    const error = vi.spyOn(console, 'error').mockImplementation(() => {});
    client.connect();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSendRaw('not json');
    socket.serverSendRaw('42');
    socket.serverSendRaw(new ArrayBuffer(2));
    socket.serverSend(price('AAPL', 1));
    expect(seen).toEqual(['price_update']);
    expect(error).toHaveBeenCalledOnce();
  });

  it('send() writes JSON at once while open', () => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverOpen();
    expect(client.send({ type: 'ping', id: 7 })).toBe(true);
    expect(FakeWebSocket.last.sent).toEqual([{ type: 'ping', id: 7 }]);
    expect(client.queuedCount).toBe(0);
  });

  it('connect() twice opens one socket; disconnect() closes with 1000 and does not retry', () => {
    const client = makeClient();
    client.connect();
    client.connect();
    expect(FakeWebSocket.instances).toHaveLength(1);
    FakeWebSocket.last.serverOpen();
    client.disconnect();
    expect(FakeWebSocket.last.closedByClient?.code).toBe(1000);
    expect(client.getStatus().state).toBe('closed');
    vi.advanceTimersByTime(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });
});

describe('reconnection schedule', () => {
  it('retries with full-jitter exponential backoff, then gives up after maxAttempts', () => {
    const draws: number[] = [];
    const client = makeClient({
      random: () => {
        draws.push(1);
        return 0.5;
      },
    });
    client.connect();
    const delays: number[] = [];
    for (let attempt = 0; attempt < 10; attempt += 1) {
      FakeWebSocket.last.serverClose(1006);
      const status = client.getStatus();
      expect(status.state).toBe('reconnecting');
      expect(status.attempt).toBe(attempt + 1);
      delays.push(status.retryInMs ?? -1);
      const before = FakeWebSocket.instances.length;
      vi.advanceTimersByTime((status.retryInMs ?? 0) - 1);
      expect(FakeWebSocket.instances).toHaveLength(before);
      vi.advanceTimersByTime(1);
      expect(FakeWebSocket.instances).toHaveLength(before + 1);
    }
    // Half of each ceiling: 2 s, 4 s, 8 s, 16 s, then the 30 s cap.
    expect(delays).toEqual([1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000, 15000, 15000]);
    expect(draws).toHaveLength(10);
    FakeWebSocket.last.serverClose(1006);
    const status = client.getStatus();
    expect(status.state).toBe('closed');
    expect(status.canReconnect).toBe(true);
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.instances).toHaveLength(11);
  });

  it('takes its options: first delay, attempts, cap', () => {
    const client = makeClient({
      random: () => 0.999,
      reconnect: { initialDelayMs: 100, maxDelayMs: 300, maxAttempts: 3 },
    });
    client.connect();
    const delays: (number | null)[] = [];
    for (let i = 0; i < 3; i += 1) {
      FakeWebSocket.last.serverClose(1011);
      delays.push(client.getStatus().retryInMs);
      vi.runOnlyPendingTimers();
    }
    expect(delays).toEqual([99, 199, 299]);
    FakeWebSocket.last.serverClose(1011);
    expect(client.getStatus().state).toBe('closed');
  });

  it('resets the attempt count only after the connection stayed up stableAfterMs', () => {
    const client = makeClient({ reconnect: { stableAfterMs: 5000 } });
    client.connect();
    FakeWebSocket.last.serverClose(1006);
    vi.runOnlyPendingTimers();
    FakeWebSocket.last.serverClose(1006);
    vi.runOnlyPendingTimers();
    // Up briefly: a flapping server does not reset the schedule.
    FakeWebSocket.last.serverOpen();
    vi.advanceTimersByTime(4999);
    expect(client.getStatus().attempt).toBe(2);
    FakeWebSocket.last.serverClose(1006);
    expect(client.getStatus().attempt).toBe(3);
    expect(client.getStatus().retryInMs).toBe(4000);
    vi.runOnlyPendingTimers();
    FakeWebSocket.last.serverOpen();
    vi.advanceTimersByTime(5000);
    expect(client.getStatus().attempt).toBe(0);
    FakeWebSocket.last.serverClose(1001);
    expect(client.getStatus().retryInMs).toBe(1000);
  });

  // The policy is the protocol's (generated from the Python package's schema); the
  // literal lists pin what DESIGN.md promises, so a change to it shows here too.
  it('follows the protocol: reconnect after 1001, 1006, 1011, 4429, 4499; never after 4400, 4403, 4409', () => {
    expect([...RECONNECT_CLOSE_CODES]).toEqual([1001, 1006, 1011, 4429, 4499]);
    expect([...FATAL_CLOSE_CODES]).toEqual([4400, 4403, 4409]);
    expect(DEFAULT_RECONNECT.fatalCloseCodes).toBe(FATAL_CLOSE_CODES);
  });

  it.each([...RECONNECT_CLOSE_CODES])('retries after close %i', (code) => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(code);
    expect(client.getStatus().state).toBe('reconnecting');
    vi.runOnlyPendingTimers();
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it.each([...FATAL_CLOSE_CODES])('never retries after fatal close %i', (code) => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(code, 'nope');
    const status = client.getStatus();
    expect(status.state).toBe('closed');
    expect(status.lastClose).toEqual({ code, reason: 'nope' });
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  // What the Python client does too: a normal close ends it, and so does any code a
  // retry cannot fix (a client bug, a message too big, missing credentials, unknown).
  it.each([
    CloseCode.NORMAL,
    CloseCode.PROTOCOL_ERROR,
    CloseCode.INVALID_DATA,
    CloseCode.MESSAGE_TOO_BIG,
    CloseCode.UNAUTHORIZED,
    1005,
    1012,
    4000,
  ])('does not retry after close %i', (code) => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(code);
    expect(client.getStatus()).toMatchObject({ state: 'closed', canReconnect: true, retryInMs: null });
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it('fatalCloseCodes can veto a reconnect code, and never adds one', () => {
    const client = makeClient({ reconnect: { fatalCloseCodes: [CloseCode.SLOW_CONSUMER] } });
    client.connect();
    FakeWebSocket.last.serverClose(CloseCode.SLOW_CONSUMER);
    expect(client.getStatus().state).toBe('closed');
    client.reconnect();
    // The default fatal codes are replaced, not extended, but still never retried.
    FakeWebSocket.last.serverClose(CloseCode.REPLACED);
    expect(client.getStatus().state).toBe('closed');
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it('manual reconnect() works after a fatal close and after giving up, and starts the count over', () => {
    const client = makeClient({ reconnect: { maxAttempts: 1 } });
    client.connect();
    FakeWebSocket.last.serverClose(4409);
    expect(client.getStatus().canReconnect).toBe(true);
    client.reconnect();
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(client.getStatus()).toMatchObject({ state: 'connecting', canReconnect: false, attempt: 0 });
    FakeWebSocket.last.serverClose(1006);
    vi.runOnlyPendingTimers();
    FakeWebSocket.last.serverClose(1006);
    expect(client.getStatus().state).toBe('closed');
    client.reconnect();
    expect(client.getStatus().attempt).toBe(0);
    expect(FakeWebSocket.instances).toHaveLength(4);
  });

  it('reconnect() while a retry is pending connects now, and the old timer never fires', () => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverClose(1006);
    expect(client.getStatus().retryInMs).toBe(1000);
    client.reconnect();
    expect(FakeWebSocket.instances).toHaveLength(2);
    // Past the old retry's time, and short of the new attempt's connect timeout.
    vi.advanceTimersByTime(DEFAULT_LIVENESS.connectTimeout - 1);
    expect(FakeWebSocket.instances).toHaveLength(2);
    client.reconnect(); // connecting: no-op
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it('events from a replaced socket are ignored', () => {
    const client = makeClient();
    client.connect();
    const first = FakeWebSocket.last;
    first.serverClose(1006);
    client.reconnect();
    const seen: string[] = [];
    client.subscribe((m) => seen.push(m.type));
    first.serverSend(price('AAPL', 1));
    first.serverClose(1006);
    expect(seen).toEqual([]);
    expect(client.getStatus().state).toBe('connecting');
  });
});

describe('subscriptions', () => {
  it('sends only the first hold and the last release, counted per symbol', async () => {
    const client = makeClient();
    client.connect();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    const a = client.addSubscription('prices', ['AAPL', 'MSFT']);
    const b = client.addSubscription('prices', ['AAPL']);
    const c = client.addSubscription('alerts');
    const d = client.addSubscription('alerts');
    a();
    a(); // idempotent
    c();
    d();
    b();
    await settle();
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'prices', symbols: ['AAPL', 'MSFT'] },
      { type: 'subscribe', channel: 'alerts' },
      { type: 'unsubscribe', channel: 'prices', symbols: ['MSFT'] },
      { type: 'unsubscribe', channel: 'alerts' },
      { type: 'unsubscribe', channel: 'prices' },
    ]);
  });

  it('restores every subscription after reconnecting, resuming non-price channels', () => {
    const client = makeClient();
    client.addSubscription('prices', ['AAPL']);
    client.addSubscription('alerts');
    client.connect();
    let socket = FakeWebSocket.last;
    socket.serverOpen();
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'prices', symbols: ['AAPL'] },
      { type: 'subscribe', channel: 'alerts' },
    ]);
    socket.serverSend(welcome('epoch-1'));
    socket.serverSend(alert('a1', 41));
    socket.serverSend(alert('a2', 42));
    socket.serverClose(1006);
    vi.runOnlyPendingTimers();
    socket = FakeWebSocket.last;
    socket.serverOpen();
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'prices', symbols: ['AAPL'] },
      { type: 'subscribe', channel: 'alerts', since: 42, epoch: 'epoch-1', id: 'resume:alerts' },
    ]);
    // History gone (another epoch): subscribe afresh.
    socket.serverSend(welcome('epoch-2'));
    socket.serverSend({
      type: 'error',
      code: 'history_unavailable',
      error: 'gone',
      id: 'resume:alerts',
      timestamp: '2026-11-26T14:30:00Z',
    });
    expect(socket.sent.at(-1)).toEqual({ type: 'subscribe', channel: 'alerts' });
  });

  it('resumes from the position the subscribed ack gives, before any message arrived', () => {
    const client = makeClient();
    client.addSubscription('alerts');
    client.addSubscription('signals');
    const alerts: number[] = [];
    client.subscribe((m) => {
      if (m.type === 'alert_triggered') alerts.push(m.seq);
    });
    client.connect();
    let socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSend(welcome('e1'));
    socket.serverSend({ type: 'subscribed', channel: 'alerts', seq: 7, timestamp: T });
    socket.serverSend({ type: 'subscribed', channel: 'signals', seq: 0, timestamp: T });
    socket.serverClose(1006);
    vi.runOnlyPendingTimers();
    socket = FakeWebSocket.last;
    socket.serverOpen();
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'alerts', since: 7, epoch: 'e1', id: 'resume:alerts' },
      { type: 'subscribe', channel: 'signals', since: 0, epoch: 'e1', id: 'resume:signals' },
    ]);
    // The replay follows the resume's ack, whose position is the since sent.
    socket.serverSend(welcome('e1'));
    socket.serverSend({ type: 'subscribed', channel: 'alerts', seq: 7, id: 'resume:alerts', timestamp: T });
    socket.serverSend(alert('missed', 8));
    expect(alerts).toEqual([8]);
    socket.serverClose(1006);
    vi.runOnlyPendingTimers();
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent[0]).toEqual({
      type: 'subscribe',
      channel: 'alerts',
      since: 8,
      epoch: 'e1',
      id: 'resume:alerts',
    });
  });

  it("delivers a node's own notice (seq 0) without moving the position", () => {
    const client = makeClient();
    client.addSubscription('notifications');
    const seen: number[] = [];
    client.subscribe((m) => {
      if (m.type === 'notification') seen.push(m.seq);
    });
    client.connect();
    let socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSend(welcome('e1'));
    // An ack without seq (an older server) leaves no position until a message comes.
    socket.serverSend({ type: 'subscribed', channel: 'notifications', timestamp: T });
    const notice = { id: 'n', message: 'Live data interrupted', type: 'warning' as const };
    socket.serverSend({ type: 'notification', data: notice, seq: 0, timestamp: T });
    expect(seen).toEqual([0]);
    socket.serverClose(1006);
    vi.runOnlyPendingTimers();
    socket = FakeWebSocket.last;
    socket.serverOpen();
    // No position yet: subscribe afresh, not "since 0" (which would replay everything).
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'notifications' }]);
  });

  it('reports a gap when the gateway restarted with a new epoch, then resumes in it', () => {
    const client = makeClient();
    client.addSubscription('alerts');
    const gaps: HistoryGap[] = [];
    const stop = client.onGap((gap) => gaps.push(gap));
    client.connect();
    let socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSend(welcome('e1'));
    socket.serverSend({ type: 'subscribed', channel: 'alerts', seq: 0, timestamp: T });
    socket.serverClose(1006); // killed; nothing had arrived
    vi.runOnlyPendingTimers();
    socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSend(welcome('e2'));
    expect(gaps).toEqual([]); // the gateway decides: a resume it can serve is no gap
    socket.serverSend({
      type: 'error',
      code: 'history_unavailable',
      error: 'History epoch e1 is gone',
      id: 'resume:alerts',
      timestamp: T,
    });
    expect(gaps).toEqual([{ channel: 'alerts', since: 0, epoch: 'e1' }]);
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'alerts', since: 0, epoch: 'e1', id: 'resume:alerts' },
      { type: 'subscribe', channel: 'alerts' },
    ]);
    // The fresh subscription's ack is the position in the new history.
    socket.serverSend({ type: 'subscribed', channel: 'alerts', seq: 1, timestamp: T });
    socket.serverClose(1006);
    vi.runOnlyPendingTimers();
    socket = FakeWebSocket.last;
    socket.serverOpen();
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'alerts', since: 1, epoch: 'e2', id: 'resume:alerts' },
    ]);
    socket.serverSend(welcome('e2'));
    socket.serverSend({ type: 'subscribed', channel: 'alerts', seq: 1, id: 'resume:alerts', timestamp: T });
    stop();
    expect(gaps).toHaveLength(1);
  });

  it('an every-symbol hold coexists with symbol holds', () => {
    const set = new SubscriptionSet();
    expect(set.add('prices', ['AAPL'])).toHaveLength(1);
    expect(set.add('prices')).toEqual([{ type: 'subscribe', channel: 'prices' }]);
    expect(set.add('prices', ['MSFT'])).toEqual([]);
    expect(set.restore()).toEqual([{ type: 'subscribe', channel: 'prices' }]);
    // The server refuses to trim an every-symbol subscription, so drop it and re-add.
    expect(set.remove('prices')).toEqual([
      { type: 'unsubscribe', channel: 'prices' },
      { type: 'subscribe', channel: 'prices', symbols: ['AAPL', 'MSFT'] },
    ]);
    expect(set.remove('prices')).toEqual([]);
    expect(set.remove('alerts')).toEqual([]);
    expect(set.heldSymbols()).toEqual(['AAPL', 'MSFT']);
  });
});

describe('shared clients', () => {
  const base = { baseUrl: 'ws://gw.test:8000', clientId: 'shared', WebSocket: FakeWebSocket };

  it('one socket per endpoint however many hold it; closes a tick after the last release', () => {
    const one = sharedClient(base);
    const two = sharedClient(base);
    expect(two).toBe(one);
    expect(sharedClient({ ...base, clientId: 'other' })).not.toBe(one);
    const releases = [one.acquire(), two.acquire(), one.acquire()];
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(one.holderCount).toBe(3);
    releases[0]?.();
    releases[0]?.(); // idempotent: must not steal another holder's count
    releases[1]?.();
    vi.advanceTimersByTime(1);
    expect(FakeWebSocket.live()).toHaveLength(1);
    releases[2]?.();
    expect(FakeWebSocket.live()).toHaveLength(1); // not yet: deferred
    vi.advanceTimersByTime(1);
    expect(FakeWebSocket.live()).toHaveLength(0);
    expect(one.getStatus().state).toBe('closed');
  });

  it('release then acquire in the same tick keeps the socket (StrictMode, route changes)', () => {
    const client = sharedClient(base);
    const release = client.acquire();
    FakeWebSocket.last.serverOpen();
    release();
    client.acquire();
    vi.advanceTimersByTime(1);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(client.getStatus().state).toBe('open');
  });

  it('a shared socket reconnects, and every user sees messages again', () => {
    const client = sharedClient(base);
    const seenA: string[] = [];
    const seenB: string[] = [];
    client.acquire();
    client.acquire();
    client.subscribe((m) => seenA.push(m.type));
    client.subscribe((m) => seenB.push(m.type));
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(1006);
    vi.runOnlyPendingTimers();
    expect(FakeWebSocket.instances).toHaveLength(2);
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend(price('AAPL', 2));
    expect(seenA).toEqual(['price_update']);
    expect(seenB).toEqual(['price_update']);
  });

  it('options given by a later user of a shared client are applied, not ignored', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const client = sharedClient({ ...base, reconnect: { maxAttempts: 3 } });
    client.acquire();
    sharedClient({ ...base, reconnect: { maxAttempts: 7, initialDelayMs: 50 } });
    expect(client.reconnectOptions.maxAttempts).toBe(7);
    expect(client.reconnectOptions.initialDelayMs).toBe(50);
    expect(client.getStatus().maxAttempts).toBe(7);
    expect(warn).toHaveBeenCalledOnce();
  });

  it('a pinned connect() outlives the hooks', () => {
    const client = sharedClient(base);
    client.connect();
    const release = client.acquire();
    release();
    vi.advanceTimersByTime(1);
    expect(FakeWebSocket.live()).toHaveLength(1);
  });
});

describe('the send queue', () => {
  it('queues sends until the socket opens, then writes them after the restored subscriptions', () => {
    const client = makeClient();
    client.addSubscription('alerts');
    expect(client.send({ type: 'ping', id: 1 })).toBe(true); // before connect()
    client.connect();
    expect(client.send({ type: 'subscribe', channel: 'prices' })).toBe(true);
    expect(client.queuedCount).toBe(2);
    const socket = FakeWebSocket.last;
    expect(socket.sent).toEqual([]);
    socket.serverOpen();
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'alerts' },
      { type: 'ping', id: 1 },
      { type: 'subscribe', channel: 'prices' },
    ]);
    expect(client.queuedCount).toBe(0);
  });

  it('keeps queueing across a reconnect, and writes each message once', () => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(1006);
    expect(client.send({ type: 'ping', id: 'while-down' })).toBe(true);
    vi.runOnlyPendingTimers();
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent).toEqual([{ type: 'ping', id: 'while-down' }]);
    FakeWebSocket.last.serverClose(1006);
    vi.runOnlyPendingTimers();
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent).toEqual([]);
  });

  it(`holds at most ${DEFAULT_MAX_QUEUED_MESSAGES} messages: when full, the new one is refused`, () => {
    const client = makeClient();
    client.connect();
    for (let id = 0; id < DEFAULT_MAX_QUEUED_MESSAGES; id += 1) {
      expect(client.send({ type: 'ping', id })).toBe(true);
    }
    expect(client.send({ type: 'ping', id: 'one too many' })).toBe(false);
    expect(client.queuedCount).toBe(DEFAULT_MAX_QUEUED_MESSAGES);
    FakeWebSocket.last.serverOpen();
    const sent = FakeWebSocket.last.sent as { id: unknown }[];
    expect(sent).toHaveLength(DEFAULT_MAX_QUEUED_MESSAGES);
    expect(sent[0]?.id).toBe(0);
    expect(sent.at(-1)?.id).toBe(DEFAULT_MAX_QUEUED_MESSAGES - 1);
    // Room again once written.
    expect(client.send({ type: 'ping', id: 'after' })).toBe(true);
  });

  it('takes its bound as an option', () => {
    const client = makeClient({ maxQueuedMessages: 2 });
    expect([1, 2, 3].map((id) => client.send({ type: 'ping', id }))).toEqual([true, true, false]);
  });

  it('subscription bookkeeping is never queued: restore() sends it once', async () => {
    const client = makeClient();
    client.connect();
    const release = client.addSubscription('prices', ['AAPL']);
    release();
    client.addSubscription('signals');
    await settle();
    expect(client.queuedCount).toBe(0);
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent).toEqual([{ type: 'subscribe', channel: 'signals' }]);
  });

  it('disconnect() while opening writes what was queued, then closes with 1000 and stays closed', () => {
    const client = makeClient();
    client.connect();
    client.send({ type: 'subscribe', channel: 'prices' });
    client.disconnect();
    expect(client.send({ type: 'ping' })).toBe(false); // closing: nothing more is accepted
    const socket = FakeWebSocket.last;
    expect(socket.closedByClient).toBeNull();
    socket.serverOpen();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'prices' }]);
    expect(socket.closedByClient?.code).toBe(1000);
    expect(client.getStatus().state).toBe('closed');
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it('disconnect() while opening with nothing queued closes at once; so does a failed open', () => {
    const idle = makeClient();
    idle.connect();
    idle.disconnect();
    expect(FakeWebSocket.last.closedByClient?.code).toBe(1000);

    const failing = makeClient();
    failing.connect();
    failing.send({ type: 'ping' });
    failing.disconnect();
    FakeWebSocket.last.serverClose(1006);
    expect(failing.getStatus().state).toBe('closed');
    expect(failing.queuedCount).toBe(0);
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it('disconnect() while waiting to retry drops the queue', () => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverClose(1006);
    client.send({ type: 'ping' });
    client.disconnect();
    expect(client.queuedCount).toBe(0);
    expect(client.getStatus().state).toBe('closed');
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });
});

describe('liveness', () => {
  it('defaults: a ping every 5 s, 5 s for a reply, 10 s to open; a frozen gateway shows within 15 s', () => {
    expect(DEFAULT_LIVENESS).toEqual({ pingInterval: 5_000, pongTimeout: 5_000, connectTimeout: 10_000 });
    expect(DEFAULT_LIVENESS.pingInterval + DEFAULT_LIVENESS.pongTimeout).toBeLessThan(15_000);
  });

  it('pings every pingInterval while open, and a reply keeps the socket', () => {
    const client = makeClient();
    client.connect();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    vi.advanceTimersByTime(4_999);
    expect(socket.sent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(socket.sent).toEqual([{ type: 'ping' }]);
    // A gateway that answers every ping keeps the socket for as long as it does.
    for (let i = 1; i <= 12; i += 1) {
      socket.serverSend({ type: 'pong', timestamp: T });
      vi.advanceTimersByTime(5_000);
      expect(socket.sent).toHaveLength(i + 1);
    }
    expect(client.getStatus().state).toBe('open');
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it('without a reply within pongTimeout, closes the socket and reconnects with backoff', () => {
    const client = makeClient({ pingInterval: 1_000, pongTimeout: 2_000 });
    client.subscribe(() => {});
    client.connect();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    vi.advanceTimersByTime(1_000); // ping
    vi.advanceTimersByTime(1_000); // another ping: the first one's deadline stands
    expect(socket.sent).toEqual([{ type: 'ping' }, { type: 'ping' }]);
    expect(client.getStatus().state).toBe('open');
    vi.advanceTimersByTime(999);
    expect(client.getStatus().state).toBe('open');
    vi.advanceTimersByTime(1);
    expect(socket.closedByClient?.code).toBe(1000);
    const status = client.getStatus();
    expect(status.state).toBe('reconnecting');
    expect(status.lastClose).toEqual({ code: 1006, reason: 'no pong within 2000 ms' });
    expect(status.retryInMs).toBe(1000);
    // The frozen socket's late events are not ours any more.
    socket.serverClose(1006);
    expect(client.getStatus().state).toBe('reconnecting');
    vi.advanceTimersByTime(1_000);
    expect(FakeWebSocket.instances).toHaveLength(2);
    FakeWebSocket.last.serverOpen();
    expect(client.getStatus().state).toBe('open');
  });

  it('any message after a ping counts as its reply: a busy socket needs no pong', () => {
    const client = makeClient({ pingInterval: 1_000, pongTimeout: 500 });
    client.connect();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    // A price every 250 ms, and never a pong.
    for (let i = 0; i < 40; i += 1) {
      vi.advanceTimersByTime(250);
      socket.serverSend(price('AAPL', 100 + i));
    }
    expect(client.getStatus().state).toBe('open');
    expect(socket.sent).toEqual(Array.from({ length: 10 }, () => ({ type: 'ping' })));
  });

  it('pingInterval 0 sends no pings and never times out', () => {
    const client = makeClient({ pingInterval: 0 });
    client.connect();
    FakeWebSocket.last.serverOpen();
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.last.sent).toEqual([]);
    expect(client.getStatus().state).toBe('open');
  });

  it('an attempt that does not open within connectTimeout is closed and retried', () => {
    const client = makeClient({ connectTimeout: 3_000 });
    client.connect();
    const hanging = FakeWebSocket.last;
    vi.advanceTimersByTime(2_999);
    expect(client.getStatus().state).toBe('connecting');
    vi.advanceTimersByTime(1);
    expect(hanging.closedByClient).not.toBeNull();
    expect(client.getStatus()).toMatchObject({
      state: 'reconnecting',
      attempt: 1,
      lastClose: { code: 1006, reason: 'not open within 3000 ms' },
    });
    vi.advanceTimersByTime(client.getStatus().retryInMs ?? 0);
    expect(FakeWebSocket.instances).toHaveLength(2);
    // An open in time cancels the timeout.
    FakeWebSocket.last.serverOpen();
    vi.advanceTimersByTime(3_000);
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(client.getStatus().state).toBe('open');
  });

  it('a gateway that stays frozen exhausts the attempts like any lost connection', () => {
    const client = makeClient({ connectTimeout: 1_000, reconnect: { maxAttempts: 3 } });
    client.connect();
    FakeWebSocket.last.serverOpen();
    vi.advanceTimersByTime(10_000); // ping, no pong
    for (let i = 0; i < 3; i += 1) {
      expect(client.getStatus().state).toBe('reconnecting');
      vi.advanceTimersByTime(client.getStatus().retryInMs ?? 0);
      vi.advanceTimersByTime(1_000); // the attempt hangs
    }
    expect(client.getStatus().state).toBe('closed');
    expect(FakeWebSocket.live()).toEqual([]);
  });

  it('shared clients take liveness options from their users, like reconnect options', () => {
    const base = { baseUrl: 'ws://gw.test:8000', clientId: 'live', WebSocket: FakeWebSocket };
    const client = sharedClient(base);
    sharedClient({ ...base, pingInterval: 15_000 });
    expect(client.policy).toMatchObject({ pingInterval: 15_000, pongTimeout: 5_000, connectTimeout: 10_000 });
  });
});

describe('deferred subscription release', () => {
  it('a release and a new hold of the same subscription in one pass send nothing', async () => {
    const client = makeClient();
    client.connect();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    const first = client.addSubscription('prices', ['AAPL']);
    first();
    const second = client.addSubscription('prices', ['AAPL']);
    await settle();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'prices', symbols: ['AAPL'] }]);
    second();
    await settle();
    expect(socket.sent.at(-1)).toEqual({ type: 'unsubscribe', channel: 'prices' });
  });
});

describe('direct use next to hooks', () => {
  const base = { baseUrl: 'ws://gw.test:8000', clientId: 'direct', WebSocket: FakeWebSocket };

  it("disconnect() drops connect()'s hold only: a socket hooks still hold stays open", () => {
    const client = sharedClient(base);
    client.acquire();
    FakeWebSocket.last.serverOpen();
    client.connect();
    client.send({ type: 'subscribe', channel: 'prices' });
    client.disconnect();
    vi.advanceTimersByTime(1);
    expect(client.getStatus().state).toBe('open');
    expect(FakeWebSocket.last.sent).toEqual([{ type: 'subscribe', channel: 'prices' }]);
  });

  it('a socket that cannot even be constructed ends in closed, saying why', () => {
    const error = vi.spyOn(console, 'error').mockImplementation(() => {});
    class Refusing extends FakeWebSocket {
      constructor(url: string) {
        super(url);
        throw new DOMException("The URL's scheme must be either 'ws' or 'wss'.", 'SyntaxError');
      }
    }
    const client = makeClient({ WebSocket: Refusing });
    client.connect();
    expect(client.getStatus()).toMatchObject({
      state: 'closed',
      canReconnect: true,
      lastClose: { code: 1006, reason: "The URL's scheme must be either 'ws' or 'wss'." },
    });
    expect(error).toHaveBeenCalledOnce();
  });
});
