// The frames a LAN cable must carry unchanged, and a driver that sends them
// with an independent raw-socket sender and captures them with tcpdump.
import { type ChildProcess } from 'node:child_process';
import path from 'node:path';

import { readPcap } from './pcap.js';
import { ROOT, type TestNet, sleep, waitFor } from './testnet.js';

export interface TestFrame {
  label: string;
  bytes: Buffer;
}

const mac = (s: string): Buffer => Buffer.from(s.replace(/:/g, ''), 'hex');
const u16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
};

/** Builds a frame carrying `marker`; padded to `size` bytes (at least 60, the Ethernet minimum without FCS). */
function frame(dst: string, src: string, typeAndTags: Buffer[], marker: string, size = 64): Buffer {
  const head = Buffer.concat([mac(dst), mac(src), ...typeAndTags]);
  const body = Buffer.from(marker, 'ascii');
  const total = Math.max(size, head.length + body.length, 60);
  const out = Buffer.alloc(total);
  head.copy(out, 0);
  body.copy(out, head.length);
  for (let i = head.length + body.length; i < total; i++) out[i] = i & 0xff;
  return out;
}

/**
 * The transparency matrix: IEEE link-local groups 01:80:C2:00:00:00-0F,
 * broadcast, multicast, unknown unicast, several source MACs (HSRP, VRRP),
 * 802.1Q and QinQ tags, minimum-size and (optionally) jumbo frames.
 */
export function matrixFrames(tag: string, opts: { jumbo: boolean }): TestFrame[] {
  const frames: TestFrame[] = [];
  const src = '02:aa:00:00:00:01';
  let n = 0;
  const add = (label: string, build: (marker: string) => Buffer): void => {
    const marker = `PWT${tag}${String(n++).padStart(4, '0')}`;
    frames.push({ label, bytes: build(marker) });
  };
  const kinds: Record<number, [string, Buffer[]]> = {
    0x0: ['STP BPDU', [u16(38), Buffer.from([0x42, 0x42, 0x03])]],
    0x1: ['pause', [u16(0x8808), u16(0x0001), u16(0xffff)]],
    0x2: ['LACP', [u16(0x8809), Buffer.from([0x01, 0x01])]],
    0x3: ['802.1X EAPOL', [u16(0x888e), Buffer.from([0x02, 0x01, 0x00, 0x00])]],
    0xe: ['LLDP', [u16(0x88cc)]],
  };
  for (let i = 0; i <= 0xf; i++) {
    const [name, type] = kinds[i] ?? [`link-local 0${i.toString(16)}`, [u16(0x88b5)]];
    add(`01:80:c2:00:00:0${i.toString(16)} ${name}`, (m) => frame(`01:80:c2:00:00:0${i.toString(16)}`, src, type, m));
  }
  add('broadcast', (m) => frame('ff:ff:ff:ff:ff:ff', src, [u16(0x88b5)], m));
  add('IPv4 multicast', (m) => frame('01:00:5e:00:00:fb', src, [u16(0x0800)], m));
  add('IPv6 multicast', (m) => frame('33:33:00:00:00:01', src, [u16(0x86dd)], m));
  add('unknown unicast', (m) => frame('02:de:ad:be:ef:01', src, [u16(0x88b5)], m));
  for (const s of ['02:00:00:00:00:0a', '00:00:0c:07:ac:01', '00:00:5e:00:01:01', '02:00:00:00:00:0b', '02:00:00:00:00:0c']) {
    add(`source MAC ${s}`, (m) => frame('02:de:ad:be:ef:02', s, [u16(0x88b5)], m));
  }
  // PCP 5, VID 10
  add('802.1Q VID 10 PCP 5', (m) => frame('02:de:ad:be:ef:03', src, [u16(0x8100), u16((5 << 13) | 10), u16(0x88b5)], m));
  add('QinQ 88a8/8100', (m) => frame('02:de:ad:be:ef:04', src, [u16(0x88a8), u16(100), u16(0x8100), u16((5 << 13) | 10), u16(0x88b5)], m));
  add('60-byte minimum', (m) => frame('02:de:ad:be:ef:05', src, [u16(0x88b5)], m, 60));
  if (opts.jumbo) add('9014-byte jumbo (MTU 9000)', (m) => frame('02:de:ad:be:ef:06', src, [u16(0x88b5)], m, 9014));
  return frames;
}

/** Starts tcpdump on `ifname` in `ns`, capturing frames that arrive there. */
export async function startCapture(net: TestNet, ns: string, ifname: string, file: string): Promise<ChildProcess> {
  const proc = net.spawnIn(ns, 'tcpdump', ['-i', ifname, '-Q', 'in', '-s', '0', '-U', '--immediate-mode', '-w', file]);
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitFor(`tcpdump on ${ns}/${ifname}`, () => (proc.exitCode !== null ? Promise.reject(new Error(err)) : err.includes('listening on')));
  return proc;
}

