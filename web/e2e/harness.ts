/** The end-to-end harness: a real gateway subprocess, and Debian's Chromium. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

export const WEB_ROOT = resolve(import.meta.dirname, '..');
export const REPO_ROOT = resolve(WEB_ROOT, '..');
const PYTHON = process.env.REALTIME_PYTHON ?? join(REPO_ROOT, '.venv/bin/python');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** `POST /api/publish` key for the test's gateway (the API wants at least 16 characters). */
export const API_KEY = 'e2e-publish-key-0123456789';

/** The flags this machine's closed network needs (see the machine notes in docs/browser.md). */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** More for `realtime serve`: flags, and environment (e.g. `REALTIME_JWT_SECRET`). */
export interface GatewayOptions {
  args?: readonly string[];
  env?: Readonly<Record<string, string>>;
}

export class Gateway {
  private process: ChildProcess | null = null;
  private frozen = false;
  log = '';

  constructor(
    readonly port: number,
    private readonly options: GatewayOptions = {},
  ) {}

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Start `realtime serve`, which serves the built dashboard at `/`; resolves when /health is 200. */
  async start(): Promise<void> {
    if (!existsSync(join(WEB_ROOT, 'dist/index.html'))) {
      throw new Error('web/dist is not built: run `make web-install` (or `npm run build` in web/)');
    }
    const child = spawn(
      PYTHON,
      [
        ...['-m', 'realtime', 'serve', '--port', String(this.port), '--tick-rate', '5', '--seed', '7'],
        ...(this.options.args ?? []),
      ],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, REALTIME_API_KEY: API_KEY, ...this.options.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    this.process = child;
    const append = (chunk: Buffer) => {
      this.log = (this.log + chunk.toString()).slice(-20_000); // bounded: only the tail helps
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`gateway exited ${child.exitCode}:\n${this.log}`);
      try {
        const response = await fetch(`${this.origin}/health`);
        if (response.ok) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`gateway did not become healthy:\n${this.log}`);
  }

  /**
   * SIGSTOP: the gateway freezes without closing anything, as a hung process or a
   * dead network path looks to a browser (the kernel still accepts TCP connections
   * into the listen backlog, but nothing answers).
   */
  freeze(): void {
    if (!this.process || this.process.exitCode !== null) throw new Error('the gateway is not running');
    this.process.kill('SIGSTOP');
    this.frozen = true;
  }

  /** SIGCONT: the frozen gateway carries on where it stopped. */
  thaw(): void {
    if (!this.process || !this.frozen) return;
    this.process.kill('SIGCONT');
    this.frozen = false;
  }

  /** SIGTERM (the gateway drains, closing sockets with 1001) and wait for the exit. */
  async stop(): Promise<void> {
    this.thaw(); // a stopped process would never act on SIGTERM
    const child = this.process;
    this.process = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }

  /** Publish one event through the gateway's own `POST /api/publish`. */
  async publish(channel: string, data: unknown): Promise<Response> {
    return fetch(`${this.origin}/api/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ channel, data }),
    });
  }
}

/**
 * A token from `realtime token` (the command docs/security.md shows), signed with
 * `secret`: `args` are its flags (`--sub alice --ttl 10m`).
 */
export async function mintToken(secret: string, ...args: string[]): Promise<string> {
  return new Promise((resolveToken, reject) => {
    execFile(
      PYTHON,
      ['-m', 'realtime', 'token', ...args],
      { cwd: REPO_ROOT, env: { ...process.env, REALTIME_JWT_SECRET: secret } },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`realtime token: ${stderr || error.message}`));
        else resolveToken(stdout.trim());
      },
    );
  });
}

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Debian's Chromium, headless, with a fresh profile that is deleted on close. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run \`make web-e2e-deps\` (apt-get install chromium)`);
  }
  const profile = mkdtempSync(join(tmpdir(), 'realtime-e2e-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
