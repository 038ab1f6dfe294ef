import { usePriceUpdates } from '@/hooks/useWebSocket';

export function PriceDisplay() {
  const { prices, isConnected } = usePriceUpdates(['AAPL', 'MSFT']);

  return (
    <div>
      {Array.from(prices.values()).map((price) => (
        <div key={price.symbol}>
          {price.symbol}: ${price.price.toFixed(2)}
          <span className={price.change >= 0 ? 'text-green-500' : 'text-red-500'}>
            {price.change_pct >= 0 ? '+' : ''}{price.change_pct.toFixed(2)}%
          </span>
        </div>
      ))}
    </div>
  );
}
