import { useId } from 'react';

/** Toggle which symbols the price table follows; the universe comes from `welcome`. */
export function SymbolPicker({
  universe,
  selected,
  onChange,
}: {
  universe: readonly string[];
  selected: readonly string[];
  onChange: (symbols: string[]) => void;
}) {
  const id = useId();
  const chosen = new Set(selected);
  const toggle = (symbol: string) => {
    const next = new Set(chosen);
    if (next.has(symbol)) next.delete(symbol);
    else next.add(symbol);
    onChange(universe.filter((s) => next.has(s)));
  };
  return (
    <fieldset className="symbol-picker" aria-describedby={`${id}-hint`}>
      <legend>Symbols</legend>
      <p id={`${id}-hint`} className="hint">
        {universe.length === 0 ? 'Waiting for the symbol list…' : `${selected.length} of ${universe.length} followed`}
      </p>
      <div className="chips">
        {universe.map((symbol) => (
          <label key={symbol} className={chosen.has(symbol) ? 'chip on' : 'chip'}>
            <input type="checkbox" checked={chosen.has(symbol)} onChange={() => toggle(symbol)} />
            {symbol}
          </label>
        ))}
      </div>
      <div className="picker-actions">
        <button type="button" onClick={() => onChange([...universe])} disabled={selected.length === universe.length}>
          All
        </button>
        <button type="button" onClick={() => onChange([])} disabled={selected.length === 0}>
          None
        </button>
      </div>
    </fieldset>
  );
}
