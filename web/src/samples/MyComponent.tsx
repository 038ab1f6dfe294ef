import { useEffect } from 'react';
import { Channel, MessageType } from '@/hooks/useWebSocket';
import { useWebSocket } from '@/hooks/useWebSocket';

export function MyComponent() {
  const ws = useWebSocket();

  useEffect(() => {
    if (ws.isConnected) {
      // Subscribe to prices
      ws.subscribe(Channel.PRICES, ['AAPL', 'MSFT']);

      // Listen for price updates
      const cleanup = ws.onMessage(MessageType.PRICE_UPDATE, (msg) => {
        console.log('Price update:', msg);
      });

      return cleanup;
    }
  }, [ws.isConnected]);

  return (
    <div>
      Status: {ws.connectionState}
      {ws.canReconnect && (
        <button onClick={ws.reconnect}>Reconnect</button>
      )}
    </div>
  );
}
