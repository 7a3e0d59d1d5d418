// TCP super-frames cross whole (README: frames carry their virtio-net header,
// so GSO super-frames cross with offloads left on in the pods). iperf3 TCP
// runs between pods on two nodes, veth and tap; the receiving pod must see
// frames larger than its MTU (tcpdump there, GRO off in that pod so its own
// kernel cannot have merged them), and the same super-frame must appear
// byte for byte in the sending and the receiving daemon's capture rings.
import path from 'node:path';

import t from 'tap';

import type { PbCaptureResponse } from '../src/control/client.js';
import { startCapture, stopCapture } from './helpers/frames.js';
import { readPcap } from './helpers/pcap.js';
import { TestNet, type TestNode, sh, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwxc');
t.teardown(() => net.cleanup());

/** Largest frame an MTU 1500 interface sends without GSO (Ethernet header, no FCS). */
const MAX_PLAIN = 1514;

type Captured = PbCaptureResponse['frames'][number];

/** What a daemon's capture ring holds for one wire end. */
function ring(n: TestNode, end: string): Promise<Captured[]> {
  return new Promise((resolve, reject) => {
    const frames: Captured[] = [];
    const s = n.client.capture({ wires: [end], follow: false, count: 0, duration_ms: 0 });
    s.on('data', (r: PbCaptureResponse) => frames.push(...r.frames));
    s.on('error', reject);
    s.on('end', () => resolve(frames));
  });
}

function feature(ns: string, name: string): string {
  const m = new RegExp(`^${name}: (\\S+)`, 'm').exec(sh('ip', 'netns', 'exec', ns, 'ethtool', '-k', 'eth1'));
  return m?.[1] ?? '?';
}

t.test('GSO super-frames cross whole', async (t) => {
  const na = await net.addNode('na');
  const nb = await net.addNode('nb');
  let uid = 0;
  for (const kind of ['veth', 'tap'] as const) {
    await t.test(`${kind} to ${kind}`, async (t) => {
      uid++;
      const sender = net.addPod(`${kind}s`);
      const receiver = net.addPod(`${kind}r`);
      const [ipS, ipR] = [`198.19.${uid}.1`, `198.19.${uid}.2`];
      await net.crossWire(uid, na, net.endpoint(kind, sender, 'eth1', { ips: [`${ipS}/24`] }), nb, net.endpoint(kind, receiver, 'eth1', { ips: [`${ipR}/24`] }));
      t.equal(feature(sender, 'tcp-segmentation-offload'), 'on', 'TSO is on in the sending pod');
      // Without GRO the receiving pod's kernel passes on what the wire delivered, frame by frame.
      sh('ip', 'netns', 'exec', receiver, 'ethtool', '-K', 'eth1', 'gro', 'off');
      t.equal(feature(receiver, 'generic-receive-offload'), 'off', 'GRO is off in the receiving pod');

      const file = path.join(net.dir, `${kind}-rx.pcap`);
      const dump = await startCapture(net, receiver, 'eth1', file);
      const server = net.spawnIn(receiver, 'iperf3', ['-s', '-1', '-B', ipR, '--forceflush']);
      t.teardown(() => server.kill('SIGKILL'));
      let out = '';
      server.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor('iperf3 server listening', () => out.includes('Server listening'));
      const run = await net.exec(sender, 'iperf3', ['-c', ipR, '-n', '24M', '-J'], { timeoutMs: 60000 });
      await stopCapture(dump);
      t.equal(run.code, 0, 'iperf3 TCP ran');

      const tcp = readPcap(file).filter((r) => r.data.length >= 14 && r.data.readUInt16BE(12) === 0x0800 && r.data[23] === 6);
      const over = tcp.filter((r) => r.origLen > MAX_PLAIN);
      t.comment(`receiving pod saw ${tcp.length} TCP frames, ${over.length} over ${MAX_PLAIN} bytes, largest ${Math.max(...tcp.map((r) => r.origLen))}`);
      t.ok(over.length > 0, 'the receiving pod got TCP frames larger than its MTU: super-frames crossed whole');

      // The same super-frame in both daemons' rings: read on na, written out on nb, unchanged.
      const sent = (await ring(na, `${sender}/eth1`)).filter((f) => f.outbound && f.original_length > MAX_PLAIN);
      const delivered = (await ring(nb, `${receiver}/eth1`)).filter((f) => !f.outbound && f.original_length > MAX_PLAIN);
      t.ok(sent.length > 0 && delivered.length > 0, `both rings hold super-frames (${sent.length} read on na, ${delivered.length} delivered on nb)`);
      const read = new Set(sent.map((f) => f.data.toString('hex')));
      const same = delivered.filter((f) => f.data.length === f.original_length && read.has(f.data.toString('hex')));
      t.ok(same.length > 0, `${same.length} super-frames delivered on nb are byte for byte ones na read`);

      const w = (await nb.client.listWires()).find((x) => x.spec.uid === uid)!.ends[0]!;
      t.equal(w.vnet_hdr, true, 'the receiving end carries virtio-net headers');
      t.equal(w.counters.drops.too_big, 0, 'no super-frame was taken for a frame too big');
    });
  }
});
