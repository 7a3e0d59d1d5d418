// The daemon's HTTP ports. The capture port serves
//   GET /capture?wire=POD/INTF[&wire=...][&follow=1][&format=pcap][&count=N][&duration=S]
// as pcapng (or pcap), so `curl -sN -H "Authorization: Bearer $TOKEN" URL |
// wireshark -k -i -` works, /metrics (Prometheus), /map and /map/events (the
// live link map, docs/map.md), plus /healthz and /readyz; the health port serves
// only /healthz and /readyz, for probes. Both are reachable by whoever shares
// the network, so every handler is total: whatever bytes arrive, the answer is
// an HTTP status (400/401/403/404/405/413/429/431 and so on), a bug answers 500
// and is logged, and nothing escapes into the process. This is the only place
// that turns patchwire errors into HTTP status codes.
import http from 'node:http';
import type { Socket } from 'node:net';

import { asPatchwireError, type ErrorCode, InvalidArgument } from '../errors.js';
import { parseHostPort } from '../util/hostport.js';
import type { CaptureAuth, Caller } from './auth.js';
import { type CaptureFormat, type CaptureInterface, CaptureWriter } from './format.js';
import { type CaptureGate, foldWires } from './limits.js';
import { type CaptureSource, CaptureSession, READER_QUEUE_BYTES } from './session.js';
import type { MapWatcher } from '../map/hub.js';
import type { MapSnapshot } from '../map/model.js';
import { serveMapEvents } from '../map/sse.js';

/** What the HTTP ports read of a daemon (it passes this view, not itself). */
export interface HttpDaemon {
  readonly node: string;
  readonly lab: string;
  /** health details, for callers who may see the whole daemon */
  health(): unknown;
  /** null when ready; otherwise why not */
  notReady(): string | null;
  /**
   * Capture sources for distinct wire end names; throws NotFound for unknown
   * ones, listing the daemon's other ends only when `listAll`.
   */
  captureSources(names: string[], listAll: boolean): { sources: CaptureSource[]; interfaces: CaptureInterface[] };
  /** null: nobody can be authenticated yet (cluster mode before it has API credentials) */
  captureAuth(): CaptureAuth | null;
  readonly captureGate: CaptureGate;
  /** the Prometheus text of this daemon's metrics */
  metrics(): Promise<{ contentType: string; text: string }>;
  /** the live link map now, and a stream of its changes */
  mapSnapshot(): MapSnapshot;
  mapWatch(w: MapWatcher): { stop: () => void; resume: () => void };
  /**
   * The browser view under /ui/ (cluster mode; null: not served here). It
   * checks its callers itself, with captureAuth.
   */
  page(): PageHandler | null;
  log(msg: string): void;
}

/** Serves a path under /ui/ (`rel`: the part after "/ui/"); errors it throws are answered as here. */
export type PageHandler = (rel: string, query: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>;

export const HTTP_STATUS: Record<ErrorCode, number> = {
  CANCELLED: 400,
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  FAILED_PRECONDITION: 409,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  RESOURCE_EXHAUSTED: 429,
  UNAVAILABLE: 503,
  INTERNAL: 500,
};

/** Limits of the HTTP servers (SECURITY.md lists them). */
export const HTTP_LIMITS = {
  /** request line and headers together (Node answers 431 past it) */
  maxHeaderSize: 16 << 10,
  maxHeadersCount: 64,
  /** the whole header section must arrive within this (a slow client gets 408) */
  headersTimeoutMs: 5000,
  requestTimeoutMs: 10000,
  keepAliveTimeoutMs: 5000,
  /** query parameters per request */
  maxParams: 64,
  maxConnections: 256,
  maxConnectionsPerAddress: 32,
  maxRequestsPerSocket: 100,
} as const;

export class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: http.OutgoingHttpHeaders = {},
  ) {
    super(message);
  }
}

