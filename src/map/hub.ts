// A daemon's side of the live link map: takes samples of its wires and peers
// (one counters read per wire, one peers read, per sample), works out rates
// between samples, and feeds every watcher (SSE on the HTTP port, WatchMap
// on the control API) from one shared sampler, which runs only while someone
// watches. A watcher that cannot keep up skips events and gets a full map
// once it has drained: it never makes the daemon queue without bound.
import { ResourceExhausted } from '../errors.js';
import { endImpairToPb } from '../dataplane/impair.js';
import type { EnginePeer } from '../native/wire.js';
import { type EndCounters, localEnds, type WireSpec } from '../dataplane/wire.js';
import { diffMaps, fullEvent, MAP_VERSION, type MapEvent, type MapPeer, type MapSnapshot, type MapWire, type MapWireEnd, sortMap, splitEndName } from './model.js';

/** A wire as the daemon lists it (its WireStatus; declared here so the map does not import the daemon). */
export interface ListedWire {
  spec: WireSpec;
  state: string;
  message?: string;
  ends: Array<{ name: string; ifindex: number; counters: EndCounters; carrier?: { on: boolean; cable: 'plugged' | 'pulled'; reason?: string; far?: string; changes?: number } }>;
}

/** What the hub reads of a daemon. */
export interface MapSource {
  readonly lab: string;
  readonly node: string;
  /** data-plane address */
  readonly listen: string;
  listWires(): ListedWire[];
  peers(): EnginePeer[];
}

/** How often watchers get an event (when anything changed). */
export const MAP_TICK_MS = 1000;
/** Watchers on one daemon at once (SSE and gRPC together). */
export const MAX_MAP_WATCHERS = 32;

const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** A watcher's sink: returns false when it is full (it then gets nothing until resumed). */
export interface MapWatcher {
  send(ev: MapEvent): boolean;
}

interface Sub {
  w: MapWatcher;
  behind: boolean;
}

type Totals = Map<string, { rxF: number; rxB: number; txF: number; txB: number; drops: number }>;

export class MapHub {
  private readonly subs = new Set<Sub>();
  private timer: NodeJS.Timeout | null = null;
  private soon: NodeJS.Timeout | null = null;
  private seq = 0;
  /** the previous sample's counters, for rates */
  private base: { t: number; totals: Totals } | null = null;
  /** what watchers have been sent */
  private sent: MapSnapshot | null = null;

  constructor(private readonly src: MapSource) {}

  get watchers(): number {
    return this.subs.size;
  }

  /** A fresh map; its rates are over the time since the previous sample (any caller's). */
  snapshot(): MapSnapshot {
    return this.sample();
  }

