import {
  useAlertNotifications,
  usePortfolio,
  usePriceUpdates,
  useSystemNotifications,
  useTradingSignals,
  useWebSocket,
} from '../hooks/useWebSocket';
import { AlertsPanel } from './AlertsPanel';
import { ConnectionStatus } from './ConnectionStatus';
import { NotificationCentre } from './NotificationCentre';
import { PortfolioPanel } from './PortfolioPanel';
import { PriceTable } from './PriceTable';
import { SignalsPanel } from './SignalsPanel';
import { SymbolPicker } from './SymbolPicker';
import { usePriceHistory } from './usePriceHistory';
import { useSymbolSelection } from './useSymbolSelection';

const NO_SYMBOLS: readonly string[] = [];

export function App() {
  const { status, reconnect } = useWebSocket();
  const universe = status.welcome?.symbols ?? NO_SYMBOLS;
  const [symbols, setSymbols] = useSymbolSelection(universe);
  const { prices } = usePriceUpdates(symbols);
  const history = usePriceHistory(prices);
  const { alerts, clearAlerts } = useAlertNotifications();
  const { signals } = useTradingSignals();
  const { notifications, dismissNotification, clearAll } = useSystemNotifications();
  const portfolio = usePortfolio();

  return (
    <>
      <header className="top">
        <h1>Realtime dashboard</h1>
        <ConnectionStatus status={status} onReconnect={reconnect} />
      </header>
      <main className="grid">
        <div className="col main-col">
          <SymbolPicker universe={universe} selected={symbols} onChange={setSymbols} />
          <PriceTable symbols={symbols} prices={prices} history={history} />
          <PortfolioPanel portfolio={portfolio} />
        </div>
        <div className="col side-col">
          <AlertsPanel alerts={alerts} onClear={clearAlerts} />
          <NotificationCentre notifications={notifications} onDismiss={dismissNotification} onClearAll={clearAll} />
          <SignalsPanel signals={signals} />
        </div>
      </main>
      <footer className="muted small">
        {status.welcome ? `Gateway ${status.welcome.server} · protocol ${status.welcome.protocol} · ` : ''}
        client <code>{status.clientId}</code>
      </footer>
    </>
  );
}