function fail(res: http.ServerResponse, status: number, message: string, headers: http.OutgoingHttpHeaders = {}): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  // The reason phrase named explicitly: a writeHead that threw may have left its own behind.
  res.writeHead(status, http.STATUS_CODES[status] ?? '', { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(`${message}\n`);
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
}

/** A value safe to quote in an error message: bounded, no control characters. */
function shown(s: string): string {
  return JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}...` : s);
}

/**
 * Path and query of a request target without a URL parser that can throw:
 * origin-form as is; absolute-form (`http://host/p?q`) by its path and
 * query; asterisk-form (`*`) and anything else is refused.
 */
export function splitTarget(target: string): { path: string; query: URLSearchParams } {
  let t = target;
  const abs = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(t);
  if (abs) t = t.slice(abs[0].length) || '/';
  if (!t.startsWith('/')) throw new HttpFailure(400, `request target ${shown(target)} is not a path`);
  const hash = t.indexOf('#');
  if (hash >= 0) t = t.slice(0, hash);
  const q = t.indexOf('?');
  const path = q >= 0 ? t.slice(0, q) : t;
  const search = q >= 0 ? t.slice(q + 1) : '';
  if (search.split('&').length > HTTP_LIMITS.maxParams) throw new HttpFailure(400, `at most ${HTTP_LIMITS.maxParams} query parameters`);
  return { path, query: new URLSearchParams(search) };
}

/**
 * Content-Disposition for a download name of any characters: an ASCII
 * fallback and the exact name in RFC 5987 form (RFC 6266), so no name can
 * make writeHead throw.
 */
export function attachment(name: string): string {
  // A lone surrogate would make encodeURIComponent throw.
  const whole = name.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
  const ascii = whole.replace(/[^\x20-\x7e]|["\\%;]/g, '_');
  const exact = encodeURIComponent(whole).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${ascii}"; filename*=UTF-8''${exact}`;
}

const READ_METHODS = new Set(['GET', 'HEAD']);

function hasBody(req: http.IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return (len !== undefined && len !== '0') || req.headers['transfer-encoding'] !== undefined;
}

export async function caller(d: Pick<HttpDaemon, 'captureAuth'>, req: http.IncomingMessage): Promise<Caller> {
  const auth = d.captureAuth();
  if (!auth) throw new HttpFailure(503, 'capture is not available yet: the daemon cannot check credentials');
  try {
    return await auth.authenticate(req.headers.authorization);
  } catch (err) {
    const e = asPatchwireError(err);
    if (e.code === 'UNAUTHENTICATED') throw new HttpFailure(401, e.message, { 'www-authenticate': 'Bearer realm="patchwire"' });
    throw e;
  }
}

async function handle(d: HttpDaemon, capture: boolean, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const { path, query: q } = splitTarget(req.url ?? '/');
  if (capture && (path === '/ui' || path.startsWith('/ui/'))) {
    const page = d.page();
    if (!page) throw new HttpFailure(404, `this daemon serves no page (in lab mode run 'patchwire ui LAB' instead)`);
    // The page's paths are relative: it must be loaded as /ui/.
    if (path === '/ui') throw new HttpFailure(308, 'the page is at /ui/', { location: '/ui/' });
    return page(path.slice('/ui/'.length), q, req, res);
  }
  const observe = path === '/metrics' || path === '/map' || path === '/map/events';
  const known = path === '/healthz' || path === '/readyz' || (capture && (path === '/capture' || observe));
  if (!known) {
    throw new HttpFailure(404, `no such path ${shown(path)}; this port serves ${capture ? '/capture?wire=POD/INTF, /metrics, /map, /map/events, /ui/, ' : ''}/healthz and /readyz`);
  }
  if (!READ_METHODS.has(req.method ?? '')) throw new HttpFailure(405, 'use GET', { allow: 'GET, HEAD' });
  // Nothing here takes a body; one would only be read for nothing.
  if (hasBody(req)) throw new HttpFailure(413, 'requests here have no body', { connection: 'close' });

  if (path === '/readyz') {
    const why = d.notReady();
    res.writeHead(why ? 503 : 200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end(`${why ?? 'ready'}\n`);
    return;
  }
  if (path === '/healthz') {
    // Alive is all a probe needs; the details (peers, counters of every
    // lab's wires) only for a caller who may see the whole daemon.
    if (capture && req.headers.authorization !== undefined) {
      const who = await caller(d, req);
      if (who.seesAll) {
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(d.health()));
        return;
      }
    }
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end('ok\n');
    return;
  }

  // Who is asking comes first, so a stranger learns nothing of the wires.
  const who = await caller(d, req);
  if (observe) {
    // Metrics and the map show every wire end of the daemon (names, state, counters).
    await d.captureAuth()!.authorizeNode(who, d.node);
    if ([...q.keys()].length > 0 && path !== '/map/events') throw new InvalidArgument(`${path} takes no query parameters`);
    if (res.closed || req.socket.destroyed) return;
    if (path === '/metrics') {
      const m = await d.metrics();
      res.writeHead(200, { 'content-type': m.contentType, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : m.text);
    } else if (path === '/map') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify(d.mapSnapshot()));
    } else serveMapEvents(d, q, req, res);
    return;
  }
  const asked = q.getAll('wire');
  if (asked.length === 0) throw new InvalidArgument('name at least one wire end: ?wire=POD/INTF');
  await serveCapture(d, who, asked, q, req, res);
}

/**
 * A capture of the wire ends `asked` (checked against the caller's rights)
 * as pcapng or pcap, with ?follow, ?count, ?duration and ?format from `q`.
 */
export async function serveCapture(
  d: Pick<HttpDaemon, 'node' | 'lab' | 'captureAuth' | 'captureSources' | 'captureGate'>,
  who: Caller,
  asked: string[],
  q: URLSearchParams,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const format = q.get('format') ?? 'pcapng';
  if (format !== 'pcapng' && format !== 'pcap') throw new InvalidArgument(`format ${shown(format)} is not pcapng or pcap`);
  const num = (k: string): number => {
    const v = q.get(k);
    if (v === null || v === '') return 0;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0 || n > 1e9) throw new InvalidArgument(`${k} ${shown(v)} is not a number from 0 to 1e9`);
    return n;
  };
  const count = Math.floor(num('count'));
  const duration = num('duration');
  const follow = ['1', 'true', 'yes'].includes(q.get('follow') ?? '');
  const wires = foldWires(asked);
  await d.captureAuth()!.authorize(who, wires);
  const picked = d.captureSources(wires, who.seesAll);
  // The client may have gone while credentials were checked.
  if (res.closed || req.socket.destroyed) return;
  let release = (): void => undefined;
  const writer = new CaptureWriter(format, picked.interfaces);
  const session = new CaptureSession(
    picked.sources,
    { follow, count, durationMs: duration * 1000, maxQueueBytes: READER_QUEUE_BYTES, onClose: () => release() },
    {
      write: (recs) => (recs.length ? res.write(writer.records(recs)) : true),
      end: () => res.end(),
    },
  );
  release = d.captureGate.admit(who.id, session.open());
  const base = `${d.lab}-${d.node}-${wires.map((w) => w.replace(/\//g, '_')).join('+')}`.slice(0, 120);
  res.writeHead(200, {
    'content-type': format === 'pcap' ? 'application/vnd.tcpdump.pcap' : 'application/x-pcapng',
    'content-disposition': attachment(`${base}-${stamp()}.${format}`),
    'cache-control': 'no-store',
  });
  if (req.method === 'HEAD') {
    session.stop();
    res.end();
    return;
  }
  res.on('close', () => session.stop());
  res.on('drain', () => session.resume());
  res.write(writer.header());
  session.start();
}

/** `capture: false` serves only /healthz and /readyz (for probes). */
export function captureHandler(d: HttpDaemon, capture = true): http.RequestListener {
  return (req, res) => {
    handle(d, capture, req, res).catch((err: unknown) => {
      try {
        if (err instanceof HttpFailure) return fail(res, err.status, err.message, err.headers);
        const e = asPatchwireError(err);
        if (e.code === 'INTERNAL') d.log(`HTTP ${req.method} ${shown(req.url ?? '')} failed: ${(err as Error)?.stack ?? String(err)}`);
        fail(res, HTTP_STATUS[e.code], e.code === 'INTERNAL' ? 'internal error (logged by the daemon)' : e.message);
      } catch (again) {
        d.log(`HTTP answer failed: ${String(again)}`);
        res.destroy();
      }
    });
  };
}

/** An HTTP server whose every limit is set (see HTTP_LIMITS). */
export function hardenedServer(listener: http.RequestListener): http.Server {
  const L = HTTP_LIMITS;
  const server = http.createServer(
    {
      maxHeaderSize: L.maxHeaderSize,
      headersTimeout: L.headersTimeoutMs,
      requestTimeout: L.requestTimeoutMs,
      keepAliveTimeout: L.keepAliveTimeoutMs,
      // How often Node looks for requests past their timeouts (default 30 s).
      connectionsCheckingInterval: 1000,
    },
    listener,
  );
  server.maxHeadersCount = L.maxHeadersCount;
  server.maxRequestsPerSocket = L.maxRequestsPerSocket;
  server.maxConnections = L.maxConnections;
  const perAddress = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const who = socket.remoteAddress ?? '';
    const n = (perAddress.get(who) ?? 0) + 1;
    if (n > L.maxConnectionsPerAddress) {
      socket.destroy();
      return;
    }
    perAddress.set(who, n);
    socket.once('close', () => {
      const left = (perAddress.get(who) ?? 1) - 1;
      if (left <= 0) perAddress.delete(who);
      else perAddress.set(who, left);
    });
  });
  return server;
}

export function startHttp(d: HttpDaemon, listen: string, capture = true): Promise<http.Server> {
  const flag = capture ? '--http' : '--health';
  const hp = parseHostPort(listen);
  if (!hp) return Promise.reject(new Error(`${flag} '${listen}' is not host:port`));
  const server = hardenedServer(captureHandler(d, capture));
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${listen} for HTTP: ${err.message}`)));
    server.listen(hp.port, hp.host || undefined, () => resolve(server));
  });
}
