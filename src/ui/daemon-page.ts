// The browser view served by a daemon in cluster mode, under /ui/ on its
// HTTP port (reach it with `kubectl port-forward`). The same page and the
// same API as `patchwire ui LAB` (src/ui/server.ts), answered from this
// daemon: its live link map for its own wire ends, and the Topology objects
// (links and the status each pod's daemon writes) for the rest of the lab.
// Every API call names its caller with a Kubernetes token and is checked as
// capture is (src/capture/auth.ts):
//   view, events:    get nodes/metrics of this node (as /map); the whole lab
//                    of a namespace only with list topologies there
//   capture, packets: get pods/capture of each end's pod (as /capture)
//   cable, impair:   patch topologies of the end's pod (LINK_CHANGE_ATTRIBUTES)
// Actions and captures reach only this node's wire ends; an end on another
// node gets a 409 naming the node whose daemon holds it.
import type http from 'node:http';

import type { Caller, CaptureAuth } from '../capture/auth.js';
import type { CaptureInterface } from '../capture/format.js';
import { caller, HTTP_STATUS, HttpFailure, type PageHandler, serveCapture } from '../capture/http.js';
import type { CaptureGate } from '../capture/limits.js';
import { type CaptureSource, CaptureSession, READER_QUEUE_BYTES } from '../capture/session.js';
import { clusterWireId, type LinkStatus, type PodInfo, type TopologyObject } from '../cluster/plan.js';
import { formatImpairment, type ImpairDir, type Impairment } from '../dataplane/impair.js';
import { asPatchwireError, FailedPrecondition, InvalidArgument } from '../errors.js';
import type { MapWatcher } from '../map/hub.js';
import { applyMapEvent, type MapSnapshot, type MapWire } from '../map/model.js';
import { PageAssets, parseCableBody, parseImpairBody, readJson, sendJson, sendFrames, sseHead, StreamGate, UI_LIMITS, type View, type ViewEnd, viewEnd, type ViewWire } from './common.js';
import { type FrameSummary, summarize } from './decode.js';

/** What the page reads of, and does to, its daemon. */
export interface PageDaemon {
  readonly node: string;
  readonly lab: string;
  captureAuth(): CaptureAuth | null;
  captureSources(names: string[], listAll: boolean): { sources: CaptureSource[]; interfaces: CaptureInterface[] };
  readonly captureGate: CaptureGate;
  mapSnapshot(): MapSnapshot;
  mapWatch(w: MapWatcher): { stop: () => void; resume: () => void };
  setCable(end: string, plugged: boolean): Promise<unknown>;
  /** imp null: remove */
  setImpair(end: string, dir: ImpairDir, imp: Impairment | null): Promise<unknown>;
  log(msg: string): void;
}

/** The cluster as the daemon's controller last listed it (null: not listed yet). */
export type ClusterLinks = () => { topologies: TopologyObject[]; pods: Map<string, PodInfo> } | null;

interface TopoLink {
  uid: number;
  namespace: string;
  pod: string;
  intf: string;
  peerPod: string;
  peerIntf: string;
}

/** The point-to-point links a Topology object declares (what the view draws; the controller validates them). */
function topoLinks(t: TopologyObject): TopoLink[] {
  const ns = t.metadata?.namespace ?? 'default';
  const pod = t.metadata?.name ?? '';
  const links = Array.isArray(t.spec?.links) ? (t.spec.links as Array<Record<string, unknown>>) : [];
  return links
    .filter((l) => Number.isInteger(l?.uid) && typeof l.peer_pod === 'string' && typeof l.local_intf === 'string' && typeof l.peer_intf === 'string')
    .map((l) => ({ uid: l.uid as number, namespace: ns, pod, intf: l.local_intf as string, peerPod: l.peer_pod as string, peerIntf: l.peer_intf as string }));
}

