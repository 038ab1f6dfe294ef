import { wsClient } from '@/lib/websocket';

export function wsClientSnippet() {
  // Connect
  wsClient.connect();

  // Subscribe to events
  const unsubscribe = wsClient.subscribe((event) => {
    console.log('Event:', event.type, event.data);
  });

  // Send message
  wsClient.send({ type: 'subscribe', channel: 'prices' });

  // Disconnect
  wsClient.disconnect();

  // Cleanup
  unsubscribe();
}
