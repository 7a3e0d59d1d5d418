// Kill the far daemon while traffic flows: the near daemon reports the wire
// down and counts peer_down drops; a restarted daemon re-attaches to the same
// pod interfaces and traffic flows again.
import t from 'tap';

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
    await net.killDaemon(nb, 'SIGKILL');
    const down = await waitFor('wire 1 down on na', async () => {
      const w = (await na.client.listWires()).find((x) => x.spec.uid === 1)!;
      return w.state === 'WIRE_STATE_DOWN' ? w : undefined;
    });
    t.equal(down.state, 'WIRE_STATE_DOWN', 'near daemon reports the wire down');
    const dropped = await waitFor('peer_down drops', async () => {
      const w = (await na.client.listWires()).find((x) => x.spec.uid === 1)!;
      return w.ends[0]!.counters.drops.peer_down > 3 ? w.ends[0]!.counters.drops.peer_down : undefined;
    });
    t.ok(dropped > 3, `frames sent meanwhile are counted as peer_down drops (${dropped})`);
    const health = await na.client.health();
    t.equal(health.peers.find((p) => p.node === nb.name)?.inbound, false, 'health shows the peer stream gone');

    await net.startDaemon(nb);
    await waitFor('wires up again', async () => {
      const [a, b] = await Promise.all([na.client.listWires(), nb.client.listWires()]);
      return a.length === 2 && b.length === 2 && [...a, ...b].every((w) => w.state === 'WIRE_STATE_UP');
    });
    t.pass('both wires come back up after the restart, restored from the state file');
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
