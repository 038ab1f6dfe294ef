// The protocol's types: generated ones re-exported, plus names derived from them,
// so nothing here can drift from the Python protocol.
export type * from './messages.gen';
// The close codes and the reconnect policy, generated from the same schema.
export { CloseCode, FATAL_CLOSE_CODES, RECONNECT_CLOSE_CODES } from './closeCodes.gen';
import type { ServerMessage, Subscribe } from './messages.gen';

export type Channel = Subscribe['channel'];
export type ServerMessageType = ServerMessage['type'];
/** The server message whose `type` is `T`. */
export type MessageOfType<T extends ServerMessageType> = Extract<ServerMessage, { type: T }>;

export const CHANNELS: readonly Channel[] = [
  'prices',
  'alerts',
  'signals',
  'portfolio',
  'notifications',
];

/** Which channel each event message type arrives on (for resume bookkeeping). */
export const EVENT_CHANNEL: Readonly<Partial<Record<ServerMessageType, Channel>>> = {
  price_update: 'prices',
  alert_triggered: 'alerts',
  trading_signal: 'signals',
  portfolio_update: 'portfolio',
  notification: 'notifications',
};
