// A wire joins one local endpoint to its far end: another local endpoint, or
// a wire end on a peer daemon. It never looks at MAC addresses: every frame
// read on one end leaves the other end unchanged. The frames themselves move
// in the native engine; this is the wire as the control plane knows it.
import type { Endpoint, EndpointSpec } from '../endpoint/index.js';
import type { EngineEndCounters } from '../native/wire.js';
import type { EndImpairments } from './impair.js';
import type { EngineRing } from './engine-ring.js';

export interface PeerRef {
  node: string;
  address: string;
}

export interface WireSpec {
  uid: number;
  local: EndpointSpec;
  peer?: PeerRef;
  localPeer?: EndpointSpec;
  /** bytes of capture ring per wire end (0 or absent: the daemon's default) */
  captureRingBytes?: number;
  /** impairments of the local end and of the local peer end (absent: none) */
  impair?: { local?: EndImpairments; localPeer?: EndImpairments };
  /** how long carrier stays on while the far daemon is out of reach, ms (0 or absent: the daemon's default) */
  carrierHoldMs?: number;
  /**
   * A shared segment (a link with more than two members): `local` is this
   * daemon's first member, `moreLocal` its others, `peers` the daemons that
   * hold the rest. Every frame one member sends reaches every other member.
   */
  segment?: SegmentSpec;
}

/** Members per segment on one daemon, and daemons per segment (the engine's kMaxSegmentEnds / kMaxSegmentPeers). */
export const SEGMENT_LIMITS = { membersPerDaemon: 64, peers: 64 };

export interface SegmentSpec {
  moreLocal: EndpointSpec[];
  peers: PeerRef[];
}

/** The endpoints a spec puts on this daemon, in engine end order. */
export function localEnds(spec: WireSpec): EndpointSpec[] {
  return [spec.local, ...(spec.localPeer ? [spec.localPeer] : []), ...(spec.segment?.moreLocal ?? [])];
}

export interface DropCounters {
  queueFull: number;
  peerDown: number;
  tooBig: number;
  kernelRing: number;
  truncated: number;
  sendBusy: number;
  sendError: number;
  /** the pod sent it; the kernel dropped it before our socket (Endpoint.kernelQueueDrops) */
  kernelQueue: number;
  /** removed by the end's loss impairment */
  impairedLoss: number;
  /** the rate limit's queue was full */
  rateLimited: number;
  /** the end's impairments already held their byte limit */
  impairOverflow: number;
  /** frames that met a pulled cable */
  cablePulled: number;
}

export interface EndCounters {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  drops: DropCounters;
  /** frames live capture readers could not take (wire frames are never lost for capture) */
  captureDrops: number;
  /** times reading this end stopped because the queue to the peer passed its high-water mark */
  backpressurePauses: number;
  /** what impairments did to frames they kept, and bytes they hold now */
  impairDuplicated: number;
  impairCorrupted: number;
  impairReordered: number;
  impairHeldBytes: number;
}

/** One endpoint of a wire on this daemon, with its capture ring. */
export interface WireEnd {
  readonly endpoint: Endpoint;
  readonly ring: EngineRing;
}

export class Wire {
  constructor(
    readonly spec: WireSpec,
    readonly ends: WireEnd[],
  ) {}

  get isLocalPair(): boolean {
    return !this.spec.segment && this.ends.length === 2;
  }

  get isSegment(): boolean {
    return !!this.spec.segment;
  }
}

/** The engine's counters of one end in the control plane's shape. */
export function endCounters(c: EngineEndCounters | undefined, ring: EngineRing, kernelQueue = 0): EndCounters {
  const z = c ?? ({} as Partial<EngineEndCounters>);
  return {
    rxFrames: z.rxFrames ?? 0,
    rxBytes: z.rxBytes ?? 0,
    txFrames: z.txFrames ?? 0,
    txBytes: z.txBytes ?? 0,
    drops: {
      queueFull: z.queueFull ?? 0,
      peerDown: z.peerDown ?? 0,
      tooBig: z.tooBig ?? 0,
      kernelRing: z.kernelRing ?? 0,
      truncated: z.truncated ?? 0,
      sendBusy: z.sendBusy ?? 0,
      sendError: z.sendError ?? 0,
      kernelQueue,
      impairedLoss: z.impairedLoss ?? 0,
      rateLimited: z.rateLimited ?? 0,
      impairOverflow: z.impairOverflow ?? 0,
      cablePulled: z.cablePulled ?? 0,
    },
    captureDrops: ring.readerDrops,
    backpressurePauses: z.pauses ?? 0,
    impairDuplicated: z.impairDuplicated ?? 0,
    impairCorrupted: z.impairCorrupted ?? 0,
    impairReordered: z.impairReordered ?? 0,
    impairHeldBytes: z.impairHeldBytes ?? 0,
  };
}
