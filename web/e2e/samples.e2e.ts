/**
 * The spec's six front-end samples, as written, against the real gateway:
 * `/samples.html` mounts them (src/samples-page.tsx) and they must show live data.
 * Alerts, signals and notifications are published through `POST /api/publish`.
 */
import type { ConsoleMessage, Page, WebSocket as PageSocket } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, Gateway, launchBrowser, type Browser } from './harness';

let gateway: Gateway;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];
const logged: string[] = [];
const sockets: PageSocket[] = [];
/** Text frames the page sent, per socket, in order. */
const sent = new Map<PageSocket, string[]>();

function watch(target: Page): void {
  target.on('pageerror', (error) => pageErrors.push(String(error)));
  target.on('websocket', (socket) => {
    sockets.push(socket);
    sent.set(socket, []);
    socket.on('framesent', ({ payload }) => sent.get(socket)?.push(String(payload)));
  });
}

beforeAll(async () => {
  gateway = new Gateway(await freePort());
  await gateway.start();
  browser = await launchBrowser();
  page = await browser.context.newPage();
  watch(page);
  page.on('console', (message: ConsoleMessage) => logged.push(message.text()));
  await page.goto(`${gateway.origin}/samples.html`);
});

afterAll(async () => {
  await browser?.close();
  await gateway?.stop();
});

const sample = (name: string) => page.locator(`section[data-sample="${name}"]`);

describe("the spec's samples, verbatim, against the gateway", () => {
  it('useWebSocket (main hook): shows the status and logs price updates', async () => {
    await sample('useWebSocket').getByText('Status: open').waitFor({ timeout: 15_000 });
    await expect
      .poll(() => logged.some((text) => text.startsWith('Price update:')), { timeout: 15_000 })
      .toBe(true);
    expect(await sample('useWebSocket').getByRole('button', { name: 'Reconnect' }).count()).toBe(0);
  });

  it('usePriceUpdates: shows AAPL and MSFT prices that move', async () => {
    const prices = sample('usePriceUpdates');
    const row = prices.locator('div > div', { hasText: /^AAPL: \$\d+\.\d\d[+-]?\d+\.\d\d%$/ });
    await row.waitFor({ timeout: 15_000 });
    await prices.locator('div > div', { hasText: /^MSFT: \$/ }).waitFor({ timeout: 15_000 });
    const first = await row.textContent();
    await page.waitForFunction(
      ([old]) =>
        [...document.querySelectorAll('section[data-sample="usePriceUpdates"] div > div')].some(
          (div) => div.textContent?.startsWith('AAPL: $') && div.textContent !== old,
        ),
      [first] as const,
      { timeout: 15_000 },
    );
    expect(await prices.locator('span.text-green-500, span.text-red-500').count()).toBe(2);
  });

  it('useAlertNotifications: shows a published alert with its severity, and clears', async () => {
    const id = `e2e-sample-${Date.now()}`;
    const response = await gateway.publish('alerts', {
      id,
      symbol: 'AAPL',
      type: 'price_threshold',
      message: `AAPL crossed $185 (${id})`,
      severity: 'critical',
    });
    expect(response.status).toBe(202);
    const alerts = sample('useAlertNotifications');
    await alerts.locator('div.alert-critical', { hasText: id }).waitFor({ timeout: 10_000 });
    expect(await alerts.getByRole('heading', { level: 3 }).textContent()).toMatch(/^Alerts \([1-9]\d*\)$/);
    await alerts.getByRole('button', { name: 'Clear All' }).click();
    await alerts.locator('div.alert-critical', { hasText: id }).waitFor({ state: 'detached', timeout: 10_000 });
  });

  it('useTradingSignals: shows a published signal', async () => {
    const response = await gateway.publish('signals', {
      symbol: 'NVDA',
      action: 'sell',
      confidence: 0.37,
      reasoning: 'e2e: the samples page',
    });
    expect(response.status).toBe(202);
    // The live signal feed may say the same; any such row will do, ours among them.
    await sample('useTradingSignals')
      .locator('div > div', { hasText: /^NVDA: SELL\(Confidence: 37%\)$/ })
      .first()
      .waitFor({ timeout: 10_000 });
  });

  it('useSystemNotifications: shows a published notification, dismissed by ×', async () => {
    const response = await gateway.publish('notifications', {
      id: 'e2e-sample-note',
      message: 'Model training completed (e2e)',
      type: 'success',
    });
    expect(response.status).toBe(202);
    const notifications = sample('useSystemNotifications');
    const item = notifications.locator('div > div', { hasText: 'Model training completed (e2e)' });
    await item.waitFor({ timeout: 10_000 });
    await item.getByRole('button', { name: '×' }).click();
    await item.waitFor({ state: 'detached', timeout: 10_000 });
  });

  it('wsClient snippet next to the hooks: its message goes out on their socket, which stays open', async () => {
    const socket = sockets.at(-1);
    if (!socket) throw new Error('the samples page opened no WebSocket');
    const before = sent.get(socket)?.length ?? 0;
    await sample('wsClient').getByRole('button', { name: 'Run the wsClient snippet' }).click();
    await expect
      .poll(() => sent.get(socket)?.slice(before).map((frame) => JSON.parse(frame) as unknown), { timeout: 10_000 })
      .toContainEqual({ type: 'subscribe', channel: 'prices' });
    expect(socket.isClosed()).toBe(false);
    await sample('useWebSocket').getByText('Status: open').waitFor();
  });

  it('wsClient snippet alone: connects, sends its subscribe once open, then disconnects', async () => {
    const alone = await browser.context.newPage();
    watch(alone);
    const opened = sockets.length;
    await alone.goto(`${gateway.origin}/samples.html?run=wsClient`);
    await alone.getByText('Ran the wsClient snippet.').waitFor();
    await expect.poll(() => sockets.length, { timeout: 10_000 }).toBeGreaterThan(opened);
    const socket = sockets.at(-1);
    if (!socket) throw new Error('the snippet opened no WebSocket');
    expect(socket.url()).toMatch(new RegExp(`^ws://127\\.0\\.0\\.1:${gateway.port}/ws/web-`));
    await expect.poll(() => socket.isClosed(), { timeout: 15_000 }).toBe(true);
    expect(sent.get(socket)?.map((frame) => JSON.parse(frame) as unknown)).toEqual([
      { type: 'subscribe', channel: 'prices' },
    ]);
    await alone.close();
  });

  it('raised no page errors', () => {
    expect(pageErrors).toEqual([]);
  });
});
