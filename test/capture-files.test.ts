// Per-wire capture files: rotation by size and count, and a full disk that
// stops file capture with a reason while forwarding goes on.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { sendFrames } from './helpers/frames.js';
import { readPcapng } from './helpers/pcap.js';
import type { PbCaptureResponse } from '../src/control/client.js';
import type { PbCounters } from '../src/control/convert.js';
import { settled } from './helpers/labcli.js';
import { TestNet, run, sh, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwtf');
const full = path.join(net.dir, 'full');
t.teardown(async () => {
  // The daemons first (they hold files on the tmpfs), then the mount, then
  // the scratch dir: removing it while mounted failed and left it behind.
  await net.cleanup().catch(() => undefined);
  await run('umount', [full]);
  rmSync(net.dir, { recursive: true, force: true });
});

function frames(tag: string, n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const f = Buffer.alloc(100, 0x33);
    Buffer.from('02ee0000000202ee0000000188b5', 'hex').copy(f);
    f.write(`${tag}${String(i).padStart(5, '0')}`, 14, 'ascii');
    return f;
  });
}

t.test('files rotate by size and keep the newest by count', async (t) => {
  const dir = path.join(net.dir, 'files');
  const na = await net.addNode('na', { extraArgs: ['--insecure', '--capture-dir', dir, '--capture-file-bytes', '20000', '--capture-files', '3'] });
  const nb = await net.addNode('nb');
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  // No IPv6 chatter from the pods: the files must stop rotating once our frames are in.
  for (const p of [p1, p2]) sh('ip', 'netns', 'exec', p, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  await net.crossWire(1, na, net.endpoint('veth', p1, 'eth1'), nb, net.endpoint('veth', p2, 'eth1'));
  const sent = frames('PWTFILE', 800);
  await sendFrames(net, p1, 'eth1', sent, 0.0005);
  // LAB.NODE.POD/INTF, each part encoded ('/' is _2f), then the sequence number.
  const list = (): string[] => readdirSync(dir).filter((f) => f.startsWith(`test.${na.name}.${p1}_2feth1.`)).sort();
  // Done once the newest file holds the last frame sent (nothing else is sent).
  await waitFor('the last frame in the newest file', () => {
    const newest = list().pop();
    return newest !== undefined && readPcapng(path.join(dir, newest)).packets.some((p) => p.data.includes(Buffer.from('PWTFILE00799')));
  });
  const files = list();
  t.equal(files.length, 3, `three files kept (${files.join(', ')})`);
  t.ok(Number(files[0]!.split('.').at(-2)) > 1, 'older files were rotated away');
  for (const f of files) {
    const r = await run('tshark', ['-r', path.join(dir, f)]);
    t.equal(r.code, 0);
    t.equal(r.stderr.split('\n').filter((l) => l && !l.startsWith('Running as user')).length, 0, `tshark reads ${f} without a warning`);
  }
  const kept = files.map((f) => readPcapng(path.join(dir, f)));
  t.ok(kept.every((k) => k.interfaces[0]!.name === `${p1}/eth1`), 'each file names its wire end');
  const seq = kept.flatMap((k) => k.packets).filter((p) => p.data.includes(Buffer.from('PWTFILE'))).map((p) => Number(p.data.subarray(21, 26).toString()));
  t.equal(seq[seq.length - 1], 799, 'the kept files end with the last frame sent');
  t.ok(seq[0]! > 0, `the oldest frames were rotated away (kept from #${seq[0]})`);
  t.ok(seq.every((v, i) => i === 0 || v === seq[i - 1]! + 1), 'and the kept frames are contiguous, in order');
  const w = (await na.client.listWires())[0]!;
  t.match(w.ends[0]!.file_capture, /^writing .*\.pcapng$/);
});

t.test('a full disk stops file capture with a reason; forwarding goes on', async (t) => {
  mkdirSync(full, { recursive: true });
  sh('mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', full);
  const nc = await net.addNode('nc', { extraArgs: ['--insecure', '--capture-dir', full, '--capture-file-bytes', '1048576', '--capture-files', '4'] });
  const nb = net.nodes.get('nb')!;
  const p3 = net.addPod('p3');
  const p4 = net.addPod('p4');
  await net.crossWire(2, nc, net.endpoint('veth', p3, 'eth1', { ips: ['198.19.2.1/24'] }), nb, net.endpoint('veth', p4, 'eth1', { ips: ['198.19.2.2/24'] }));
  const counters = async (): Promise<[PbCounters, PbCounters]> => [
    (await nc.client.listWires()).find((x) => x.spec.uid === 2)!.ends[0]!.counters,
    (await nb.client.listWires()).find((x) => x.spec.uid === 2)!.ends[0]!.counters,
  ];
  const [a0, b0] = await settled('wire 2 counters', counters);
  await sendFrames(net, p3, 'eth1', frames('PWTFULL', 1500), 0.0002);
  const w = await waitFor('file capture to stop', async () => {
    const x = (await nc.client.listWires())[0]!;
    return x.ends[0]!.file_capture.startsWith('stopped') ? x : undefined;
  });
  t.match(w.ends[0]!.file_capture, /stopped: ENOSPC/, 'the reason is reported');
  t.match(await import('node:fs').then((fs) => fs.readFileSync(nc.log, 'utf8')), /file capture of pwtfp3\/eth1 stopped: ENOSPC.*forwarding goes on/, 'and logged');
  const ping = await net.exec(p3, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '198.19.2.2']);
  t.equal(ping.code, 0, 'the wire still forwards');
  // Whatever the machine's load, every frame read from p3/eth1 since before
  // the flood was written into p4/eth1 or counted as dropped with its cause.
  const [a1, b1] = await settled('wire 2 counters', counters);
  const read = a1.rx_frames - a0.rx_frames;
  const delivered = b1.tx_frames - b0.tx_frames;
  const d = (x: PbCounters): number => x.drops.queue_full + x.drops.peer_down;
  const e = (x: PbCounters): number => x.drops.too_big + x.drops.send_busy + x.drops.send_error;
  const dropped = d(a1) - d(a0) + e(b1) - e(b0);
  t.ok(read >= 1500 - (a1.drops.kernel_ring - a0.drops.kernel_ring), `the frames were read (${read}), but for those the kernel counted as dropped`);
  t.equal(read, delivered + dropped, `no wire frame was lost to the full disk: ${read} read = ${delivered} delivered + ${dropped} dropped with a cause`);
});

