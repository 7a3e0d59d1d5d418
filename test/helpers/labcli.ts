// Drives the patchwire CLI for lab tests, and checks a lab left nothing behind.
import { readdirSync, readFileSync, existsSync } from 'node:fs';

import { CLI, listNetns, run, type RunResult } from './testnet.js';

export function pw(...args: string[]): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], { timeoutMs: 300000 });
}

export async function pwOk(...args: string[]): Promise<string> {
  const r = await pw(...args);
  if (r.code !== 0) throw new Error(`patchwire ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Everything of a lab that could be left behind: namespaces, processes, files. */
export function labTraces(lab: string): { namespaces: string[]; processes: string[]; dir: boolean } {
  const namespaces = listNetns().filter((n) => n.startsWith(`pw-${lab}-`) || n.startsWith(`pwn-${lab}-`) || n === `pwu-${lab}`);
  const processes: string[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (cmd.some((a) => a.endsWith('patchwire.js')) && cmd.includes(lab)) processes.push(`${d}: ${cmd.join(' ')}`);
    } catch {
      /* gone */
    }
  }
  return { namespaces, processes, dir: existsSync(`/run/patchwire/labs/${lab}`) };
}

export interface StatusJson {
  name: string;
  nodes: Array<{ name: string; pid: number; healthy: boolean; restarts: number; unknown_wire: number }>;
  pods: Array<{ name: string; node: string; netns: string }>;
  wires: Array<{
    uid: number;
    endpoints: [string, string];
    nodes: [string, string];
    state: string;
    a_to_b: { frames: number; bytes: number };
    b_to_a: { frames: number; bytes: number };
    drops: Record<string, Record<string, number>>;
    ends: [EndStatus, EndStatus];
  }>;
}

export interface EndStatus {
  name: string;
  node: string;
  ifindex: number;
  rx_frames: number;
  rx_bytes: number;
  tx_frames: number;
  tx_bytes: number;
  drops: Record<string, number>;
  capture_drops: number;
}

/** Drop causes a daemon decides for a frame it has read (queue_full, peer_down) and ones the far end decides before the frame leaves it. */
const SENDER_CAUSES = ['queue_full', 'peer_down'];
const RECEIVER_CAUSES = ['too_big', 'send_busy', 'send_error'];

/**
 * The accounting of one direction of a wire, from end `from` to end `to`:
 * frames read from `from`'s interface, frames written into `to`'s, and the
 * frames dropped on the way with a cause. With nothing in flight,
 * read = delivered + dropped. With `base`, the counts since that snapshot.
 */
export function direction(from: EndStatus, to: EndStatus, base?: { from: EndStatus; to: EndStatus }): { read: number; delivered: number; dropped: number; kernel: number } {
  const sum = (e: EndStatus, causes: string[]): number => causes.reduce((a, c) => a + Number(e.drops[c] ?? 0), 0);
  const now = { read: from.rx_frames, delivered: to.tx_frames, dropped: sum(from, SENDER_CAUSES) + sum(to, RECEIVER_CAUSES), kernel: Number(from.drops.kernel_ring ?? 0) + Number(from.drops.truncated ?? 0) };
  if (!base) return now;
  const was = direction(base.from, base.to);
  return { read: now.read - was.read, delivered: now.delivered - was.delivered, dropped: now.dropped - was.dropped, kernel: now.kernel - was.kernel };
}

export async function statusJson(lab: string): Promise<StatusJson> {
  return JSON.parse(await pwOk('status', lab, '--json')) as StatusJson;
}

/**
 * Reads `read()` until two reads 200 ms apart agree on `key` (counters that
 * stopped moving: no frame in flight between the ends), and returns the last.
 */
export async function settled<T>(what: string, read: () => Promise<T>, key: (v: T) => unknown = (v) => v, timeoutMs = 60000): Promise<T> {
  let last = await read();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    const now = await read();
    if (JSON.stringify(key(now)) === JSON.stringify(key(last))) return now;
    if (Date.now() > deadline) throw new Error(`${what} kept moving for ${timeoutMs} ms`);
    last = now;
  }
}

/** The lab's status once its counters have stopped moving. */
export function settledStatus(lab: string, timeoutMs = 60000): Promise<StatusJson> {
  return settled(`the counters of lab ${lab}`, () => statusJson(lab), (s) => [s.nodes.map((n) => [n.name, n.pid, n.unknown_wire]), s.wires.map((w) => w.ends)], timeoutMs);
}
