// Reference: Node `ws`, the fast non-Python reference.
//
// Written as the ws README shows: one WebSocketServer on an http.Server, a
// subscriber set per symbol, each message serialized once and sent with
// `client.send(data)` to every open subscriber, and the README's ping/pong
// heartbeat to detect and terminate broken connections.
//
//   node server.js --port 8003 --symbols AAPL,MSFT --tick-rate 10 --updates-per-tick 2
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

function parseArgs(argv) {
  const args = { port: 8000, symbols: '', tickRate: 1, updatesPerTick: 0, feeds: 'true' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
    if (!(key in args)) throw new Error(`unknown flag ${argv[i]}`);
    args[key] = typeof args[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return args;
}

// RFC 3339 UTC with microseconds, like the gateway. Date has milliseconds only and
// performance.timeOrigin may be off the wall clock by milliseconds, so the monotonic
// clock is anchored at an edge of Date's millisecond (re-anchored every 10 s).
let wallOffset = 0;
function anchor() {
  const start = Date.now();
  let now = start;
  while (now === start) now = Date.now();
  wallOffset = now - performance.now();
}
anchor();
setInterval(anchor, 10000).unref();

function stamp() {
  const micros = Math.floor((wallOffset + performance.now()) * 1000);
  const iso = new Date(Math.floor(micros / 1000)).toISOString();
  return `${iso.slice(0, 23)}${String(micros % 1000).padStart(3, '0')}Z`;
}

// A seeded random walk (mulberry32) so runs repeat.
function rng(seed) {
  return () => {
    seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const round2 = (x) => Math.round(x * 100) / 100;

function main() {
  const args = parseArgs(process.argv.slice(2));
  const symbols = args.symbols.split(',');
  const random = rng(1);
  const market = new Map(symbols.map((s) => {
    const open = 50 + random() * 400;
    return [s, { open, price: open, volume: 1000000, seq: 0 }];
  }));
  const subscribers = new Map(symbols.map((s) => [s, new Set()]));
  let symbolSubscriptions = 0;

  const server = http.createServer((req, res) => {
    if (req.url === '/ws/stats') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ total_connections: wss.clients.size,
        symbol_subscriptions: symbolSubscriptions }));
    } else {
      res.writeHead(404).end();
    }
  });
  const wss = new WebSocketServer({ server });

  wss.on('connection', (ws, req) => {
    const clientId = req.url.replace(/^\/ws\//, '');
    const mine = new Set();
    ws.isAlive = true;
    ws.on('pong', () => { ws.isAlive = true; });
    ws.on('error', () => {});
    ws.on('message', (raw) => {
      let request;
      try { request = JSON.parse(raw); } catch { return; }
      if (request.type === 'subscribe' && request.channel === 'prices') {
        const wanted = (request.symbols || symbols).filter((s) => subscribers.has(s));
        for (const s of wanted) {
          if (!mine.has(s)) { mine.add(s); subscribers.get(s).add(ws); symbolSubscriptions++; }
        }
        ws.send(JSON.stringify({ type: 'subscribed', channel: 'prices', symbols: wanted,
          id: request.id ?? null, timestamp: stamp() }));
      } else if (request.type === 'ping') {
        ws.send(JSON.stringify({ type: 'pong', id: request.id ?? null, timestamp: stamp() }));
      }
    });
    ws.on('close', () => {
      for (const s of mine) subscribers.get(s).delete(ws);
      symbolSubscriptions -= mine.size;
    });
    ws.send(JSON.stringify({ type: 'welcome', client_id: clientId, symbols, timestamp: stamp() }));
  });

  // The ws README's heartbeat: terminate connections that missed a pong.
  const heartbeat = setInterval(() => {
    for (const ws of wss.clients) {
      if (ws.isAlive === false) { ws.terminate(); continue; }
      ws.isAlive = false;
      ws.ping();
    }
  }, 30000);
  wss.on('close', () => clearInterval(heartbeat));

  function publish(symbol) {
    const q = market.get(symbol);
    // Box-Muller normal step, as the Python peers' gauss(0, 0.0005).
    const z = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
    q.price *= 1 + z * 0.0005;
    q.volume += 100 + Math.floor(random() * 4900);
    q.seq += 1;
    const data = JSON.stringify({
      type: 'price_update', symbol,
      data: { price: round2(q.price), change: round2(q.price - q.open),
        change_pct: round2((q.price - q.open) / q.open * 100), volume: q.volume,
        bid: round2(q.price * 0.9998), ask: round2(q.price * 1.0002) },
      seq: q.seq, timestamp: stamp(),
    });
    for (const client of subscribers.get(symbol)) {
      if (client.readyState === WebSocket.OPEN) client.send(data);
    }
  }

  if (args.feeds === 'true') {
    // Absolute deadlines; a late tick runs at once and missed ones are skipped.
    const perTick = args.updatesPerTick || symbols.length;
    const interval = 1000 / args.tickRate;
    const start = performance.now();
    let cursor = 0;
    let k = 0;
    const tick = () => {
      for (let i = 0; i < perTick; i++) {
        publish(symbols[cursor]);
        cursor = (cursor + 1) % symbols.length;
      }
      k = Math.max(k + 1, Math.floor((performance.now() - start) / interval));
      setTimeout(tick, Math.max(0, start + k * interval - performance.now()));
    };
    setTimeout(tick, 0);
  }
  server.listen(args.port, '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
}

main();
