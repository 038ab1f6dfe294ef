/**
 * The generated protocol types must match the Python protocol's schema now: a field
 * renamed in protocol/ fails here (and `npm run build`) until `npm run gen-types`
 * is run, after which tsc fails wherever the old name is used.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generate, outputPath, readSchema } from '../scripts/gen-types.mjs';

describe('generated protocol types', () => {
  it('are up to date with `realtime schema` (else: npm run gen-types)', async () => {
    const expected = await generate(readSchema());
    const committed = readFileSync(outputPath, 'utf8');
    expect(committed, 'web/src/protocol/messages.gen.ts is stale: run `npm run gen-types` in web/').toBe(
      expected,
    );
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
});
