// GET /capture?wire=POD/INTF[&wire=...][&follow=1][&format=pcap][&count=N][&duration=S]
// streams pcapng (or pcap), so `curl -sN URL | wireshark -k -i -` works.
import http from 'node:http';

import type { Daemon } from '../daemon/daemon.js';
import { WireError } from '../daemon/daemon.js';
import { parseHostPort } from '../util/hostport.js';
import { type CaptureFormat, CaptureWriter } from './format.js';
import { CaptureSession } from './session.js';

export const READER_QUEUE_BYTES = 16 << 20;

function fail(res: http.ServerResponse, status: number, message: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(`${message}\n`);
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
}

/** `capture: false` serves only /healthz and /readyz (for probes on an open port). */
export function captureHandler(d: Daemon, capture = true): http.RequestListener {
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://daemon');
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(d.health()));
      return;
    }
    if (url.pathname === '/readyz') {
      const why = d.notReady();
      res.writeHead(why ? 503 : 200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${why ?? 'ready'}\n`);
      return;
    }
    if (!capture) return fail(res, 404, `no such path ${url.pathname}; this port serves /healthz and /readyz`);
    if (url.pathname !== '/capture') return fail(res, 404, `no such path ${url.pathname}; use /capture?wire=POD/INTF`);
    if (req.method !== 'GET') return fail(res, 405, 'use GET');
    const q = url.searchParams;
    const format = (q.get('format') ?? 'pcapng') as CaptureFormat;
    if (format !== 'pcapng' && format !== 'pcap') return fail(res, 400, `format '${format}' is not pcapng or pcap`);
    const wires = q.getAll('wire');
    if (wires.length === 0) return fail(res, 400, 'name at least one wire end: ?wire=POD/INTF');
    const num = (k: string): number | null => {
      const v = q.get(k);
      if (v === null || v === '') return 0;
      const n = Number(v);
      return Number.isFinite(n) && n >= 0 ? n : null;
    };
    const count = num('count');
    const duration = num('duration');
    if (count === null) return fail(res, 400, `count '${q.get('count')}' is not a number`);
    if (duration === null) return fail(res, 400, `duration '${q.get('duration')}' is not a number of seconds`);
    const follow = ['1', 'true', 'yes'].includes(q.get('follow') ?? '');
    let picked;
    try {
      picked = d.captureSources(wires);
    } catch (err) {
      return fail(res, err instanceof WireError && err.code === 5 ? 404 : 400, (err as Error).message);
    }
    const writer = new CaptureWriter(format, picked.interfaces);
    const base = `${d.opts.lab}-${d.opts.node}-${wires.map((w) => w.replace(/\//g, '_')).join('+')}`.slice(0, 120);
    res.writeHead(200, {
      'content-type': format === 'pcap' ? 'application/vnd.tcpdump.pcap' : 'application/x-pcapng',
      'content-disposition': `attachment; filename="${base}-${stamp()}.${format}"`,
      'cache-control': 'no-store',
    });
    res.write(writer.header());
    const session = new CaptureSession(
      picked.sources,
      { follow, count, durationMs: duration * 1000, maxQueueBytes: READER_QUEUE_BYTES },
      {
        write: (recs) => (recs.length ? res.write(writer.records(recs)) : true),
        end: () => res.end(),
      },
    );
    res.on('drain', () => session.resume());
    res.on('close', () => session.stop());
    session.start();
  };
}

export function startHttp(d: Daemon, listen: string, capture = true): Promise<http.Server> {
  const flag = capture ? '--http' : '--health';
  const hp = parseHostPort(listen);
  if (!hp) return Promise.reject(new Error(`${flag} '${listen}' is not host:port`));
  const server = http.createServer(captureHandler(d, capture));
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${listen} for HTTP: ${err.message}`)));
    server.listen(hp.port, hp.host || undefined, () => resolve(server));
  });
}
