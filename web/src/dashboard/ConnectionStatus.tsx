import type { ConnectionStatus as Status } from '../lib/websocket';
import { CloseCode } from '../protocol';

/** What the page says about a close; the protocol's own sentences are for developers. */
const CLOSE_REASONS: Readonly<Record<number, string>> = {
  [CloseCode.NORMAL]: 'closed normally',
  [CloseCode.GOING_AWAY]: 'the server is restarting',
  [CloseCode.ABNORMAL_CLOSURE]: 'the connection was lost',
  [CloseCode.MESSAGE_TOO_BIG]: 'a message was too big',
  [CloseCode.INTERNAL_ERROR]: 'server error',
  [CloseCode.INVALID_CLIENT_ID]: 'invalid client id',
  [CloseCode.UNAUTHORIZED]: 'not authenticated',
  [CloseCode.FORBIDDEN]: 'not allowed',
  [CloseCode.REPLACED]: 'opened in another tab or window',
  [CloseCode.RATE_LIMITED]: 'too many requests',
  [CloseCode.SLOW_CONSUMER]: 'this page fell behind',
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
