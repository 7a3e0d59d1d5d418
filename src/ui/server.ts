// `patchwire ui LAB`: the lab's browser view. Serves the page (static files
// built into dist/ui) and a small JSON API the page calls. Every API call
// carries the lab's capture token (Authorization: Bearer, as the daemons'
// HTTP port wants it) and goes on to the lab's daemons through their control
// API, as the CLI does: captures and map streams pass the token on, so the
// daemons' own access control decides; nothing here reads an engine or a
// namespace itself.
//
//   GET  /                      the page (and /assets/*)
//   GET  /api/view              the lab's topology and map now (JSON)
//   GET  /api/events            the same as server-sent events, a full view per change
//   GET  /api/capture?end=POD/INTF[&end=...][&follow=1][&count=N][&duration=S][&format=pcap]
//                               the ends' rings (then live frames) as one pcapng
//   GET  /api/packets?end=...   live frame summaries of the ends as server-sent events
//   POST /api/cable             {"end": "POD/INTF", "plugged": false|true}
//   POST /api/impair            {"end": "POD/INTF", "dir": "in|out|both", "set": {"delay": "20ms", ...}} or {"end", "dir", "reset": true}
import type http from 'node:http';

import { LabTokenAuth } from '../capture/auth.js';
import { type CaptureInterface } from '../capture/format.js';
import { attachment, HTTP_STATUS, HttpFailure, hardenedServer, splitTarget } from '../capture/http.js';
import { mergeCapture, type MergeSource } from '../capture/merge.js';
import { locate } from '../cli/impair.js';
import { linkCable } from '../cli/link.js';
import { ControlClient, type PbCaptureResponse } from '../control/client.js';
import type { PbWireStatus } from '../control/convert.js';
import { errorFromGrpc } from '../control/service.js';
import { endImpairFromPb, formatImpairment } from '../dataplane/impair.js';
import { asPatchwireError, InvalidArgument, NotFound, PatchwireError } from '../errors.js';
import type { LabState } from '../lab/state.js';
import { applyMapEvent, type MapEvent, type MapSnapshot, mergeMaps } from '../map/model.js';
import { carrierPod } from '../topology/resolve.js';
import { parseHostPort } from '../util/hostport.js';
import { ASSETS_DIR, PageAssets, parseCableBody, parseImpairBody, readJson, sendJson, sendFrames, sseHead, StreamGate, UI_LIMITS, type View, type ViewEnd, viewEnd, type ViewWire } from './common.js';
import { type FrameSummary, summarize } from './decode.js';

export { UI_LIMITS } from './common.js';

/** The page's view: the lab's links (so every wire is drawn, reported or not) with what the daemons' maps say of each. */
export function buildView(state: LabState, map: MapSnapshot, tokenFile: string): View {
  const wires: ViewWire[] = state.links.map((l) => {
    const mw = map.wires.find((w) => w.uid === l.uid);
    const side = (which: 'a' | 'b'): ViewEnd => {
      const name = `${l[which].pod}/${l[which].intf}`;
      const node = state.pods.find((p) => p.name === carrierPod(l, which))?.node ?? '';
      return viewEnd(mw?.ends.find((e) => e.name === name), { name, pod: l[which].pod, node });
    };
    return { uid: l.uid, state: mw?.state ?? 'missing', message: mw?.message ?? '', ends: [side('a'), side('b')] };
  });
  const pods = new Map(state.pods.map((p) => [p.name, p.node]));
  // Host ends are drawn as their own box on the carrier pod's node.
  for (const w of wires) for (const e of w.ends) if (!pods.has(e.pod)) pods.set(e.pod, e.node);
  return {
    version: 1,
    mode: 'lab',
    lab: state.name,
    node: '',
    time_ms: map.time_ms || Date.now(),
    rate_window_ms: map.rate_window_ms,
    nodes: state.nodes.map((n) => ({ name: n.name, reporting: map.nodes.some((m) => m.name === n.name && m.reporting) })),
    pods: [...pods].map(([name, node]) => ({ name, node })),
    peers: map.peers,
    wires,
    token_file: tokenFile,
  };
}

/** Follows every daemon's map stream while anyone watches; feeds views to the watchers. */
class LiveView {
  private readonly maps = new Map<string, MapSnapshot>();
  private readonly streams = new Set<{ cancel(): void }>();
  private pending: NodeJS.Timeout | null = null;
  private running = false;
  last: string | null = null;
  readonly watchers = new Set<(json: string) => void>();

  constructor(private readonly ui: UiServer) {}

  add(w: (json: string) => void): () => void {
    this.watchers.add(w);
    if (!this.running) this.start();
    else if (this.last) w(this.last);
    return () => {
      this.watchers.delete(w);
      if (this.watchers.size === 0) this.stop();
    };
  }

