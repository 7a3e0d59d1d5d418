// Reusable memory for encoded frame batches. A batch goes to the peer
// stream with its gRPC prefix in place; once node:http2 has written it to
// the socket its memory comes back here instead of becoming garbage (large
// buffers were about a fifth of the daemon's CPU in GC under load).

const MIN_SHIFT = 12; // 4 KiB
const MAX_SHIFT = 23; // 8 MiB: 64 GSO super-frames fit
const KEEP_PER_SIZE = 16;

export class BufferPool {
  private readonly free: ArrayBuffer[][] = [];
  /** only memory this pool handed out may come back (never Node's shared slab) */
  private readonly mine = new WeakSet<ArrayBuffer>();
  allocated = 0;
  reused = 0;

  constructor() {
    for (let s = 0; s <= MAX_SHIFT; s++) this.free.push([]);
  }

  private static shift(n: number): number {
    let s = MIN_SHIFT;
    while (1 << s < n) s++;
    return s;
  }

  /** A buffer of exactly `n` bytes (contents undefined). */
  take(n: number): Buffer {
    const s = BufferPool.shift(n);
    if (s > MAX_SHIFT) return Buffer.allocUnsafeSlow(n);
    const ab = this.free[s]!.pop();
    if (ab) {
      this.reused++;
      return Buffer.from(ab, 0, n);
    }
    const fresh = new ArrayBuffer(1 << s);
    this.mine.add(fresh);
    this.allocated++;
    return Buffer.from(fresh, 0, n);
  }

  /** Gives a buffer from take() back; anything else is ignored. */
  give(b: Buffer): void {
    const ab = b.buffer as ArrayBuffer;
    if (!this.mine.has(ab)) return;
    const list = this.free[BufferPool.shift(ab.byteLength)]!;
    if (list.length < KEEP_PER_SIZE) list.push(ab);
  }
}

/** One pool per daemon process: frames of every wire share it. */
export const batchPool = new BufferPool();
