// The wire daemon: owns ports, wires, peer streams and the control API, and
// persists its desired wires so a restart re-attaches to the same interfaces.
import { watch } from 'node:fs';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';

import * as grpc from '@grpc/grpc-js';

import { createEndpoint, type Endpoint, endpointProblems, type EndpointSpec } from '../endpoint/index.js';
import { type EngineCarrier, type EnginePeer, type NativeEngine, wire } from '../native/wire.js';
import { type DataTls, probePeer } from '../dataplane/probe.js';
import { EngineRing } from '../dataplane/engine-ring.js';
import { type EndImpairments, type ImpairDir, type Impairment, impairmentProblem, normalizeEnd, normalizeImpairment } from '../dataplane/impair.js';
import { type EndCounters, endCounters, localEnds, SEGMENT_LIMITS, Wire, type WireEnd, type WireSpec } from '../dataplane/wire.js';
import { DEFAULT_RING_BYTES } from '../capture/ring.js';
import type { CaptureInterface } from '../capture/format.js';
import type { CaptureSource } from '../capture/session.js';
import { FileCapture, type FileCaptureOptions } from '../capture/files.js';
import { parseHostPort } from '../util/hostport.js';
import { rangeProblem } from '../limits.js';
import { readState, writeState } from './statefile.js';
import { coalesced } from '../util/serial.js';
import { AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable } from '../errors.js';
import type { CaptureAuth } from '../capture/auth.js';
import { CaptureGate, foldWires } from '../capture/limits.js';
import type { HttpDaemon, PageHandler } from '../capture/http.js';
import { MapHub } from '../map/hub.js';
import { IdleMemory } from '../util/idle-memory.js';
import { netlink, netnsPath } from '../netns/ip.js';
import { qmpSetLink } from '../endpoint/qmp.js';
import { DaemonMetrics } from '../metrics/metrics.js';

export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

export interface DaemonOptions {
  node: string;
  lab: string;
  /** host:port of the data-plane listener */
  listen: string;
  /** gRPC address of the control listener, e.g. unix:///run/patchwire/n1.sock */
  control: string;
  /** file holding the desired wires ('' for none) */
  state: string;
  /** null: plain text (only when asked for) */
  tls: TlsFiles | null;
  /** capture ring per wire end, bytes (default DEFAULT_RING_BYTES) */
  captureRingBytes?: number;
  /** host:port for the HTTP capture endpoint ('' for none) */
  http?: string;
  /** host:port serving only /healthz and /readyz, for probes ('' for none) */
  health?: string;
  /** write every wire end to rotated pcapng files here (absent: no files) */
  captureFiles?: FileCaptureOptions;
  /**
   * Who decides the wires: 'api' (the control API, lab mode) or 'cluster'
   * (Topology objects; the control API then only reads).
   */
  wiresFrom?: 'api' | 'cluster';
  /** how long carrier stays on while a wire's far daemon is out of reach (default 3000 ms; a wire may set its own) */
  carrierHoldMs?: number;
  log?: (msg: string) => void;
}

/** A wire end's carrier in status (see wire/src/engine/carrier.h). */
export interface CarrierStatus {
  on: boolean;
  /** why it is as it is (the reason of the last change) */
  reason: string;
  /** the cable at this end */
  cable: 'plugged' | 'pulled';
  /** the far end as its daemon last said ('unknown': not said since the stream to it opened) */
  far: 'plugged' | 'pulled' | 'gone' | 'unknown';
  holdMs: number;
  /** '' or why the last change could not be applied to the interface */
  lastError: string;
  /** changes since the wire was added on this daemon */
  changes: number;
}

/** One carrier change of a wire end. */
export interface LinkEvent {
  uid: number;
  /** "pod/ifname" */
  end: string;
  node: string;
  /** unix microseconds */
  tsUs: number;
  carrier: boolean;
  reason: string;
}

/** A part of the state file owned by another module (the CNI pod registry, say). */
export interface StateSection {
  save(): unknown;
  load(v: unknown): void;
}

export interface EndStatus {
  /** file capture: '' (none), 'writing PATH', or 'stopped: REASON' */
  fileCapture: string;
  name: string;
  ifindex: number;
  vnetHdr: boolean;
  counters: EndCounters;
  carrier: CarrierStatus;
}

/** A wire's state and its ends' carrier, without counters (Daemon.wireStates). */
export interface WireState {
  spec: WireSpec;
  state: 'up' | 'down' | 'restoring';
  ends: Array<Pick<EndStatus, 'name' | 'carrier'>>;
  message?: string;
}

export interface WireStatus {
  spec: WireSpec;
  /** restoring: in the state file but not re-created yet (retried with backoff; `message` says why) */
  state: 'up' | 'down' | 'restoring';
  ends: EndStatus[];
  message?: string;
}

/** A wire of the state file that could not be re-created yet. */
interface Restoring {
  spec: WireSpec;
  /** removed through the API while an attempt ran */
  removed?: boolean;
  attempts: number;
  error: string;
  timer: NodeJS.Timeout | null;
  /** a host end's interface vanished or was recreated: re-attached as soon as it is there */
  vanished?: boolean;
}

/** How often host ends are checked (interface gone or recreated) and their guests' link state followed. */
export const HOST_WATCH_MS = 250;
/** How often the event loop's lateness is sampled. */
const LOOP_SAMPLE_MS = 100;

/**
 * Node 20's event-loop histogram records the whole time between two samples
 * (an idle loop reads 100 ms at a 100 ms resolution), so the lateness is what
 * is left after the sampling interval; in ms, to 0.01.
 */
export function loopLatenessMs(sampleNs: number): number {
  return Math.round(Math.max(0, sampleNs / 1e6 - LOOP_SAMPLE_MS) * 100) / 100;
}
/**
 * A guest's link is taken down only once its end has been without carrier
 * this long after the daemon (re)attached: a restarted daemon's wire comes up
 * without carrier until its peer stream is back, and the guest must not see
 * that (carrier is held across a daemon restart, like a pod's).
 */
export const GUEST_LINK_SETTLE_MS = 3000;

/** What a QEMU guest's NIC was last told (QMP set_link), per wire end. */
interface GuestLink {
  sent: boolean | null;
  since: number;
  busy: boolean;
  lastError: string;
}

function carrierStatus(c: EngineCarrier | undefined): CarrierStatus {
  if (!c) return { on: false, reason: '', cable: 'plugged', far: 'unknown', holdMs: 0, lastError: '', changes: 0 };
  return {
    on: c.on,
    reason: c.reason,
    cable: c.plugged ? 'plugged' : 'pulled',
    far: !c.farKnown ? 'unknown' : !c.farPresent ? 'gone' : c.farPlugged ? 'plugged' : 'pulled',
    holdMs: c.holdMs,
    lastError: c.lastError,
    changes: c.eventsTotal,
  };
}

