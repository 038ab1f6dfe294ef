import { describe, expect, it } from 'vitest';
import { endpointUrl, generateClientId, resolveBaseUrl } from '../src/lib/url';

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
