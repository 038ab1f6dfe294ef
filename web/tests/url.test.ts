import { describe, expect, it } from 'vitest';
import { endpointUrl, generateClientId, normalizeGatewayUrl, resolveBaseUrl } from '../src/lib/url';

const page = (protocol: string, hostname: string, port = '') => ({
  protocol,
  hostname,
  host: port ? `${hostname}:${port}` : hostname,
});

describe('resolveBaseUrl', () => {
  it('prefers VITE_WS_URL', () => {
    expect(
      resolveBaseUrl({ envUrl: 'wss://gw.example:9443/', location: page('http:', 'x', '1'), sameOrigin: true }),
    ).toBe('wss://gw.example:9443');
  });

  it("takes the spec's host:port form, with the page's scheme", () => {
    // .env: VITE_WS_URL=localhost:8000 (development) and VITE_WS_URL=api.yourdomain.com (production)
    expect(resolveBaseUrl({ envUrl: 'localhost:8000', location: page('http:', 'localhost', '5173') })).toBe(
      'ws://localhost:8000',
    );
    expect(resolveBaseUrl({ envUrl: 'api.yourdomain.com', location: page('https:', 'app.yourdomain.com') })).toBe(
      'wss://api.yourdomain.com',
    );
    expect(resolveBaseUrl({ envUrl: 'localhost:8000', location: page('https:', 'x') })).toBe('wss://localhost:8000');
    expect(resolveBaseUrl({ envUrl: 'localhost:8000' })).toBe('ws://localhost:8000');
    // The same build, on the same page: the configured host wins over the same-origin meta.
    expect(resolveBaseUrl({ envUrl: ' gw.example:9000/ ', location: page('http:', 'x'), sameOrigin: true })).toBe(
      'ws://gw.example:9000',
    );
  });

  it('accepts full ws(s):// URLs as they are, and http(s):// as ws(s)://', () => {
    expect(normalizeGatewayUrl('ws://127.0.0.1:8000', 'wss:')).toBe('ws://127.0.0.1:8000');
    expect(normalizeGatewayUrl('WSS://gw.example', 'ws:')).toBe('wss://gw.example');
    expect(normalizeGatewayUrl('https://gw.example/realtime/')).toBe('wss://gw.example/realtime');
    expect(normalizeGatewayUrl('http://gw.example:8000')).toBe('ws://gw.example:8000');
    expect(normalizeGatewayUrl('[::1]:8000')).toBe('ws://[::1]:8000');
    expect(normalizeGatewayUrl('//gw.example:8000', 'wss:')).toBe('wss://gw.example:8000');
    expect(endpointUrl(normalizeGatewayUrl('localhost:8000'), 'web-1')).toBe('ws://localhost:8000/ws/web-1');
  });

  it('refuses what is not a gateway address, saying which forms work', () => {
    for (const bad of ['ftp://gw.example', 'localhost:port', 'gw.example?x=1', 'user:pw@gw.example', 'ws://']) {
      expect(() => normalizeGatewayUrl(bad), bad).toThrow(/VITE_WS_URL=.* is not a gateway address: use host\[:port\]/);
    }
  });

  it('uses the page origin when the gateway served the page', () => {
    expect(resolveBaseUrl({ location: page('http:', '127.0.0.1', '8123'), sameOrigin: true })).toBe(
      'ws://127.0.0.1:8123',
    );
    expect(resolveBaseUrl({ location: page('https:', 'gw.example'), sameOrigin: true })).toBe(
      'wss://gw.example',
    );
  });

  it('otherwise uses the page host on port 8000, wss for https pages', () => {
    expect(resolveBaseUrl({ location: page('http:', 'localhost', '5173') })).toBe('ws://localhost:8000');
    expect(resolveBaseUrl({ location: page('https:', 'app.example') })).toBe('wss://app.example:8000');
    expect(resolveBaseUrl({ location: page('http:', '::1', '5173') })).toBe('ws://[::1]:8000');
    expect(resolveBaseUrl({})).toBe('ws://localhost:8000');
  });
});

describe('client ids', () => {
  it('builds /ws/{clientId}', () => {
    expect(endpointUrl('ws://h:1/', 'abc_1.2:3-4')).toBe('ws://h:1/ws/abc_1.2:3-4');
  });

  it('refuses ids the server would close with 4400', () => {
    expect(() => endpointUrl('ws://h:1', 'has space')).toThrow(RangeError);
    expect(() => endpointUrl('ws://h:1', 'x'.repeat(65))).toThrow(RangeError);
  });

  it('generates valid, distinct ids', () => {
    const ids = new Set(Array.from({ length: 50 }, () => generateClientId()));
    expect(ids.size).toBe(50);
    for (const id of ids) expect(id).toMatch(/^web-[A-Za-z0-9]{1,16}$/);
  });
});
