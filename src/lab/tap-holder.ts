// Keeps a lab's taps' carrier through daemon restarts. The kernel takes a
// tap's carrier away when its last attached queue closes, which is what a
// killed daemon's exit does; a detached queue held by another process stops
// that (the tap then only drops what the pod sends, as the kernel's own
// tx_dropped, until the restarted daemon attaches again and reads it). The
// lab's supervisor outlives its daemons, so it holds one detached queue of
// every tap end of the lab (wire.holdTap). Lab mode only: in cluster mode a
// daemon's container takes whatever it would hold with it. Taking the hold
// attaches the queue for the microseconds before it is detached; a frame the
// kernel steers to it then is lost with it (the kernel counts nothing), so
// holds are taken once per tap, not again while it lives.
import { closeSync, type FSWatcher, watch } from 'node:fs';

import { wire } from '../native/wire.js';
import { netnsPath } from '../netns/ip.js';
import { labDir, readLab } from './state.js';

interface Held {
  ifindex: number;
  /** -1: not held; `error` says why (said once) */
  fd: number;
  error?: string;
}

/** Retry delays while a tap end of the lab does not exist yet (being plumbed). */
const RETRY_MS = { first: 250, max: 10_000 };

export class TapHolder {
  private readonly held = new Map<string, Held>();
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private retryMs = RETRY_MS.first;

  constructor(
    private readonly lab: string,
    private readonly log: (m: string) => void,
  ) {}

  start(): void {
    // The lab's file changes when `up` adds or removes links: hold what it now has.
    this.watcher = watch(labDir(this.lab), (_event, file) => {
      if (file === 'lab.json') this.soon(50);
    });
    this.watcher.on('error', () => undefined);
    this.reconcile();
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const h of this.held.values()) if (h.fd >= 0) closeSync(h.fd);
    this.held.clear();
  }

  /** Tap ends held now (netns/ifname), for tests and logs. */
  heldEnds(): string[] {
    return [...this.held].filter(([, h]) => h.fd >= 0).map(([k]) => k);
  }

  private soon(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reconcile();
    }, ms);
  }

  /** The lab's tap ends as netns/ifname. */
  private wanted(): Set<string> {
    const state = readLab(this.lab);
    const out = new Set<string>();
    if (!state) return out;
    const nsOf = new Map(state.pods.map((p) => [p.name, p.ns]));
    for (const l of state.links) {
      for (const e of [l.a, l.b]) {
        const ns = nsOf.get(e.pod);
        if (e.kind === 'tap' && ns) out.add(`${ns}/${e.intf}`);
      }
    }
    return out;
  }

  reconcile(): void {
    let want: Set<string>;
    try {
      want = this.wanted();
    } catch (err) {
      this.log(`tap holder: ${(err as Error).message}`);
      return;
    }
    for (const [key, h] of this.held) {
      if (want.has(key)) continue;
      if (h.fd >= 0) closeSync(h.fd);
      this.held.delete(key);
    }
    let missing = 0;
    for (const key of want) {
      const slash = key.indexOf('/');
      const ns = key.slice(0, slash);
      const ifname = key.slice(slash + 1);
      const had = this.held.get(key);
      try {
        const r = wire.holdTap(ifname, netnsPath(ns), had?.ifindex ?? 0);
        if (!r) {
          // Not plumbed yet, or removed: nothing to hold until it is there.
          if (had && had.fd >= 0) closeSync(had.fd);
          this.held.delete(key);
          missing++;
          continue;
        }
        if (r.same) continue;
        if (had && had.fd >= 0) closeSync(had.fd);
        this.held.set(key, { ifindex: r.ifindex, fd: r.fd! });
      } catch (err) {
        // Not a tap that can be held (a single-queue tap made by an older
        // daemon, say): its carrier blinks when its daemon restarts, as before.
        if (had && had.fd >= 0) closeSync(had.fd);
        const error = (err as Error).message;
        if (had?.error !== error) this.log(`tap holder: ${key}: ${error}; its carrier will blink when its daemon restarts`);
        this.held.set(key, { ifindex: 0, fd: -1, error });
      }
    }
    if (missing > 0) {
      this.soon(this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MS.max);
    } else {
      this.retryMs = RETRY_MS.first;
    }
  }
}
