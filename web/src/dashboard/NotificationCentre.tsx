import type { NotificationItem } from '../hooks/useWebSocket';
import { formatTime } from './format';

export function NotificationCentre({
  notifications,
  onDismiss,
  onClearAll,
}: {
  notifications: readonly NotificationItem[];
  onDismiss: (id: string) => void;
  onClearAll: () => void;
}) {
  return (
    <section className="panel notifications" aria-labelledby="notifications-title">
      <div className="panel-head">
        <h2 id="notifications-title">
          Notifications <span className="count">{notifications.length}</span>
        </h2>
        <button type="button" onClick={onClearAll} disabled={notifications.length === 0}>
          Clear all
        </button>
      </div>
      <ul className="feed" role="log" aria-live="polite" aria-labelledby="notifications-title">
        {notifications.map((notif) => (
          <li key={notif.id} className={`note ${notif.type}`}>
            <span className="badge">{notif.type}</span>
            <span className="message">{notif.message}</span>
            <time dateTime={notif.timestamp}>{formatTime(notif.timestamp)}</time>
            <button
              type="button"
              className="dismiss"
              onClick={() => onDismiss(notif.id)}
              aria-label={`Dismiss: ${notif.message}`}
            >
              ×
            </button>
          </li>
        ))}
      </ul>
      {notifications.length === 0 && <p className="empty">Nothing new.</p>}
    </section>
  );
}
