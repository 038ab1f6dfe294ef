/**
 * The spec's six front-end samples, as written (src/samples/), at run time against
 * the fake socket: what each shows and what it sends. `tsc` compiles them under the
 * strict tsconfig (`make web-test`); the end-to-end suite runs them against the
 * real gateway (e2e/samples.e2e.ts). The last test checks that the files still
 * match the spec, when the spec is at hand.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { act, fireEvent, render, screen } from '@testing-library/react';
import { StrictMode } from 'react';
import { describe, expect, it, vi } from 'vitest';
import { Channel, MessageType } from '@/hooks/useWebSocket';
import { Channel as ProtocolChannel, MessageType as ProtocolMessageType } from '@/protocol';
import { wsClient } from '@/lib/websocket';
import { AlertsPanel } from '../src/samples/AlertsPanel';
import { MyComponent } from '../src/samples/MyComponent';
import { NotificationCenter } from '../src/samples/NotificationCenter';
import { PriceDisplay } from '../src/samples/PriceDisplay';
import { SignalsPanel } from '../src/samples/SignalsPanel';
import { wsClientSnippet } from '../src/samples/wsClientSnippet';
import { alert, FakeWebSocket, notification, price, signal, welcome } from './fakeSocket';
import { installFakeWebSocket, serverAccepts, serverSends } from './fakeGateway';

installFakeWebSocket();

/** Past the animation frame that batches prices, and every deferred release. */
async function settle(): Promise<void> {
  await act(async () => {
    await new Promise((done) => setTimeout(done, 40));
  });
}

describe('Channel and MessageType', () => {
  it('are runtime constants, the same from @/hooks/useWebSocket and the protocol module', () => {
    expect(Channel.PRICES).toBe('prices');
    expect(Channel).toBe(ProtocolChannel);
    expect(MessageType.PRICE_UPDATE).toBe('price_update');
    expect(MessageType).toBe(ProtocolMessageType);
    expect(Object.values(Channel)).toEqual(['prices', 'alerts', 'signals', 'portfolio', 'notifications']);
  });
});

describe('useWebSocket (main hook): MyComponent', () => {
  it('shows the status, subscribes once connected, logs price updates, offers Reconnect', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    render(
      <StrictMode>
        <MyComponent />
      </StrictMode>,
    );
    expect(screen.getByText(/Status:/).textContent).toBe('Status: connecting');
    expect(screen.queryByRole('button', { name: 'Reconnect' })).toBeNull();
    const socket = serverAccepts();
    expect(screen.getByText(/Status:/).textContent).toBe('Status: open');
    await settle();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'prices', symbols: ['AAPL', 'MSFT'] }]);
    serverSends(price('AAPL', 190.5), alert('not-a-price'));
    expect(log.mock.calls.filter(([first]) => first === 'Price update:')).toEqual([
      ['Price update:', price('AAPL', 190.5)],
    ]);
    act(() => socket.serverClose(4409, 'replaced'));
    expect(screen.getByText(/Status:/).textContent).toContain('Status: closed');
    fireEvent.click(screen.getByRole('button', { name: 'Reconnect' }));
    expect(FakeWebSocket.instances).toHaveLength(2);
    const again = serverAccepts();
    // The subscription is restored on the new socket, not sent twice.
    await settle();
    expect(again.sent).toEqual([{ type: 'subscribe', channel: 'prices', symbols: ['AAPL', 'MSFT'] }]);
  });
});

describe('usePriceUpdates: PriceDisplay', () => {
  it("shows each symbol's price and change, coloured by direction", async () => {
    const { container } = render(<PriceDisplay />);
    const socket = serverAccepts();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'prices', symbols: ['AAPL', 'MSFT'] }]);
    serverSends(price('AAPL', 190.5, 1, 2.3), price('MSFT', 420, 1, -1.5), price('TSLA', 9));
    await settle();
    const rows = [...(container.firstElementChild?.children ?? [])].map((row) => row.textContent);
    expect(rows).toEqual(['AAPL: $190.50+1.15%', 'MSFT: $420.00-0.75%']);
    expect(screen.getByText('+1.15%').className).toBe('text-green-500');
    expect(screen.getByText('-0.75%').className).toBe('text-red-500');
  });
});

describe('useAlertNotifications: AlertsPanel', () => {
  it('lists alerts with their severity, and clears them', () => {
    const { container } = render(<AlertsPanel />);
    const socket = serverAccepts();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'alerts' }]);
    expect(screen.getByRole('heading').textContent).toBe('Alerts (0)');
    serverSends(alert('a1', 1), alert('a2', 2));
    expect(screen.getByRole('heading').textContent).toBe('Alerts (2)');
    const items = container.querySelectorAll('.alert-warning');
    expect([...items].map((item) => item.textContent)).toEqual(['alert a2', 'alert a1']);
    fireEvent.click(screen.getByRole('button', { name: 'Clear All' }));
    expect(screen.getByRole('heading').textContent).toBe('Alerts (0)');
    expect(container.querySelectorAll('.alert-warning')).toHaveLength(0);
  });
});

