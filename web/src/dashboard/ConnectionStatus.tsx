import type { ConnectionStatus as Status } from '../lib/websocket';

const CLOSE_REASONS: Readonly<Record<number, string>> = {
  1000: 'closed normally',
  1001: 'the server is restarting',
  1006: 'the connection was lost',
  1009: 'a message was too big',
  1011: 'server error',
  4400: 'invalid client id',
  4401: 'not authenticated',
  4403: 'not allowed',
  4409: 'opened in another tab or window',
  4429: 'too many requests',
  4499: 'this page fell behind',
};

function describe(status: Status): string {
  switch (status.state) {
    case 'idle':
      return 'Not connected';
    case 'connecting':
      return status.attempt > 0 ? `Connecting (attempt ${status.attempt} of ${status.maxAttempts})…` : 'Connecting…';
    case 'open':
      return 'Live';
    case 'reconnecting': {
      const seconds = Math.max(1, Math.ceil((status.retryInMs ?? 0) / 1000));
      return `Connection lost; retrying within ${seconds} s (attempt ${status.attempt} of ${status.maxAttempts})`;
    }
    case 'closed': {
      const close = status.lastClose;
      if (!close) return 'Disconnected';
      const why = CLOSE_REASONS[close.code] ?? close.reason ?? '';
      return `Disconnected (${close.code}${why ? `: ${why}` : ''})`;
    }
  }
}

export function ConnectionStatus({ status, onReconnect }: { status: Status; onReconnect: () => void }) {
  return (
    <div className="connection">
      <p className={`connection-state ${status.state}`} role="status" aria-live="polite" data-state={status.state}>
        <span className="dot" aria-hidden="true" />
        {describe(status)}
      </p>
      <button type="button" onClick={onReconnect} disabled={!status.canReconnect}>
        Reconnect
      </button>
    </div>
  );
}
