/**
 * The dashboard against the real gateway, in Debian's Chromium.
 *
 * One gateway and one page for the whole file, in order: live prices, published
 * events (alert, notification, signal, portfolio) and the screenshot, the seed's
 * console snippet, and last the restart + Reconnect.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ConsoleMessage, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, Gateway, launchBrowser, WEB_ROOT, type Browser } from './harness';

const SCREENSHOT = join(WEB_ROOT, 'test-results/dashboard.png');

let gateway: Gateway;
let browser: Browser;
let page: Page;
const socketUrls: string[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  gateway = new Gateway(await freePort());
  await gateway.start();
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.on('websocket', (ws) => socketUrls.push(ws.url()));
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  await page.goto(gateway.origin);
});

afterAll(async () => {
  await browser?.close();
  await gateway?.stop();
});

async function waitForLive(): Promise<void> {
  await page.locator('.connection-state[data-state="open"]').waitFor({ timeout: 15_000 });
}

/** The first followed row's price text, once it has one. */
async function firstPrice(): Promise<{ symbol: string; text: string }> {
  const cell = page.locator('tbody tr[data-symbol] td.price').first();
  await page.waitForFunction(
    () => {
      const td = document.querySelector('tbody tr[data-symbol] td.price');
      return td !== null && td.textContent !== '…';
    },
    undefined,
    { timeout: 15_000 },
  );
  const symbol = (await page.locator('tbody tr[data-symbol]').first().getAttribute('data-symbol')) ?? '';
  return { symbol, text: (await cell.textContent()) ?? '' };
}

async function waitForPriceChange(symbol: string, from: string): Promise<string> {
  await page.waitForFunction(
    ([sym, old]) => {
      const td = document.querySelector(`tr[data-symbol="${sym}"] td.price`);
      return td !== null && td.textContent !== '…' && td.textContent !== old;
    },
    [symbol, from] as const,
    { timeout: 15_000 },
  );
  return (await page.locator(`tr[data-symbol="${symbol}"] td.price`).textContent()) ?? '';
}

