import { useRef } from 'react';
import type { LivePrice } from '../hooks/useWebSocket';

/** Points kept per symbol for its sparkline. */
export const HISTORY_POINTS = 60;

/**
 * The last `HISTORY_POINTS` prices of each symbol, for sparklines.
 *
 * Derived during render, keyed by each price's `seq`, so a repeated render
 * (StrictMode, or any unrelated state change) never records a point twice.
 */
export function usePriceHistory(
  prices: ReadonlyMap<string, LivePrice>,
  cap = HISTORY_POINTS,
): ReadonlyMap<string, readonly number[]> {
  const store = useRef(new Map<string, { seq: number; points: number[] }>());
  const histories = store.current;
  for (const [symbol, price] of prices) {
    const entry = histories.get(symbol);
    if (!entry) {
      histories.set(symbol, { seq: price.seq, points: [price.price] });
    } else if (entry.seq !== price.seq) {
      entry.seq = price.seq;
      entry.points = [...entry.points, price.price].slice(-cap);
    }
  }
  for (const symbol of histories.keys()) if (!prices.has(symbol)) histories.delete(symbol);
  const view = new Map<string, readonly number[]>();
  for (const [symbol, entry] of histories) view.set(symbol, entry.points);
  return view;
}
