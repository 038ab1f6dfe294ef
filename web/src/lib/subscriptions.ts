/**
 * Which channels and price symbols the page wants, counted per holder.
 *
 * Theory of operation: several hooks share one socket, so a subscription is held
 * by a count, and only the first holder's `add` and the last holder's `remove`
 * reach the wire. Each call returns the requests to send now (nothing while
 * disconnected: `restore()` replays the whole set on every new connection).
 * Prices are special: an every-symbol hold and per-symbol holds coexist, and the
 * server refuses to remove single symbols from an every-symbol subscription, so
 * when the last every-symbol holder leaves we drop the channel and subscribe to
 * the symbols still held.
 */
import type { Channel, Subscribe, Unsubscribe } from '../protocol';

export type Request = Subscribe | Unsubscribe;

export class SubscriptionSet {
  private readonly channels = new Map<Channel, number>();
  private allPrices = 0;
  private readonly symbols = new Map<string, number>();

  /** Hold `channel` (for prices: `symbols`, or every symbol when omitted). */
  add(channel: Channel, symbols?: readonly string[]): Request[] {
    if (channel !== 'prices') {
      const count = (this.channels.get(channel) ?? 0) + 1;
      this.channels.set(channel, count);
      return count === 1 ? [{ type: 'subscribe', channel }] : [];
    }
    if (symbols === undefined) {
      this.allPrices += 1;
      return this.allPrices === 1 ? [{ type: 'subscribe', channel }] : [];
    }
    const added: string[] = [];
    for (const symbol of new Set(symbols)) {
      const count = (this.symbols.get(symbol) ?? 0) + 1;
      this.symbols.set(symbol, count);
      if (count === 1) added.push(symbol);
    }
    return this.allPrices === 0 && isNonEmpty(added)
      ? [{ type: 'subscribe', channel, symbols: added }]
      : [];
  }

  /** Release one hold taken by `add` with the same arguments. */
  remove(channel: Channel, symbols?: readonly string[]): Request[] {
    if (channel !== 'prices') {
      const count = (this.channels.get(channel) ?? 0) - 1;
      if (count > 0) {
        this.channels.set(channel, count);
        return [];
      }
      if (!this.channels.delete(channel)) return [];
      return [{ type: 'unsubscribe', channel }];
    }
    if (symbols === undefined) {
      if (this.allPrices === 0) return [];
      this.allPrices -= 1;
      if (this.allPrices > 0) return [];
      const held = [...this.symbols.keys()];
      const requests: Request[] = [{ type: 'unsubscribe', channel }];
      if (isNonEmpty(held)) requests.push({ type: 'subscribe', channel, symbols: held });
      return requests;
    }
    const dropped: string[] = [];
    for (const symbol of new Set(symbols)) {
      const count = this.symbols.get(symbol);
      if (count === undefined) continue;
      if (count > 1) {
        this.symbols.set(symbol, count - 1);
      } else {
        this.symbols.delete(symbol);
        dropped.push(symbol);
      }
    }
    if (this.allPrices > 0 || !isNonEmpty(dropped)) return [];
    return this.symbols.size === 0
      ? [{ type: 'unsubscribe', channel }]
      : [{ type: 'unsubscribe', channel, symbols: dropped }];
  }

  /** Every request that recreates the current set on a fresh connection. */
  restore(): Subscribe[] {
    const requests: Subscribe[] = [];
    if (this.allPrices > 0) {
      requests.push({ type: 'subscribe', channel: 'prices' });
    } else {
      const held = [...this.symbols.keys()];
      if (isNonEmpty(held)) requests.push({ type: 'subscribe', channel: 'prices', symbols: held });
    }
    for (const channel of this.channels.keys()) requests.push({ type: 'subscribe', channel });
    return requests;
  }

  /** The symbols held one by one (not counting an every-symbol hold), sorted. */
  heldSymbols(): string[] {
    return [...this.symbols.keys()].sort();
  }

  holds(channel: Channel): boolean {
    return channel === 'prices'
      ? this.allPrices > 0 || this.symbols.size > 0
      : this.channels.has(channel);
  }
}

function isNonEmpty<T>(items: T[]): items is [T, ...T[]] {
  return items.length > 0;
}
