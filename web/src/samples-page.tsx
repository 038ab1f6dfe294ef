/**
 * `/samples.html`: the spec's six front-end samples (src/samples/, verbatim), mounted
 * side by side against the gateway that served the page, as a front-end developer
 * would paste them into an app. The end-to-end tests drive this page.
 *
 * `?run=wsClient` runs only the low-level `wsClient` snippet, on a fresh page where
 * no hook holds the socket: it connects, queues its `send`, and `disconnect()`
 * closes the socket once that message is written.
 */
import { StrictMode, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import { AlertsPanel } from './samples/AlertsPanel';
import { MyComponent } from './samples/MyComponent';
import { NotificationCenter } from './samples/NotificationCenter';
import { PriceDisplay } from './samples/PriceDisplay';
import { SignalsPanel } from './samples/SignalsPanel';
import { wsClientSnippet } from './samples/wsClientSnippet';

function Sample({ name, children }: { name: string; children: ReactNode }) {
  return (
    <section className="sample" data-sample={name} aria-label={name}>
      <h2>
        <code>{name}</code>
      </h2>
      {children}
    </section>
  );
}

function Samples() {
  return (
    <main>
      <h1>The spec&apos;s front-end samples</h1>
      <Sample name="useWebSocket">
        <MyComponent />
      </Sample>
      <Sample name="usePriceUpdates">
        <PriceDisplay />
      </Sample>
      <Sample name="useAlertNotifications">
        <AlertsPanel />
      </Sample>
      <Sample name="useTradingSignals">
        <SignalsPanel />
      </Sample>
      <Sample name="useSystemNotifications">
        <NotificationCenter />
      </Sample>
      <Sample name="wsClient">
        <button type="button" onClick={wsClientSnippet}>
          Run the wsClient snippet
        </button>
      </Sample>
    </main>
  );
}

const root = document.getElementById('root');
if (!root) throw new Error('samples.html has no #root');
if (new URLSearchParams(location.search).get('run') === 'wsClient') {
  wsClientSnippet();
  root.textContent = 'Ran the wsClient snippet.';
} else {
  createRoot(root).render(
    <StrictMode>
      <Samples />
    </StrictMode>,
  );
}
