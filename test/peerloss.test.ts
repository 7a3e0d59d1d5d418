// Kill the far daemon while traffic flows: the near daemon reports the wire
// down and counts peer_down drops; a restarted daemon re-attaches to the same
// pod interfaces and traffic flows again.
import t from 'tap';

import { sendFrames } from './helpers/frames.js';
import { settled } from './helpers/labcli.js';
import type { PbCounters } from '../src/control/convert.js';
import { TestNet, sh, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwtp');
t.teardown(() => net.cleanup());

function ifindex(ns: string, ifname: string): number {
  return (JSON.parse(sh('ip', '-n', ns, '-j', 'link', 'show', 'dev', ifname)) as Array<{ ifindex: number }>)[0]!.ifindex;
}

t.test('peer loss and return', async (t) => {
  const na = await net.addNode('na');
  const nb = await net.addNode('nb');
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  const p3 = net.addPod('p3');
  const p4 = net.addPod('p4');
  await net.crossWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.1.1/24'] }), nb, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.1.2/24'] }));
  await net.crossWire(2, na, net.endpoint('tap', p3, 'eth1', { ips: ['198.19.2.1/24'] }), nb, net.endpoint('tap', p4, 'eth1', { ips: ['198.19.2.2/24'] }));
  t.equal((await net.exec(p1, 'ping', ['-c', '2', '-W', '2', '198.19.1.2'])).code, 0, 'veth wire carries ping');
  t.equal((await net.exec(p3, 'ping', ['-c', '2', '-W', '2', '198.19.2.2'])).code, 0, 'tap wire carries ping');
  const before = { p2: ifindex(p2, 'eth1'), p4: ifindex(p4, 'eth1') };

  // Traffic keeps flowing from p1 while the far daemon dies.
  const pinger = net.spawnIn(p1, 'ping', ['-i', '0.05', '-W', '1', '198.19.1.2']);
  try {
    const specsBefore = (await nb.client.listWires()).map((w) => w.spec);
    await net.killDaemon(nb, 'SIGKILL');
    await waitFor('wire 1 down on na', async () => (await na.client.listWires()).find((x) => x.spec.uid === 1)!.state === 'WIRE_STATE_DOWN');
    t.equal((await na.client.listWires()).find((x) => x.spec.uid === 2)!.state, 'WIRE_STATE_DOWN', 'the tap wire to the same peer is down too');
    const health = await na.client.health();
    t.equal(health.peers.find((p) => p.node === nb.name)?.inbound, false, 'health shows the peer stream gone');

    // While the peer is down, every frame read from p1/eth1 is counted as
    // peer_down: exactly as many as were read. The pinger has done its part
    // (traffic while the daemon died) and stops, so the count settles.
    const pingerDone = new Promise((r) => pinger.once('exit', r));
    pinger.kill('SIGINT');
    await pingerDone;
    const marked = Array.from({ length: 50 }, (_, i) => {
      const f = Buffer.alloc(64);
      Buffer.from('02dd0000000202dd0000000188b5', 'hex').copy(f);
      f.write(`PWTPEER${String(i).padStart(4, '0')}`, 14, 'ascii');
      return f;
    });
    const c0 = (await na.client.listWires()).find((x) => x.spec.uid === 1)!.ends[0]!.counters;
    t.equal(await sendFrames(net, p1, 'eth1', marked), 50, 'an independent sender put 50 frames on p1/eth1');
    const read = async (): Promise<PbCounters> => (await na.client.listWires()).find((x) => x.spec.uid === 1)!.ends[0]!.counters;
    await waitFor('the 50 frames to be read', async () => (await read()).rx_frames - c0.rx_frames >= 50);
    const c1 = await settled('wire 1 counters on na', read);
    t.equal(c1.drops.peer_down - c0.drops.peer_down, c1.rx_frames - c0.rx_frames, `every frame read while the peer was down is a peer_down drop (${c1.rx_frames - c0.rx_frames})`);
    t.same([c1.drops.queue_full - c0.drops.queue_full, c1.tx_frames - c0.tx_frames], [0, 0], 'none is blamed on the queue, and nothing came back');

    await net.startDaemon(nb);
    await waitFor('wires up again', async () => {
      const [a, b] = await Promise.all([na.client.listWires(), nb.client.listWires()]);
      return a.length === 2 && b.length === 2 && [...a, ...b].every((w) => w.state === 'WIRE_STATE_UP');
    });
    t.same((await nb.client.listWires()).map((w) => w.spec), specsBefore, 'the restarted daemon restored the same wires from its state file');
    const reconnects = (await na.client.health()).peers.find((p) => p.node === nb.name)!.reconnects;
    t.ok(reconnects >= 1, `near daemon reconnected by itself (${reconnects} attempts)`);
  } finally {
    pinger.kill('SIGINT');
  }
  t.equal((await net.exec(p1, 'ping', ['-c', '3', '-W', '2', '198.19.1.2'])).code, 0, 'veth wire carries traffic again');
  t.equal((await net.exec(p3, 'ping', ['-c', '3', '-W', '2', '198.19.2.2'])).code, 0, 'tap wire carries traffic again');
  t.equal(ifindex(p2, 'eth1'), before.p2, 'the veth in the pod was not recreated');
  t.equal(ifindex(p4, 'eth1'), before.p4, 'the tap in the pod was not recreated');
});
