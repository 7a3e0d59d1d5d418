// Keeps taps' carrier through daemon restarts. The kernel takes a tap's
// carrier away when its last attached queue closes, which is what a killed
// daemon's exit does; a detached queue held by another process stops that
// (the tap then only drops what the pod sends, as the kernel's own
// tx_dropped, until the restarted daemon attaches again and reads it). A
// process that outlives the daemons holds one detached queue of every wanted
// tap end (wire.holdTap): a lab's supervisor (the lab's file says which,
// src/lab/tap-ends.ts) or, in a cluster, the `patchwire tap-holder` container
// beside the daemon's (its state file says which, src/daemon/state-tap-ends.ts).
// Taking the hold attaches the queue for the microseconds before it is
// detached; a frame the kernel steers to it then is lost with it (the kernel
// counts nothing), so holds are taken once per tap, not again while it lives.
import { closeSync, type FSWatcher, watch } from 'node:fs';
import path from 'node:path';

import { wire } from '../native/wire.js';
import { netnsPath } from '../netns/ip.js';

export interface TapEnd {
  /** network namespace name (under /var/run/netns) or path */
  netns: string;
  ifname: string;
}

/** Which tap ends are wanted, and the file whose changes may change that. */
export interface TapEndSource {
  /** a file rewritten (in place or renamed over) when the wanted ends change */
  readonly file: string;
  /** the wanted ends; null: cannot tell now (keep what is held); throws the same */
  wanted(): TapEnd[] | null;
}

interface Held {
  ifindex: number;
  /** -1: not held; `error` says why (said once) */
  fd: number;
  error?: string;
}

/** Retry delays while a wanted tap end does not exist yet (being plumbed). */
const RETRY_MS = { first: 250, max: 10_000 };

const keyOf = (e: TapEnd): string => JSON.stringify([netnsPath(e.netns), e.ifname]);

export class TapHolder {
  private readonly held = new Map<string, Held>();
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private resync: NodeJS.Timeout | null = null;
  private retryMs = RETRY_MS.first;

  /** `resyncMs`: reconcile this often besides on file changes (0: only then) */
  constructor(
    private readonly source: TapEndSource,
    private readonly log: (m: string) => void,
    private readonly resyncMs = 0,
  ) {}

  start(): void {
    // The file is replaced by a rename: watch its directory for its name.
    const base = path.basename(this.source.file);
    try {
      this.watcher = watch(path.dirname(this.source.file), (_event, file) => {
        if (file === base) this.soon(50);
      });
      this.watcher.on('error', () => undefined);
    } catch (err) {
      // No directory to watch (yet): look every few seconds instead.
      this.log(`tap holder: cannot watch ${path.dirname(this.source.file)} (${(err as Error).message}); looking at ${this.source.file} every 2 s instead`);
      this.resync = setInterval(() => this.reconcile(), 2000);
    }
    if (this.resyncMs > 0 && !this.resync) this.resync = setInterval(() => this.reconcile(), this.resyncMs);
    this.reconcile();
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
    if (this.resync) clearInterval(this.resync);
    this.timer = null;
    this.resync = null;
    for (const h of this.held.values()) if (h.fd >= 0) closeSync(h.fd);
    this.held.clear();
  }

  /** Tap ends held now (netns path and ifname), for tests and logs. */
  heldEnds(): TapEnd[] {
    return [...this.held].filter(([, h]) => h.fd >= 0).map(([k]) => {
      const [netns, ifname] = JSON.parse(k) as [string, string];
      return { netns, ifname };
    });
  }

  private soon(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reconcile();
    }, ms);
  }

  reconcile(): void {
    let ends: TapEnd[] | null;
    try {
      ends = this.source.wanted();
    } catch (err) {
      this.log(`tap holder: ${(err as Error).message}`);
      return;
    }
    if (ends === null) return;
    const want = new Map(ends.map((e) => [keyOf(e), e]));
    for (const [key, h] of this.held) {
      if (want.has(key)) continue;
      if (h.fd >= 0) closeSync(h.fd);
      this.held.delete(key);
    }
    let missing = 0;
    for (const [key, end] of want) {
      const had = this.held.get(key);
      const name = `${end.netns}/${end.ifname}`;
      try {
        const r = wire.holdTap(end.ifname, netnsPath(end.netns), had?.ifindex ?? 0);
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
        this.log(`tap holder: holding ${name} (ifindex ${r.ifindex})`);
      } catch (err) {
        // Not a tap that can be held (a single-queue tap made by an older
        // daemon, say): its carrier blinks when its daemon restarts, as before.
        if (had && had.fd >= 0) closeSync(had.fd);
        const error = (err as Error).message;
        if (had?.error !== error) this.log(`tap holder: ${name}: ${error}; its carrier will blink when its daemon restarts`);
        this.held.set(key, { ifindex: 0, fd: -1, error });
        // Tried again later (the namespace being made, say); a tap that cannot
        // be held is said once and costs an attempt per retry.
        missing++;
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
