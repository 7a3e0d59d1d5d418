// A wire end's capture ring as capture readers see it, backed by the frame
// engine's native ring: snapshots are copied out in one call, and live
// listeners get segments the engine queued for them, drained in batches when
// the engine says a reader has data (never once per frame).
import type { NativeEngine } from '../native/wire.js';
import type { Segment, SegmentListener } from '../capture/ring.js';

/** Parses the engine's serialization: per segment u64 tsUs, u8 outbound, u32 count, u32 lens[count], bytes. */
export function parseSegments(buf: Buffer): Segment[] {
  const out: Segment[] = [];
  let pos = 0;
  while (pos + 13 <= buf.length) {
    const tsUs = Number(buf.readBigUInt64LE(pos));
    const outbound = buf[pos + 8] === 1;
    const count = buf.readUInt32LE(pos + 9);
    pos += 13;
    const ends = new Int32Array(count);
    let total = 0;
    for (let i = 0; i < count; i++) {
      total += buf.readUInt32LE(pos + 4 * i);
      ends[i] = total;
    }
    pos += 4 * count;
    if (pos + total > buf.length) throw new Error('capture segment runs past the buffer');
    out.push({ tsUs, outbound, data: buf.subarray(pos, pos + total), ends, count });
    pos += total;
  }
  return out;
}

/** Bytes a live reader may have queued in the engine before it loses frames (counted). */
const READER_QUEUE_BYTES = 8 << 20;

/**
 * A ring's live listeners: adding the first starts an engine reader, removing
 * the last stops it. One class for every ring (a class made per ring cost
 * each idle wire end its own constructor, prototype and maps).
 */
class ListenerSet extends Set<SegmentListener> {
  constructor(
    private readonly onFirst: () => void,
    private readonly onLast: () => void,
  ) {
    super();
  }

  override add(l: SegmentListener): this {
    super.add(l);
    if (this.size === 1) this.onFirst();
    return this;
  }

  override delete(l: SegmentListener): boolean {
    const had = super.delete(l);
    if (had && this.size === 0) this.onLast();
    return had;
  }
}

export class EngineRing {
  /** frames live readers could not take in time (the engine's count plus the sessions' own) */
  private extraDrops = 0;
  private reader = 0;
  readonly listeners: Set<SegmentListener>;

  constructor(
    private readonly engine: NativeEngine,
    private readonly uid: number,
    private readonly end: number,
    private readonly readers: Map<number, EngineRing>,
  ) {
    this.listeners = new ListenerSet(
      () => this.startReader(),
      () => this.stopReader(),
    );
  }

  private startReader(): void {
    this.reader = this.engine.ringReaderAdd(this.uid, this.end, READER_QUEUE_BYTES);
    if (this.reader > 0) this.readers.set(this.reader, this);
  }

  private stopReader(): void {
    if (this.reader > 0) {
      this.engine.ringReaderRemove(this.reader);
      this.readers.delete(this.reader);
    }
    this.reader = 0;
  }

  /** The engine queued segments for our reader. */
  drain(): void {
    if (this.reader === 0) return;
    const got = this.engine.ringReaderDrain(this.reader);
    if (!got) return;
    for (const seg of parseSegments(got.data)) for (const l of this.listeners) l(seg);
  }

  snapshot(): Segment[] {
    const buf = this.engine.ringSnapshot(this.uid, this.end);
    return buf ? parseSegments(buf) : [];
  }

  get readerDrops(): number {
    return this.extraDrops + (this.engine.counters(this.uid)?.[this.end]?.captureDrops ?? 0);
  }

  set readerDrops(v: number) {
    // Capture sessions add the frames they themselves could not queue.
    this.extraDrops = v - (this.engine.counters(this.uid)?.[this.end]?.captureDrops ?? 0);
  }

  close(): void {
    this.listeners.clear();
    this.stopReader();
  }
}