/** Retry delays of a failed restore: 1 s doubling up to 30 s. */
export const RESTORE_RETRY_MS = { first: 1000, max: 30000 };

/** A peer daemon as the engine sees it (both directions of its stream). */
export type PeerStats = EnginePeer;

export interface Health {
  node: string;
  lab: string;
  pid: number;
  listen: string;
  wires: number;
  peers: PeerStats[];
  unknownWire: number;
  malformed: number;
  /** frames in batches that could not be decoded */
  malformedFrames: number;
  /** peer streams refused (lab, hello, protocol, method) */
  refusedStreams: number;
  tlsRefused: number;
  lastTlsRefusal: string;
  identityRefused: number;
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
  refusedConnections: number;
  lastConnectionRefusal: string;
  /** this daemon's TLS identity (null: plain text) */
  tls: { names: string[]; notAfter: number; serial: string; rotations: number; lastRotationError: string } | null;
  rtPriority: number;
  keepsFreedMemory: boolean;
  /** '' or what was wrong with the state file at start and what was done about it */
  stateFile: string;
  /** wires of the state file not re-created yet (see listWires) */
  restoring: number;
}

/**
 * Buffer sizes for experiments (bench/): PATCHWIRE_PORT_RCVBUF (bytes the
 * kernel may hold for a port before it drops) and PATCHWIRE_PEER_HIGH_WATER
 * (queued bytes for a peer past which ports pause). Not user settings.
 */
function engineTuning(): { portRcvBufBytes?: number; highWaterBytes?: number } {
  const num = (v: string | undefined, min: number, max: number): number | undefined => {
    const n = Number(v);
    return v && Number.isInteger(n) && n >= min && n <= max ? n : undefined;
  };
  const rcv = num(process.env.PATCHWIRE_PORT_RCVBUF, 65536, 64 << 20);
  const hw = num(process.env.PATCHWIRE_PEER_HIGH_WATER, 65536, 8 << 20);
  return { ...(rcv ? { portRcvBufBytes: rcv } : {}), ...(hw ? { highWaterBytes: hw } : {}) };
}

/** Mutual TLS: a peer without a certificate from our CA can neither subscribe nor be subscribed to. */
async function dataTls(tls: TlsFiles | null): Promise<DataTls | null> {
  if (!tls) return null;
  const [cert, key, ca] = await Promise.all([readFile(tls.cert), readFile(tls.key), readFile(tls.ca)]);
  return { cert, key, ca };
}

function bindAsync(server: grpc.Server, addr: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(addr, creds, (err, port) => (err ? reject(new Error(`cannot listen on ${addr}: ${err.message}`)) : resolve(port))),
  );
}

/** Free heap memory the allocator may keep for reuse (see Daemon.start). */
export const KEEP_FREED_BYTES = 64 << 20;

export class Daemon {
  private readonly wires = new Map<number, Wire>();
  private readonly busy = new Set<number>();
  private readonly restoring = new Map<number, Restoring>();
  private hostWatch: NodeJS.Timeout | null = null;
  private hostWatchBusy = false;
  /** by "uid/end index" */
  private readonly guestLinks = new Map<string, GuestLink>();
  /** see Health.stateFile */
  private stateDamage = '';
  private engine!: NativeEngine;
  private dataTls: DataTls | null = null;
  /** why the last attempt to load rotated TLS files failed ('' when it did not) */
  private lastRotationError = '';
  private tlsWatchers: import('node:fs').FSWatcher[] = [];
  private tlsReloadTimer: NodeJS.Timeout | null = null;
  private readonly onHangup = (): void => this.reloadTlsSoon(0);
  /**
   * How late the event loop runs (health; the bench reads it under load),
   * over the last complete 10 s window and the current one, so start-up
   * work does not stay in the figure for the daemon's whole life. Sampled
   * every 100 ms: the histogram's timer is what wakes an idle daemon (at
   * 10 ms it was 100 wake-ups a second, about half the idle CPU of a lab).
   */
  private readonly loopDelay = monitorEventLoopDelay({ resolution: LOOP_SAMPLE_MS });
  private lastLoopWindow = { p99: 0, max: 0 };
  /** grows with every wire added, removed or changed (statesRevision) */
  private wiresRevision = 0;
  private loopWindowTimer: NodeJS.Timeout | null = null;
  /** live capture readers by engine reader id */
  private readonly ringReaders = new Map<number, EngineRing>();
  private readonly controlServer = new grpc.Server();
  /** whether the allocator keeps freed memory (glibc); see start() */
  keepsFreedMemory = false;
  /** SCHED_RR priority the daemon got (0: normal scheduling) */
  rtPriority = 0;
  private httpServer: import('node:http').Server | null = null;
  private healthServer: import('node:http').Server | null = null;
  private readonly files = new Map<WireEnd, FileCapture>();
  private readonly log: (msg: string) => void;
  private readonly sections = new Map<string, StateSection>();
  /** null when ready; otherwise why not (served on /readyz) */
  notReady: () => string | null = () => null;
  /** who may capture over HTTP (set before start; null: nobody can be authenticated) */
  captureAuth: CaptureAuth | null = null;
  /** the browser view on the HTTP port (cluster mode sets it; src/ui/daemon-page.ts) */
  pageHandler: PageHandler | null = null;
  /** sessions and bytes per capture caller, for HTTP and the control API alike */
  readonly captureGate = new CaptureGate();
  /** the live link map (HTTP /map, /map/events; ControlService GetMap, WatchMap) */
  readonly map: MapHub;
  /** gives back what a burst of wire changes left behind, once it settles */
  readonly idleMemory: IdleMemory;
  /** /metrics; made when the HTTP port is (prom-client's default collectors cost a little) */
  private metrics: DaemonMetrics | null = null;

  constructor(readonly opts: DaemonOptions) {
    this.log = opts.log ?? ((m) => process.stderr.write(`[${opts.node}] ${m}\n`));
    this.map = new MapHub({ lab: opts.lab, node: opts.node, listen: opts.listen, listWires: () => this.listWires(), peers: () => this.engine.peers() });
    this.idleMemory = new IdleMemory(() => wire.returnFreedMemory(), this.log);
  }

  /**
   * Runs the daemon's threads at real-time priority `prio` (SCHED_RR), so a
   * pod that keeps the cores busy cannot make frames wait for the scheduler
   * (under iperf3 load: ping p50 5 ms at normal priority, 0.45 ms at 1).
   * Where the kernel refuses (no CAP_SYS_NICE, a cgroup without real-time
   * budget) the daemon says so and runs at normal priority.
   */
  setRealtime(prio: number): void {
    if (prio === 0) return;
    try {
      wire.setScheduling(prio);
      this.rtPriority = prio;
    } catch (err) {
      this.log(`running at normal priority: real-time priority ${prio} refused (${(err as Error).message})`);
    }
  }

