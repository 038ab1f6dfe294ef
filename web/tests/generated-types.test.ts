/**
 * The generated protocol files must match the Python protocol's schema now: a field
 * renamed in protocol/, or a change to the close codes or to which of them a client
 * reconnects after, fails here (and `npm run build`) until `npm run gen-types` is
 * run, after which tsc fails wherever the old name is used.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  closeCodesPath,
  generate,
  generateAll,
  generateCloseCodes,
  generateNames,
  namesPath,
  outputPath,
  readSchema,
  staleFiles,
} from '../scripts/gen-types.mjs';
import { CHANNELS, Channel, MessageType } from '../src/protocol';
import type { ClientMessage, ServerMessage, Subscribe } from '../src/protocol';

// Compile-time: the generated constants name exactly the generated types' members.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const channelsMatch: Same<Channel, Subscribe['channel']> = true;
const typesMatch: Same<MessageType, (ClientMessage | ServerMessage)['type']> = true;

interface CloseCodeDefs {
  $defs: {
    CloseCode: { oneOf: { const: number; title: string; description: string }[] };
    ReconnectCloseCode: { enum: number[] };
  };
}

describe('generated protocol files', () => {
  it('are up to date with `realtime schema` (else: npm run gen-types)', async () => {
    for (const [path, expected] of await generateAll(readSchema())) {
      expect(readFileSync(path, 'utf8'), `${path} is stale: run \`npm run gen-types\` in web/`).toBe(
        expected,
      );
    }
    expect(await staleFiles()).toEqual([]);
  });

  it('detect a renamed field', async () => {
    const schema = readSchema() as {
      $defs: Record<string, { properties: Record<string, unknown>; required: string[] }>;
    };
    const price = schema.$defs['PriceData'];
    if (!price) throw new Error('PriceData is missing from the schema');
    price.properties['last_price'] = price.properties['price'];
    delete price.properties['price'];
    price.required = price.required.map((name) => (name === 'price' ? 'last_price' : name));
    const renamed = await generate(schema);
    expect(renamed).toContain('last_price: number');
    expect(renamed).not.toBe(readFileSync(outputPath, 'utf8'));
  });

  it('detect a change to the reconnect policy', async () => {
    const schema = readSchema() as CloseCodeDefs;
    schema.$defs.ReconnectCloseCode.enum.push(1000);
    expect(generateCloseCodes(schema)).toContain('  CloseCode.NORMAL,\n]);');
    expect(await staleFiles(schema)).toEqual([closeCodesPath]);
  });

  it('give Channel and MessageType as runtime constants', () => {
    expect(channelsMatch && typesMatch).toBe(true);
    expect(Channel).toEqual({
      PRICES: 'prices',
      ALERTS: 'alerts',
      SIGNALS: 'signals',
      PORTFOLIO: 'portfolio',
      NOTIFICATIONS: 'notifications',
    });
    expect(CHANNELS).toEqual(Object.values(Channel));
    expect(MessageType).toMatchObject({
      SUBSCRIBE: 'subscribe',
      PING: 'ping',
      PRICE_UPDATE: 'price_update',
      ALERT_TRIGGERED: 'alert_triggered',
      TRADING_SIGNAL: 'trading_signal',
      PORTFOLIO_UPDATE: 'portfolio_update',
      NOTIFICATION: 'notification',
      PONG: 'pong',
      ERROR: 'error',
    });
  });

  it('detect a new channel', async () => {
    const schema = readSchema() as {
      $defs: { Subscribe: { properties: { channel: { enum: string[] } } } };
    };
    schema.$defs.Subscribe.properties.channel.enum.push('news');
    expect(generateNames(schema)).toContain('  NEWS: "news",');
    expect(await staleFiles(schema)).toContain(namesPath);
  });

  it('refuse a reconnect code that is not a close code', () => {
    const schema = readSchema() as CloseCodeDefs;
    schema.$defs.ReconnectCloseCode.enum.push(4999);
    expect(() => generateCloseCodes(schema)).toThrow(/4999, which is not a CloseCode/);
  });
});
