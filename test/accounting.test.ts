// Nothing lost silently: under a flood far beyond what one wire carries,
// every frame the pod sent is either read by the daemon or counted as a
// kernel drop, and every frame read either leaves the far end or is counted
// with its cause. Backpressure keeps overload drops in the kernel, before
// any work is spent on them (no queue_full).
import t from 'tap';

import { TestNet, sh, sleep, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwta');
t.teardown(() => net.cleanup());

t.test('frame accounting under a flood', async (t) => {
  const na = await net.addNode('na');
  const nb = await net.addNode('nb');
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  // No IPv6 chatter: the counters of both daemons must be read at rest.
  for (const p of [p1, p2]) sh('ip', 'netns', 'exec', p, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  await net.crossWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.1.1/24'] }), nb, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.1.2/24'] }));
  await net.exec(p1, 'ping', ['-c', '2', '-i', '0.2', '198.19.1.2']);
  const server = net.spawnIn(p2, 'iperf3', ['-s', '-1']);
  await sleep(400);
  const load = await net.exec(p1, 'iperf3', ['-c', '198.19.1.2', '-u', '-l', '1400', '-b', '0', '-t', '3', '-w', '4M', '-J'], { timeoutMs: 30000 });
  server.kill('SIGKILL');
  t.equal(load.code, 0, 'the flood ran');
  const sent = (JSON.parse(load.stdout) as { end: { sum: { packets: number } } }).end.sum.packets;
  // Both daemons' counters, read until two snapshots agree (queues drained).
  const snap = async (): Promise<[typeof a, typeof a, number]> => {
    const x = (await na.client.listWires())[0]!.ends[0]!.counters;
    const y = (await nb.client.listWires())[0]!.ends[0]!.counters;
    return [x, y, (await nb.client.health()).unknown_wire];
  };
  let a = (await na.client.listWires())[0]!.ends[0]!.counters;
  let b = a;
  let unknown = 0;
  await waitFor('counters at rest', async () => {
    await sleep(300);
    const before = JSON.stringify(await snap());
    await sleep(300);
    const now = await snap();
    [a, b, unknown] = now;
    return JSON.stringify(now) === before;
  });
  const hb = { unknown_wire: unknown };
  t.comment(`offered ${sent}, read ${a.rx_frames}, delivered ${b.tx_frames}, kernel drops ${a.drops.kernel_ring}`);
  t.ok(a.drops.kernel_ring > 0, 'the flood overloaded the wire (drops in the kernel, counted)');
  t.equal(a.drops.queue_full, 0, 'backpressure: no frame was read only to be dropped at a full queue');
  t.ok(a.rx_frames + a.drops.kernel_ring + a.drops.truncated >= sent, 'every datagram the pod sent was read or counted as dropped');
  const lostBetween = a.rx_frames - b.tx_frames - (a.drops.peer_down + a.drops.queue_full) - (b.drops.too_big + b.drops.send_busy + b.drops.send_error) - hb.unknown_wire;
  t.equal(lostBetween, 0, 'every frame read left the far end or was counted with its cause');
  t.ok(b.tx_frames > 50000, `the wire kept delivering (${b.tx_frames} frames)`);
});
