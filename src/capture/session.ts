// One reader of one or more capture rings: first what the rings hold, then
// (in follow mode) live frames until the reader goes away or a count or
// duration is reached. A reader that falls behind loses capture data, counted;
// forwarding never waits for it.
import type { CaptureRecord } from './format.js';
import { type RingSource, type Segment, segmentRecords } from './ring.js';

export interface CaptureSource {
  ring: RingSource;
  iface: number;
}

export interface SessionOptions {
  follow: boolean;
  /** stop after this many frames (0: no limit) */
  count: number;
  /** stop after this long (0: no limit) */
  durationMs: number;
  /** live frames waiting for a slow reader, at most */
  maxQueueBytes: number;
  /** called once when the session ends, however it ends */
  onClose?: () => void;
}

export interface SessionSink {
  /** Takes records; false asks the session to wait for resume(). */
  write(records: CaptureRecord[], ringDone: boolean): boolean;
  end(): void;
}

const CHUNK = 256;

/** live frames one session holds for a slow reader, at most */
export const READER_QUEUE_BYTES = 16 << 20;

export class CaptureSession {
  drops = 0;
  sent = 0;
  private queue: Array<{ seg: Segment; iface: number }> = [];
  private queuedBytes = 0;
  private paused = false;
  private ended = false;
  private scheduled = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly listeners: Array<[RingSource, (s: Segment) => void]> = [];
  private pendingRing: CaptureRecord[] = [];

  constructor(
    private readonly sources: CaptureSource[],
    private readonly opts: SessionOptions,
    private readonly sink: SessionSink,
  ) {}

  private opened = false;

  /**
   * Copies what the rings hold and returns how many bytes the session may
   * hold (that copy and its live queue), so a gate can admit it before
   * anything is sent. start() calls it if nobody did.
   */
  open(): number {
    this.opened = true;
    const recs: CaptureRecord[] = [];
    let bytes = 0;
    for (const s of this.sources) {
      for (const seg of s.ring.snapshot()) {
        bytes += seg.data.length;
        segmentRecords(seg, s.iface, recs);
      }
    }
    // Stable sort: frames of one batch keep their order.
    recs.sort((a, b) => a.tsUs - b.tsUs);
    this.pendingRing = recs;
    return bytes + (this.opts.follow ? this.opts.maxQueueBytes : 0);
  }

  start(): void {
    if (!this.opened) this.open();
    if (this.opts.follow) {
      for (const s of this.sources) {
        const l = (seg: Segment): void => this.onSegment(seg, s.iface, s.ring);
        s.ring.listeners.add(l);
        this.listeners.push([s.ring, l]);
      }
      if (this.opts.durationMs > 0) this.timer = setTimeout(() => this.finish(), this.opts.durationMs);
    }
    this.pump();
  }

  private onSegment(seg: Segment, iface: number, ring: RingSource): void {
    if (this.ended) return;
    if (this.queuedBytes + seg.data.length > this.opts.maxQueueBytes) {
      this.drops += seg.count;
      ring.readerDrops += seg.count;
      return;
    }
    this.queue.push({ seg, iface });
    this.queuedBytes += seg.data.length;
    if (!this.scheduled && !this.paused) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.pump();
      });
    }
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  private limit(recs: CaptureRecord[]): CaptureRecord[] {
    if (this.opts.count > 0 && this.sent + recs.length > this.opts.count) return recs.slice(0, this.opts.count - this.sent);
    return recs;
  }

  private emit(recs: CaptureRecord[], ringDone: boolean): boolean {
    const r = this.limit(recs);
    this.sent += r.length;
    const ok = this.sink.write(r, ringDone);
    if (this.opts.count > 0 && this.sent >= this.opts.count) {
      this.finish();
      return false;
    }
    return ok;
  }

  private ringSignaled = false;

  private pump(): void {
    if (!this.ringSignaled && this.pendingRing.length === 0 && !this.ended) {
      // An empty ring still tells the reader where the live part starts.
      this.ringSignaled = true;
      if (!this.emit([], true)) this.paused = true;
    }
    while (!this.ended && !this.paused) {
      if (this.pendingRing.length > 0) {
        const chunk = this.pendingRing.splice(0, CHUNK);
        const last = this.pendingRing.length === 0;
        if (last) this.ringSignaled = true;
        if (!this.emit(chunk, last)) this.paused = true;
        if (last && !this.opts.follow) return this.finish();
        continue;
      }
      if (this.pendingRing.length === 0 && !this.opts.follow) return this.finish();
      const item = this.queue.shift();
      if (!item) return;
      this.queuedBytes -= item.seg.data.length;
      const recs: CaptureRecord[] = [];
      segmentRecords(item.seg, item.iface, recs);
      if (!this.emit(recs, false)) this.paused = true;
    }
  }

  /** Ends the session (count or duration reached, or no follow). */
  finish(): void {
    if (this.ended) return;
    this.stop();
    this.sink.end();
  }

  /** The reader went away. */
  stop(): void {
    if (!this.ended) this.opts.onClose?.();
    this.ended = true;
    this.pendingRing = [];
    if (this.timer) clearTimeout(this.timer);
    for (const [ring, l] of this.listeners) ring.listeners.delete(l);
    this.listeners.length = 0;
    this.queue = [];
  }
}
