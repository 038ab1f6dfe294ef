/** Where the client connects: `VITE_WS_URL` (`host[:port]` or `ws(s)://`), the page's own origin, or port 8000. */

/** `client_id` in `/ws/{client_id}`: 1-64 of `A-Z a-z 0-9 _ . : -` (DESIGN.md). */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

/** The gateway's default port, for pages that are not served by the gateway. */
export const DEFAULT_GATEWAY_PORT = 8000;

/** The `<meta>` a page carries to say the gateway that served it is the one to use. */
export const SAME_ORIGIN_META = 'realtime-gateway';

export interface PageLocation {
  protocol: string;
  hostname: string;
  host: string;
}

export interface ResolveOptions {
  /** `VITE_WS_URL`: `host[:port]` (the spec's form) or a full `ws(s)://` URL; wins over everything. */
  envUrl?: string | undefined;
  /** The page's location; absent outside a browser. */
  location?: PageLocation | undefined;
  /** True when the page was served by the gateway itself (see `pageIsServedByGateway`). */
  sameOrigin?: boolean;
}

/**
 * The `ws(s)://host[:port]` base URL, without a path.
 *
 * The dashboard is served by the gateway on whatever port it listens on, so it
 * must connect to that same origin, not to a hard-coded 8000; a page served
 * elsewhere (another app embedding this client) uses the page's host on port 8000,
 * the gateway's default. `ws:` or `wss:` follows the page's `http:`/`https:`.
 */
export function resolveBaseUrl({ envUrl, location, sameOrigin = false }: ResolveOptions): string {
  const scheme = location?.protocol === 'https:' ? 'wss:' : 'ws:';
  const configured = envUrl?.trim();
  if (configured) return normalizeGatewayUrl(configured, scheme);
  if (!location || !location.hostname) return `ws://localhost:${DEFAULT_GATEWAY_PORT}`;
  if (sameOrigin) return `${scheme}//${location.host}`;
  const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
  return `${scheme}//${host}:${DEFAULT_GATEWAY_PORT}`;
}

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
const SCHEMES: Readonly<Record<string, 'ws:' | 'wss:'>> = {
  ws: 'ws:',
  wss: 'wss:',
  http: 'ws:',
  https: 'wss:',
};

/**
 * A configured gateway address as a `ws(s)://` base.
 *
 * The spec writes `VITE_WS_URL=localhost:8000` and `VITE_WS_URL=api.yourdomain.com`:
 * a bare `host[:port]` takes `pageScheme` (`wss:` on an https page, else `ws:`), so
 * one build works behind TLS and in development. A full `ws://` or `wss://` URL is
 * used as is, and `http(s)://` is read as `ws(s)://`. Anything else throws a
 * `RangeError` that names the accepted forms, instead of the browser's bare "The
 * URL's scheme must be 'ws' or 'wss'" from inside `new WebSocket`.
 */
export function normalizeGatewayUrl(value: string, pageScheme: 'ws:' | 'wss:' = 'ws:'): string {
  const match = SCHEME.exec(value);
  let candidate: string;
  if (match) {
    const scheme = SCHEMES[(match[1] ?? '').toLowerCase()];
    if (!scheme) throw invalidGatewayUrl(value);
    candidate = `${scheme}//${value.slice(match[0].length)}`;
  } else {
    candidate = `${pageScheme}//${value.replace(/^\/+/, '')}`;
  }
  let parsed: URL;
  try {
    parsed = new URL(candidate);
  } catch {
    throw invalidGatewayUrl(value);
  }
  if (!parsed.host || parsed.search || parsed.hash || parsed.username || parsed.password) {
    throw invalidGatewayUrl(value);
  }
  return candidate.replace(/\/+$/, '');
}

function invalidGatewayUrl(value: string): RangeError {
  return new RangeError(
    `VITE_WS_URL=${JSON.stringify(value)} is not a gateway address: use host[:port] ` +
      '(e.g. localhost:8000 or api.yourdomain.com; ws: or wss: follows the page) ' +
      'or a full ws://host[:port] / wss://host[:port] URL',
  );
}

/** The full endpoint URL for a client id. */
export function endpointUrl(base: string, clientId: string): string {
  if (!CLIENT_ID_PATTERN.test(clientId)) {
    throw new RangeError(`Invalid client id ${JSON.stringify(clientId)}: use 1-64 of A-Z a-z 0-9 _ . : -`);
  }
  return `${base.replace(/\/+$/, '')}/ws/${clientId}`;
}

/** A fresh client id; random so that two tabs never replace each other (close 4409). */
export function generateClientId(prefix = 'web'): string {
  const random =
    typeof crypto !== 'undefined' && typeof crypto.randomUUID === 'function'
      ? crypto.randomUUID().replaceAll('-', '').slice(0, 16)
      : Math.random().toString(36).slice(2, 18);
  return `${prefix}-${random}`;
}

/** True when the page declares (by a `<meta name="realtime-gateway">`) that the gateway served it. */
export function pageIsServedByGateway(doc: Document | undefined = globalThis.document): boolean {
  return Boolean(doc?.querySelector(`meta[name="${SAME_ORIGIN_META}"]`));
}

/** The default base URL for this page, from the build's env and the page itself. */
export function defaultBaseUrl(): string {
  const envUrl = import.meta.env?.VITE_WS_URL as string | undefined;
  const location = typeof window === 'undefined' ? undefined : window.location;
  return resolveBaseUrl({ envUrl, location, sameOrigin: pageIsServedByGateway() });
}