describe('the dashboard served by the gateway', () => {
  it('connects to the gateway that served it, on its own port', async () => {
    await waitForLive();
    expect(socketUrls[0]).toMatch(new RegExp(`^ws://127\\.0\\.0\\.1:${gateway.port}/ws/web-`));
    expect(await page.title()).toBe('Realtime dashboard');
  });

  it('shows live prices that change, coloured by direction, with sparklines', async () => {
    const { symbol, text } = await firstPrice();
    expect(symbol).not.toBe('');
    const changed = await waitForPriceChange(symbol, text);
    expect(changed).not.toBe(text);
    expect(await page.locator('td.change.up, td.change.down').count()).toBeGreaterThan(0);
    await page.waitForFunction(() => document.querySelectorAll('svg.sparkline polyline').length > 0);
  });

  it('follows the symbols picked in the symbol picker', async () => {
    const rows = page.locator('tbody tr[data-symbol]');
    const before = await rows.count();
    const firstSymbol = await rows.first().getAttribute('data-symbol');
    await page.getByRole('checkbox', { name: firstSymbol ?? '' }).uncheck();
    await page.waitForFunction(
      (n) => document.querySelectorAll('tbody tr[data-symbol]').length === n,
      before - 1,
    );
    await page.getByRole('checkbox', { name: firstSymbol ?? '' }).check();
    await page.waitForFunction((n) => document.querySelectorAll('tbody tr[data-symbol]').length === n, before);
  });

  it('shows an alert published to the gateway', async (context) => {
    const id = `e2e-${Date.now()}`;
    const response = await gateway.publish('alerts', {
      id,
      symbol: 'AAPL',
      type: 'price_above',
      message: `AAPL crossed the e2e line (${id})`,
      severity: 'critical',
    });
    if (response.status === 404) {
      context.skip('PENDING: the gateway has no POST /api/publish yet, so no alert can be published');
    }
    expect(response.status).toBe(202);
    const item = page.locator('.alerts li', { hasText: id });
    await item.waitFor({ timeout: 10_000 });
    expect(await item.locator('.badge').textContent()).toBe('critical');
  });

  it('shows notifications (dismissable), signals and the portfolio', async (context) => {
    const note = await gateway.publish('notifications', {
      id: 'e2e-note',
      message: 'Market data feed reconnected',
      type: 'success',
    });
    if (note.status === 404) context.skip('PENDING: no POST /api/publish yet');
    expect(note.status).toBe(202);
    expect(
      (
        await gateway.publish('notifications', {
          id: 'e2e-note-2',
          message: 'Temporary note to dismiss',
          type: 'warning',
        })
      ).status,
    ).toBe(202);
    expect(
      (
        await gateway.publish('signals', {
          symbol: 'MSFT',
          action: 'buy',
          confidence: 0.82,
          reasoning: 'e2e: momentum above the 20-period average',
        })
      ).status,
    ).toBe(202);
    expect(
      (
        await gateway.publish('portfolio', {
          total_value: 125_430.25,
          cash: 20_000,
          day_change: 1_234.5,
          day_change_pct: 0.99,
          positions: [
            {
              symbol: 'AAPL',
              quantity: 100,
              avg_cost: 150,
              price: 190.12,
              market_value: 19_012,
              unrealized_pnl: 4_012,
              unrealized_pnl_pct: 26.75,
            },
          ],
        })
      ).status,
    ).toBe(202);
    // Signals first: the live signal feed may push ours out of the 20 kept.
    await page.locator('.signals li', { hasText: 'e2e: momentum' }).waitFor({ timeout: 10_000 });
    // The live portfolio feed (when running) replaces our snapshot within a tick, so
    // any total proves the panel; the notifications above prove the publish path.
    await page.locator('.portfolio dd', { hasText: '$' }).first().waitFor({ timeout: 10_000 });
    await page.locator('.notifications li', { hasText: 'Temporary note to dismiss' }).waitFor();
    await page.getByRole('button', { name: 'Dismiss: Temporary note to dismiss' }).click();
    await page.locator('.notifications li', { hasText: 'Temporary note to dismiss' }).waitFor({ state: 'detached' });
    await page.locator('.notifications li', { hasText: 'Market data feed reconnected' }).waitFor();
  });

  it('saves a screenshot', async () => {
    mkdirSync(join(WEB_ROOT, 'test-results'), { recursive: true });
    await page.waitForTimeout(1_500); // let the sparklines draw a few points
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  });

  it("runs the seed's Browser Testing console snippet and receives prices", async () => {
    const logged: unknown[] = [];
    const collect = async (message: ConsoleMessage) => {
      const first = message.args()[0];
      if (message.type() === 'log' && first) logged.push(await first.jsonValue().catch(() => null));
    };
    page.on('console', collect);
    // The seed's snippet verbatim, but for the port: the test's gateway is not on 8000.
    await page.evaluate(`
      const ws = new WebSocket('ws://localhost:${gateway.port}/ws/test-client');
      ws.onmessage = (e) => console.log(JSON.parse(e.data));
      ws.onopen = () => ws.send(JSON.stringify({type: 'subscribe', channel: 'prices', symbols: ['AAPL']}));
      window.__snippetSocket = ws;
    `);
    const isAaplPrice = (m: unknown) =>
      typeof m === 'object' && m !== null && (m as { type?: string }).type === 'price_update' &&
      (m as { symbol?: string }).symbol === 'AAPL';
    const deadline = Date.now() + 10_000;
    while (logged.filter(isAaplPrice).length < 2 && Date.now() < deadline) await page.waitForTimeout(100);
    page.off('console', collect);
    await page.evaluate('window.__snippetSocket.close()');
    const types = logged.map((m) => (m as { type?: string } | null)?.type);
    expect(types[0]).toBe('welcome');
    expect(types).toContain('subscribed');
    expect(logged.filter(isAaplPrice).length).toBeGreaterThanOrEqual(2);
  });

  it('reconnects after the gateway restarts', async () => {
    await waitForLive();
    await gateway.stop();
    await page.locator('.connection-state:not([data-state="open"])').waitFor({ timeout: 10_000 });
    await gateway.start(); // the same port
    const button = page.getByRole('button', { name: 'Reconnect', exact: true });
    // The automatic retry is at least a jittered wait away; the button (enabled while
    // not connected) connects at once. If the retry happened to win, the button is
    // already disabled, and reconnection was still proven.
    if (await button.isEnabled()) {
      const sockets = socketUrls.length;
      await button.click();
      console.log('[e2e] reconnected by the Reconnect button');
      await page.locator('.connection-state[data-state="open"]').waitFor({ timeout: 5_000 });
      expect(socketUrls.length).toBeGreaterThan(sockets);
    }
    await waitForLive();
    const { symbol, text } = await firstPrice();
    await waitForPriceChange(symbol, text);
    expect(await button.isDisabled()).toBe(true);
  });

  it('reconnects by itself after a restart, without a click', async () => {
    await waitForLive();
    const sockets = socketUrls.length;
    await gateway.stop();
    await page.locator('.connection-state:not([data-state="open"])').waitFor({ timeout: 10_000 });
    await gateway.start();
    // Retries so far waited < 2 s, < 4 s, ...: the first one after the restart lands soon.
    await page.locator('.connection-state[data-state="open"]').waitFor({ timeout: 30_000 });
    expect(socketUrls.length).toBeGreaterThan(sockets);
    const { symbol, text } = await firstPrice();
    await waitForPriceChange(symbol, text);
  });

  it('raised no page errors', () => {
    expect(pageErrors).toEqual([]);
  });
});
