// Gives memory back after a burst. Bringing up a thousand wires leaves the
// JavaScript heap with tens of megabytes of garbage and of young-generation
// pages it grew into and keeps, and glibc with what the addon freed: an idle
// daemon measured 62 kB of RSS per wire end (bench:scale, 1000 links),
// 13.5 MB of live JavaScript among 56 MB of heap. So once a burst of changes
// has settled (and once after start), the native side collects (V8's
// low-memory notification) and trims (malloc_trim): never per change, never
// on a timer while nothing changes.

/** Changes that make a burst worth it (a single `wire add` is not). */
export const BURST_CHANGES = 32;
/** Quiet time after the last change before collecting. */
export const SETTLE_MS = 3000;

export class IdleMemory {
  private changes = 0;
  private timer: NodeJS.Timeout | null = null;
  private startPending = false;
  /** collections done (for health and tests) */
  collections = 0;

  constructor(
    private readonly returnFreed: () => boolean,
    private readonly log: (m: string) => void,
  ) {}

  /** The daemon is up: loading and starting it was a burst of its own. */
  started(): void {
    this.startPending = true;
    this.arm();
  }

  /** A wire came or went. */
  changed(): void {
    this.changes++;
    this.arm();
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.settle(), SETTLE_MS);
    this.timer.unref();
  }

  private settle(): void {
    this.timer = null;
    const changes = this.changes;
    const start = this.startPending;
    this.changes = 0;
    this.startPending = false;
    if (changes < BURST_CHANGES && !start) return;
    const before = process.memoryUsage();
    this.returnFreed();
    this.collections++;
    const after = process.memoryUsage();
    const mb = (b: number): string => (b / 2 ** 20).toFixed(1);
    this.log(`after ${changes >= BURST_CHANGES ? `${changes} wire changes` : 'starting'}: returned freed memory, RSS ${mb(before.rss)} -> ${mb(after.rss)} MB (JavaScript heap ${mb(before.heapUsed)} of ${mb(before.heapTotal)} -> ${mb(after.heapUsed)} of ${mb(after.heapTotal)} MB)`);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
