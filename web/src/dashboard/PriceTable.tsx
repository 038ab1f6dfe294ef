import type { LivePrice } from '../hooks/useWebSocket';
import { ARROW, direction, formatChange, formatChangePct, formatPrice, formatVolume } from './format';
import { Sparkline } from './Sparkline';

export function PriceTable({
  symbols,
  prices,
  history,
}: {
  symbols: readonly string[];
  prices: ReadonlyMap<string, LivePrice>;
  history: ReadonlyMap<string, readonly number[]>;
}) {
  return (
    <section className="panel prices" aria-labelledby="prices-title">
      <h2 id="prices-title">Live prices</h2>
      {symbols.length === 0 ? (
        <p className="empty">Pick a symbol to follow.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Symbol</th>
              <th scope="col" className="num">Price</th>
              <th scope="col" className="num">Change</th>
              <th scope="col" className="num">Change %</th>
              <th scope="col" className="num">Bid / Ask</th>
              <th scope="col" className="num">Volume</th>
              <th scope="col">Trend</th>
            </tr>
          </thead>
          <tbody>
            {symbols.map((symbol) => {
              const p = prices.get(symbol);
              const dir = p ? direction(p.change) : 'flat';
              return (
                <tr key={symbol} data-symbol={symbol}>
                  <th scope="row">{symbol}</th>
                  <td className="num price">{p ? formatPrice(p.price) : '…'}</td>
                  <td className={`num change ${dir}`}>
                    {p ? (
                      <>
                        <span aria-hidden="true">{ARROW[dir]} </span>
                        {formatChange(p.change)}
                      </>
                    ) : (
                      '…'
                    )}
                  </td>
                  <td className={`num ${dir}`}>{p ? formatChangePct(p.change_pct) : '…'}</td>
                  <td className="num muted">{p ? `${formatPrice(p.bid)} / ${formatPrice(p.ask)}` : '…'}</td>
                  <td className="num muted">{p ? formatVolume(p.volume) : '…'}</td>
                  <td>
                    <Sparkline points={history.get(symbol) ?? []} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}