  async start(controlService: (d: Daemon) => [grpc.ServiceDefinition, grpc.UntypedServiceImplementation]): Promise<void> {
    // node:http2 allocates and frees a 64 KiB buffer per socket read; keeping
    // freed heap memory stops glibc from trimming it and faulting it back in.
    this.keepsFreedMemory = wire.keepFreedMemory(KEEP_FREED_BYTES);
    this.dataTls = await dataTls(this.opts.tls);
    const hp = parseHostPort(this.opts.listen);
    if (!hp) throw new Error(`listen address '${this.opts.listen}' is not host:port`);
    // The frame engine owns the data port, the peer streams and every port;
    // it tells us only when a live capture reader has frames waiting.
    this.engine = new wire.Engine(
      {
        node: this.opts.node,
        lab: this.opts.lab,
        listenHost: hp.host,
        listenPort: hp.port,
        ...(this.dataTls ? { tls: this.dataTls } : {}),
        ...(this.opts.carrierHoldMs ? { carrierHoldMs: this.opts.carrierHoldMs } : {}),
        ...engineTuning(),
      },
      (reader) => this.ringReaders.get(reader)?.drain(),
    );
    if (this.opts.tls) this.watchTls(this.opts.tls);
    this.loopDelay.enable();
    this.loopWindowTimer = setInterval(() => {
      this.lastLoopWindow = { p99: this.loopDelay.percentile(99), max: this.loopDelay.max };
      this.loopDelay.reset();
    }, 10_000);
    this.loopWindowTimer.unref();
    const [def, impl] = controlService(this);
    this.controlServer.addService(def, impl);
    if (this.opts.control.startsWith('unix:')) {
      const sock = this.opts.control.replace(/^unix:(\/\/)?/, '');
      await mkdir(path.dirname(sock), { recursive: true, mode: 0o700 });
      await import('node:fs/promises').then((fs) => fs.rm(sock, { force: true }));
    }
    if (this.opts.control.startsWith('unix:')) {
      // Root only, whatever the umask: the socket is created with the
      // process umask (000 would let anyone add wires), so narrow it for the
      // bind and set the mode explicitly after.
      const sock = this.opts.control.replace(/^unix:(\/\/)?/, '');
      const old = process.umask(0o177);
      try {
        await bindAsync(this.controlServer, this.opts.control, grpc.ServerCredentials.createInsecure());
      } finally {
        process.umask(old);
      }
      await chmod(sock, 0o600);
    } else {
      await bindAsync(this.controlServer, this.opts.control, grpc.ServerCredentials.createInsecure());
    }
    if (this.opts.http) {
      const { startHttp } = await import('../capture/http.js');
      this.httpServer = await startHttp(this.httpView(), this.opts.http);
    }
    if (this.opts.health) {
      const { startHttp } = await import('../capture/http.js');
      this.healthServer = await startHttp(this.httpView(), this.opts.health, false);
    }
    await this.restore();
    this.log(`listening on ${this.opts.listen}, control ${this.opts.control}, ${this.wires.size} wires`);
    this.idleMemory.started();
  }

  /** What the HTTP ports may read of the daemon. */
  private httpView(): HttpDaemon {
    return {
      node: this.opts.node,
      lab: this.opts.lab,
      health: () => this.health(),
      notReady: () => this.notReady(),
      captureSources: (names, listAll) => this.captureSources(names, listAll),
      captureAuth: () => this.captureAuth,
      captureGate: this.captureGate,
      metrics: async () => {
        this.metrics ??= new DaemonMetrics({ lab: this.opts.lab, node: this.opts.node, listWires: () => this.listWires(), health: () => this.health(), mapWatchers: () => this.map.watchers });
        return { contentType: this.metrics.contentType, text: await this.metrics.render() };
      },
      mapSnapshot: () => this.map.snapshot(),
      mapWatch: (w) => this.map.watch(w),
      page: () => this.pageHandler,
      log: (m) => this.log(m),
    };
  }

  /** Keeps `section` in the state file under `name`; register before start(). */
  addStateSection(name: string, section: StateSection): void {
    this.sections.set(name, section);
  }

  /**
   * Re-creates the wires of the state file, re-attaching to existing
   * interfaces. A damaged file never stops the daemon: the last good copy is
   * used and the damage reported (log, health). A wire that cannot be
   * re-created (its interface or namespace is not there yet) stays in the
   * state file and in listWires as 'restoring', and is retried with backoff.
   */
  private async restore(): Promise<void> {
    if (!this.opts.state) return;
    const read = await readState(this.opts.state);
    if (read.damage) {
      this.stateDamage = read.damage;
      this.log(read.damage);
    }
    if (!read.content) return;
    for (const [name, section] of this.sections) {
      if (read.content[name] === undefined) continue;
      try {
        section.load(read.content[name]);
      } catch (err) {
        this.stateDamage ||= `state file ${this.opts.state}: section ${name} not loaded: ${(err as Error).message}`;
        this.log(`state file ${this.opts.state}: section ${name} not loaded: ${(err as Error).message}`);
      }
    }
    // Listed as restoring from the start (the control API answers while this
    // runs): a client never takes a wire still being re-attached for a lost one.
    const specs = read.content.wires as WireSpec[];
    for (const spec of specs) this.restoring.set(spec.uid, { spec, attempts: 0, error: 'being restored after the daemon started', timer: null });
    if (read.from === 'bak') await this.persist().catch((err: Error) => this.log(`writing the state file failed: ${err.message}`));
    for (const spec of specs) {
      const r = this.restoring.get(spec.uid);
      if (r) await this.tryRestore(r);
    }
  }

  private async tryRestore(r: Restoring): Promise<void> {
    r.timer = null;
    try {
      // Stays listed as restoring while the attempt runs.
      await this.addWire(r.spec, { attach: true, persist: false, checkPeer: false, keepOnFailure: true, restoring: true });
      this.restoring.delete(r.spec.uid);
      if (r.removed) await this.removeWire(r.spec.uid);
      else if (r.attempts > 0) this.log(`restored wire ${r.spec.uid} after ${r.attempts + 1} attempts`);
    } catch (err) {
      // Removed or re-added through the API meanwhile: nothing left to restore.
      if (r.removed || this.wires.has(r.spec.uid)) return;
      r.attempts++;
      r.error = (err as Error).message;
      const delay = Math.min(RESTORE_RETRY_MS.first * 2 ** (r.attempts - 1), RESTORE_RETRY_MS.max);
      this.log(`restoring wire ${r.spec.uid} failed (attempt ${r.attempts}, next in ${delay / 1000}s): ${r.error}`);
      r.timer = setTimeout(() => void this.tryRestore(r), delay);
      r.timer.unref();
    }
  }

