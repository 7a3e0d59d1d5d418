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
}

/**
 * Every cause a frame is dropped for, by its control-plane name, with its
 * name in the control API (proto/patchwire/v1/control.proto, message Drops,
 * where each is explained; test/proto.test.ts checks the two agree).
 * kernelQueue comes from the kernel's counters (Endpoint.kernelQueueDrops),
 * every other cause from the engine's counters of the same name.
 */
export const DROP_CAUSES = {
  queueFull: 'queue_full',
  peerDown: 'peer_down',
  tooBig: 'too_big',
  kernelRing: 'kernel_ring',
  truncated: 'truncated',
  sendBusy: 'send_busy',
  sendError: 'send_error',
  kernelQueue: 'kernel_queue',
  impairedLoss: 'impaired_loss',
  rateLimited: 'rate_limited',
  impairOverflow: 'impair_overflow',
  cablePulled: 'cable_pulled',
} as const;
export type DropCause = keyof typeof DROP_CAUSES;
export type DropCounters = Record<DropCause, number>;
/** A drop cause as the control API names it. */
export type PbDropCause = (typeof DROP_CAUSES)[DropCause];

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
    return this.ends.length === 2;
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
    drops: Object.fromEntries((Object.keys(DROP_CAUSES) as DropCause[]).map((k) => [k, k === 'kernelQueue' ? kernelQueue : (z[k] ?? 0)])) as DropCounters,
    captureDrops: ring.readerDrops,
    backpressurePauses: z.pauses ?? 0,
    impairDuplicated: z.impairDuplicated ?? 0,
    impairCorrupted: z.impairCorrupted ?? 0,
    impairReordered: z.impairReordered ?? 0,
    impairHeldBytes: z.impairHeldBytes ?? 0,
  };
}
