// The always-on capture ring of one wire end: every frame in both directions,
// with the time the daemon received it, bounded in bytes (oldest dropped
// first). Copies one batch into one buffer; never blocks forwarding.
import type { CaptureRecord } from './format.js';

export const DEFAULT_RING_BYTES = 4 << 20;

export interface Segment {
  tsUs: number;
  outbound: boolean;
  data: Buffer;
  /** end offset of each frame in data */
  ends: Int32Array;
  count: number;
}

export type SegmentListener = (s: Segment) => void;

export function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

export class CaptureRing {
  private segments: Segment[] = [];
  private head = 0;
  private bytes = 0;
  readonly listeners = new Set<SegmentListener>();
  /** frames that fell out of the ring (the normal life of a ring, not a loss) */
  evicted = 0;
  /** frames live readers could not take in time */
  readerDrops = 0;

  constructor(readonly limitBytes: number) {}

  /**
   * Records `count` frames: frame i starts at src[off[i*offStride] + offAdd]
   * and is len[i*lenStride] bytes long (strides let a port's interleaved
   * [offset, length] metadata be read in place).
   */
  record(src: Uint8Array, off: ArrayLike<number>, offStride: number, offAdd: number, len: ArrayLike<number>, lenStride: number, count: number, outbound: boolean): void {
    if (count === 0 || this.limitBytes <= 0) return;
    let total = 0;
    for (let i = 0; i < count; i++) total += len[i * lenStride]!;
    const data = Buffer.allocUnsafe(total);
    const ends = new Int32Array(count);
    let pos = 0;
    for (let i = 0; i < count; i++) {
      const o = off[i * offStride]! + offAdd;
      const l = len[i * lenStride]!;
      data.set(src.subarray(o, o + l), pos);
      pos += l;
      ends[i] = pos;
    }
    const seg: Segment = { tsUs: nowUs(), outbound, data, ends, count };
    this.segments.push(seg);
    this.bytes += total;
    while (this.bytes > this.limitBytes && this.head < this.segments.length - 1) {
      const old = this.segments[this.head]!;
      this.segments[this.head++] = undefined as unknown as Segment;
      this.bytes -= old.data.length;
      this.evicted += old.count;
    }
    if (this.head > 1024 && this.head * 2 > this.segments.length) {
      this.segments = this.segments.slice(this.head);
      this.head = 0;
    }
    for (const l of this.listeners) l(seg);
  }

  /** What the ring holds now, oldest first. */
  snapshot(): Segment[] {
    return this.segments.slice(this.head);
  }

  get heldBytes(): number {
    return this.bytes;
  }
}

export function segmentRecords(s: Segment, iface: number, out: CaptureRecord[]): void {
  let start = 0;
  for (let i = 0; i < s.count; i++) {
    const end = s.ends[i]!;
    out.push({ iface, tsUs: s.tsUs, outbound: s.outbound, origLen: end - start, data: s.data.subarray(start, end) });
    start = end;
  }
}
