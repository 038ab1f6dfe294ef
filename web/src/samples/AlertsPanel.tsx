import { useAlertNotifications } from '@/hooks/useWebSocket';

export function AlertsPanel() {
  const { alerts, clearAlerts } = useAlertNotifications();

  return (
    <div>
      <h3>Alerts ({alerts.length})</h3>
      {alerts.map((alert) => (
        <div key={alert.id} className={`alert-${alert.severity}`}>
          {alert.message}
        </div>
      ))}
      <button onClick={clearAlerts}>Clear All</button>
    </div>
  );
}