export async function stopCapture(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const done = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGINT');
  await done;
}

export async function sendFrames(net: TestNet, ns: string, ifname: string, frames: Buffer[], gapSeconds = 0.0005): Promise<number> {
  const input = frames.map((f) => f.toString('hex')).join('\n') + '\n';
  const r = await net.exec(ns, 'python3', [path.join(ROOT, 'test', 'tools', 'sendframes.py'), ifname, String(gapSeconds)], { input });
  if (r.code !== 0) throw new Error(`sendframes in ${ns}: ${r.stderr}`);
  return Number(r.stdout.trim());
}

/** Frames in a capture that carry a marker starting with `prefix`. */
export function marked(file: string, prefix: string): Buffer[] {
  const p = Buffer.from(prefix, 'ascii');
  return readPcap(file)
    .map((r) => r.data)
    .filter((d) => d.includes(p));
}

export interface CrossResult {
  sent: TestFrame[];
  received: Buffer[];
  reflected: Buffer[];
}

/**
 * Polls `cond` until it holds or `timeoutMs` passes; says which (a bounded
 * wait that lets the assertions speak). A throw counts as not yet (a capture
 * file tcpdump has not written its header to).
 */
export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs = 10000, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await Promise.resolve().then(cond).catch(() => false)) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}

let fences = 0;

/** A frame that marks "everything sent before me is through": a cable keeps order. */
function fenceFrame(): { marker: string; bytes: Buffer } {
  const marker = `QQFENCE${process.pid}x${fences++}`;
  const f = Buffer.alloc(64);
  Buffer.from('02dead0000fe02dead0000ff88b5', 'hex').copy(f);
  f.write(marker, 14, 'ascii');
  return { marker, bytes: f };
}

/**
 * Sends `frames` from (srcNs, srcIf) and captures them at (dstNs, dstIf); also watches the sender for echoes.
 * Instead of sleeping for late frames, a fence frame follows the frames, and
 * another goes back the other way: once each has arrived, every frame (or
 * duplicate, or reflection) sent before it has arrived too.
 */
export async function sendAcross(net: TestNet, src: [string, string], dst: [string, string], frames: TestFrame[], prefix: string): Promise<CrossResult> {
  const rxFile = path.join(net.dir, `${prefix}-rx.pcap`);
  const echoFile = path.join(net.dir, `${prefix}-echo.pcap`);
  const rx = await startCapture(net, dst[0], dst[1], rxFile);
  const echo = await startCapture(net, src[0], src[1], echoFile);
  try {
    await sendFrames(net, src[0], src[1], frames.map((f) => f.bytes));
    const there = fenceFrame();
    await sendFrames(net, src[0], src[1], [there.bytes]);
    await waitUntil(() => marked(rxFile, there.marker).length > 0);
    const back = fenceFrame();
    await sendFrames(net, dst[0], dst[1], [back.bytes]);
    await waitUntil(() => marked(echoFile, back.marker).length > 0);
  } finally {
    await stopCapture(rx);
    await stopCapture(echo);
  }
  return { sent: frames, received: marked(rxFile, prefix), reflected: marked(echoFile, prefix) };
}

/** Frames in a capture that carry `prefix`, with the time the capture saw each (microseconds since the epoch). */
export function markedAt(file: string, prefix: string): Array<{ tsUs: number; data: Buffer }> {
  const p = Buffer.from(prefix, 'ascii');
  return readPcap(file)
    .filter((r) => r.data.includes(p))
    .map((r) => ({ tsUs: r.tsSec * 1e6 + r.tsUsec, data: r.data }));
}

export interface Stream {
  /** Stops the sender and resolves to how many frames it sent. */
  stop(): Promise<number>;
}

/**
 * A continuous sender (test/tools/streamframes.py) of 64-byte frames carrying
 * `marker` and a 6-digit sequence number, one every `gapSeconds`, until stop().
 */
export function startStream(net: TestNet, ns: string, ifname: string, marker: string, gapSeconds: number, macs = { dst: '02:de:00:00:00:02', src: '02:de:00:00:00:01' }): Stream {
  const proc = net.spawnIn(ns, 'python3', [path.join(ROOT, 'test', 'tools', 'streamframes.py'), ifname, String(gapSeconds), marker, macs.dst, macs.src, '120']);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => proc.once('close', () => r()));
  return {
    async stop(): Promise<number> {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
      const n = Number(out.trim());
      if (!Number.isInteger(n) || out.trim() === '') throw new Error(`streamframes in ${ns} printed '${out.trim()}': ${err}`);
      return n;
    },
  };
}
