// A daemon's Prometheus metrics (/metrics on its HTTP port), through
// prom-client. Nothing is counted here: every value is the engine's own
// counter, read in batches when a scrape comes (one counters read per wire,
// one peers read, one health read per scrape), never per frame. Series
// appear and go with wires and peers, so their number is bounded by them
// (README, "Metrics": about 16 per wire end, 9 per peer, a fixed set per
// daemon).
import { Counter, Gauge, Registry } from 'prom-client';

import type { ListedWire } from '../map/hub.js';
import { splitEndName } from '../map/model.js';
import { localEnds } from '../dataplane/wire.js';
import type { EnginePeer } from '../native/wire.js';

/** The parts of the daemon's health a scrape reads (declared here so metrics do not import the daemon). */
export interface MetricsHealth {
  peers: EnginePeer[];
  unknownWire: number;
  malformed: number;
  malformedFrames: number;
  refusedStreams: number;
  tlsRefused: number;
  identityRefused: number;
  refusedConnections: number;
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
  restoring: number;
}

/** What a scrape reads of a daemon. */
export interface MetricsSource {
  readonly lab: string;
  readonly node: string;
  listWires(): ListedWire[];
  health(): MetricsHealth;
  /** open map watchers (SSE and gRPC) */
  mapWatchers(): number;
}

