// Capture rings as their readers see them. Each wire end's always-on ring
// (every frame in both directions, with the time it was read, oldest dropped
// first) lives in the frame engine (wire/src/engine/capture_ring.cc); this is
// the shape snapshots and live batches take on the JavaScript side.
import type { CaptureRecord } from './format.js';

export const DEFAULT_RING_BYTES = 4 << 20;

/** One recorded batch as readers see it (data is the reader's own copy). */
export interface Segment {
  tsUs: number;
  outbound: boolean;
  data: Buffer;
  /** end offset of each frame in data */
  ends: Int32Array;
  count: number;
}

export type SegmentListener = (s: Segment) => void;

/** What capture readers need of a ring: what it holds, and its frames as they come. */
export interface RingSource {
  snapshot(): Segment[];
  /** called with each batch recorded after it was added */
  readonly listeners: Set<SegmentListener>;
  /** frames live readers could not take in time; readers add their own */
  readerDrops: number;
}

export function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

export function segmentRecords(s: Segment, iface: number, out: CaptureRecord[]): void {
  let start = 0;
  for (let i = 0; i < s.count; i++) {
    const end = s.ends[i]!;
    out.push({ iface, tsUs: s.tsUs, outbound: s.outbound, origLen: end - start, data: s.data.subarray(start, end) });
    start = end;
  }
}