  /**
   * Starts feeding `w`: a full map at once, then changes every MAP_TICK_MS.
   * Returns the function that stops it. Throws ResourceExhausted past
   * MAX_MAP_WATCHERS.
   */
  watch(w: MapWatcher): { stop: () => void; resume: () => void } {
    if (this.subs.size >= MAX_MAP_WATCHERS) throw new ResourceExhausted(`at most ${MAX_MAP_WATCHERS} map watchers on this daemon at once`);
    const sub: Sub = { w, behind: false };
    this.subs.add(sub);
    if (!this.sent) this.sent = this.sample();
    sub.behind = !w.send(fullEvent(this.sent));
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), MAP_TICK_MS);
      this.timer.unref();
    }
    return {
      stop: () => {
        this.subs.delete(sub);
        if (this.subs.size === 0) this.idle();
      },
      resume: () => {
        if (!sub.behind || !this.subs.has(sub)) return;
        sub.behind = !w.send(fullEvent(this.sent ?? this.sample()));
      },
    };
  }

  /** Something changed (a wire added or removed): tell watchers soon rather than at the next tick. */
  changed(): void {
    if (this.subs.size === 0 || this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = null;
      this.tick();
    }, 50);
    this.soon.unref();
  }

  private tick(): void {
    if (this.subs.size === 0) return;
    const next = this.sample();
    const ev = this.sent ? diffMaps(this.sent, next) : fullEvent(next);
    this.sent = next;
    if (!ev) return;
    for (const s of this.subs) if (!s.behind) s.behind = !s.w.send(ev);
  }

  private idle(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    this.timer = this.soon = null;
    this.sent = null;
  }

  /** Ends the sampler; watchers are ended by their transports. */
  close(): void {
    this.subs.clear();
    this.idle();
  }

  private sample(): MapSnapshot {
    const now = Date.now();
    const wires = this.src.listWires();
    const peers = this.src.peers();
    const totals: Totals = new Map();
    const window = this.base ? now - this.base.t : 0;
    const rate = (cur: number, prev: number | undefined): number => (window > 0 && prev !== undefined && cur >= prev ? Math.round(((cur - prev) * 1000) / window * 100) / 100 : 0);
    const pods = new Map<string, { namespace: string; name: string; node: string }>();
    const mapWires: MapWire[] = wires.map((w) => {
      const specs = localEnds(w.spec); // a segment: every member here
      const isSegment = w.spec.segment !== undefined;
      const ends: MapWireEnd[] = specs.map((spec, i) => {
        const st = w.ends[i];
        const name = st?.name ?? `${spec.pod}/${spec.ifname}`;
        const id = splitEndName(name);
        pods.set(`${id.namespace}/${id.pod}`, { namespace: id.namespace, name: id.pod, node: this.src.node });
        const c = st?.counters;
        const drops: Record<string, number> = {};
        let dropsTotal = 0;
        // Every cause the engine counts, by its snake_case name: causes added later show up by themselves.
        for (const [k, v] of Object.entries(c?.drops ?? {})) {
          drops[snake(k)] = v;
          dropsTotal += v;
        }
        const cur = { rxF: c?.rxFrames ?? 0, rxB: c?.rxBytes ?? 0, txF: c?.txFrames ?? 0, txB: c?.txBytes ?? 0, drops: dropsTotal };
        // Keyed by uid and name: a wire removed and added again starts afresh.
        const key = `${w.spec.uid}:${name}`;
        totals.set(key, cur);
        const prev = this.base?.totals.get(key);
        return {
          name,
          namespace: id.namespace,
          pod: id.pod,
          interface: id.interface,
          node: this.src.node,
          kind: spec.kind,
          ifindex: st?.ifindex ?? 0,
          rx_frames: cur.rxF,
          rx_bytes: cur.rxB,
          tx_frames: cur.txF,
          tx_bytes: cur.txB,
          drops,
          drops_total: dropsTotal,
          capture_drops: c?.captureDrops ?? 0,
          backpressure_pauses: c?.backpressurePauses ?? 0,
          rx_fps: rate(cur.rxF, prev?.rxF),
          rx_bps: rate(cur.rxB * 8, prev && prev.rxB * 8),
          tx_fps: rate(cur.txF, prev?.txF),
          tx_bps: rate(cur.txB * 8, prev && prev.txB * 8),
          drop_rate: rate(cur.drops, prev?.drops),
          carrier: st?.carrier?.on ?? false,
          carrier_reason: st?.carrier?.reason ?? '',
          cable: st?.carrier?.cable ?? 'plugged',
          far_cable: st?.carrier?.far ?? 'unknown',
          carrier_changes: st?.carrier?.changes ?? 0,
          // Segment members have none (refused when set); a wire's are its local end's and local peer's.
          impair: isSegment ? null : endImpairToPb(i === 0 ? w.spec.impair?.local : i === 1 ? w.spec.impair?.localPeer : undefined),
        };
      });
      return { uid: w.spec.uid, state: w.state, peer_node: w.spec.peer?.node ?? '', message: w.message ?? '', ends };
    });
    this.base = { t: now, totals };
    const mapPeers: MapPeer[] = peers.map((p) => ({
      node: this.src.node,
      peer: p.node,
      address: p.address,
      inbound: p.inbound,
      outbound: p.outbound,
      up: p.inbound && p.outbound,
      rtt_ms: p.rttMs,
      reconnects: p.reconnects,
      queued_bytes: p.queuedBytes,
      frames_in: p.framesIn,
      frames_out: p.framesOut,
      last_error: p.lastError,
    }));
    return sortMap({
      version: MAP_VERSION,
      lab: this.src.lab,
      node: this.src.node,
      seq: ++this.seq,
      time_ms: now,
      rate_window_ms: window,
      nodes: [{ name: this.src.node, address: this.src.listen, reporting: true }, ...peers.filter((p) => p.node !== this.src.node).map((p) => ({ name: p.node, address: p.address, reporting: false }))],
      peers: mapPeers,
      pods: [...pods.values()],
      wires: mapWires,
    });
  }
}
