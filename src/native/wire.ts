// Typed access to the native frame I/O addon built from wire/.
import { createRequire } from 'node:module';
import path from 'node:path';

import type { Impairment } from '../dataplane/impair.js';
import { PACKAGE_ROOT } from '../paths.js';

export interface OpenedFd {
  fd: number;
  ifindex: number;
  /** whether frames carry a virtio-net header on this fd */
  vnetHdr: boolean;
}

export interface PortStats {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  kernelDrops: number;
  truncated: number;
  vlanRestored: number;
  txBusy: number;
  txTooBig: number;
  txError: number;
  lastTxError: string;
}

/**
 * A native port. Received frames are written into `rx`; for frame i of a
 * batch, `meta[2i]` is its offset in `rx` and `meta[2i+1]` its length, the
 * virtio-net header included when the port has one. The contents are only
 * valid during the onFrames callback.
 */
export interface NativePort {
  readonly rx: ArrayBuffer;
  readonly meta: Int32Array;
  start(onFrames: (count: number) => void): void;
  pause(): void;
  send(buf: Uint8Array, hdrOff: Int32Array, dataOff: Int32Array, dataLen: Int32Array, count: number): number;
  stats(): PortStats;
  close(): void;
}

/** Counters of one wire end as the engine keeps them. */
export interface EngineEndCounters {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  queueFull: number;
  peerDown: number;
  tooBig: number;
  kernelRing: number;
  truncated: number;
  sendBusy: number;
  sendError: number;
  vlanRestored: number;
  /** times backpressure stopped reading the endpoint */
  pauses: number;
  /** frames that met a pulled cable (this end's or the far end's) */
  cablePulled: number;
  /** frames for an end without carrier, its cable plugged */
  noCarrier: number;
  captureDrops: number;
  captureEvicted: number;
  /** impairments (src/dataplane/impair.ts): drops by cause, what they did, bytes held now */
  impairedLoss: number;
  rateLimited: number;
  impairOverflow: number;
  impairDuplicated: number;
  impairCorrupted: number;
  impairReordered: number;
  impairHeldBytes: number;
}

export interface EnginePeer {
  node: string;
  address: string;
  /** our subscription to the peer is up (we receive) */
  inbound: boolean;
  /** the peer's subscription to us is up (we send) */
  outbound: boolean;
  reconnects: number;
  framesIn: number;
  framesOut: number;
  batchesIn: number;
  batchesOut: number;
  queuedBytes: number;
  rttMs: number;
  lastError: string;
}

export interface EngineEnd {
  name: string;
  fd: number;
  kind: 'packet' | 'tap';
  vnetHdr: boolean;
  slotSize: number;
  slots: number;
  maxFrame: number;
  /** how carrier is shown to the pod: the veth's host end down/up, TUNSETCARRIER, or not at all (an interface patchwire does not own) */
  carrier?: 'veth' | 'tap' | 'none';
  /** 'veth': the host end's ifindex in the daemon's namespace */
  carrierIfindex?: number;
  /** the cable at this end (default true) */
  plugged?: boolean;
  /** re-attached by a restarted daemon: carrier stays as the interface has it for the hold time */
  restored?: boolean;
}

/** One carrier change of a wire end. */
export interface EngineCarrierEvent {
  /** unix microseconds */
  tsUs: number;
  on: boolean;
  reason: string;
}

/** A wire end's carrier as the engine keeps it. */
export interface EngineCarrier {
  on: boolean;
  plugged: boolean;
  /** whether the far daemon has said how its end is (since the stream that says it last opened) */
  farKnown: boolean;
  farPresent: boolean;
  farPlugged: boolean;
  holdMs: number;
  /** why carrier is as it is */
  reason: string;
  /** '' or why applying the last change to the interface failed */
  lastError: string;
  eventsTotal: number;
  /** the last 64 changes, oldest first */
  events: EngineCarrierEvent[];
}

