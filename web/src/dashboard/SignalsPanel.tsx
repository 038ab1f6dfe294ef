import type { SignalItem } from '../hooks/useWebSocket';
import { formatConfidence, formatTime } from './format';

export function SignalsPanel({ signals }: { signals: readonly SignalItem[] }) {
  return (
    <section className="panel signals" aria-labelledby="signals-title">
      <h2 id="signals-title">Trading signals</h2>
      <ol className="feed" aria-labelledby="signals-title">
        {signals.map(({ data, seq, timestamp }) => (
          <li key={`${seq}:${timestamp}`} className={`signal ${data.action}`}>
            <span className="badge">{data.action}</span>
            <strong>{data.symbol}</strong>
            <meter min={0} max={1} value={data.confidence} aria-label={`confidence ${formatConfidence(data.confidence)}`} />
            <span className="muted">{formatConfidence(data.confidence)}</span>
            <p className="reason">{data.reasoning}</p>
            <time dateTime={timestamp}>{formatTime(timestamp)}</time>
          </li>
        ))}
      </ol>
      {signals.length === 0 && <p className="empty">No signals yet.</p>}
    </section>
  );
}