  /** Writes the desired wires; writes are queued so concurrent API calls never interleave them. */
  readonly persist = coalesced(() => this.writeState());

  private async writeState(): Promise<void> {
    if (!this.opts.state) return;
    await mkdir(path.dirname(this.opts.state), { recursive: true });
    // Wires still being restored are desired too: never dropped from the file.
    const wires = [...this.wires.values(), ...[...this.restoring.values()].filter((r) => !this.wires.has(r.spec.uid))].map((w) => w.spec).sort((a, b) => a.uid - b.uid);
    const extra: Record<string, unknown> = {};
    for (const [name, section] of this.sections) extra[name] = section.save();
    await writeState(this.opts.state, JSON.stringify({ version: 1, node: this.opts.node, wires, ...extra }, null, 1));
  }

  private specProblems(spec: WireSpec): string[] {
    const out: string[] = [];
    const u = rangeProblem('wire uid', spec.uid, 'wireUid');
    if (u) out.push(u);
    if (spec.captureRingBytes !== undefined) {
      const r = rangeProblem('capture_ring_bytes', spec.captureRingBytes, 'captureRingBytes');
      if (r) out.push(r);
    }
    if (spec.carrierHoldMs) {
      const r = rangeProblem('carrier_hold_ms', spec.carrierHoldMs, 'carrierHoldMs');
      if (r) out.push(r);
    }
    for (const e of [spec.local, spec.localPeer, ...(spec.segment?.moreLocal ?? [])]) {
      if (e?.cable !== undefined && e.cable !== 'plugged' && e.cable !== 'pulled') out.push(`cable '${String(e.cable)}' is not plugged or pulled`);
    }
    if (!spec.local) return [...out, 'wire has no local endpoint'];
    const ends = localEnds(spec);
    for (const e of ends) out.push(...endpointProblems(e).map((p) => `${e.pod || e.netns}/${e.ifname}: ${p}`));
    if (spec.segment) return [...out, ...this.segmentProblems(spec)];
    if (!!spec.peer === !!spec.localPeer) out.push('a wire needs exactly one of peer (another daemon) or local_peer (this daemon)');
    if (spec.peer) {
      if (!spec.peer.node) out.push('peer node name is empty');
      if (!parseHostPort(spec.peer.address)?.host) out.push(`peer address '${spec.peer.address}' is not host:port`);
    }
    if (spec.localPeer && spec.localPeer.netns === spec.local.netns && spec.localPeer.ifname === spec.local.ifname) {
      out.push(`wire ${spec.uid} joins ${spec.local.ifname} to itself`);
    }
    if (spec.impair?.localPeer && !spec.localPeer) out.push('impairments for a local peer end, but the wire has no local peer');
    for (const [which, e] of [['local', spec.impair?.local], ['local peer', spec.impair?.localPeer]] as const) {
      for (const dir of ['in', 'out'] as const) {
        const p = e?.[dir] ? impairmentProblem(e[dir]!) : null;
        if (p) out.push(`${which} end, ${dir}: ${p}`);
      }
    }
    return out;
  }

  /** A segment: members here and peer daemons within the engine's bounds, no wire fields, no impairments (not supported on segments yet). */
  private segmentProblems(spec: WireSpec): string[] {
    const out: string[] = [];
    const seg = spec.segment!;
    if (spec.peer || spec.localPeer) out.push(`segment ${spec.uid}: peer and local_peer are for wires; a segment names its daemons in segment.peers and its members here in local and segment.more_local`);
    if (seg.moreLocal.length + 1 > SEGMENT_LIMITS.membersPerDaemon) out.push(`segment ${spec.uid} has ${seg.moreLocal.length + 1} members on node ${this.opts.node}; at most ${SEGMENT_LIMITS.membersPerDaemon} per daemon`);
    if (seg.peers.length > SEGMENT_LIMITS.peers) out.push(`segment ${spec.uid} spans ${seg.peers.length} other daemons; at most ${SEGMENT_LIMITS.peers}`);
    const seen = new Set<string>();
    for (const p of seg.peers) {
      if (!p.node) out.push(`segment ${spec.uid}: a peer has no node name`);
      else if (p.node === this.opts.node) out.push(`segment ${spec.uid}: peer ${p.node} is this daemon`);
      else if (seen.has(p.node)) out.push(`segment ${spec.uid}: peer ${p.node} is named twice`);
      seen.add(p.node);
      if (!parseHostPort(p.address)?.host) out.push(`segment ${spec.uid}: peer address '${p.address}' is not host:port`);
    }
    const names = new Set<string>();
    for (const e of localEnds(spec)) {
      const k = `${e.netns}/${e.ifname}`;
      if (names.has(k)) out.push(`segment ${spec.uid} names ${k} twice`);
      names.add(k);
    }
    if (spec.impair) out.push(`segment ${spec.uid}: impairments on segment members are not supported`);
    return out;
  }

  private endpointInUse(e: EndpointSpec): number | undefined {
    for (const w of this.wires.values()) {
      for (const end of w.ends) if (end.endpoint.spec.netns === e.netns && end.endpoint.spec.ifname === e.ifname) return w.spec.uid;
    }
    return undefined;
  }

  /**
   * Whether the engine already receives from this peer at this address: then
   * it answers, and probing it again for each of hundreds of wires (a TLS
   * handshake each) is work for nothing.
   */
  private subscribedTo(peer: { node: string; address: string }): boolean {
    return this.engine.peers().some((p) => p.node === peer.node && p.address === peer.address && p.inbound);
  }

  private async waitForPeer(address: string, node: string): Promise<void> {
    try {
      await probePeer(address, node, this.dataTls);
    } catch (err) {
      throw new Unavailable(`peer daemon at ${address} cannot be reached: ${(err as Error).message}`);
    }
  }

