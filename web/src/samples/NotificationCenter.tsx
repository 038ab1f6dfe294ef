import { useSystemNotifications } from '@/hooks/useWebSocket';

export function NotificationCenter() {
  const { notifications, dismissNotification, clearAll } = useSystemNotifications();

  return (
    <div>
      {notifications.map((notif) => (
        <div key={notif.id}>
          {notif.message}
          <button onClick={() => dismissNotification(notif.id)}>×</button>
        </div>
      ))}
    </div>
  );
}
