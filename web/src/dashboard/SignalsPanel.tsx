import type { SignalItem } from '../hooks/useWebSocket';
import { formatConfidence, formatTime } from './format';

export function SignalsPanel({ signals }: { signals: readonly SignalItem[] }) {
  return (
    <section className="panel signals" aria-labelledby="signals-title">
      <h2 id="signals-title">Trading signals</h2>
      <ol className="feed" aria-labelledby="signals-title">
        {signals.map((signal) => (
          <li key={`${signal.seq}:${signal.timestamp}`} className={`signal ${signal.action}`}>
            <span className="badge">{signal.action}</span>
            <strong>{signal.symbol}</strong>
            <meter
              min={0}
              max={1}
              value={signal.confidence}
              aria-label={`confidence ${formatConfidence(signal.confidence)}`}
            />
            <span className="muted">{formatConfidence(signal.confidence)}</span>
            <p className="reason">{signal.reasoning}</p>
            <time dateTime={signal.timestamp}>{formatTime(signal.timestamp)}</time>
          </li>
        ))}
      </ol>
      {signals.length === 0 && <p className="empty">No signals yet.</p>}
    </section>
  );
}
