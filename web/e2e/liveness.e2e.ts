/**
 * Browser liveness against the real gateway: a frozen gateway (SIGSTOP) must be
 * shown as not live within 15 s, and once it carries on (SIGCONT) the dashboard
 * must be live again, with prices moving, without anyone clicking Reconnect.
 *
 * The bounds are the requirement's (15 s), not the client's defaults (a ping every
 * 5 s, 5 s for its reply: at most 10 s); the way back is given a generous minute,
 * since it waits on a jittered backoff and a connect timeout.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, Gateway, launchBrowser, type Browser } from './harness';

/** The requirement: a frozen gateway is shown as not live within this. */
const NOT_LIVE_WITHIN_MS = 15_000;

let gateway: Gateway;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];
let reconnectClicks = 0;

beforeAll(async () => {
  gateway = new Gateway(await freePort());
  await gateway.start();
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  await page.exposeFunction('__countReconnectClick', () => {
    reconnectClicks += 1;
  });
  await page.goto(gateway.origin);
  // Count clicks on the Reconnect button, to prove the way back needed none.
  await page.evaluate(`document.addEventListener('click', (event) => {
    const target = event.target;
    if (target instanceof HTMLButtonElement && target.textContent === 'Reconnect') window.__countReconnectClick();
  }, true)`);
});

afterAll(async () => {
  await browser?.close();
  await gateway?.stop(); // thaws first if a test left it frozen
});

async function priceOf(symbol: string): Promise<string> {
  return (await page.locator(`tr[data-symbol="${symbol}"] td.price`).textContent()) ?? '';
}

/** Wait until the first followed row shows a price other than `from`, or any price. */
async function waitForPriceChange(symbol: string, from: string | null, timeout: number): Promise<void> {
  await page.waitForFunction(
    ([sym, old]) => {
      const td = document.querySelector(`tr[data-symbol="${sym}"] td.price`);
      return td !== null && td.textContent !== '…' && td.textContent !== old;
    },
    [symbol, from] as const,
    { timeout },
  );
}

describe('a frozen gateway', () => {
  it('is shown as not live within 15 s, and live again after it thaws, without a click', async () => {
    await page.locator('.connection-state[data-state="open"]').waitFor({ timeout: 15_000 });
    const symbol = (await page.locator('tbody tr[data-symbol]').first().getAttribute('data-symbol')) ?? '';
    expect(symbol).not.toBe('');
    await waitForPriceChange(symbol, null, 15_000);

    gateway.freeze();
    const frozenAt = Date.now();
    await page
      .locator('.connection-state:not([data-state="open"])')
      .waitFor({ timeout: NOT_LIVE_WITHIN_MS });
    const noticedAfterMs = Date.now() - frozenAt;
    console.log(`[e2e] frozen gateway shown as not live after ${noticedAfterMs} ms`);
    expect(noticedAfterMs).toBeLessThanOrEqual(NOT_LIVE_WITHIN_MS);
    expect(await page.getByRole('status').textContent()).not.toContain('Live');

    const frozenPrice = await priceOf(symbol);
    gateway.thaw();
    await page.locator('.connection-state[data-state="open"]').waitFor({ timeout: 60_000 });
    await waitForPriceChange(symbol, frozenPrice, 30_000);
    expect(reconnectClicks).toBe(0);
    expect(await page.getByRole('status').textContent()).toContain('Live');
  }, 180_000); // the sum of the generous waits above, so a slow machine still passes

  it('raised no page errors', () => {
    expect(pageErrors).toEqual([]);
  });
});