t.test('a per-wire capture ring size bounds what the ring keeps', async (t) => {
  const na = net.nodes.get('na')!;
  const nb = net.nodes.get('nb')!;
  const p5 = net.addPod('p5');
  const p6 = net.addPod('p6');
  await na.client.addWire({ uid: 3, local: net.endpoint('veth', p5, 'eth1'), peer: { node: nb.name, address: nb.address }, captureRingBytes: 3000 });
  await nb.client.addWire({ uid: 3, local: net.endpoint('veth', p6, 'eth1'), peer: { node: na.name, address: na.address } });
  await waitFor('wire 3 up', async () => (await na.client.listWires()).find((w) => w.spec.uid === 3)?.state === 'WIRE_STATE_UP');
  await sendFrames(net, p5, 'eth1', frames('PWTSMALL', 100), 0.001);
  const grab = (client: typeof na.client, wire: string): Promise<number> =>
    new Promise((resolve, reject) => {
      let n = 0;
      const call = client.capture({ wires: [wire], follow: false, count: 0, duration_ms: 0 });
      call.on('data', (m: PbCaptureResponse) => (n += m.frames.filter((f) => f.data.includes(Buffer.from('PWTSMALL'))).length));
      call.on('end', () => resolve(n));
      call.on('error', reject);
    });
  // The far end's ring has them all once the wire has carried them; the near end saw them first.
  const normal = await waitFor('the far ring to hold the 100 frames', async () => {
    const n = await grab(nb.client, `${p6}/eth1`);
    return n >= 100 ? n : undefined;
  });
  const small = await grab(na.client, `${p5}/eth1`);
  t.ok(small > 0 && small <= 30, `the 3000-byte ring kept only the newest frames (${small} of 100)`);
  t.equal(normal, 100, 'the far end, with the default ring, kept all 100');
});
