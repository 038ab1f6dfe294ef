/**
 * Authentication in the browser, against a real gateway started with a secret:
 *
 * - the dashboard opened as `/#token=<jwt>`: it connects with the token as the
 *   socket's first message, the token never appears in a request the browser makes,
 *   and it is gone from the address bar;
 * - the dashboard without a token: the gateway's 4401 brings up the paste box, and a
 *   pasted token connects;
 * - origins: a page served from an origin `--allowed-origins` lists
 *   connects; a page from another origin gets HTTP 403 before the 101, valid token
 *   or not.
 *
 * The pages for the origin test come from two small HTTP servers in this process, on
 * two ports of 127.0.0.1: two origins as the browser counts them.
 */
import { createServer, type Server } from 'node:http';
import type { Page, Request, WebSocket as PageSocket } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, Gateway, launchBrowser, mintToken, type Browser } from './harness';

const SECRET = 'e2e-secret-0123456789abcdef-0123456789';

let gateway: Gateway;
let browser: Browser;
let allowed: Server;
let other: Server;
let allowedOrigin: string;
let otherOrigin: string;

/** An HTTP server on 127.0.0.1 serving one empty page; its origin. */
async function pageServer(): Promise<[Server, string]> {
  const server = createServer((_, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><title>another app</title><p>another app</p>');
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return [server, `http://127.0.0.1:${port}`];
}

beforeAll(async () => {
  [allowed, allowedOrigin] = await pageServer();
  [other, otherOrigin] = await pageServer();
  gateway = new Gateway(await freePort(), {
    args: ['--allowed-origins', allowedOrigin],
    env: { REALTIME_JWT_SECRET: SECRET },
  });
  await gateway.start();
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await gateway?.stop();
  allowed?.close();
  other?.close();
});

/** Every URL the page requests and every text frame it sends, to look for the token in. */
function record(page: Page): { urls: string[]; frames: string[]; errors: string[] } {
  const seen = { urls: [] as string[], frames: [] as string[], errors: [] as string[] };
  page.on('request', (request: Request) => seen.urls.push(request.url()));
  page.on('pageerror', (error) => seen.errors.push(String(error)));
  page.on('websocket', (socket: PageSocket) => {
    seen.urls.push(socket.url());
    socket.on('framesent', ({ payload }) => seen.frames.push(String(payload)));
  });
  return seen;
}

async function waitForLive(page: Page): Promise<void> {
  await page.locator('.connection-state[data-state="open"]').waitFor({ timeout: 15_000 });
}

async function waitForAPrice(page: Page): Promise<void> {
  await page.waitForFunction(
    () => {
      const td = document.querySelector('tbody tr[data-symbol] td.price');
      return td !== null && td.textContent !== '…';
    },
    undefined,
    { timeout: 15_000 },
  );
}

describe('the dashboard on a gateway with authentication on', () => {
  it('connects with the token from #token=, which no request carries and the address bar loses', async () => {
    const token = await mintToken(SECRET, '--sub', 'alice', '--ttl', '10m');
    const page = await browser.context.newPage();
    const seen = record(page);
    await page.goto(`${gateway.origin}/#token=${token}`);
    await waitForLive(page);
    await waitForAPrice(page);
    expect(page.url()).toBe(`${gateway.origin}/`);
    expect(await page.evaluate(() => window.location.href)).not.toContain(token);
    expect(seen.urls.length).toBeGreaterThan(1);
    for (const url of seen.urls) expect(url).not.toContain(token);
    expect(JSON.parse(seen.frames[0] ?? '{}')).toEqual({ type: 'auth', token });
    expect(await page.getByRole('heading', { name: 'This gateway needs a token' }).count()).toBe(0);
    expect(seen.errors).toEqual([]);
    await page.close();
  });

  it('without a token shows the paste box on 4401, and connects with the pasted token', async () => {
    const page = await browser.context.newPage();
    const seen = record(page);
    await page.goto(gateway.origin);
    const prompt = page.getByRole('heading', { name: 'This gateway needs a token' });
    await prompt.waitFor({ timeout: 15_000 });
    expect(await page.locator('.connection-state').getAttribute('data-state')).toBe('closed');
    await page.getByLabel('Token', { exact: true }).fill(await mintToken(SECRET, '--sub', 'bob', '--channels', 'prices'));
    await page.getByRole('button', { name: 'Connect', exact: true }).click();
    await waitForLive(page);
    await waitForAPrice(page);
    await prompt.waitFor({ state: 'detached' });
    expect(seen.errors).toEqual([]);
    await page.close();
  });

  it('a refused token shows why, and a good one pasted after it connects', async () => {
    const forged = await mintToken('not-the-gateways-secret-0123456789abcdef', '--sub', 'eve');
    const page = await browser.context.newPage();
    await page.goto(`${gateway.origin}/#token=${forged}`);
    await page.getByRole('heading', { name: 'The token was refused' }).waitFor({ timeout: 15_000 });
    expect(await page.locator('.token-prompt').textContent()).toContain('bad signature');
    await page.getByLabel('Token', { exact: true }).fill(await mintToken(SECRET, '--sub', 'eve'));
    await page.getByRole('button', { name: 'Connect', exact: true }).click();
    await waitForLive(page);
    await page.close();
  });
});

interface Attempt {
  opened: boolean;
  welcome: boolean;
  code: number | null;
}

/** From a page of `origin`: open a socket to the gateway, authenticate, report. */
async function connectFrom(origin: string, token: string): Promise<{ attempt: Attempt; console: string[] }> {
  const page = await browser.context.newPage();
  const console: string[] = [];
  page.on('console', (message) => console.push(message.text()));
  await page.goto(origin);
  const attempt = await page.evaluate(
    ({ url, token }) =>
      new Promise<Attempt>((resolve) => {
        const ws = new WebSocket(url);
        let opened = false;
        ws.onopen = () => {
          opened = true;
          ws.send(JSON.stringify({ type: 'auth', token }));
        };
        ws.onmessage = (event) => {
          if (JSON.parse(String(event.data)).type === 'welcome') {
            resolve({ opened, welcome: true, code: null });
            ws.close();
          }
        };
        ws.onclose = (event) => resolve({ opened, welcome: false, code: event.code });
      }),
    { url: `ws://127.0.0.1:${gateway.port}/ws/origin-test`, token },
  );
  await page.close();
  return { attempt, console };
}

describe('origins', () => {
  it('a page from an allowed origin connects; one from another origin gets 403, token or not', async () => {
    const token = await mintToken(SECRET, '--sub', 'alice');
    const ok = await connectFrom(allowedOrigin, token);
    expect(ok.attempt).toEqual({ opened: true, welcome: true, code: null });

    const refused = await connectFrom(otherOrigin, token);
    // A browser never shows a page the refused handshake's status: the socket just fails.
    expect(refused.attempt).toEqual({ opened: false, welcome: false, code: 1006 });
    expect(refused.console.join('\n')).toMatch(/403/);
    expect(gateway.log).toContain(`Refused origin '${otherOrigin}'`);
  });
});
