import { useCallback, useEffect, useState } from 'react';

const STORAGE_KEY = 'realtime.dashboard.symbols';
/** Symbols followed on a first visit: the feed lists its well-known tickers first. */
export const DEFAULT_FOLLOWED = 8;

function load(): string[] | null {
  try {
    const raw = globalThis.localStorage?.getItem(STORAGE_KEY);
    const parsed: unknown = raw ? JSON.parse(raw) : null;
    return Array.isArray(parsed) && parsed.every((s) => typeof s === 'string') ? parsed : null;
  } catch {
    return null; // storage disabled or corrupt: fall back to the default
  }
}

/**
 * Which symbols the table follows: remembered across visits, and always a subset
 * of the server's universe (a symbol outside it would get `unknown_symbol`).
 */
export function useSymbolSelection(universe: readonly string[]): [string[], (symbols: string[]) => void] {
  const [chosen, setChosen] = useState<string[] | null>(load);
  const known = new Set(universe);
  const selected =
    universe.length === 0 ? [] : (chosen ?? universe.slice(0, DEFAULT_FOLLOWED)).filter((s) => known.has(s));

  const select = useCallback((symbols: string[]) => setChosen(symbols), []);
  useEffect(() => {
    if (chosen === null) return;
    try {
      globalThis.localStorage?.setItem(STORAGE_KEY, JSON.stringify(chosen));
    } catch {
      // Not remembering a choice is no reason to fail.
    }
  }, [chosen]);
  return [selected, select];
}