  async addWire(spec: WireSpec, o: { attach: boolean; persist: boolean; checkPeer: boolean; keepOnFailure?: boolean; restoring?: boolean }): Promise<WireStatus> {
    const problems = this.specProblems(spec);
    if (problems.length) throw new InvalidArgument(problems.join('; '));
    if (this.wires.has(spec.uid) || this.busy.has(spec.uid)) {
      throw new AlreadyExists(`wire ${spec.uid} already exists on node ${this.opts.node}`);
    }
    const pending = this.restoring.get(spec.uid);
    if (pending && !o.restoring) throw new AlreadyExists(`wire ${spec.uid} is being restored on node ${this.opts.node} (attempt ${pending.attempts}: ${pending.error}); remove it first to replace it`);
    for (const e of localEnds(spec)) {
      const other = this.endpointInUse(e);
      if (other !== undefined) throw new AlreadyExists(`${e.netns}/${e.ifname} is already the end of wire ${other}`);
    }
    this.busy.add(spec.uid);
    const opened: Endpoint[] = [];
    try {
      if (spec.peer && o.checkPeer && !this.subscribedTo(spec.peer)) await this.waitForPeer(spec.peer.address, spec.peer.node);
      for (const p of spec.segment?.peers ?? []) if (o.checkPeer && !this.subscribedTo(p)) await this.waitForPeer(p.address, p.node);
      for (const e of localEnds(spec)) {
        const ep = createEndpoint(e);
        try {
          await ep.open(o.attach);
        } catch (err) {
          throw new FailedPrecondition(`${e.pod || e.netns}/${e.ifname}: ${(err as Error).message}`);
        }
        opened.push(ep);
      }
    } catch (err) {
      // A restore leaves the pods' interfaces as it found them: its next
      // attempt re-attaches to them.
      for (const ep of opened) await ep.close(!o.keepOnFailure);
      this.busy.delete(spec.uid);
      throw err;
    }
    const ringBytes = spec.captureRingBytes || (this.opts.captureRingBytes ?? DEFAULT_RING_BYTES);
    try {
      this.engine.addWire({
        uid: spec.uid,
        ringBytes,
        ...(spec.peer ? { peerNode: spec.peer.node, peerAddress: spec.peer.address } : {}),
        ...(spec.carrierHoldMs ? { carrierHoldMs: spec.carrierHoldMs } : {}),
        ...(spec.segment ? { segment: true, segmentPeers: spec.segment.peers.map((p) => ({ node: p.node, address: p.address })) } : {}),
        ends: opened.map((ep) => ({
          name: ep.name,
          ...ep.io!,
          maxFrame: ep.maxFrame,
          carrier: ep.carrier.how,
          carrierIfindex: ep.carrier.ifindex,
          plugged: ep.spec.cable !== 'pulled',
          // A restart re-attaching: carrier is left as the pod sees it.
          restored: o.attach && ep.reattached,
        })),
      });
    } catch (err) {
      for (const ep of opened) await ep.close(!o.keepOnFailure);
      this.busy.delete(spec.uid);
      throw new ResourceExhausted(`wire ${spec.uid}: ${(err as Error).message}`);
    }
    for (const ep of opened) ep.handOff();
    // Impairments are in place before the wire is listed: a lab declared
    // impaired never carries a frame unimpaired.
    const impairErr = this.applyImpair(spec);
    if (impairErr) {
      this.engine.removeWire(spec.uid);
      // On a restore the pods keep their interfaces (see keepOnFailure).
      for (const ep of opened) await ep.close(!o.keepOnFailure);
      this.busy.delete(spec.uid);
      throw new InvalidArgument(`wire ${spec.uid}: ${impairErr}`);
    }
    const wire = new Wire(
      spec,
      opened.map((endpoint, i) => ({ endpoint, ring: new EngineRing(this.engine, spec.uid, i, this.ringReaders) })),
    );
    this.wires.set(spec.uid, wire);
    this.busy.delete(spec.uid);
    if (opened.some((ep) => ep.spec.kind === 'host')) this.startHostWatch();
    if (this.opts.captureFiles) {
      for (const e of wire.ends) {
        const fc = new FileCapture(e.ring, { id: 0, name: e.endpoint.name, description: `node ${this.opts.node}, lab ${this.opts.lab}` }, { ...this.opts.captureFiles, lab: this.opts.lab, node: this.opts.node }, this.log);
        this.files.set(e, fc);
        await fc.start().catch((err: Error) => {
          fc.stopped = err.message;
          this.log(`file capture of ${e.endpoint.name} did not start: ${err.message}`);
        });
      }
    }
    if (o.persist) await this.persist();
    this.wiresChanged();
    this.idleMemory.changed();
    return this.status(wire);
  }

  async removeWire(uid: number): Promise<void> {
    const pending = this.restoring.get(uid);
    if (pending) {
      if (pending.timer) clearTimeout(pending.timer);
      pending.removed = true;
      this.restoring.delete(uid);
      await this.persist();
      return;
    }
    const wire = this.wires.get(uid);
    if (!wire) throw new NotFound(`wire ${uid} does not exist on node ${this.opts.node}`);
    this.dropFromEngine(wire);
    for (const end of wire.ends) await end.endpoint.close(true);
    this.wiresChanged();
    this.idleMemory.changed();
    await this.persist();
  }

  private startHostWatch(): void {
    if (this.hostWatch) return;
    this.hostWatch = setInterval(() => void this.watchHostEnds(), HOST_WATCH_MS);
    this.hostWatch.unref();
  }

  private forgetGuestLinks(uid: number): void {
    for (const k of [...this.guestLinks.keys()]) if (k.startsWith(`${uid}/`)) this.guestLinks.delete(k);
  }

  /**
   * Host ends are interfaces the daemon does not own (a QEMU guest's tap): one
   * that vanished or was recreated (a restarted QEMU makes its tap again, with
   * a new ifindex) is detached and listed as restoring, and re-attached as
   * soon as it is there again. Ends that are a guest's NIC pass their
   * carrier to the guest (followGuestLink).
   */
  private async watchHostEnds(): Promise<void> {
    if (this.hostWatchBusy) return;
    this.hostWatchBusy = true;
    try {
      const nl = await netlink();
      const ifindexOf = async (e: EndpointSpec): Promise<number> => (await nl.linkGet(netnsPath(e.netns), e.ifname).catch(() => null))?.ifindex ?? 0;
      let hostEnds = 0;
      for (const w of [...this.wires.values()]) {
        for (let i = 0; i < w.ends.length; i++) {
          const ep = w.ends[i]!.endpoint;
          if (ep.spec.kind !== 'host') continue;
          hostEnds++;
          const now = await ifindexOf(ep.spec);
          if (this.wires.get(w.spec.uid) !== w) break;
          if (now === ep.ifindex) {
            this.followGuestLink(w, i);
            continue;
          }
          const where = `${ep.spec.netns || '(daemon)'}/${ep.spec.ifname}`;
          this.detachVanished(w, now ? `interface ${where} was recreated (ifindex ${ep.ifindex}, now ${now}): re-attaching` : `interface ${where} vanished (was ifindex ${ep.ifindex}): re-attached when it is back`);
          break;
        }
      }
      for (const r of this.restoring.values()) {
        if (!r.vanished) continue;
        hostEnds++;
        if (!r.timer) continue;
        const ends = [r.spec.local, ...(r.spec.localPeer ? [r.spec.localPeer] : [])];
        const back = await Promise.all(ends.map((e) => (e.kind === 'host' ? ifindexOf(e) : Promise.resolve(1))));
        if (r.timer && back.every((x) => x > 0)) {
          clearTimeout(r.timer);
          void this.tryRestore(r);
        }
      }
      if (hostEnds === 0 && this.hostWatch) {
        clearInterval(this.hostWatch);
        this.hostWatch = null;
      }
    } finally {
      this.hostWatchBusy = false;
    }
  }