function statusLink(topos: Map<string, TopologyObject>, ns: string, pod: string, uid: number): LinkStatus | undefined {
  const st = topos.get(`${ns}/${pod}`)?.status as { links?: LinkStatus[] } | undefined;
  return Array.isArray(st?.links) ? st.links.find((l) => l.uid === uid) : undefined;
}

/** An end this daemon does not hold, as its own daemon last wrote it in its pod's Topology status. */
function statusEnd(s: LinkStatus | undefined, id: { name: string; pod: string; node: string }): ViewEnd {
  return {
    ...id,
    carrier: s?.carrier === undefined ? 'unknown' : s.carrier ? 'up' : 'down',
    cable: s?.cable ?? 'unknown',
    impair_in: formatImpairment(s?.impair?.in),
    impair_out: formatImpairment(s?.impair?.out),
  };
}

const STATE_RANK = ['error', 'down', 'pending', 'missing', 'up'];

/**
 * The page's view from a daemon: every wire of its map (its ends with live
 * counters), and for each namespace in `visible` every other link of its
 * Topology objects, their ends' state from the status their daemons write.
 */
export function clusterView(node: string, lab: string, map: MapSnapshot, cluster: ReturnType<ClusterLinks>, visible: Set<string>): View {
  const topos = new Map((cluster?.topologies ?? []).map((t) => [`${t.metadata?.namespace ?? 'default'}/${t.metadata?.name ?? ''}`, t]));
  const podNode = (ns: string, pod: string): string => cluster?.pods.get(`${ns}/${pod}`)?.nodeName ?? '';
  // Links by wire id, once each (both pods' objects declare them).
  const links = new Map<number, TopoLink>();
  for (const t of topos.values()) {
    if (!visible.has(t.metadata?.namespace ?? 'default')) continue;
    for (const l of topoLinks(t)) {
      const id = clusterWireId(l.namespace, l.uid);
      if (!links.has(id) || `${l.pod}/${l.intf}` < `${links.get(id)!.pod}/${links.get(id)!.intf}`) links.set(id, l);
    }
  }
  const wires: ViewWire[] = [];
  const byId = new Map<number, MapWire>(map.wires.map((w) => [w.uid, w]));
  for (const w of map.wires) {
    const l = links.get(w.uid);
    const named = l
      ? [
          { name: `${l.namespace}/${l.pod}/${l.intf}`, pod: `${l.namespace}/${l.pod}`, node: podNode(l.namespace, l.pod) },
          { name: `${l.namespace}/${l.peerPod}/${l.peerIntf}`, pod: `${l.namespace}/${l.peerPod}`, node: podNode(l.namespace, l.peerPod) },
        ]
      : [];
    const ends = w.ends.slice(0, 2).map((e) => viewEnd(e, { name: e.name, pod: `${e.namespace}/${e.pod}`, node: e.node }));
    for (const id of named) {
      if (ends.length >= 2 || ends.some((e) => e.name === id.name)) continue;
      const s = l && statusLink(topos, l.namespace, id.pod.split('/')[1]!, l.uid);
      ends.push(statusEnd(s, id));
    }
    // A far end in a namespace the caller may not list: only its node is told.
    if (ends.length < 2) ends.push({ name: `(far end on ${w.peer_node || '?'})`, pod: `(${w.peer_node || '?'})`, node: w.peer_node, carrier: 'unknown', cable: (w.ends[0]?.far_cable as ViewEnd['cable']) === 'pulled' ? 'pulled' : 'unknown', impair_in: '', impair_out: '' });
    wires.push({ uid: w.uid, state: w.state, message: w.message, ends: [ends[0]!, ends[1]!] });
  }
  for (const [id, l] of links) {
    if (byId.has(id)) continue;
    const a = statusLink(topos, l.namespace, l.pod, l.uid);
    const b = statusLink(topos, l.namespace, l.peerPod, l.uid);
    const states = [a?.state ?? 'missing', b?.state ?? 'missing'];
    const state = STATE_RANK.find((s) => states.includes(s)) ?? 'missing';
    wires.push({
      uid: id,
      state,
      message: a?.message ?? b?.message ?? '',
      ends: [
        statusEnd(a, { name: `${l.namespace}/${l.pod}/${l.intf}`, pod: `${l.namespace}/${l.pod}`, node: podNode(l.namespace, l.pod) }),
        statusEnd(b, { name: `${l.namespace}/${l.peerPod}/${l.peerIntf}`, pod: `${l.namespace}/${l.peerPod}`, node: podNode(l.namespace, l.peerPod) }),
      ],
    });
  }
  wires.sort((x, y) => x.ends[0].name.localeCompare(y.ends[0].name, undefined, { numeric: true }) || x.uid - y.uid);
  const pods = new Map<string, string>();
  for (const w of wires) for (const e of w.ends) if (!pods.has(e.pod)) pods.set(e.pod, e.node);
  const peerUp = new Set(map.peers.filter((p) => p.up).map((p) => p.peer));
  const nodes = new Set([node, ...[...pods.values()].filter((n) => n !== '')]);
  return {
    version: 1,
    mode: 'cluster',
    lab,
    node,
    time_ms: map.time_ms,
    rate_window_ms: map.rate_window_ms,
    // This daemon reports; a node it streams to is reachable (its ends' state comes from Topology status).
    nodes: [...nodes].sort().map((n) => ({ name: n, reporting: n === node || peerUp.has(n) })),
    pods: [...pods].map(([name, n]) => ({ name, node: n })).sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true })),
    peers: map.peers,
    wires,
    token_file: '',
  };
}

