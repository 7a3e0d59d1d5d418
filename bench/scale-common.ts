// What bench:scale measures in both modes: probe frames through every wire,
// and a process's RSS and CPU from /proc.
import { readdirSync, readFileSync } from 'node:fs';

import { wire, type NativePort } from '../src/native/wire.js';

const ETHERTYPE = 0x88b5; // IEEE local experimental: nothing in a pod answers or sends it
const MAGIC = Buffer.from('pwscale!');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

/**
 * CPU time of the processes' live threads in seconds, from each thread's
 * schedstat (nanoseconds on the CPU). /proc/PID/stat's utime and stime come in
 * 10 ms ticks charged to whichever thread runs at the tick: too coarse for
 * brief wake-ups over a 10 s idle window (1% of a core is 10 ticks).
 */
export function cpuSeconds(pids: number[]): number {
  let ns = 0;
  for (const pid of pids) {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread ended meanwhile
      }
    }
  }
  return ns / 1e9;
}

/** A 64-byte broadcast frame naming the wire and direction it is sent into. */
function probeFrame(uid: number, dir: number): Buffer {
  const f = Buffer.alloc(64);
  f.fill(0xff, 0, 6);
  Buffer.from([0x02, 0x5c, 0, 0, 0, dir]).copy(f, 6);
  f.writeUInt16BE(ETHERTYPE, 12);
  MAGIC.copy(f, 14);
  f.writeUInt32BE(uid, 22);
  f[26] = dir;
  return f;
}

interface ProbeEnd {
  port: NativePort;
  frame: Buffer;
  /** the interface as it was opened */
  where: string;
  end: string;
  uid: number;
  dir: number;
  openedAt: number;
}

/** A receiving socket with nothing after this long is opened again (see probeAll). */
const REOPEN_MS = 10000;

/**
 * Sends a probe frame into both ends of every link until each has arrived at
 * the other end; resolves with the time the last one arrived, and the
 * receiving sockets that had to be opened again.
 */
export async function probeAll(netnsOf: (pod: string) => string, links: Array<{ uid: number; a: string; b: string }>, timeoutMs: number): Promise<{ at: number; reopened: string[] }> {
  const pending = new Set<string>();
  const reopened: string[] = [];
  const ports: ProbeEnd[] = [];
  const hdr = new Int32Array([-1]);
  const off = new Int32Array([0]);
  const len = new Int32Array([64]);
  const open = (end: string, uid: number, dir: number): ProbeEnd => {
    const [pod, intf] = end.split(':') as [string, string];
    const opened = wire.openPacket(intf, netnsOf(pod), { vnetHdr: false, bufBytes: 64 << 10 });
    const port = new wire.Port(opened.fd, 'packet', false, 2048, 4);
    port.start((count) => {
      const rx = Buffer.from(port.rx);
      for (let i = 0; i < count; i++) {
        const o = port.meta[2 * i]!;
        const l = port.meta[2 * i + 1]!;
        if (l < 27 || rx.readUInt16BE(o + 12) !== ETHERTYPE || !rx.subarray(o + 14, o + 22).equals(MAGIC)) continue;
        pending.delete(`${rx.readUInt32BE(o + 22)}/${rx[o + 26]}`);
      }
    });
    return { port, frame: probeFrame(uid, dir), where: `${end} (ifindex ${opened.ifindex})`, end, uid, dir, openedAt: Date.now() };
  };
  // Ends whose interface does not exist yet (a cluster-mode daemon plumbs
  // after CNI ADD has returned) are opened as they appear.
  let unopened: Array<{ end: string; uid: number; dir: number }> = [];
  try {
    for (const l of links) {
      unopened.push({ end: l.a, uid: l.uid, dir: 0 }, { end: l.b, uid: l.uid, dir: 1 });
      pending.add(`${l.uid}/0`).add(`${l.uid}/1`);
    }
    const deadline = Date.now() + timeoutMs;
    while (pending.size > 0) {
      if (Date.now() > deadline) {
        const opened = ports.filter((p) => pending.has(`${p.frame.readUInt32BE(22)}/${p.frame[26]}`) || pending.has(`${p.frame.readUInt32BE(22)}/${1 - p.frame[26]!}`)).map((p) => p.where);
        throw new Error(`${pending.size} wire directions carried no frame within ${timeoutMs / 1000} s (${unopened.length} interfaces never appeared): ${[...pending].slice(0, 8).join(', ')}; read and sent on ${opened.slice(0, 8).join(', ')}`);
      }
      unopened = unopened.filter((u) => {
        try {
          ports.push(open(u.end, u.uid, u.dir));
          return false;
        } catch (err) {
          if (/not found/.test((err as Error).message)) return true;
          throw err;
        }
      });
      // Seen in cluster mode, 1 run in 4 at 1000 links: a probe socket that
      // never reported the frames its interface's kernel counters show
      // arriving (the daemon's counters agree they were sent). A receiving
      // socket that still waits after REOPEN_MS is opened again; that
      // direction's time then counts the wait.
      for (let i = 0; i < ports.length; i++) {
        const p = ports[i]!;
        if (!pending.has(`${p.uid}/${1 - p.dir}`) || Date.now() - p.openedAt < REOPEN_MS) continue;
        p.port.close();
        ports[i] = open(p.end, p.uid, p.dir);
        reopened.push(p.where);
      }
      for (const p of ports) {
        const key = `${p.frame.readUInt32BE(22)}/${p.frame[26]}`;
        if (pending.has(key)) p.port.send(p.frame, hdr, off, len, 1);
      }
      // Frames sent into a wire that is not forwarding yet are lost, so resend
      // to whatever has not arrived; arrivals are read as they come.
      for (let i = 0; i < 10 && pending.size > 0; i++) await sleep(20);
    }
    return { at: Date.now(), reopened };
  } finally {
    for (const p of ports) p.port.close();
  }
}

export interface Row {
  links: number;
  pods: number;
  up_s: number;
  first_frame_s: number;
  down_s: number;
  baseline_rss_mb: number;
  rss_mb: number;
  rss_per_end_kb: number;
  /** daemons, supervisor included; percent of one core */
  idle_cpu_pct: number;
  idle_cpu_pct_daemons: number;
  /** frames the wires carried while idle CPU was measured (the pods' own: neighbour discovery and the like); lab mode */
  idle_frames?: number;
}

export const round = (x: number): number => Math.round(x * 100) / 100;
