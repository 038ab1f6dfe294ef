import { useTradingSignals } from '@/hooks/useWebSocket';

export function SignalsPanel() {
  const { signals } = useTradingSignals();

  return (
    <div>
      {signals.map((signal, i) => (
        <div key={i}>
          {signal.symbol}: {signal.action.toUpperCase()}
          (Confidence: {(signal.confidence * 100).toFixed(0)}%)
        </div>
      ))}
    </div>
  );
}