  /** Forgets a wire: its file captures and rings stop, the engine stops reading and closes its fds (the interfaces are the caller's). */
  private dropFromEngine(w: Wire): void {
    this.wires.delete(w.spec.uid);
    this.forgetGuestLinks(w.spec.uid);
    for (const end of w.ends) {
      this.files.get(end)?.stop();
      this.files.delete(end);
      end.ring.close();
    }
    this.engine.removeWire(w.spec.uid);
  }

  /** Lets a wire go whose host end's interface is gone, keeping it to re-attach (listed as restoring, in the state file). */
  private detachVanished(w: Wire, why: string): void {
    const uid = w.spec.uid;
    this.dropFromEngine(w);
    for (const end of w.ends) void end.endpoint.close(false);
    this.log(`wire ${uid}: ${why}`);
    const r: Restoring = { spec: w.spec, attempts: 0, error: why, timer: null, vanished: true };
    r.timer = setTimeout(() => void this.tryRestore(r), RESTORE_RETRY_MS.first);
    r.timer.unref();
    this.restoring.set(uid, r);
    this.wiresChanged();
  }

  /**
   * Tells a guest NIC (QMP set_link) when its end's carrier changed: a pulled
   * cable, at either end, or the far daemon gone past its hold time. Down is
   * told only once carrier stayed off GUEST_LINK_SETTLE_MS after the end was
   * attached (see there); a failed QMP call is retried on the next check.
   */
  private followGuestLink(w: Wire, i: number): void {
    const q = w.ends[i]!.endpoint.spec.qmp;
    if (!q) return;
    const c = this.engine.carrier(w.spec.uid)?.[i];
    if (!c) return;
    const key = `${w.spec.uid}/${i}`;
    let g = this.guestLinks.get(key);
    if (!g) {
      g = { sent: null, since: Date.now(), busy: false, lastError: '' };
      this.guestLinks.set(key, g);
    }
    if (g.busy || g.sent === c.on) return;
    if (g.sent === null && !c.on && Date.now() - g.since < GUEST_LINK_SETTLE_MS) return;
    const gl = g;
    const on = c.on;
    gl.busy = true;
    qmpSetLink(q.socket, q.netdev, on)
      .then(() => {
        if (gl.sent !== null || !on) this.log(`${w.ends[i]!.endpoint.name}: guest link ${on ? 'up' : 'down'} (QMP set_link ${q.netdev}${on ? '' : `: ${c.reason}`})`);
        gl.sent = on;
        gl.lastError = '';
      })
      .catch((err: Error) => {
        if (gl.lastError !== err.message) this.log(`${w.ends[i]!.endpoint.name}: QMP set_link failed: ${err.message}`);
        gl.lastError = err.message;
      })
      .finally(() => {
        gl.busy = false;
      });
  }

  /** Hands a spec's impairments to the engine; "" or why not. */
  private applyImpair(spec: WireSpec): string {
    const ends = [spec.impair?.local, spec.impair?.localPeer];
    for (let i = 0; i < ends.length; i++) {
      for (const dir of ['in', 'out'] as const) {
        const imp = normalizeImpairment(ends[i]?.[dir]);
        if (!imp && i === 1 && !spec.localPeer) continue;
        const err = this.engine.setImpair(spec.uid, i, dir, imp ?? null);
        if (err) return `${i === 0 ? 'local' : 'local peer'} end, ${dir}: ${err}`;
      }
    }
    return '';
  }

  /**
   * Sets (imp) or clears (null) the impairments of the wire end named
   * "pod/ifname" in one direction or both, and keeps them in the state file.
   */
  async setImpair(end: string, dir: ImpairDir, imp: Impairment | null): Promise<WireStatus> {
    if (imp) {
      const p = impairmentProblem(imp);
      if (p) throw new InvalidArgument(`${end}: ${p}`);
    }
    for (const w of this.wires.values()) {
      const i = w.ends.findIndex((e) => e.endpoint.name === end);
      if (i < 0) continue;
      if (w.isSegment) throw new FailedPrecondition(`${end} is a member of segment ${w.spec.uid}: impairments on segment members are not supported`);
      const key = i === 0 ? 'local' : 'localPeer';
      const next: EndImpairments = { ...(w.spec.impair?.[key] ?? {}) };
      for (const d of dir === 'both' ? (['in', 'out'] as const) : [dir]) {
        const n = normalizeImpairment(imp ?? undefined);
        const err = this.engine.setImpair(w.spec.uid, i, d, n ?? null);
        if (err) throw new InvalidArgument(`${end} ${d}: ${err}`);
        if (n) next[d] = n;
        else delete next[d];
      }
      const impair = { ...(w.spec.impair ?? {}) };
      const norm = normalizeEnd(next);
      if (norm) impair[key] = norm;
      else delete impair[key];
      if (impair.local || impair.localPeer) w.spec.impair = impair;
      else delete w.spec.impair;
      this.wiresChanged();
      await this.persist();
      return this.status(w);
    }
    const pending = [...this.restoring.values()].find((r) => `${r.spec.local.pod || r.spec.local.netns}/${r.spec.local.ifname}` === end);
    if (pending) throw new FailedPrecondition(`${end} is not restored yet on node ${this.opts.node}: ${pending.error}`);
    throw new NotFound(`no wire end ${end.slice(0, 100)} on node ${this.opts.node}`);
  }

  private status(wire: Wire): WireStatus {
    const st = this.state(wire);
    const counters = this.engine.counters(wire.spec.uid) ?? [];
    return {
      ...st,
      ends: wire.ends.map((e, i) => ({
        fileCapture: this.fileState(e),
        name: e.endpoint.name,
        ifindex: e.endpoint.ifindex,
        vnetHdr: e.endpoint.vnetHdr,
        counters: endCounters(counters[i], e.ring, e.endpoint.kernelQueueDrops()),
        carrier: st.ends[i]!.carrier,
      })),
    };
  }

