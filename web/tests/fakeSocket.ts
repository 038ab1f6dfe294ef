/** A scriptable stand-in for the browser's WebSocket, recording every instance. */
import type { ServerMessage } from '../src/protocol';
import type { SocketLike } from '../src/lib/websocket';

export class FakeWebSocket implements SocketLike {
  static instances: FakeWebSocket[] = [];
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 3;

  readyState = FakeWebSocket.CONNECTING;
  onopen: ((event: Event) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  readonly sent: unknown[] = [];
  closedByClient: { code: number | undefined; reason: string | undefined } | null = null;

  constructor(readonly url: string) {
    FakeWebSocket.instances.push(this);
  }

  static reset(): void {
    FakeWebSocket.instances = [];
  }

  static get last(): FakeWebSocket {
    const socket = FakeWebSocket.instances.at(-1);
    if (!socket) throw new Error('no socket was opened');
    return socket;
  }

  /** Sockets the client has not closed (at most one, if sharing works). */
  static live(): FakeWebSocket[] {
    return FakeWebSocket.instances.filter((s) => s.readyState !== FakeWebSocket.CLOSED);
  }

  send(data: string): void {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = FakeWebSocket.CLOSED;
  }

  // --- the server's side ---

  serverOpen(): void {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.(new Event('open'));
  }

  serverSend(message: Partial<ServerMessage> & { type: string }): void {
    this.onmessage?.(new MessageEvent('message', { data: JSON.stringify(message) }));
  }

  serverSendRaw(data: unknown): void {
    this.onmessage?.(new MessageEvent('message', { data }));
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason, wasClean: code !== 1006 } as CloseEvent);
  }
}

export const T = '2026-11-26T14:30:00Z';

export function welcome(epoch = 'e1', symbols = ['AAPL', 'MSFT', 'GOOGL']): ServerMessage {
  return {
    type: 'welcome',
    client_id: 'c',
    protocol: '1',
    server: 'test',
    channels: ['prices', 'alerts', 'signals', 'portfolio', 'notifications'],
    symbols,
    heartbeat_interval: 20,
    epoch,
    timestamp: T,
  };
}

export function price(symbol: string, value: number, seq = 1, change = 1): ServerMessage {
  return {
    type: 'price_update',
    symbol,
    data: { price: value, change, change_pct: change / 2, volume: 100, bid: value - 0.01, ask: value + 0.01 },
    seq,
    timestamp: T,
  };
}

export function alert(id: string, seq = 1): ServerMessage {
  return {
    type: 'alert_triggered',
    data: { id, symbol: 'AAPL', type: 'price_above', message: `alert ${id}`, severity: 'warning' },
    seq,
    timestamp: T,
  };
}

export function signal(seq: number): ServerMessage {
  return {
    type: 'trading_signal',
    data: { symbol: 'AAPL', action: 'buy', confidence: 0.8, reasoning: `reason ${seq}` },
    seq,
    timestamp: T,
  };
}

export function notification(id: string, seq = 1): ServerMessage {
  return {
    type: 'notification',
    data: { id, message: `note ${id}`, type: 'info' },
    seq,
    timestamp: T,
  };
}
