/**
 * The browser client with tokens: the auth message first, refresh ahead of exp under
 * fake timers (which drive `Date.now()` too), and 4401 answered with one new token.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  resetSharedClients,
  sharedClient,
  WebSocketClient,
  wsClient,
  type ClientOptions,
} from '../src/lib/websocket';
import { retryTimes, tokenTimes } from '../src/lib/token';
import { CloseCode, type ServerMessage } from '../src/protocol';
import { FakeWebSocket, T, welcome } from './fakeSocket';

/** Unix seconds at the start of every test (fake timers hold `Date.now()` there). */
const NOW = 1_800_000_000;

/** A JWT-shaped token with this payload: the client reads it, never verifies it. */
function jwt(payload: Record<string, unknown>): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(payload)}.signature`;
}

/** A token issued now for `ttl` seconds; `n` tells tokens apart. */
function token(ttl = 600, n = 1): string {
  const now = Math.floor(Date.now() / 1000);
  return jwt({ sub: 'alice', iat: now, exp: now + ttl, n });
}

function unauthorized(error: string, id?: string): ServerMessage {
  return { type: 'error', code: 'unauthorized', error, ...(id === undefined ? {} : { id }), timestamp: T };
}

function makeClient(options: Partial<ClientOptions> = {}): WebSocketClient {
  return new WebSocketClient({
    baseUrl: 'ws://gw.test:8000',
    clientId: 'tester',
    WebSocket: FakeWebSocket,
    random: () => 0.5,
    pingInterval: 0, // minutes pass here with a silent fake gateway: no liveness pings
    ...options,
  });
}

/** A `getToken` that returns `tokens()` in turn (the last one again), counting calls. */
function provider(...tokens: (() => string | Promise<string>)[]) {
  const getToken = vi.fn(() => {
    const make = tokens[Math.min(getToken.mock.calls.length - 1, tokens.length - 1)];
    if (!make) throw new Error('no tokens');
    return make();
  });
  return getToken;
}

/** Let promise callbacks run (`getToken`'s result). */
async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(NOW * 1000);
  FakeWebSocket.reset();
});

afterEach(() => {
  resetSharedClients();
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('the refresh rule', () => {
  it.each([
    [{ exp: 4600, iat: 1000 }, { expMs: 4_600_000, refreshAtMs: 4_570_000 }], // an hour: 30 s before
    [{ exp: 1300, iat: 1000 }, { expMs: 1_300_000, refreshAtMs: 1_270_000 }], // 5 min: 30 s = 10 %
    [{ exp: 1060, iat: 1000 }, { expMs: 1_060_000, refreshAtMs: 1_054_000 }], // 1 min: 10 %, 6 s
    [{ exp: 1060 }, { expMs: 1_060_000, refreshAtMs: 1_054_000 }], // no iat: from now
    [{ exp: 1060, iat: 2000 }, { expMs: 1_060_000, refreshAtMs: 1_054_000 }], // iat ahead: from now
    [{ exp: 900 }, { expMs: 900_000, refreshAtMs: 900_000 }], // expired: at once
    [{ sub: 'alice' }, null],
    [{ exp: '1060' }, null],
  ])('%j refreshes at %j (the Python client’s rule)', (payload, times) => {
    expect(tokenTimes(jwt(payload), 1_000_000)).toEqual(times);
  });

  it('is null for what is not a JWT, and retries half way to exp, at least 1 s later', () => {
    for (const garbage of ['', 'a.b', 'a.!!!.c', 'a.b.c.d', `x.${btoa('[1060]')}.y`]) {
      expect(tokenTimes(garbage, 1_000_000)).toBeNull();
    }
    const times = { expMs: 1_100_000, refreshAtMs: 1_070_000 };
    expect(retryTimes(times, 1_070_000)).toEqual({ expMs: 1_100_000, refreshAtMs: 1_085_000 });
    expect(retryTimes(times, 1_099_500)).toEqual({ expMs: 1_100_000, refreshAtMs: 1_100_500 });
    expect(retryTimes(times, 1_100_000)).toBeNull();
  });
});

describe('handing over the token', () => {
  it('sends {"type":"auth"} first on open, then restores subscriptions and the queue', () => {
    const first = token();
    const client = makeClient({ token: first });
    client.addSubscription('alerts');
    client.connect();
    client.send({ type: 'ping', id: 'queued' });
    const socket = FakeWebSocket.last;
    expect(socket.url).toBe('ws://gw.test:8000/ws/tester'); // never in the URL
    socket.serverOpen();
    expect(socket.sent).toEqual([
      { type: 'auth', token: first },
      { type: 'subscribe', channel: 'alerts' },
      { type: 'ping', id: 'queued' },
    ]);
  });

  it('without a token sends no auth message', () => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent).toEqual([]);
  });

  it('with getToken, opens the socket only once the token is there', async () => {
    let resolve: (token: string) => void = () => {};
    const getToken = vi.fn(() => new Promise<string>((done) => (resolve = done)));
    const client = makeClient({ getToken });
    client.connect();
    expect(client.getStatus().state).toBe('connecting');
    expect(FakeWebSocket.instances).toHaveLength(0);
    const fetched = token();
    resolve(fetched);
    await settle();
    expect(FakeWebSocket.instances).toHaveLength(1);
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent).toEqual([{ type: 'auth', token: fetched }]);
  });

  it('token is for the first socket; getToken for every later one', async () => {
    const later = token(600, 2);
    const getToken = provider(() => later);
    const client = makeClient({ token: token(), getToken });
    client.connect();
    FakeWebSocket.last.serverOpen();
    expect(getToken).not.toHaveBeenCalled();
    FakeWebSocket.last.serverClose(CloseCode.GOING_AWAY);
    await vi.advanceTimersByTimeAsync(2_000); // the backoff's first delay (random 0.5 of 2 s)
    expect(getToken).toHaveBeenCalledOnce();
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent[0]).toEqual({ type: 'auth', token: later });
  });
});

describe('refresh ahead of exp', () => {
  it('asks getToken when 30 s are left, and sends the new token on the open socket', async () => {
    let second = '';
    const getToken = provider(
      () => token(600, 1),
      () => (second = token(600, 2)), // issued at the refresh: it expires later
    );
    const client = makeClient({ getToken });
    client.connect();
    await settle();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSend(welcome());
    await vi.advanceTimersByTimeAsync(569_000);
    expect(getToken).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(socket.sent.at(-1)).toEqual({ type: 'auth', token: second, id: 'auth:1' });
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(client.getStatus().state).toBe('open');
  });

  it('keeps refreshing, each time ahead of the newest token’s exp', async () => {
    let n = 0;
    const getToken = vi.fn(() => token(100, ++n)); // 100 s tokens: refreshed 10 s before exp
    const client = makeClient({ getToken });
    client.connect();
    await settle();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSend(welcome());
    await vi.advanceTimersByTimeAsync(90_000 * 3);
    const refreshes = socket.sent.filter((m) => (m as { type: string }).type === 'auth');
    expect(refreshes.map((m) => (m as { id?: string }).id)).toEqual([undefined, 'auth:1', 'auth:2', 'auth:3']);
  });

  it('a token no newer than the current one is not sent: asked again half way to exp', async () => {
    const same = token(600, 1);
    const getToken = provider(() => same, () => same, () => token(900, 2));
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const client = makeClient({ getToken });
    client.connect();
    await settle();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSend(welcome());
    await vi.advanceTimersByTimeAsync(570_000); // the refresh: the same token back
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(socket.sent).toHaveLength(1); // the first auth only
    await vi.advanceTimersByTimeAsync(15_000); // half of the 30 s left
    expect(getToken).toHaveBeenCalledTimes(3);
    expect(socket.sent).toHaveLength(2);
    expect(warn).not.toHaveBeenCalled(); // a cache behind ours is no failure
  });

  it('a failing getToken is asked again later, and the socket stays open', async () => {
    const getToken = provider(
      () => token(600, 1),
      () => Promise.reject(new Error('provider down')),
      () => token(600, 3),
    );
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const client = makeClient({ getToken });
    client.connect();
    await settle();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend(welcome());
    await vi.advanceTimersByTimeAsync(570_000);
    expect(warn).toHaveBeenCalledWith('[WebSocket] token refresh: getToken failed: provider down');
    await vi.advanceTimersByTimeAsync(15_000);
    expect(getToken).toHaveBeenCalledTimes(3);
    expect(FakeWebSocket.last.sent.at(-1)).toMatchObject({ type: 'auth', id: 'auth:1' });
  });

  it('a fixed token is never refreshed; a refusal of a refresh is only a warning', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const client = makeClient({ token: token() });
    const seen: string[] = [];
    client.subscribe((message) => seen.push(message.type));
    client.connect();
    const socket = FakeWebSocket.last;
    socket.serverOpen();
    socket.serverSend(welcome());
    await vi.advanceTimersByTimeAsync(700_000);
    expect(socket.sent).toHaveLength(1);
    socket.serverSend(unauthorized('Token refused; it names another user', 'auth:1'));
    expect(warn).toHaveBeenCalledOnce();
    expect(client.getStatus().state).toBe('open');
    expect(seen).toContain('error'); // listeners see it too
  });

  it('setToken sends the new token at once on an open socket', () => {
    const client = makeClient({ token: token() });
    client.connect();
    FakeWebSocket.last.serverOpen();
    const next = token(600, 2);
    client.setToken(next);
    expect(FakeWebSocket.last.sent.at(-1)).toEqual({ type: 'auth', token: next, id: 'auth:1' });
  });
});

describe('4401: one new token, then stop', () => {
  it('reconnects at once with a token from getToken, and a welcome resets the allowance', async () => {
    const getToken = provider(() => token(600, 1), () => token(600, 2), () => token(600, 3));
    const client = makeClient({ getToken });
    client.connect();
    await settle();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend(welcome());
    FakeWebSocket.last.serverSend(unauthorized('Unauthorized: the token expired'));
    FakeWebSocket.last.serverClose(CloseCode.UNAUTHORIZED, 'Token expired');
    expect(client.getStatus().state).toBe('connecting'); // no backoff
    await settle();
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(FakeWebSocket.instances).toHaveLength(2);
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend(welcome());
    // Welcomed: a later 4401 gets its own new token.
    FakeWebSocket.last.serverClose(CloseCode.UNAUTHORIZED, 'Token expired');
    await settle();
    expect(FakeWebSocket.instances).toHaveLength(3);
  });

  it('a new token refused too ends in closed, with the gateway’s reason', async () => {
    const getToken = provider(() => token(600, 1), () => token(600, 2));
    const client = makeClient({ getToken });
    client.connect();
    await settle();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend(unauthorized('Unauthorized: bad signature: signed with another key'));
    FakeWebSocket.last.serverClose(CloseCode.UNAUTHORIZED, 'Unauthorized');
    await settle();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend(unauthorized('Unauthorized: bad signature: signed with another key'));
    FakeWebSocket.last.serverClose(CloseCode.UNAUTHORIZED, 'Unauthorized');
    await vi.advanceTimersByTimeAsync(600_000);
    expect(client.getStatus()).toMatchObject({
      state: 'closed',
      canReconnect: true,
      lastClose: { code: 4401, reason: 'Unauthorized: bad signature: signed with another key' },
    });
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it('without getToken, 4401 ends in closed at once', () => {
    const client = makeClient({ token: token() });
    client.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(CloseCode.UNAUTHORIZED, 'Unauthorized');
    expect(client.getStatus()).toMatchObject({ state: 'closed', lastClose: { code: 4401 } });
    vi.advanceTimersByTime(600_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it('getToken failing for the new token ends in closed, saying so', async () => {
    const error = vi.spyOn(console, 'error').mockImplementation(() => {});
    const getToken = provider(
      () => token(),
      () => Promise.reject(new Error('session ended')),
    );
    const client = makeClient({ getToken });
    client.connect();
    await settle();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(CloseCode.UNAUTHORIZED, 'Unauthorized');
    await settle();
    expect(client.getStatus()).toMatchObject({
      state: 'closed',
      lastClose: { code: 4401, reason: 'getToken failed: session ended' },
    });
    expect(error).toHaveBeenCalledWith('[WebSocket] getToken failed: session ended');
  });

  it('after a 4401 a page can set a token from its user and reconnect', () => {
    const client = makeClient();
    client.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(CloseCode.UNAUTHORIZED, 'Unauthorized');
    expect(client.getStatus().state).toBe('closed');
    const pasted = token();
    client.setToken(pasted);
    client.reconnect();
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent).toEqual([{ type: 'auth', token: pasted }]);
  });
});

describe('getToken failing before other reconnects', () => {
  it('is a failed attempt, retried with backoff', async () => {
    const error = vi.spyOn(console, 'error').mockImplementation(() => {});
    const getToken = provider(() => Promise.reject(new Error('offline')), () => token());
    const client = makeClient({ getToken });
    client.connect();
    await settle();
    expect(client.getStatus()).toMatchObject({
      state: 'reconnecting',
      attempt: 1,
      lastClose: { code: 1006, reason: 'getToken failed: offline' },
    });
    await vi.advanceTimersByTimeAsync(1_000); // random 0.5 of the first 2 s
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(error).toHaveBeenCalledOnce();
  });

  it('a getToken that never answers is bounded by connectTimeout', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const getToken = vi.fn(() => new Promise<string>(() => {}));
    const client = makeClient({ getToken, connectTimeout: 3_000 });
    client.connect();
    await vi.advanceTimersByTimeAsync(3_000);
    expect(client.getStatus()).toMatchObject({
      state: 'reconnecting',
      lastClose: { code: 1006, reason: 'getToken failed: no token within 3000 ms' },
    });
  });

  it('a value that is not a token is refused before anything is sent', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const client = makeClient({ getToken: () => 'not a token' });
    client.connect();
    await settle();
    expect(FakeWebSocket.instances).toHaveLength(0);
    expect(client.getStatus().lastClose?.reason).toMatch(/getToken must return a JWT/);
  });
});

describe('shared clients and wsClient', () => {
  it('take token and getToken like their other options', async () => {
    const later = token(600, 2);
    const options = { baseUrl: 'ws://gw.test:8000', clientId: 'shared', WebSocket: FakeWebSocket };
    const client = sharedClient({ ...options, token: token() });
    expect(sharedClient({ ...options, getToken: () => later })).toBe(client);
    client.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(CloseCode.UNAUTHORIZED);
    await settle();
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent[0]).toEqual({ type: 'auth', token: later });
  });

  it('wsClient.setToken authenticates the page’s default client', () => {
    vi.stubGlobal('WebSocket', FakeWebSocket);
    const pasted = token();
    wsClient.setToken(pasted);
    wsClient.connect();
    FakeWebSocket.last.serverOpen();
    expect(FakeWebSocket.last.sent[0]).toEqual({ type: 'auth', token: pasted });
    vi.unstubAllGlobals();
  });
});
