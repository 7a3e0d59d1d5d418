// Fans in capture streams from several daemons into one time-ordered
// pcapng (or pcap) stream.
import type { Writable } from 'node:stream';

import type { ControlClient, PbCaptureResponse } from '../control/client.js';
import { errorFromGrpc } from '../control/service.js';
import { Cancelled, Unavailable } from '../errors.js';
import { type CaptureFormat, type CaptureInterface, type CaptureRecord, CaptureWriter } from './format.js';
import { nowUs } from './ring.js';

export interface MergeSource {
  /** node name, for errors */
  node: string;
  client: ControlClient;
  /** wire end names on that daemon, with the global interface id of each */
  wires: Array<{ name: string; id: number }>;
  /** the lab's capture token, when capturing a lab */
  token?: string;
}

export interface MergeOptions {
  format: CaptureFormat;
  follow: boolean;
  count: number;
  durationMs: number;
  interfaces: CaptureInterface[];
  out: Writable;
  /** live frames are held this long so that frames of all daemons leave in time order */
  reorderMs?: number;
  onProgress?: (frames: number, bytes: number) => void;
}

export interface MergeResult {
  frames: number;
  bytes: number;
  drops: number;
}

export function mergeCapture(sources: MergeSource[], o: MergeOptions): { done: Promise<MergeResult>; stop: () => void } {
  const writer = new CaptureWriter(o.format, o.interfaces);
  const reorderUs = (o.reorderMs ?? 250) * 1000;
  let held: CaptureRecord[] = [];
  let ringPending = sources.length;
  let open = sources.length;
  let frames = 0;
  let bytes = 0;
  const drops = new Map<number, number>();
  let finished = false;
  let resolve!: (r: MergeResult) => void;
  let reject!: (e: Error) => void;
  const done = new Promise<MergeResult>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  o.out.write(writer.header());

  const write = (recs: CaptureRecord[]): void => {
    if (recs.length === 0) return;
    let take = recs;
    if (o.count > 0 && frames + take.length > o.count) take = take.slice(0, o.count - frames);
    frames += take.length;
    for (const r of take) bytes += r.data.length;
    o.out.write(writer.records(take));
    o.onProgress?.(frames, bytes);
    if (o.count > 0 && frames >= o.count) finish();
  };
  const flush = (all: boolean): void => {
    if (ringPending > 0 && !all) return; // ring content of every daemon first
    held.sort((a, b) => a.tsUs - b.tsUs);
    if (all) {
      const out = held;
      held = [];
      write(out);
      return;
    }
    const cut = nowUs() - reorderUs;
    let n = 0;
    while (n < held.length && held[n]!.tsUs <= cut) n++;
    write(held.splice(0, n));
  };
  const calls = sources.map((s, idx) => {
    const ids = new Map<number, number>();
    const call = s.client.capture({ wires: s.wires.map((w) => w.name), follow: o.follow, count: o.count, duration_ms: o.durationMs }, s.token);
    let ringDone = false;
    call.on('data', (m: PbCaptureResponse) => {
      for (const i of m.interfaces) ids.set(i.id, s.wires[i.id]!.id);
      for (const f of m.frames) {
        held.push({ iface: ids.get(f.interface_id) ?? 0, tsUs: Number(f.timestamp_us), outbound: f.outbound, origLen: f.original_length, data: f.data });
      }
      drops.set(idx, Number(m.drops));
      if (m.ring_done && !ringDone) {
        ringDone = true;
        if (--ringPending === 0) flush(!o.follow);
      }
    });
    call.on('error', (err: unknown) => {
      const e = errorFromGrpc(err);
      if (finished || e instanceof Cancelled /* by us */) return;
      finished = true;
      for (const c of calls) c.cancel();
      const why = e instanceof Unavailable ? `the daemon of node ${s.node} cannot be reached (${e.message})` : `node ${s.node}: ${e.message}`;
      reject(new Error(why));
    });
    call.on('end', () => {
      if (--open === 0) finish();
    });
    return call;
  });
  const tick = o.follow ? setInterval(() => flush(false), 100) : null;
  const timer = o.durationMs > 0 ? setTimeout(() => finish(), o.durationMs + 50) : null;
  function finish(): void {
    if (finished) return;
    finished = true;
    if (tick) clearInterval(tick);
    if (timer) clearTimeout(timer);
    for (const c of calls) c.cancel();
    flush(true);
    resolve({ frames, bytes, drops: [...drops.values()].reduce((a, b) => a + b, 0) });
  }
  return { done, stop: finish };
}
