import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_RECONNECT } from '../src/lib/backoff';

describe('backoffDelay', () => {
  it('doubles the ceiling from 2 s and caps it at 30 s', () => {
    const ceilings = Array.from({ length: 10 }, (_, attempt) =>
      backoffDelay(attempt, DEFAULT_RECONNECT, () => 0.999999),
    );
    expect(ceilings).toEqual([
      1999, 3999, 7999, 15999, 29999, 29999, 29999, 29999, 29999, 29999,
    ]);
  });

  it('is full jitter: anywhere in [0, ceiling)', () => {
    expect(backoffDelay(0, DEFAULT_RECONNECT, () => 0)).toBe(0);
    expect(backoffDelay(2, DEFAULT_RECONNECT, () => 0.5)).toBe(4000);
  });

  it('has the seed defaults', () => {
    expect(DEFAULT_RECONNECT.initialDelayMs).toBe(2000);
    expect(DEFAULT_RECONNECT.maxAttempts).toBe(10);
    expect([...DEFAULT_RECONNECT.fatalCloseCodes]).toEqual([4400, 4403, 4409]);
  });
});
