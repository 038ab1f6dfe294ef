import type { AlertItem } from '../hooks/useWebSocket';
import { formatTime } from './format';

export function AlertsPanel({ alerts, onClear }: { alerts: readonly AlertItem[]; onClear: () => void }) {
  return (
    <section className="panel alerts" aria-labelledby="alerts-title">
      <div className="panel-head">
        <h2 id="alerts-title">
          Alerts <span className="count">{alerts.length}</span>
        </h2>
        <button type="button" onClick={onClear} disabled={alerts.length === 0}>
          Clear
        </button>
      </div>
      {/* role=log: screen readers announce new entries politely, without re-reading the list. */}
      <ol className="feed" role="log" aria-live="polite" aria-labelledby="alerts-title">
        {alerts.map((alert) => (
          <li key={alert.id} className={`alert ${alert.severity}`}>
            <span className="badge">{alert.severity}</span>
            <strong>{alert.symbol}</strong> {alert.message}
            <time dateTime={alert.timestamp}>{formatTime(alert.timestamp)}</time>
          </li>
        ))}
      </ol>
      {alerts.length === 0 && <p className="empty">No alerts yet.</p>}
    </section>
  );
}
