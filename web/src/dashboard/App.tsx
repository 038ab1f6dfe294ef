import { useCallback, useEffect, useState } from 'react';
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
import { takeTokenFromFragment } from './token';
import { TokenPrompt } from './TokenPrompt';
import { usePriceHistory } from './usePriceHistory';
import { useSymbolSelection } from './useSymbolSelection';

const NO_SYMBOLS: readonly string[] = [];

/**
 * The live dashboard. `initialToken` (from the page's `#token=`, see `token.ts`) is
 * sent first when the gateway has authentication on; without it, or when it is refused,
 * the gateway's 4401 brings up a box to paste one.
 */
export function App({ initialToken }: { initialToken?: string | null } = {}) {
  const [token, setToken] = useState<string | null>(initialToken ?? null);
  const { status, reconnect, client } = useWebSocket(token === null ? {} : { token });
  const applyToken = useCallback(
    (next: string) => {
      setToken(next);
      client.setToken(next);
      if (client.getStatus().canReconnect) client.reconnect();
    },
    [client],
  );
  // A #token= link opened on a page already showing: no reload, only a hashchange.
  useEffect(() => {
    const onHash = () => {
      const next = takeTokenFromFragment(window.location, window.history);
      if (next !== null) applyToken(next);
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, [applyToken]);
  const needsToken = status.state === 'closed' && status.lastClose?.code === 4401;
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
      {needsToken && <TokenPrompt reason={status.lastClose?.reason ?? ''} hadToken={token !== null} onToken={applyToken} />}
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