/** How often an open page's view is rebuilt when the map is quiet (Topology status changes of other nodes). */
const VIEW_REFRESH_MS = 1000;

export class DaemonPage {
  private readonly gate = new StreamGate();

  constructor(
    private readonly d: PageDaemon,
    private readonly cluster: ClusterLinks,
    private readonly assets = new PageAssets(),
  ) {}

  readonly handler: PageHandler = async (rel, q, req, res) => {
    try {
      await this.route(rel, q, req, res);
    } catch (err) {
      // The page reads {"error": ...}; a stranger learns only what the error says.
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      if (err instanceof HttpFailure) {
        res.writeHead(err.status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...err.headers });
        res.end(JSON.stringify({ error: err.message }));
        return;
      }
      const e = asPatchwireError(err);
      if (e.code === 'INTERNAL') this.d.log(`page ${req.method} ${rel.slice(0, 100)} failed: ${(err as Error)?.stack ?? String(err)}`);
      sendJson(res, HTTP_STATUS[e.code], { error: e.code === 'INTERNAL' ? 'internal error (logged by the daemon)' : e.message });
    }
  };

  private async route(rel: string, q: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? '';
    if (rel === '' || rel.startsWith('assets/')) return this.assets.serve(rel, method, res);
    const routes: Record<string, string> = { 'api/view': 'GET', 'api/events': 'GET', 'api/capture': 'GET', 'api/packets': 'GET', 'api/cable': 'POST', 'api/impair': 'POST' };
    const want = routes[rel];
    if (!want) throw new HttpFailure(404, `no such path ${JSON.stringify(`/ui/${rel}`.slice(0, 100))}; the page's API is ${Object.keys(routes).map((r) => `/ui/${r}`).join(', ')}`);
    if (method !== want) throw new HttpFailure(405, `use ${want} for /ui/${rel}`, { allow: want });
    // Who is asking comes first: without a token the API server accepts, nothing about the cluster is told.
    const who = await caller(this.d, req);
    const auth = this.d.captureAuth()!;
    if (want === 'GET' && (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined)) throw new HttpFailure(413, 'GET requests here have no body', { connection: 'close' });
    if ((rel === 'api/view' || rel === 'api/events' || want === 'POST') && [...q.keys()].length > 0) throw new InvalidArgument(`/ui/${rel} takes no query parameters`);
    switch (rel) {
      case 'api/view':
        await auth.authorizeNode(who, this.d.node);
        return sendJson(res, 200, await this.view(who, this.d.mapSnapshot()));
      case 'api/events':
        await auth.authorizeNode(who, this.d.node);
        return this.events(who, req, res);
      case 'api/capture':
        return this.capture(who, q, req, res);
      case 'api/packets':
        return this.packets(who, q, req, res);
      case 'api/cable': {
        const { end, plugged } = parseCableBody(await readJson(req));
        await auth.authorizeLinkChange(who, end);
        this.local([end]);
        await this.d.setCable(end, plugged);
        return sendJson(res, 200, { end, plugged });
      }
      case 'api/impair': {
        const { end, dir, imp } = parseImpairBody(await readJson(req));
        await auth.authorizeLinkChange(who, end);
        this.local([end]);
        await this.d.setImpair(end, dir, imp);
        const e = viewEnd(this.d.mapSnapshot().wires.flatMap((w) => w.ends).find((x) => x.name === end), { name: end, pod: '', node: this.d.node });
        return sendJson(res, 200, { end, impair_in: e.impair_in, impair_out: e.impair_out });
      }
    }
  }

  /** The namespaces whose whole lab the caller may see: those of the map's ends where it may list Topology objects. */
  private async view(who: Caller, map: MapSnapshot): Promise<View> {
    const auth = this.d.captureAuth()!;
    const spaces = new Set(map.wires.flatMap((w) => w.ends.map((e) => e.namespace)));
    const visible = new Set<string>();
    for (const ns of spaces) if (await auth.maySeeLinks(who, ns)) visible.add(ns);
    return clusterView(this.d.node, this.d.lab, map, this.cluster(), visible);
  }

  /** Throws unless every end is this daemon's: 409 naming the node that holds it, 404 when none does. */
  private local(ends: string[]): void {
    const here = new Set(this.d.mapSnapshot().wires.flatMap((w) => w.ends.map((e) => e.name)));
    for (const end of ends) {
      if (here.has(end)) continue;
      const parts = end.split('/');
      if (parts.length !== 3 || parts.some((p) => p === '')) throw new InvalidArgument(`wire end '${end.slice(0, 100)}': in a cluster, name wire ends NAMESPACE/POD/INTF`);
      const at = this.cluster()?.pods.get(`${parts[0]}/${parts[1]}`)?.nodeName;
      if (at && at !== this.d.node) throw new FailedPrecondition(`${end} is on node ${at}: open the page of that node's daemon (kubectl port-forward to its patchwire pod) to capture or change it there`);
      this.d.captureSources([end], false); // throws NotFound naming the end
    }
  }

  private events(who: Caller, req: http.IncomingMessage, res: http.ServerResponse): void {
    // A page gone while its rights were checked has already closed: nothing would ever end the stream.
    if (res.closed || req.socket.destroyed) return;
    const release = this.gate.admit();
    let last = '';
    let map: MapSnapshot | null = null;
    let busy = false;
    const push = (): void => {
      if (!map || busy || res.destroyed) return;
      busy = true;
      this.view(who, map)
        .then((v) => {
          const json = JSON.stringify(v);
          // Whole views, skipped for a client that stops reading (the next one it takes is current).
          if (json !== last && res.writableLength < UI_LIMITS.maxBufferedBytes) {
            last = json;
            res.write(`event: view\ndata: ${json}\n\n`);
          }
        })
        .catch((err: unknown) => res.write(`event: error\ndata: ${JSON.stringify({ error: asPatchwireError(err).message })}\n\n`))
        .finally(() => (busy = false));
    };
    // One map watcher per open page, fed by the daemon's shared sampler.
    let w: { stop: () => void };
    try {
      w = this.d.mapWatch({
        send: (ev) => {
          map = applyMapEvent(map, ev);
          push();
          return true;
        },
      });
    } catch (err) {
      release();
      throw err;
    }
    sseHead(res);
    const tick = setInterval(push, VIEW_REFRESH_MS);
    const beat = setInterval(() => res.write(': keepalive\n\n'), 15000);
    res.on('close', () => {
      clearInterval(tick);
      clearInterval(beat);
      w.stop();
      release();
    });
  }

  /** ?end=... (deduplicated, at most UI_LIMITS.maxEnds) and the names of the other allowed parameters. */
  private ends(q: URLSearchParams, params: string[]): string[] {
    for (const k of q.keys()) if (!params.includes(k)) throw new InvalidArgument(`unknown parameter ${JSON.stringify(k.slice(0, 50))} (${params.join(', ')})`);
    const names = [...new Set(q.getAll('end'))];
    if (names.length === 0) throw new InvalidArgument('name at least one wire end: ?end=NAMESPACE/POD/INTF');
    if (names.length > UI_LIMITS.maxEnds) throw new InvalidArgument(`at most ${UI_LIMITS.maxEnds} ends at once`);
    return names;
  }

  private async capture(who: Caller, q: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const ends = this.ends(q, ['end', 'follow', 'count', 'duration', 'format']);
    await this.d.captureAuth()!.authorize(who, ends);
    this.local(ends);
    const rest = new URLSearchParams([...q].filter(([k]) => k !== 'end'));
    await serveCapture(this.d, who, ends, rest, req, res);
  }

  private async packets(who: Caller, q: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const ends = this.ends(q, ['end']);
    await this.d.captureAuth()!.authorize(who, ends);
    this.local(ends);
    const picked = this.d.captureSources(ends, false);
    const names = new Map(picked.interfaces.map((i) => [i.id, i.name]));
    // A page gone while its rights were checked has already closed: nothing would ever end the stream.
    if (res.closed || req.socket.destroyed) return;
    const release = this.gate.admit();
    let backlog: FrameSummary[] = [];
    let queue: FrameSummary[] = [];
    let ready = false;
    let lost = 0;
    let releaseGate = (): void => undefined;
    const session = new CaptureSession(
      picked.sources,
      { follow: true, count: 0, durationMs: 0, maxQueueBytes: READER_QUEUE_BYTES, onClose: () => releaseGate() },
      {
        write: (recs, ringDone) => {
          for (const r of recs) {
            const s = summarize(r.data, r.origLen, r.tsUs, names.get(r.iface) ?? '?', r.outbound);
            if (!ready) backlog.push(s);
            else queue.push(s);
          }
          if (!ready) {
            if (backlog.length > UI_LIMITS.packetBacklog * 2) backlog = backlog.slice(-UI_LIMITS.packetBacklog);
            if (ringDone) {
              ready = true;
              queue = backlog.slice(-UI_LIMITS.packetBacklog);
              backlog = [];
            }
          } else if (queue.length > UI_LIMITS.packetQueue) {
            lost += queue.length - UI_LIMITS.packetQueue;
            queue = queue.slice(-UI_LIMITS.packetQueue);
          }
          return true;
        },
        end: () => res.end(),
      },
    );
    try {
      releaseGate = this.d.captureGate.admit(who.id, session.open());
    } catch (err) {
      release();
      throw err;
    }
    sseHead(res);
    let sentReady = false;
    const flush = setInterval(() => {
      if (!ready) return;
      if (!sentReady) {
        sentReady = true;
        res.write('event: ready\ndata: {}\n\n');
      }
      if (queue.length === 0 && lost === 0) return;
      if (sendFrames(res, queue, lost)) {
        queue = [];
        lost = 0;
      }
    }, 200);
    res.on('close', () => {
      clearInterval(flush);
      session.stop();
      releaseGate();
      release();
    });
    session.start();
  }
}
