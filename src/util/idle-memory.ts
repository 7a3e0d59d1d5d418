// Gives memory back after a burst. Bringing up a thousand wires leaves the
// JavaScript heap with tens of megabytes of garbage and of young-generation
// pages it grew into and keeps, and glibc with what the addon freed: an idle
// daemon measured 62 kB of RSS per wire end (bench:scale, 1000 links),
// 13.5 MB of live JavaScript among 56 MB of heap. So once a burst of changes
// has settled (and once after start), the native side collects (V8's
// low-memory notification) and trims (malloc_trim): never per change, never
// on a timer while nothing changes. A collection stops the event loop for
// tens of milliseconds, and 90-110 ms when the cores are busy (a lab that
// carried TCP right after `up`), so it waits while frames keep its other
// threads busy.

import { readdirSync, readFileSync } from 'node:fs';

/** Changes that make a burst worth it (a single `wire add` is not). */
export const BURST_CHANGES = 32;
/** Quiet time after the last change before collecting. */
export const SETTLE_MS = 3000;
/** Busier than this over PROBE_MS (share of one core, threads other than the event loop's): traffic flows, collect later. */
export const BUSY_SHARE = 0.1;
/** A daemon busy for this long collects anyway. */
export const MAX_POSTPONE_MS = 5 * 60_000;

export interface IdleMemoryOptions {
  /** CPU time so far of the work that should put a collection off, microseconds */
  cpuMicros?: () => number;
  maxPostponeMs?: number;
}

/** How long the CPU of the other threads is watched before a collection. */
export const PROBE_MS = 500;

/**
 * CPU time of the process's threads other than the event loop's (the frame
 * engine's above all), microseconds, from each thread's schedstat. The event
 * loop's own work (a cluster daemon writes statuses for seconds after a
 * burst) must not put the collection off: it runs on that same thread, and
 * put off, it fell into the idle time that bench:scale measures. Monotonic:
 * each thread adds what it used since the last call, so a thread that ended
 * takes nothing back.
 */
export function otherThreadsCpu(): () => number {
  const last = new Map<string, number>();
  let total = 0;
  let first = true;
  return () => {
    let tids: string[];
    try {
      tids = readdirSync('/proc/self/task');
    } catch {
      return total;
    }
    const seen = new Map<string, number>();
    for (const tid of tids) {
      if (tid === String(process.pid)) continue;
      try {
        const ns = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
        if (!Number.isFinite(ns)) continue;
        seen.set(tid, ns);
        // A thread that started since the last call used all of its time since.
        total += Math.max(0, ns - (last.get(tid) ?? (first ? ns : 0)));
      } catch {
        // the thread ended meanwhile
      }
    }
    first = false;
    last.clear();
    for (const [k, v] of seen) last.set(k, v);
    return total / 1000;
  };
}

export class IdleMemory {
  private changes = 0;
  private timer: NodeJS.Timeout | null = null;
  private startPending = false;
  /** a settled burst whose collection waits for PROBE_MS of the other threads' CPU */
  private probe: { cpu: number; at: number } | null = null;
  private postponedSince: number | null = null;
  private readonly cpuMicros: () => number;
  private readonly maxPostponeMs: number;
  /** collections done (for health and tests) */
  collections = 0;

  constructor(
    private readonly returnFreed: () => boolean,
    private readonly log: (m: string) => void,
    o: IdleMemoryOptions = {},
  ) {
    this.cpuMicros = o.cpuMicros ?? otherThreadsCpu();
    this.maxPostponeMs = o.maxPostponeMs ?? MAX_POSTPONE_MS;
  }

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
    this.probe = null;
    this.timer = setTimeout(() => this.settle(), SETTLE_MS);
    this.timer.unref();
  }

  private settle(): void {
    this.timer = null;
    const changes = this.changes;
    const start = this.startPending;
    if (changes < BURST_CHANGES && !start) {
      this.changes = 0;
      return;
    }
    // Sampled here, not at each change: a thousand wire changes would each
    // read /proc, and the plumbing's own threads would count as traffic.
    if (!this.probe) {
      this.probe = { cpu: this.cpuMicros(), at: performance.now() };
      this.timer = setTimeout(() => this.settle(), PROBE_MS);
      this.timer.unref();
      return;
    }
    const now = performance.now();
    const share = (this.cpuMicros() - this.probe.cpu) / (Math.max(1, now - this.probe.at) * 1000);
    this.probe = null;
    if (share > BUSY_SHARE && now - (this.postponedSince ?? now) < this.maxPostponeMs) {
      if (this.postponedSince === null) this.log(`returning freed memory later: the daemon is busy carrying frames (${Math.round(share * 100)}% of a core)`);
      this.postponedSince ??= now;
      this.arm();
      return;
    }
    this.postponedSince = null;
    this.changes = 0;
    this.startPending = false;
    const before = process.memoryUsage();
    const t0 = performance.now();
    this.returnFreed();
    const tookMs = performance.now() - t0;
    this.collections++;
    const after = process.memoryUsage();
    const mb = (b: number): string => (b / 2 ** 20).toFixed(1);
    this.log(`after ${changes >= BURST_CHANGES ? `${changes} wire changes` : 'starting'}: returned freed memory in ${tookMs.toFixed(1)} ms, RSS ${mb(before.rss)} -> ${mb(after.rss)} MB (JavaScript heap ${mb(before.heapUsed)} of ${mb(before.heapTotal)} -> ${mb(after.heapUsed)} of ${mb(after.heapTotal)} MB)`);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.probe = null;
  }
}
