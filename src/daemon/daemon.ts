// The wire daemon: owns ports, wires, peer streams and the control API, and
// persists its desired wires so a restart re-attaches to the same interfaces.
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';

import { createEndpoint, type Endpoint, endpointProblems, type EndpointSpec } from '../endpoint/index.js';
import { type EnginePeer, type NativeEngine, wire } from '../native/wire.js';
import { type DataTls, probePeer } from '../dataplane/probe.js';
import { EngineRing } from '../dataplane/engine-ring.js';
import { type EndCounters, endCounters, Wire, type WireEnd, type WireSpec } from '../dataplane/wire.js';
import { DEFAULT_RING_BYTES } from '../capture/ring.js';
import type { CaptureInterface } from '../capture/format.js';
import type { CaptureSource } from '../capture/session.js';
import { FileCapture, type FileCaptureOptions } from '../capture/files.js';
import { parseHostPort } from '../util/hostport.js';
import { serialized, writeAtomic } from '../util/serial.js';

export class WireError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
  /** name the peers' certificates are issued for */
  serverName: string;
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
  log?: (msg: string) => void;
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
}

export interface WireStatus {
  spec: WireSpec;
  state: 'up' | 'down';
  ends: EndStatus[];
}

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
  rtPriority: number;
  keepsFreedMemory: boolean;
}