  private start(): void {
    this.running = true;
    // Carrier, cable and impairments come in the map (a daemon sends a change
    // within 50 ms of a cable pull or impairment it made, within a second of
    // one its peer made): nothing is polled.
    for (const c of this.ui.clients) this.open(c);
  }

  private open(c: { node: string; client: ControlClient }): void {
    const s = c.client.watchMap(this.ui.token);
    this.streams.add(s);
    s.on('data', (ev: MapEvent) => {
      this.maps.set(c.node, applyMapEvent(this.maps.get(c.node) ?? null, ev));
      this.changed();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      this.streams.delete(s);
      if (!this.running) return;
      this.maps.delete(c.node);
      this.changed();
      setTimeout(() => this.running && this.open(c), 1000);
    });
  }

  /** Changes within 100 ms make one event. */
  changed(): void {
    if (this.pending || !this.running) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      let json: string;
      try {
        const state = this.ui.state();
        json = JSON.stringify(buildView(state, mergeMaps(state.name, [...this.maps.values()]), this.ui.tokenFile));
      } catch (err) {
        // The lab went away (or its file cannot be read): the pages keep their last view.
        this.ui.note(`view: ${(err as Error).message}`);
        return;
      }
      this.last = json;
      for (const w of this.watchers) w(json);
    }, 100);
  }

  stop(): void {
    this.running = false;
    for (const s of this.streams) s.cancel();
    this.streams.clear();
    this.maps.clear();
    if (this.pending) clearTimeout(this.pending);
    this.pending = null;
    this.last = null;
  }
}

export class UiServer {
  readonly clients: Array<{ node: string; client: ControlClient }>;
  private readonly auth: LabTokenAuth;
  private readonly live = new LiveView(this);
  private readonly gate = new StreamGate();
  private server: http.Server | null = null;
  private readonly assets: PageAssets;

  constructor(
    private readonly lab: string,
    private readonly readState: () => LabState | null,
    readonly token: string,
    readonly tokenFile: string,
    private readonly log: (msg: string) => void = () => undefined,
    assetsDir = ASSETS_DIR,
  ) {
    const st = this.state();
    this.clients = st.nodes.map((n) => ({ node: n.name, client: new ControlClient(n.control) }));
    this.auth = new LabTokenAuth(token);
    this.assets = new PageAssets(assetsDir);
  }

  note(msg: string): void {
    this.log(msg);
  }

  state(): LabState {
    const s = this.readState();
    if (!s) throw new NotFound(`lab ${this.lab} is gone (see 'patchwire ls')`);
    return s;
  }

  async view(): Promise<View> {
    const state = this.state();
    const maps = await Promise.all(this.clients.map((c) => c.client.getMap().catch(() => null)));
    return buildView(state, mergeMaps(state.name, maps.filter((m): m is MapSnapshot => m !== null)), this.tokenFile);
  }