describe('useTradingSignals: SignalsPanel', () => {
  it('shows symbol, action and confidence', () => {
    const { container } = render(<SignalsPanel />);
    const socket = serverAccepts();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'signals' }]);
    serverSends(signal(1));
    expect(container.textContent).toBe('AAPL: BUY(Confidence: 80%)');
  });
});

describe('useSystemNotifications: NotificationCenter', () => {
  it('lists notifications and dismisses one by its id', () => {
    const { container } = render(<NotificationCenter />);
    const socket = serverAccepts();
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'notifications' }]);
    serverSends(notification('n1', 1), notification('n2', 2));
    expect(container.textContent).toBe('note n2×note n1×');
    const dismiss = screen.getAllByRole('button', { name: '×' })[1];
    if (!dismiss) throw new Error('no dismiss button');
    fireEvent.click(dismiss);
    expect(container.textContent).toBe('note n2×');
  });
});

describe('the low-level wsClient snippet', () => {
  it('connects, and its send reaches the server although it disconnects before the socket opens', () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    wsClientSnippet();
    expect(FakeWebSocket.instances).toHaveLength(1);
    const socket = FakeWebSocket.last;
    expect(socket.url).toMatch(/^ws:\/\/[^/]+\/ws\/web-[A-Za-z0-9]+$/);
    socket.serverOpen();
    socket.serverSend(welcome());
    expect(socket.sent).toEqual([{ type: 'subscribe', channel: 'prices' }]);
    expect(socket.closedByClient?.code).toBe(1000);
    expect(wsClient.isConnected).toBe(false);
    // Its listener was removed by unsubscribe(): nothing was logged.
    expect(log).not.toHaveBeenCalled();
  });

  it('next to mounted hooks, sends on their open socket and leaves it open', async () => {
    render(<AlertsPanel />);
    const socket = serverAccepts();
    wsClientSnippet();
    await settle();
    expect(socket.sent).toEqual([
      { type: 'subscribe', channel: 'alerts' },
      { type: 'subscribe', channel: 'prices' },
    ]);
    expect(socket.closedByClient).toBeNull();
    expect(wsClient.isConnected).toBe(true);
    serverSends(alert('still-live'));
    expect(screen.getByText('alert still-live').className).toBe('alert-warning');
  });

  it("types every message's data for the snippet's `event.data`", () => {
    const seen: unknown[] = [];
    const stop = wsClient.subscribe((event) => seen.push([event.type, event.data]));
    wsClient.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend(welcome());
    FakeWebSocket.last.serverSend(notification('n'));
    stop();
    expect(seen).toEqual([
      ['welcome', undefined],
      ['notification', { id: 'n', message: 'note n', type: 'info' }],
    ]);
  });
});

// --- the files are the spec's samples ------------------------------------------

const SPEC =
  process.env.REALTIME_SPEC ?? resolve(import.meta.dirname, '../../../shared/spec/websocket-realtime-updates.md');
const SAMPLE_FILES = [
  'MyComponent.tsx',
  'PriceDisplay.tsx',
  'AlertsPanel.tsx',
  'SignalsPanel.tsx',
  'NotificationCenter.tsx',
  'wsClientSnippet.ts',
];

/** Lines without their indentation, blank lines dropped: what "verbatim" compares. */
function lines(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
}

// The spec lives beside the repository (../shared/spec), as in CI, which must check it:
// there a missing spec fails; a clone on its own skips this part.
describe.skipIf(!existsSync(SPEC) && !process.env.CI)(`the samples are the spec's, verbatim (${SPEC})`, () => {
  const spec = existsSync(SPEC) ? readFileSync(SPEC, 'utf8') : '';
  const frontend = spec.slice(spec.indexOf('## Frontend Usage'), spec.indexOf('## Configuration'));
  const blocks = [...frontend.matchAll(/```typescript\n([\s\S]*?)```/g)].map((match) => match[1] ?? '');

  it('has six front-end samples', () => {
    expect(blocks).toHaveLength(6);
  });

  it.each(SAMPLE_FILES.map((file, i) => [file, i] as const))(
    '%s adds only what spec/README.md allows',
    (file, i) => {
      const ours = readFileSync(resolve(import.meta.dirname, '../src/samples', file), 'utf8');
      const expected = lines(blocks[i] ?? '').map((line) => line.replace(/^function /, 'export function '));
      let actual = lines(ours);
      if (file === 'MyComponent.tsx') {
        // The imports the sample uses without writing them.
        expect(actual.slice(0, 2)).toEqual([
          "import { useEffect } from 'react';",
          "import { Channel, MessageType } from '@/hooks/useWebSocket';",
        ]);
        actual = actual.slice(2);
      }
      if (file === 'wsClientSnippet.ts') {
        // A wrapper function around the statements.
        expect(actual[1]).toBe('export function wsClientSnippet() {');
        expect(actual.at(-1)).toBe('}');
        actual = [actual[0] ?? '', ...actual.slice(2, -1)];
      }
      expect(actual).toEqual(expected);
    },
  );
});
