// The always-on capture ring of one wire end: every frame in both directions,
// with the time the daemon received it, bounded in bytes (oldest dropped
// first). Frames are copied into one preallocated byte ring, so recording
// allocates nothing per batch (no garbage on the frame path); copies are made
// only for readers (snapshot, live listeners). Never blocks forwarding.
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

/** One recorded batch inside the ring. */
interface Slot {
  tsUs: number;
  outbound: boolean;
  start: number;
  bytes: number;
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

export class CaptureRing {
  private buf: Buffer | null = null;
  private slots: Slot[] = [];
  private head = 0;
  private wpos = 0;
  private bytes = 0;
  readonly listeners = new Set<SegmentListener>();
  /** frames that fell out of the ring (the normal life of a ring, not a loss) */
  evicted = 0;
  /** frames live readers could not take in time */
  readerDrops = 0;

  constructor(readonly limitBytes: number) {}

  private evictHead(): void {
    const old = this.slots[this.head]!;
    this.slots[this.head++] = undefined as unknown as Slot;
    this.bytes -= old.bytes;
    this.evicted += old.count;
  }

  /**
   * Records `count` frames: frame i starts at src[off[i*offStride] + offAdd]
   * and is len[i*lenStride] bytes long (strides let a port's interleaved
   * [offset, length] metadata be read in place).
   */
  record(src: Uint8Array, off: ArrayLike<number>, offStride: number, offAdd: number, len: ArrayLike<number>, lenStride: number, count: number, outbound: boolean): void {
    if (count === 0 || this.limitBytes <= 0) return;
    let total = 0;
    for (let i = 0; i < count; i++) total += len[i * lenStride]!;
    // A batch larger than the whole ring keeps only its newest frames.
    let first = 0;
    while (total > this.limitBytes && first < count) {
      total -= len[first * lenStride]!;
      first++;
      this.evicted++;
    }
    if (first === count) return;
    // Sized on first use: an idle wire end costs nothing.
    this.buf ??= Buffer.allocUnsafe(this.limitBytes);
    if (this.wpos + total > this.limitBytes) {
      // The tail of the buffer is too short: start over at 0. Slots still in
      // the tail are the oldest (previous lap), so FIFO order holds.
      while (this.head < this.slots.length && this.slots[this.head]!.start >= this.wpos) this.evictHead();
      this.wpos = 0;
    }
    const start = this.wpos;
    while (this.head < this.slots.length) {
      const h = this.slots[this.head]!;
      if (h.start < start + total && h.start + h.bytes > start) this.evictHead();
      else break;
    }
    const ends = new Int32Array(count - first);
    let pos = start;
    for (let i = first; i < count; i++) {
      const o = off[i * offStride]! + offAdd;
      const l = len[i * lenStride]!;
      this.buf.set(src.subarray(o, o + l), pos);
      pos += l;
      ends[i - first] = pos - start;
    }
    this.wpos = pos;
    const slot: Slot = { tsUs: nowUs(), outbound, start, bytes: total, ends, count: count - first };
    this.slots.push(slot);
    this.bytes += total;
    if (this.head > 1024 && this.head * 2 > this.slots.length) {
      this.slots = this.slots.slice(this.head);
      this.head = 0;
    }
    if (this.listeners.size) {
      const seg = this.copy(slot);
      for (const l of this.listeners) l(seg);
    }
  }

  private copy(s: Slot): Segment {
    return { tsUs: s.tsUs, outbound: s.outbound, data: Buffer.from(this.buf!.subarray(s.start, s.start + s.bytes)), ends: s.ends, count: s.count };
  }

  /** What the ring holds now, oldest first, as copies the ring will not overwrite. */
  snapshot(): Segment[] {
    const out: Segment[] = [];
    for (let i = this.head; i < this.slots.length; i++) out.push(this.copy(this.slots[i]!));
    return out;
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
