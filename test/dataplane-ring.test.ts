// The opt-in TPACKET_V3 receive ring (--rx ring) carries the same matrix
// byte for byte: VLAN tags come back from the ring's tp_vlan_tci/tp_vlan_tpid.
import t from 'tap';

import { matrixFrames, sendAcross } from './helpers/frames.js';
import { CLI, TestNet } from './helpers/testnet.js';

const net = new TestNet('pwtr');
t.teardown(() => net.cleanup());

t.test('transparency matrix with --rx ring', async (t) => {
  const na = await net.addNode('na', { extraArgs: ['--insecure', '--rx', 'ring'] });
  const nb = await net.addNode('nb', { extraArgs: ['--insecure', '--rx', 'ring'] });
  const a = net.endpoint('veth', net.addPod('a1'), 'eth1', { mtu: 9000, ips: ['198.19.1.1/24'] });
  const b = net.endpoint('veth', net.addPod('b1'), 'eth1', { mtu: 9000, ips: ['198.19.1.2/24'] });
  await net.crossWire(1, na, a, nb, b);
  for (const [dir, src, dst] of [
    ['F', a, b],
    ['R', b, a],
  ] as const) {
    const frames = matrixFrames(`RG${dir}`, { jumbo: true });
    const r = await sendAcross(net, [src.netns, src.ifname], [dst.netns, dst.ifname], frames, `PWTRG${dir}`);
    t.equal(r.received.length, frames.length, `${dir}: every frame arrives once`);
    t.ok(frames.every((f, i) => r.received[i]?.equals(f.bytes)), `${dir}: all ${frames.length} frames byte for byte, 802.1Q and QinQ included`);
    t.equal(r.reflected.length, 0);
  }
  const ping = await net.exec(a.netns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '198.19.1.2']);
  t.equal(ping.code, 0, 'ping crosses a ring-mode wire');
  const bad = await net.exec(a.netns, process.execPath, ['bin/patchwire.js', 'daemon', '--node', 'x', '--listen', '127.0.0.1:0', '--insecure', '--rx', 'mmap']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--rx 'mmap' is not mmsg or ring/);
});
