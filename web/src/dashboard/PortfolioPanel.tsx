import type { PortfolioSnapshot } from '../hooks/useWebSocket';
import { ARROW, direction, formatChange, formatChangePct, formatMoney, formatPrice } from './format';

export function PortfolioPanel({ portfolio }: { portfolio: PortfolioSnapshot | null }) {
  return (
    <section className="panel portfolio" aria-labelledby="portfolio-title">
      <h2 id="portfolio-title">Portfolio</h2>
      {portfolio === null ? (
        <p className="empty">Waiting for the first portfolio update…</p>
      ) : (
        <PortfolioBody portfolio={portfolio} />
      )}
    </section>
  );
}

function PortfolioBody({ portfolio: { data } }: { portfolio: PortfolioSnapshot }) {
  const dir = direction(data.day_change);
  return (
    <>
      <dl className="totals">
        <div>
          <dt>Total value</dt>
          <dd>{formatMoney(data.total_value)}</dd>
        </div>
        <div>
          <dt>Cash</dt>
          <dd>{formatMoney(data.cash)}</dd>
        </div>
        <div>
          <dt>Day change</dt>
          <dd className={dir}>
            <span aria-hidden="true">{ARROW[dir]} </span>
            {formatChange(data.day_change)} ({formatChangePct(data.day_change_pct)})
          </dd>
        </div>
      </dl>
      {data.positions.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Symbol</th>
              <th scope="col" className="num">Qty</th>
              <th scope="col" className="num">Avg cost</th>
              <th scope="col" className="num">Price</th>
              <th scope="col" className="num">Value</th>
              <th scope="col" className="num">P&amp;L</th>
            </tr>
          </thead>
          <tbody>
            {data.positions.map((p) => {
              const pnl = direction(p.unrealized_pnl);
              return (
                <tr key={p.symbol}>
                  <th scope="row">{p.symbol}</th>
                  <td className="num">{p.quantity}</td>
                  <td className="num">{formatPrice(p.avg_cost)}</td>
                  <td className="num">{formatPrice(p.price)}</td>
                  <td className="num">{formatMoney(p.market_value)}</td>
                  <td className={`num ${pnl}`}>
                    {formatChange(p.unrealized_pnl)} ({formatChangePct(p.unrealized_pnl_pct)})
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </>
  );
}