const END_LABELS = ['namespace', 'pod', 'interface'] as const;
const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly c: ReturnType<DaemonMetrics['define']>;
  /** scrapes answered (a scrape is a batch read; they run one at a time) */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly src: MetricsSource) {
    // lab and node on every series, the process's own ones included.
    this.registry.setDefaultLabels({ lab: src.lab, node: src.node });
    this.c = this.define();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private define() {
    const r = [this.registry];
    const end = [...END_LABELS];
    return {
      frames: new Counter({ name: 'patchwire_wire_frames_total', help: 'Frames at a wire end: rx read from the pod interface into the wire, tx written out to the pod interface.', labelNames: [...end, 'direction'], registers: r }),
      bytes: new Counter({ name: 'patchwire_wire_bytes_total', help: 'Bytes at a wire end (Ethernet frames without the virtio-net header): rx from the pod interface, tx to it.', labelNames: [...end, 'direction'], registers: r }),
      drops: new Counter({ name: 'patchwire_wire_drops_total', help: 'Frames dropped at a wire end, by cause (README: Nothing lost silently).', labelNames: [...end, 'cause'], registers: r }),
      captureDrops: new Counter({ name: 'patchwire_wire_capture_drops_total', help: 'Frames live capture readers of a wire end were too slow to take (forwarded all the same).', labelNames: end, registers: r }),
      pauses: new Counter({ name: 'patchwire_wire_backpressure_pauses_total', help: 'Times reading a wire end stopped because the queue to the peer daemon passed its high-water mark.', labelNames: end, registers: r }),
      up: new Gauge({ name: 'patchwire_wire_up', help: '1 when the wire of this end can carry frames (local pair, or the peer daemon streams are up), else 0.', labelNames: end, registers: r }),
      info: new Gauge({ name: 'patchwire_wire_info', help: 'Always 1: a wire end with its wire id, endpoint kind and the far end\'s node ("" for a wire within this node).', labelNames: [...end, 'uid', 'kind', 'peer_node'], registers: r }),
      carrier: new Gauge({ name: 'patchwire_wire_carrier', help: "1 while the pod's interface of this wire end has carrier (the wire is whole and the cable plugged at both ends), else 0.", labelNames: end, registers: r }),
      cable: new Gauge({ name: 'patchwire_wire_cable_plugged', help: '1 while the cable is plugged at this wire end, 0 while it is pulled (patchwire link down).', labelNames: end, registers: r }),
      wires: new Gauge({ name: 'patchwire_wires', help: 'Wires of this daemon by state (up, down, restoring).', labelNames: ['state'], registers: r }),
      peerConnected: new Gauge({ name: 'patchwire_peer_connected', help: 'Streams with a peer daemon: inbound (our subscription, we receive), outbound (theirs, we send); 1 up, 0 down.', labelNames: ['peer', 'direction'], registers: r }),
      peerReconnects: new Counter({ name: 'patchwire_peer_reconnects_total', help: 'Times our subscription to a peer daemon was set up again.', labelNames: ['peer'], registers: r }),
      peerFrames: new Counter({ name: 'patchwire_peer_frames_total', help: 'Frames on the streams with a peer daemon, in (received) and out (sent).', labelNames: ['peer', 'direction'], registers: r }),
      peerBatches: new Counter({ name: 'patchwire_peer_batches_total', help: 'Batches (gRPC messages) on the streams with a peer daemon.', labelNames: ['peer', 'direction'], registers: r }),
      peerQueued: new Gauge({ name: 'patchwire_peer_queued_bytes', help: 'Bytes waiting in the queue to a peer daemon (queue depth; backpressure starts at 2 MiB).', labelNames: ['peer'], registers: r }),
      peerRtt: new Gauge({ name: 'patchwire_peer_rtt_seconds', help: "Round trip of the last keepalive ping on our subscription to a peer daemon (every 5 s, millisecond resolution; 0 before the first answer).", labelNames: ['peer'], registers: r }),
      unknownWire: new Counter({ name: 'patchwire_unknown_wire_frames_total', help: 'Frames peers sent for a wire this daemon does not have.', registers: r }),
      malformed: new Counter({ name: 'patchwire_malformed_batches_total', help: 'Batches from peers that did not decode.', registers: r }),
      malformedFrames: new Counter({ name: 'patchwire_malformed_frames_total', help: 'Frames in batches from peers that did not decode.', registers: r }),
      refusedStreams: new Counter({ name: 'patchwire_refused_streams_total', help: 'Peer streams refused (lab, hello, protocol, method).', registers: r }),
      tlsRefused: new Counter({ name: 'patchwire_tls_refused_total', help: 'Data-plane connections refused in the TLS handshake.', registers: r }),
      identityRefused: new Counter({ name: 'patchwire_identity_refused_total', help: "Subscribers whose certificate named another node than their hello.", registers: r }),
      refusedConnections: new Counter({ name: 'patchwire_refused_connections_total', help: 'Data-plane connections closed at accept by the connection bounds.', registers: r }),
      loopDelay: new Gauge({ name: 'patchwire_event_loop_delay_seconds', help: "How late the daemon's event loop (control plane, not the frame path) ran over the last 10-20 s: p99 and max.", labelNames: ['stat'], registers: r }),
      restoring: new Gauge({ name: 'patchwire_wires_restoring', help: 'Wires of the state file not re-created yet.', registers: r }),
      // prom-client's default collectors are not used: some of their names
      // (nodejs_active_handles_total, a gauge) fail `promtool check metrics`.
      // The engine thread has no name of its own to find it among the
      // process's threads, so its CPU is in the process's.
      cpu: new Counter({ name: 'patchwire_process_cpu_seconds_total', help: 'CPU time of the daemon process (the frame engine thread included), user and system.', labelNames: ['mode'], registers: r }),
      rss: new Gauge({ name: 'patchwire_process_resident_memory_bytes', help: 'Resident memory of the daemon process.', registers: r }),
      mapWatchers: new Gauge({ name: 'patchwire_map_watchers', help: 'Open live link map streams (SSE and gRPC).', registers: r }),
    };
  }

  /** The metrics text; scrapes run one after another so each reads one consistent batch. */
  render(): Promise<string> {
    const run = this.queue.then(() => this.collect());
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async collect(): Promise<string> {
    const c = this.c;
    const wires = this.src.listWires();
    const h = this.src.health();
    // Series of wires and peers that went away go with them.
    for (const m of Object.values(c)) m.reset();
    const byState: Record<string, number> = { up: 0, down: 0, restoring: 0 };
    for (const w of wires) {
      byState[w.state] = (byState[w.state] ?? 0) + 1;
      const specs = localEnds(w.spec); // a segment: every member here
      specs.forEach((spec, i) => {
        const st = w.ends[i];
        const id = splitEndName(st?.name ?? `${spec.pod}/${spec.ifname}`);
        const l = { namespace: id.namespace, pod: id.pod, interface: id.interface };
        c.info.set({ ...l, uid: String(w.spec.uid), kind: spec.kind, peer_node: w.spec.peer?.node ?? '' }, 1);
        c.up.set(l, w.state === 'up' ? 1 : 0);
        if (!st) return; // restoring: no counters yet
        const k = st.counters;
        c.frames.inc({ ...l, direction: 'rx' }, k.rxFrames);
        c.frames.inc({ ...l, direction: 'tx' }, k.txFrames);
        c.bytes.inc({ ...l, direction: 'rx' }, k.rxBytes);
        c.bytes.inc({ ...l, direction: 'tx' }, k.txBytes);
        for (const [cause, n] of Object.entries(k.drops)) c.drops.inc({ ...l, cause: snake(cause) }, n);
        c.captureDrops.inc(l, k.captureDrops);
        c.pauses.inc(l, k.backpressurePauses);
        if (st.carrier) {
          c.carrier.set(l, st.carrier.on ? 1 : 0);
          c.cable.set(l, st.carrier.cable === 'plugged' ? 1 : 0);
        }
      });
    }
    for (const [state, n] of Object.entries(byState)) c.wires.set({ state }, n);
    for (const p of h.peers) {
      const peer = p.node;
      c.peerConnected.set({ peer, direction: 'inbound' }, p.inbound ? 1 : 0);
      c.peerConnected.set({ peer, direction: 'outbound' }, p.outbound ? 1 : 0);
      c.peerReconnects.inc({ peer }, p.reconnects);
      c.peerFrames.inc({ peer, direction: 'in' }, p.framesIn);
      c.peerFrames.inc({ peer, direction: 'out' }, p.framesOut);
      c.peerBatches.inc({ peer, direction: 'in' }, p.batchesIn);
      c.peerBatches.inc({ peer, direction: 'out' }, p.batchesOut);
      c.peerQueued.set({ peer }, p.queuedBytes);
      c.peerRtt.set({ peer }, p.rttMs / 1000);
    }
    c.unknownWire.inc(h.unknownWire);
    c.malformed.inc(h.malformed);
    c.malformedFrames.inc(h.malformedFrames);
    c.refusedStreams.inc(h.refusedStreams);
    c.tlsRefused.inc(h.tlsRefused);
    c.identityRefused.inc(h.identityRefused);
    c.refusedConnections.inc(h.refusedConnections);
    c.loopDelay.set({ stat: 'p99' }, h.eventLoopDelayP99Ms / 1000);
    c.loopDelay.set({ stat: 'max' }, h.eventLoopDelayMaxMs / 1000);
    c.restoring.set(h.restoring);
    c.mapWatchers.set(this.src.mapWatchers());
    const cpu = process.cpuUsage();
    c.cpu.inc({ mode: 'user' }, cpu.user / 1e6);
    c.cpu.inc({ mode: 'system' }, cpu.system / 1e6);
    c.rss.set(process.memoryUsage.rss());
    return this.registry.metrics();
  }
}