export interface EngineOptions {
  node: string;
  lab: string;
  listenHost: string;
  listenPort: number;
  /** mutual TLS: the certificate must name `node` (a DNS subjectAltName); peers are checked against their node names */
  tls?: { cert: Buffer; key: Buffer; ca: Buffer };
  /** connections that have not said which node they are, per remote address (default 8) */
  maxPendingPerHost?: number;
  /** connections in all (default 1024) */
  maxConnections?: number;
  maxQueueBytes?: number;
  highWaterBytes?: number;
  keepaliveMs?: number;
  connectTimeoutMs?: number;
  /** receive buffer of each AF_PACKET port (0: as opened) */
  portRcvBufBytes?: number;
  /** how long carrier stays on while the far daemon is out of reach (default 3000 ms) */
  carrierHoldMs?: number;
}

/** The native frame engine (wire/src/engine/): ports, peer streams, counters and capture rings on a thread of its own. */
export interface NativeEngine {
  /** the data port it listens on */
  readonly port: number;
  addWire(cfg: { uid: number; ringBytes: number; peerNode?: string; peerAddress?: string; carrierHoldMs?: number; segment?: boolean; segmentPeers?: Array<{ node: string; address: string }>; ends: EngineEnd[] }): void;
  /** plugs or pulls the cable at one end (index as in counters); throws why not */
  setCable(uid: number, end: number, plugged: boolean): void;
  /** per end, or null for no such wire */
  carrier(uid: number): EngineCarrier[] | null;
  removeWire(uid: number): boolean;
  counters(uid: number): EngineEndCounters[] | null;
  peerUp(node: string): boolean;
  /** grows whenever any end's carrier, its reason or news of a far end changes */
  carrierRevision(): number;
  peers(): EnginePeer[];
  health(): {
    unknownWire: number;
    malformed: number;
    malformedFrames: number;
    refusedStreams: number;
    acceptedConnections: number;
    tlsRefused: number;
    lastTlsRefusal: string;
    /** subscribers whose certificate named another node than their hello */
    identityRefused: number;
    /** connections closed at accept by the connection bounds */
    refusedConnections: number;
    lastConnectionRefusal: string;
    tlsRotations: number;
    /** what this daemon presents: DNS names, expiry (unix s), serial (hex); empty in plain text */
    certNames: string[];
    certNotAfter: number;
    certSerial: string;
  };
  /** swaps the TLS identity new connections use (rotation); throws why not, keeping the old one */
  setTls(tls: { cert: Buffer; key: Buffer; ca: Buffer }): void;
  /** Impairments of end `end` (0, 1 as added) of a wire in one direction; null clears them. "" or why not. */
  setImpair(uid: number, end: number, dir: 'in' | 'out', cfg: Impairment | null): string;
  /** serialized segments (see wire/src/engine/capture_ring.h), or null for no such end */
  ringSnapshot(uid: number, end: number): Buffer | null;
  /** a live reader of one end's ring; 0 when there is no such end */
  ringReaderAdd(uid: number, end: number, maxBytes: number): number;
  ringReaderDrain(reader: number): { data: Buffer; dropped: number } | null;
  ringReaderRemove(reader: number): void;
  close(): void;
}

