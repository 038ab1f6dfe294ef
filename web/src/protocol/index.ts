// The protocol's types: generated ones re-exported, plus names derived from them,
// so nothing here can drift from the Python protocol.
export type * from './messages.gen';
// The close codes and the reconnect policy, generated from the same schema.
export {
  CloseCode,
  FATAL_CLOSE_CODES,
  REAUTHENTICATE_CLOSE_CODES,
  RECONNECT_CLOSE_CODES,
} from './closeCodes.gen';
// Channel and message type names as runtime constants (and their union types), from the same schema.
export { CHANNELS, Channel, MessageType } from './names.gen';
import type { ServerMessage } from './messages.gen';
import type { Channel } from './names.gen';

export type ServerMessageType = ServerMessage['type'];
/** The server message whose `type` is `T`. */
export type MessageOfType<T extends ServerMessageType> = Extract<ServerMessage, { type: T }>;

/**
 * A server message as a listener receives it: `event.type` always, and `event.data`
 * readable on every member (the spec's `console.log('Event:', event.type, event.data)`),
 * `unknown` on the messages that carry none. Narrowing on `type` gives the exact shape.
 */
export type ServerEvent = ServerMessage & { data?: unknown };

/** Which channel each event message type arrives on (for resume bookkeeping). */
export const EVENT_CHANNEL: Readonly<Partial<Record<ServerMessageType, Channel>>> = {
  price_update: 'prices',
  alert_triggered: 'alerts',
  trading_signal: 'signals',
  portfolio_update: 'portfolio',
  notification: 'notifications',
};
