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

/** Sends `frames` from (srcNs, srcIf) and captures them at (dstNs, dstIf); also watches the sender for echoes. */
export async function sendAcross(net: TestNet, src: [string, string], dst: [string, string], frames: TestFrame[], prefix: string): Promise<CrossResult> {
  const rxFile = path.join(net.dir, `${prefix}-rx.pcap`);
  const echoFile = path.join(net.dir, `${prefix}-echo.pcap`);
  const rx = await startCapture(net, dst[0], dst[1], rxFile);
  const echo = await startCapture(net, src[0], src[1], echoFile);
  try {
    await sendFrames(net, src[0], src[1], frames.map((f) => f.bytes));
    // Wait until every frame is in (or the count stops growing).
    let last = -1;
    await waitFor('frames to arrive', async () => {
      await sleep(150);
      const n = marked(rxFile, prefix).length;
      if (n >= frames.length || n === last) return true;
      last = n;
      return false;
    }, 10000, 0);
    await sleep(200); // late duplicates would show up here
  } finally {
    await stopCapture(rx);
    await stopCapture(echo);
  }
  return { sent: frames, received: marked(rxFile, prefix), reflected: marked(echoFile, prefix) };
}