/** rtnetlink and named namespaces from the addon (wire/src/netlink.cc); every call runs off the event loop. */
export interface NativeNetlink {
  /** A veth pair: `host` in hostNetns ('' the caller's), `peer` created straight in peerNetns, configured and up. All or nothing. */
  vethCreate(spec: {
    host: string;
    hostNetns?: string;
    peer: string;
    peerNetns: string;
    mtu?: number;
    peerMac?: string;
    peerAddrs?: string[];
    /** delete a leftover host end of that name first */
    replaceStaleHost?: boolean;
    peerUp?: boolean;
    /** drop every frame at the host end's ingress (tc, eBPF) before it goes up: see ingressGuard */
    guardHost?: boolean;
    /** false: the host end stays down (the pod end has no carrier until the engine brings it up) */
    hostUp?: boolean;
  }): Promise<{ hostIndex: number; peerIndex: number }>;
  /**
   * Keeps frames that arrive on an interface out of the IP stack of its
   * namespace (AF_PACKET readers still see them): a tc clsact ingress filter
   * whose eBPF program drops everything. Adds it only where it is missing.
   */
  ingressGuard(netns: string, name: string): Promise<{ added: boolean }>;
  /**
   * A netlink socket kept open in a namespace ('' : the daemon's) for reading
   * interface counters synchronously: the kernel answers at once, no I/O.
   */
  countersOpen(netnsPath: string): number;
  /** An interface's drop counters (IFLA_STATS64), or null when it is gone. */
  countersDrops(id: number, ifindex: number): { rxDropped: number; txDropped: number } | null;
  countersClose(id: number): void;
  /** Sets what is given on an existing interface: MAC, MTU, master bridge, addresses (replaced), then up or down. */
  linkConfigure(spec: { netns: string; name: string; mac?: string; mtu?: number; addrs?: string[]; up?: boolean; master?: string }): Promise<{ ifindex: number }>;
  linkGet(netns: string, name: string): Promise<{ ifindex: number; mtu: number; up: boolean } | null>;
  /** false when there was no such interface */
  linkDel(netns: string, name: string): Promise<boolean>;
  bridgeAdd(netns: string, name: string): Promise<void>;
  /** Named namespaces under /var/run/netns, as `ip netns add` makes them; per name '' or why not. */
  netnsAdd(names: string[], opts?: { loUp?: boolean }): Promise<string[]>;
  netnsDel(names: string[]): Promise<string[]>;
}

interface Addon {
  netlink: NativeNetlink;
  openPacket(ifname: string, netnsPath: string, opts: { vnetHdr: boolean; bufBytes?: number }): OpenedFd;
  openTap(name: string, netnsPath: string, opts: { vnetHdr: boolean; persist: boolean }): OpenedFd;
  unpersistTap(fd: number): void;
  /**
   * A detached queue of the persistent tap `name` (see wire/src/addon.cc):
   * {fd} when opened, {same} when it is still the interface of knownIfindex,
   * null when there is no such interface; throws when it cannot be held.
   */
  holdTap(name: string, netnsPath: string, knownIfindex: number): { ifindex: number; fd?: number; same?: true } | null;
  /** SCHED_RR at `priority` for every thread of the process (0: back to SCHED_OTHER); returns threads changed */
  setScheduling(priority: number): number;
  /** glibc trim threshold: free heap memory kept up to `bytes` rather than returned to the kernel; false where not glibc */
  keepFreedMemory(bytes: number): boolean;
  /** V8's low-memory collection, then glibc's malloc_trim(0); whether glibc handed any memory back */
  returnFreedMemory(): boolean;
  Port: new (fd: number, kind: 'packet' | 'tap', vnetHdr: boolean, slotSize: number, slots: number) => NativePort;
  Engine: new (opts: EngineOptions, onCapture: (reader: number) => void) => NativeEngine;
  /** what a PEM certificate request asks for, and whether its self-signature holds */
  csrInfo(o: { csr: string | Buffer }): { commonName: string; dnsNames: string[]; signatureValid: boolean };
  /** a PEM request for CN=name, subjectAltName DNS:name, signed with `key` */
  makeCsr(o: { key: string | Buffer; name: string }): string;
  /** a PEM certificate for `name` alone (CN and DNS subjectAltName), with the request's key, signed by the CA */
  signCsr(o: { csr: string | Buffer; caCert: string | Buffer; caKey: string | Buffer; name: string; notBefore: number; notAfter: number }): string;
  HEADROOM: number;
  VNET_HDR_LEN: number;
}

const require = createRequire(import.meta.url);

/**
 * Where `npm install` builds the addon (child processes in tests load it by path).
 * PATCHWIRE_ADDON overrides it: `npm run test:asan` runs the daemons on a sanitizer build.
 */
export const ADDON_PATH = process.env.PATCHWIRE_ADDON || path.join(PACKAGE_ROOT, 'wire', 'build', 'Release', 'patchwire_wire.node');
export const wire: Addon = require(ADDON_PATH) as Addon;
export const VNET_HDR_LEN = wire.VNET_HDR_LEN;