  private state(wire: Wire): WireState {
    // A segment is up when every daemon holding its other members is connected.
    const segDown = wire.spec.segment?.peers.filter((p) => !this.engine.peerUp(p.node)).map((p) => p.node) ?? [];
    const reachable = wire.isSegment ? segDown.length === 0 : wire.isLocalPair || this.engine.peerUp(wire.spec.peer!.node);
    const carrier = this.engine.carrier(wire.spec.uid) ?? [];
    // Up: the streams to the far daemon are connected (carrier, in each end,
    // says whether the pods' interfaces have it). Down says why.
    const off = carrier.find((c) => !c.on);
    const unreachable = wire.isSegment ? `peer daemon(s) ${segDown.join(', ')} not connected` : `peer daemon ${wire.spec.peer?.node} is not connected`;
    const message = !reachable ? unreachable : off ? `no carrier: ${off.reason}` : undefined;
    return {
      spec: wire.spec,
      state: reachable ? 'up' : 'down',
      ...(message ? { message } : {}),
      ends: wire.ends.map((e, i) => ({ name: e.endpoint.name, carrier: carrierStatus(carrier[i]) })),
    };
  }

  private endByName(name: string): { wire: Wire; index: number } {
    for (const w of this.wires.values()) {
      const index = w.ends.findIndex((e) => e.endpoint.name === name);
      if (index >= 0) return { wire: w, index };
    }
    const r = [...this.restoring.values()].find((x) => [x.spec.local, x.spec.localPeer].some((e) => e && `${e.pod}/${e.ifname}` === name));
    if (r) throw new FailedPrecondition(`wire end ${name} on node ${this.opts.node} is being restored (${r.error}); try again when it is`);
    throw new NotFound(`no wire end ${name.slice(0, 100)} on node ${this.opts.node}`);
  }

  /**
   * Pulls or plugs the cable at one wire end ("pod/ifname"): both ends lose
   * (or get back) carrier, the far one through its daemon. Kept in the
   * state file, so a restarted daemon keeps the cable as it was.
   */
  async setCable(name: string, plugged: boolean): Promise<WireStatus> {
    if (!this.engine) throw new Unavailable('the daemon is starting');
    const { wire, index } = this.endByName(name);
    this.pluckCable(wire, index, plugged);
    await this.persist();
    return this.status(wire);
  }

  private pluckCable(wire: Wire, index: number, plugged: boolean): void {
    this.engine.setCable(wire.spec.uid, index, plugged);
    const spec = localEnds(wire.spec)[index]!;
    if (plugged) delete spec.cable;
    else spec.cable = 'pulled';
    this.wiresChanged();
  }

  /**
   * Cluster mode's reconcile: brings a running wire's cable at the ends named
   * in `cables` and its impairments to what `want` declares, in place (the
   * interfaces, counters and rings stay). The caller persists. Returns
   * whether anything changed.
   */
  applyDeclared(uid: number, want: WireSpec, cables: ReadonlyArray<0 | 1>): boolean {
    const wire = this.wires.get(uid);
    if (!wire) return false;
    let changed = false;
    for (const i of cables) {
      const e = i === 0 ? want.local : want.localPeer;
      if (!e || i >= wire.ends.length) continue;
      this.pluckCable(wire, i, e.cable !== 'pulled');
      changed = true;
    }
    const keys = ['local', 'localPeer'] as const;
    for (let i = 0; i < wire.ends.length; i++) {
      const key = keys[i]!;
      const next = normalizeEnd(want.impair?.[key] ?? {});
      const had = normalizeEnd(wire.spec.impair?.[key]);
      if (JSON.stringify(next ?? null) === JSON.stringify(had ?? null)) continue;
      for (const dir of ['in', 'out'] as const) {
        const err = this.engine.setImpair(uid, i, dir, normalizeImpairment(next?.[dir]) ?? null);
        if (err) throw new InvalidArgument(`wire ${uid} ${wire.ends[i]!.endpoint.name} ${dir}: ${err}`);
      }
      const impair = { ...(wire.spec.impair ?? {}) };
      if (next) impair[key] = next;
      else delete impair[key];
      if (impair.local || impair.localPeer) wire.spec.impair = impair;
      else delete wire.spec.impair;
      this.wiresChanged();
      changed = true;
    }
    return changed;
  }

  /** Carrier changes of every wire end (or of the one named "pod/ifname"), oldest first. */
  linkEvents(name = ''): LinkEvent[] {
    const out: LinkEvent[] = [];
    const wires = name ? [this.endByName(name).wire] : [...this.wires.values()];
    for (const w of wires) {
      const car = this.engine.carrier(w.spec.uid) ?? [];
      w.ends.forEach((e, i) => {
        if (name && e.endpoint.name !== name) return;
        for (const ev of car[i]?.events ?? []) out.push({ uid: w.spec.uid, end: e.endpoint.name, node: this.opts.node, tsUs: ev.tsUs, carrier: ev.on, reason: ev.reason });
      });
    }
    return out.sort((a, b) => a.tsUs - b.tsUs);
  }

  /**
   * The capture sources for wire ends named "pod/intf", repeats folded,
   * numbered in the order first asked. Unknown names are an error naming
   * them, and listing the other ends only if `listAll` (a caller who may see
   * every wire of this daemon): it never tells one tenant of another's wires.
   */
  captureSources(asked: string[], listAll = false): { sources: CaptureSource[]; interfaces: CaptureInterface[] } {
    if (asked.length === 0) throw new InvalidArgument('name at least one wire end as pod/intf');
    const names = foldWires(asked);
    const byName = new Map<string, WireEnd>();
    for (const w of this.wires.values()) for (const e of w.ends) byName.set(e.endpoint.name, e);
    const missing = names.filter((n) => !byName.has(n));
    if (missing.length) {
      const others = listAll ? ` (it has: ${[...byName.keys()].sort().join(', ') || 'none'})` : '';
      throw new NotFound(`no wire end ${missing.map((m) => m.slice(0, 100)).join(', ')} on node ${this.opts.node}${others}`);
    }
    const sources: CaptureSource[] = [];
    const interfaces: CaptureInterface[] = [];
    names.forEach((n, i) => {
      sources.push({ ring: byName.get(n)!.ring, iface: i });
      interfaces.push({ id: i, name: n, description: `node ${this.opts.node}, lab ${this.opts.lab}` });
    });
    return { sources, interfaces };
  }

  private fileState(e: WireEnd): string {
    const f = this.files.get(e);
    if (!f) return '';
    return f.stopped ? `stopped: ${f.stopped}` : `writing ${f.current}`;
  }

  listWires(): WireStatus[] {
    const live = [...this.wires.values()].map((w) => this.status(w));
    return [...live, ...this.restoringStates()].sort((a, b) => a.spec.uid - b.spec.uid);
  }