/** Mutual TLS: a peer without a certificate from our CA can neither subscribe nor be subscribed to. */
async function dataTls(tls: TlsFiles | null): Promise<DataTls | null> {
  if (!tls) return null;
  const [cert, key, ca] = await Promise.all([readFile(tls.cert), readFile(tls.key), readFile(tls.ca)]);
  return { cert, key, ca, serverName: tls.serverName };
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
  private engine!: NativeEngine;
  private dataTls: DataTls | null = null;
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

  constructor(readonly opts: DaemonOptions) {
    this.log = opts.log ?? ((m) => process.stderr.write(`[${opts.node}] ${m}\n`));
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
      },
      (reader) => this.ringReaders.get(reader)?.drain(),
    );
    const [def, impl] = controlService(this);
    this.controlServer.addService(def, impl);
    if (this.opts.control.startsWith('unix:')) {
      const sock = this.opts.control.replace(/^unix:(\/\/)?/, '');
      await mkdir(path.dirname(sock), { recursive: true, mode: 0o700 });
      await import('node:fs/promises').then((fs) => fs.rm(sock, { force: true }));
    }
    await bindAsync(this.controlServer, this.opts.control, grpc.ServerCredentials.createInsecure());
    if (this.opts.http) {
      const { startHttp } = await import('../capture/http.js');
      this.httpServer = await startHttp(this, this.opts.http);
    }
    if (this.opts.health) {
      const { startHttp } = await import('../capture/http.js');
      this.healthServer = await startHttp(this, this.opts.health, false);
    }
    await this.restore();
    this.log(`listening on ${this.opts.listen}, control ${this.opts.control}, ${this.wires.size} wires`);
  }

  /** Keeps `section` in the state file under `name`; register before start(). */
  addStateSection(name: string, section: StateSection): void {
    this.sections.set(name, section);
  }

  /** Re-creates the wires of the state file, re-attaching to existing interfaces. */
  private async restore(): Promise<void> {
    if (!this.opts.state) return;
    let specs: WireSpec[];
    try {
      const parsed = JSON.parse(await readFile(this.opts.state, 'utf8')) as { wires: WireSpec[] } & Record<string, unknown>;
      specs = parsed.wires;
      for (const [name, section] of this.sections) if (parsed[name] !== undefined) section.load(parsed[name]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new Error(`state file ${this.opts.state}: ${(err as Error).message}`);
    }
    for (const spec of specs) {
      try {
        await this.addWire(spec, { attach: true, persist: false, checkPeer: false });
      } catch (err) {
        this.log(`restoring wire ${spec.uid} failed: ${(err as Error).message}`);
      }
    }
  }

  /** Writes the desired wires; writes are queued so concurrent API calls never interleave them. */
  readonly persist = serialized(() => this.writeState());

  private async writeState(): Promise<void> {
    if (!this.opts.state) return;
    await mkdir(path.dirname(this.opts.state), { recursive: true });
    const wires = [...this.wires.values()].map((w) => w.spec);
    const extra: Record<string, unknown> = {};
    for (const [name, section] of this.sections) extra[name] = section.save();
    await writeAtomic(this.opts.state, JSON.stringify({ version: 1, node: this.opts.node, wires, ...extra }, null, 1));
  }


  private specProblems(spec: WireSpec): string[] {
    const out: string[] = [];
    if (!Number.isSafeInteger(spec.uid) || spec.uid <= 0) out.push(`wire uid ${spec.uid} must be a positive integer`);
    if (!spec.local) return [...out, 'wire has no local endpoint'];
    const ends = [spec.local, ...(spec.localPeer ? [spec.localPeer] : [])];
    for (const e of ends) out.push(...endpointProblems(e).map((p) => `${e.pod || e.netns}/${e.ifname}: ${p}`));
    if (!!spec.peer === !!spec.localPeer) out.push('a wire needs exactly one of peer (another daemon) or local_peer (this daemon)');
    if (spec.peer) {
      if (!spec.peer.node) out.push('peer node name is empty');
      if (!parseHostPort(spec.peer.address)?.host) out.push(`peer address '${spec.peer.address}' is not host:port`);
    }
    if (spec.localPeer && spec.localPeer.netns === spec.local.netns && spec.localPeer.ifname === spec.local.ifname) {
      out.push(`wire ${spec.uid} joins ${spec.local.ifname} to itself`);
    }
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

  private async waitForPeer(address: string): Promise<void> {
    try {
      await probePeer(address, this.dataTls);
    } catch (err) {
      throw new WireError(grpc.status.UNAVAILABLE, `peer daemon at ${address} cannot be reached: ${(err as Error).message}`);
    }
  }

  async addWire(spec: WireSpec, o: { attach: boolean; persist: boolean; checkPeer: boolean }): Promise<WireStatus> {
    const problems = this.specProblems(spec);
    if (problems.length) throw new WireError(grpc.status.INVALID_ARGUMENT, problems.join('; '));
    if (this.wires.has(spec.uid) || this.busy.has(spec.uid)) {
      throw new WireError(grpc.status.ALREADY_EXISTS, `wire ${spec.uid} already exists on node ${this.opts.node}`);
    }
    for (const e of [spec.local, ...(spec.localPeer ? [spec.localPeer] : [])]) {
      const other = this.endpointInUse(e);
      if (other !== undefined) throw new WireError(grpc.status.ALREADY_EXISTS, `${e.netns}/${e.ifname} is already the end of wire ${other}`);
    }
    this.busy.add(spec.uid);
    const opened: Endpoint[] = [];
    try {
      if (spec.peer && o.checkPeer && !this.subscribedTo(spec.peer)) await this.waitForPeer(spec.peer.address);
      for (const e of [spec.local, ...(spec.localPeer ? [spec.localPeer] : [])]) {
        const ep = createEndpoint(e);
        try {
          await ep.open(o.attach);
        } catch (err) {
          throw new WireError(grpc.status.FAILED_PRECONDITION, `${e.pod || e.netns}/${e.ifname}: ${(err as Error).message}`);
        }
        opened.push(ep);
      }
    } catch (err) {
      for (const ep of opened) await ep.close(true);
      this.busy.delete(spec.uid);
      throw err;
    }
    const ringBytes = spec.captureRingBytes || (this.opts.captureRingBytes ?? DEFAULT_RING_BYTES);
    try {
      this.engine.addWire({
        uid: spec.uid,
        ringBytes,
        ...(spec.peer ? { peerNode: spec.peer.node, peerAddress: spec.peer.address } : {}),
        ends: opened.map((ep) => ({ name: ep.name, ...ep.io!, maxFrame: ep.maxFrame })),
      });
    } catch (err) {
      for (const ep of opened) await ep.close(true);
      this.busy.delete(spec.uid);
      throw new WireError(grpc.status.RESOURCE_EXHAUSTED, `wire ${spec.uid}: ${(err as Error).message}`);
    }
    for (const ep of opened) ep.handOff();
    const wire = new Wire(
      spec,
      opened.map((endpoint, i) => ({ endpoint, ring: new EngineRing(this.engine, spec.uid, i, this.ringReaders) })),
    );
    this.wires.set(spec.uid, wire);
    this.busy.delete(spec.uid);
    if (this.opts.captureFiles) {
      for (const e of wire.ends) {
        const fc = new FileCapture(e.ring, { id: 0, name: e.endpoint.name, description: `node ${this.opts.node}, lab ${this.opts.lab}` }, this.opts.captureFiles, this.log);
        this.files.set(e, fc);
        await fc.start().catch((err: Error) => {
          fc.stopped = err.message;
          this.log(`file capture of ${e.endpoint.name} did not start: ${err.message}`);
        });
      }
    }
    if (o.persist) await this.persist();
    return this.status(wire);
  }

  async removeWire(uid: number): Promise<void> {
    const wire = this.wires.get(uid);
    if (!wire) throw new WireError(grpc.status.NOT_FOUND, `wire ${uid} does not exist on node ${this.opts.node}`);
    this.wires.delete(uid);
    for (const end of wire.ends) {
      this.files.get(end)?.stop();
      this.files.delete(end);
      end.ring.close();
    }
    // The engine stops reading and closes the fds; then the interfaces go.
    this.engine.removeWire(uid);
    for (const end of wire.ends) await end.endpoint.close(true);
    await this.persist();
  }

  private status(wire: Wire): WireStatus {
    const up = wire.isLocalPair || this.engine.peerUp(wire.spec.peer!.node);
    const counters = this.engine.counters(wire.spec.uid) ?? [];
    return {
      spec: wire.spec,
      state: up ? 'up' : 'down',
      ends: wire.ends.map((e, i) => ({
        fileCapture: this.fileState(e),
        name: e.endpoint.name,
        ifindex: e.endpoint.ifindex,
        vnetHdr: e.endpoint.vnetHdr,
        counters: endCounters(counters[i], e.ring),
      })),
    };
  }

  /**
   * The capture sources for wire ends named "pod/intf", numbered in the order
   * asked. Unknown names are an error naming them.
   */
  captureSources(names: string[]): { sources: CaptureSource[]; interfaces: CaptureInterface[] } {
    if (names.length === 0) throw new WireError(grpc.status.INVALID_ARGUMENT, 'name at least one wire end as pod/intf');
    const byName = new Map<string, WireEnd>();
    for (const w of this.wires.values()) for (const e of w.ends) byName.set(e.endpoint.name, e);
    const missing = names.filter((n) => !byName.has(n));
    if (missing.length) {
      throw new WireError(grpc.status.NOT_FOUND, `no wire end ${missing.join(', ')} on node ${this.opts.node} (it has: ${[...byName.keys()].sort().join(', ') || 'none'})`);
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
    return [...this.wires.values()].sort((a, b) => a.spec.uid - b.spec.uid).map((w) => this.status(w));
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
    };
  }

  /** Stops serving. Interfaces stay, so a restarted daemon picks them up. */
  async shutdown(): Promise<void> {
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