  listen(listen: string): Promise<string> {
    const hp = parseHostPort(listen);
    if (!hp) return Promise.reject(new InvalidArgument(`--listen '${listen}' is not host:port`));
    const server = hardenedServer((req, res) => this.handle(req, res));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`cannot listen on ${listen}: ${err.message}`)));
      server.listen(hp.port, hp.host || '127.0.0.1', () => {
        const a = server.address() as { address: string; port: number };
        resolve(`http://${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}/`);
      });
    });
  }

  close(): void {
    this.live.stop();
    this.server?.closeAllConnections();
    this.server?.close();
    for (const c of this.clients) c.client.close();
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.route(req, res).catch((err: unknown) => {
      try {
        if (err instanceof HttpFailure) return this.fail(res, err.status, err.message, err.headers);
        // A daemon's gRPC status, or our own error.
        const e = err instanceof PatchwireError || typeof (err as { code?: unknown })?.code !== 'number' ? asPatchwireError(err) : errorFromGrpc(err);
        if (e.code === 'INTERNAL') this.log(`${req.method} ${req.url} failed: ${(err as Error)?.stack ?? String(err)}`);
        this.fail(res, HTTP_STATUS[e.code], e.message);
      } catch (again) {
        this.log(`answer failed: ${String(again)}`);
        res.destroy();
      }
    });
  }

  private fail(res: http.ServerResponse, status: number, message: string, headers: http.OutgoingHttpHeaders = {}): void {
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
    res.end(JSON.stringify({ error: message }));
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const { path: p, query } = splitTarget(req.url ?? '/');
    const method = req.method ?? '';
    if (p === '/' || p.startsWith('/assets/')) {
      this.assets.serve(p.slice(1), method, res);
      return;
    }
    const routes: Record<string, string> = { '/api/view': 'GET', '/api/events': 'GET', '/api/capture': 'GET', '/api/packets': 'GET', '/api/cable': 'POST', '/api/impair': 'POST' };
    const want = routes[p];
    if (!want) throw new HttpFailure(404, `no such path ${JSON.stringify(p.slice(0, 100))}; the API is ${Object.keys(routes).join(', ')}`);
    if (method !== want) throw new HttpFailure(405, `use ${want} for ${p}`, { allow: want });
    // Who is asking comes first: without the token nothing about the lab is told.
    try {
      await this.auth.authenticate(req.headers.authorization);
      // A page gone meanwhile has already closed: a stream opened now would never end.
      if (res.closed || req.socket.destroyed) return;
    } catch (err) {
      throw new HttpFailure(401, `${(err as Error).message} (the lab's token is in ${this.tokenFile})`, { 'www-authenticate': 'Bearer realm="patchwire"' });
    }
    if (want === 'GET' && (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined)) throw new HttpFailure(413, 'GET requests here have no body', { connection: 'close' });
    if ((p === '/api/view' || p === '/api/events' || want === 'POST') && [...query.keys()].length > 0) throw new InvalidArgument(`${p} takes no query parameters`);
    switch (p) {
      case '/api/view':
        return sendJson(res, 200, await this.view());
      case '/api/events':
        return this.events(req, res);
      case '/api/capture':
        return this.capture(query, req, res);
      case '/api/packets':
        return this.packets(query, req, res);
      case '/api/cable':
        return this.cable(await readJson(req), res);
      case '/api/impair':
        return this.impair(await readJson(req), res);
    }
  }

  private events(req: http.IncomingMessage, res: http.ServerResponse): void {
    const release = this.gate.admit();
    sseHead(res);
    // A client that stops reading gets no more views (each is whole, so the
    // next one it can take is current again); its buffer stays bounded.
    const stop = this.live.add((json) => {
      if (res.writableLength < UI_LIMITS.maxBufferedBytes) res.write(`event: view\ndata: ${json}\n\n`);
    });
    const beat = setInterval(() => res.write(': keepalive\n\n'), 15000);
    res.on('close', () => {
      clearInterval(beat);
      stop();
      release();
    });
  }

  /** The ends named by ?end= (deduplicated), checked against the lab's links. */
  private endsOf(q: URLSearchParams, params = ['end']): Array<{ name: string; node: string; control: string }> {
    for (const k of q.keys()) if (!params.includes(k)) throw new InvalidArgument(`unknown parameter ${JSON.stringify(k.slice(0, 50))} (${params.join(', ')})`);
    const names = [...new Set(q.getAll('end'))];
    if (names.length === 0) throw new InvalidArgument('name at least one wire end: ?end=POD/INTF');
    if (names.length > UI_LIMITS.maxEnds) throw new InvalidArgument(`at most ${UI_LIMITS.maxEnds} ends at once`);
    const st = this.state();
    return names.map((name) => {
      const at = (() => {
        try {
          return locate(st.name, name);
        } catch (err) {
          throw new NotFound((err as Error).message.replace(/^link: /, ''));
        }
      })();
      return { name, node: at.node, control: st.nodes.find((n) => n.name === at.node)!.control };
    });
  }

  private sources(ends: Array<{ name: string; node: string }>): { sources: MergeSource[]; interfaces: CaptureInterface[] } {
    const byNode = new Map<string, MergeSource>();
    const interfaces: CaptureInterface[] = [];
    ends.forEach((e, id) => {
      const c = this.clients.find((x) => x.node === e.node);
      if (!c) throw new NotFound(`node ${e.node} of ${e.name} is not in the lab any more`);
      let s = byNode.get(e.node);
      if (!s) {
        s = { node: e.node, client: c.client, wires: [], token: this.token };
        byNode.set(e.node, s);
      }
      s.wires.push({ name: e.name, id });
      interfaces.push({ id, name: e.name, description: `node ${e.node}, lab ${this.lab}` });
    });
    return { sources: [...byNode.values()], interfaces };
  }

  private capture(q: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse): void {
    const ends = this.endsOf(q, ['end', 'follow', 'count', 'duration', 'format']);
    const format = q.get('format') ?? 'pcapng';
    if (format !== 'pcapng' && format !== 'pcap') throw new InvalidArgument(`format ${JSON.stringify(format.slice(0, 20))} is not pcapng or pcap`);
    const num = (k: string): number => {
      const v = q.get(k);
      if (v === null || v === '') return 0;
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0 || n > 1e9) throw new InvalidArgument(`${k} ${JSON.stringify(v.slice(0, 20))} is not a number from 0 to 1e9`);
      return n;
    };
    const follow = ['1', 'true', 'yes'].includes(q.get('follow') ?? '');
    const { sources, interfaces } = this.sources(ends);
    // A live capture holds daemon streams open: counted like the page's streams.
    const release = follow ? this.gate.admit() : () => undefined;
    res.on('close', release);
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
    res.writeHead(200, {
      'content-type': format === 'pcap' ? 'application/vnd.tcpdump.pcap' : 'application/x-pcapng',
      'content-disposition': attachment(`${this.lab}-${ends.map((e) => e.name.replace(/\//g, '_')).join('+')}`.slice(0, 120) + `-${stamp}.${format}`),
      'cache-control': 'no-store',
    });
    const m = mergeCapture(sources, { format, follow, count: Math.floor(num('count')), durationMs: num('duration') * 1000, interfaces, out: res });
    res.on('close', () => m.stop());
    m.done.then(
      () => res.end(),
      (err: Error) => {
        // The head is out: the error can only end the stream (curl reports it, the page says the download failed).
        this.log(`capture of ${ends.map((e) => e.name).join(', ')}: ${err.message}`);
        res.destroy(err);
      },
    );
  }

  private packets(q: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse): void {
    const ends = this.endsOf(q);
    const { sources } = this.sources(ends);
    const release = this.gate.admit();
    sseHead(res);
    let backlog: FrameSummary[] = [];
    let queue: FrameSummary[] = [];
    let ringPending = sources.length;
    let lost = 0;
    const calls = sources.map((s) => {
      const names = new Map<number, string>();
      const call = s.client.capture({ wires: s.wires.map((w) => w.name), follow: true, count: 0, duration_ms: 0 }, s.token);
      let ringDone = false;
      call.on('data', (m: PbCaptureResponse) => {
        for (const i of m.interfaces) names.set(i.id, s.wires[i.id]?.name ?? i.name);
        for (const f of m.frames) {
          const sum = summarize(f.data, f.original_length, Number(f.timestamp_us), names.get(f.interface_id) ?? '?', f.outbound);
          if (ringPending > 0 && !ringDone) {
            backlog.push(sum);
            if (backlog.length > UI_LIMITS.packetBacklog * 2) backlog = backlog.slice(-UI_LIMITS.packetBacklog);
          } else {
            queue.push(sum);
            if (queue.length > UI_LIMITS.packetQueue) {
              lost += queue.length - UI_LIMITS.packetQueue;
              queue = queue.slice(-UI_LIMITS.packetQueue);
            }
          }
        }
        if (m.ring_done && !ringDone) {
          ringDone = true;
          ringPending--;
        }
      });
      // A stream that ends or fails before its ring is done must not hold back the others.
      const over = (): void => {
        if (!ringDone) {
          ringDone = true;
          ringPending--;
        }
      };
      call.on('error', (err: unknown) => {
        over();
        const e = errorFromGrpc(err);
        if (e.code !== 'CANCELLED') res.write(`event: error\ndata: ${JSON.stringify({ error: `node ${s.node}: ${e.message}` })}\n\n`);
      });
      call.on('end', over);
      return call;
    });
    let sentBacklog = false;
    const flush = setInterval(() => {
      if (!sentBacklog && ringPending === 0) {
        sentBacklog = true;
        backlog.sort((a, b) => a.ts_us - b.ts_us);
        queue = [...backlog.slice(-UI_LIMITS.packetBacklog), ...queue];
        backlog = [];
        res.write(`event: ready\ndata: {}\n\n`);
      }
      if (!sentBacklog || (queue.length === 0 && lost === 0)) return;
      if (sendFrames(res, queue, lost)) {
        queue = [];
        lost = 0;
      }
    }, 200);
    res.on('close', () => {
      clearInterval(flush);
      for (const c of calls) c.cancel();
      release();
    });
  }

  private async cable(body: Record<string, unknown>, res: http.ServerResponse): Promise<void> {
    const { end, plugged } = parseCableBody(body);
    this.endsOf(new URLSearchParams([['end', end]]));
    await linkCable(this.lab, end, plugged);
    sendJson(res, 200, { end, plugged });
  }

  private async impair(body: Record<string, unknown>, res: http.ServerResponse): Promise<void> {
    const { end, dir, imp } = parseImpairBody(body);
    const [at] = this.endsOf(new URLSearchParams([['end', end]]));
    const client = this.clients.find((c) => c.node === at!.node)!.client;
    const w: PbWireStatus = imp ? await client.setImpair(end, dir, imp) : await client.resetImpair(end, dir);
    const e = endImpairFromPb(w.ends.find((x) => x.name === end)?.impair);
    sendJson(res, 200, { end, impair_in: formatImpairment(e?.in), impair_out: formatImpairment(e?.out) });
  }
}