  /** A wire was added, removed or changed here: for the map and for statesRevision(). */
  private wiresChanged(): void {
    this.wiresRevision++;
    this.map.changed();
  }

  /**
   * Changes whenever what wireStates() reports may have: a wire added,
   * removed or changed, any end's carrier or news of a far end, a peer daemon
   * connected or lost, a restore attempt. The cluster controller recomputes
   * Topology statuses only when it does.
   */
  statesRevision(): string {
    const peers = this.engine.peers().map((p) => `${p.node}:${this.engine.peerUp(p.node) ? 1 : 0}`).join(',');
    const restoring = [...this.restoring.values()].map((r) => `${r.spec.uid}:${r.attempts}`).join(',');
    return `${this.wiresRevision}/${this.engine.carrierRevision()}/${peers}/${restoring}`;
  }

  /**
   * Every wire's state and carrier, without counters: what the cluster
   * controller needs for Topology statuses every 2 s and on every reconcile.
   * Counters cost a native call and an object per end and wire (a 1000-wire
   * daemon idled at 9% CPU listing them).
   */
  wireStates(): WireState[] {
    const live = [...this.wires.values()].map((w) => this.state(w));
    return [...live, ...this.restoringStates()].sort((a, b) => a.spec.uid - b.spec.uid);
  }

  private restoringStates(): Array<WireStatus & WireState> {
    return [...this.restoring.values()].filter((r) => !this.wires.has(r.spec.uid)).map((r) => ({ spec: r.spec, state: 'restoring' as const, ends: [], message: r.attempts ? `not restored yet (attempt ${r.attempts}): ${r.error}` : r.error }));
  }

  health(): Health {
    const h = this.engine.health();
    return {
      node: this.opts.node,
      lab: this.opts.lab,
      pid: process.pid,
      listen: this.opts.listen,
      wires: this.wires.size,
      peers: this.engine.peers(),
      unknownWire: h.unknownWire,
      malformedFrames: h.malformedFrames,
      refusedStreams: h.refusedStreams,
      rtPriority: this.rtPriority,
      keepsFreedMemory: this.keepsFreedMemory,
      malformed: h.malformed,
      tlsRefused: h.tlsRefused,
      lastTlsRefusal: h.lastTlsRefusal,
      stateFile: this.stateDamage,
      restoring: [...this.restoring.keys()].filter((uid) => !this.wires.has(uid)).length,
      identityRefused: h.identityRefused,
      eventLoopDelayP99Ms: loopLatenessMs(Math.max(this.lastLoopWindow.p99, this.loopDelay.percentile(99))),
      eventLoopDelayMaxMs: loopLatenessMs(Math.max(this.lastLoopWindow.max, this.loopDelay.max)),
      refusedConnections: h.refusedConnections,
      lastConnectionRefusal: h.lastConnectionRefusal,
      tls: this.dataTls
        ? { names: h.certNames, notAfter: h.certNotAfter, serial: h.certSerial, rotations: h.tlsRotations, lastRotationError: this.lastRotationError }
        : null,
    };
  }

  /**
   * Certificate rotation without a link flap: when the TLS files change (a
   * renewed certificate written in place, or a Secret/CSI volume swapping its
   * ..data link), or on SIGHUP, the engine takes the new identity for new
   * connections; established peer streams keep theirs.
   */
  private watchTls(files: TlsFiles): void {
    const dirs = new Set([files.cert, files.key, files.ca].map((f) => path.dirname(f)));
    for (const dir of dirs) {
      try {
        const w = watch(dir, () => this.reloadTlsSoon(300));
        w.on('error', (err) => this.log(`watching ${dir} for TLS rotation failed: ${err.message}`));
        w.unref();
        this.tlsWatchers.push(w);
      } catch (err) {
        this.log(`cannot watch ${dir} for TLS rotation (${(err as Error).message}); send SIGHUP to reload`);
      }
    }
    process.on('SIGHUP', this.onHangup);
  }

  private reloadTlsSoon(delayMs: number): void {
    if (!this.opts.tls) return;
    // Writers replace the three files one after another: wait for the last.
    if (this.tlsReloadTimer) clearTimeout(this.tlsReloadTimer);
    this.tlsReloadTimer = setTimeout(() => {
      this.tlsReloadTimer = null;
      void this.reloadTls();
    }, delayMs);
    this.tlsReloadTimer.unref();
  }

  private async reloadTls(): Promise<void> {
    if (!this.opts.tls || !this.dataTls) return;
    let next: DataTls | null;
    try {
      next = await dataTls(this.opts.tls);
    } catch (err) {
      this.lastRotationError = `reading TLS files: ${(err as Error).message}`;
      this.log(`TLS rotation: ${this.lastRotationError}; keeping the current identity`);
      return;
    }
    if (!next) return;
    const cur = this.dataTls;
    if (next.cert.equals(cur.cert) && next.key.equals(cur.key) && next.ca.equals(cur.ca)) return;
    try {
      this.engine.setTls(next);
    } catch (err) {
      // Half-written files (a new certificate beside the old key) land here
      // until the writer finishes; the next change event retries.
      this.lastRotationError = (err as Error).message;
      this.log(`TLS rotation refused: ${this.lastRotationError}; keeping the current identity`);
      return;
    }
    this.dataTls = next;
    this.lastRotationError = '';
    const h = this.engine.health();
    this.log(`TLS identity rotated: serial ${h.certSerial}, valid until ${new Date(h.certNotAfter * 1000).toISOString()}`);
  }

  /** Stops serving. Interfaces stay, so a restarted daemon picks them up. */
  async shutdown(): Promise<void> {
    for (const r of this.restoring.values()) if (r.timer) clearTimeout(r.timer);
    if (this.hostWatch) clearInterval(this.hostWatch);
    for (const w of this.tlsWatchers) w.close();
    this.tlsWatchers = [];
    if (this.tlsReloadTimer) clearTimeout(this.tlsReloadTimer);
    process.off('SIGHUP', this.onHangup);
    this.loopDelay.disable();
    if (this.loopWindowTimer) clearInterval(this.loopWindowTimer);
    this.map.close();
    this.idleMemory.stop();
    for (const f of this.files.values()) f.stop();
    for (const w of this.wires.values()) for (const e of w.ends) e.ring.close();
    // The engine closes every port and peer stream; the interfaces stay.
    this.engine?.close();
    for (const w of this.wires.values()) for (const e of w.ends) await e.endpoint.close(false);
    this.wires.clear();
    this.controlServer.forceShutdown();
    for (const h of [this.httpServer, this.healthServer]) {
      h?.closeAllConnections();
      h?.close();
    }
  }
}
