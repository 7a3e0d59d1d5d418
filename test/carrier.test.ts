// Carrier that follows the wire, across two daemon processes (two emulated
// nodes): a pulled cable takes carrier from the pods' interfaces at both
// ends (as the kernel reports it: `ip -j link` and `ip monitor link`), frames
// meeting it are counted as cable_pulled, the far end's removal takes
// carrier, a daemon killed and restarted within the hold time changes
// nothing at either end, and one gone for longer takes carrier with a reason.
import { type ChildProcess, spawn } from 'node:child_process';

import t from 'tap';

import type { PbWireStatus } from '../src/control/convert.js';
import { sendFrames } from './helpers/frames.js';
import { TestNet, type TestNode, sh, sleep, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwpa');
t.teardown(() => net.cleanup());

/** Whether the kernel says the interface has carrier (LOWER_UP, no NO-CARRIER). */
function hasCarrier(ns: string, ifname: string): boolean {
  const [l] = JSON.parse(sh('ip', '-n', ns, '-j', 'link', 'show', 'dev', ifname)) as Array<{ flags: string[]; operstate: string }>;
  return l!.flags.includes('LOWER_UP') && !l!.flags.includes('NO-CARRIER');
}

/** `ip monitor link` in a namespace, its output collected; ready once it has seen a probe interface come and go. */
async function monitor(ns: string): Promise<{ proc: ChildProcess; out: () => string; stop: () => void }> {
  const proc = spawn('ip', ['-n', ns, 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  sh('ip', '-n', ns, 'link', 'add', 'pwpmon0', 'type', 'veth', 'peer', 'name', 'pwpmon1');
  sh('ip', '-n', ns, 'link', 'del', 'pwpmon0');
  await waitFor(`ip monitor in ${ns}`, () => /Deleted.*pwpmon0/.test(out));
  return { proc, out: () => out, stop: () => proc.kill('SIGTERM') };
}

/** Lines of `ip monitor link` output about `ifname` saying NO-CARRIER. */
function noCarrierLines(out: string, ifname: string): string[] {
  return out.split('\n').filter((l) => l.includes(` ${ifname}:`) || l.includes(` ${ifname}@`)).filter((l) => l.includes('NO-CARRIER'));
}

async function wire(n: TestNode, uid: number): Promise<PbWireStatus> {
  const w = (await n.client.listWires()).find((x) => Number(x.spec.uid) === uid);
  if (!w) throw new Error(`no wire ${uid} on ${n.name}`);
  return w;
}

/** Marked test frames (an unused EtherType, a locally administered unicast destination). */
function frames(marker: string, n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const f = Buffer.alloc(64);
    Buffer.from('02dd0000000202dd0000000188b5', 'hex').copy(f);
    f.write(`${marker}${String(i).padStart(4, '0')}`, 14, 'ascii');
    return f;
  });
}

const ping = async (ns: string, ip: string, count = 2): Promise<number> => (await net.exec(ns, 'ping', ['-c', String(count), '-W', '1', ip])).code;

t.test('carrier follows the wire across two daemons', async (t) => {
  const na = await net.addNode('na');
  const nb = await net.addNode('nb');
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  const p3 = net.addPod('p3');
  const p4 = net.addPod('p4');
  const p5 = net.addPod('p5');
  const p6 = net.addPod('p6');
  const p7 = net.addPod('p7');
  const p8 = net.addPod('p8');
  // An interface patchwire does not own (host kind): h0, whose veth peer h1 stays in the pod.
  sh('ip', '-n', p7, 'link', 'add', 'h0', 'type', 'veth', 'peer', 'name', 'h1');
  sh('ip', '-n', p7, 'addr', 'add', '198.19.4.1/24', 'dev', 'h1');
  // No IPv6 on the pair: the kernel's own router solicitations and MLD reports
  // on h1 would mix with the frames counted below.
  for (const i of ['h0', 'h1']) sh('ip', 'netns', 'exec', p7, 'sysctl', '-qw', `net.ipv6.conf.${i}.disable_ipv6=1`);
  sh('ip', '-n', p7, 'link', 'set', 'h0', 'up');
  sh('ip', '-n', p7, 'link', 'set', 'h1', 'up');
  await net.crossWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.1.1/24'] }), nb, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.1.2/24'] }));
  await net.crossWire(2, na, net.endpoint('tap', p3, 'eth1', { ips: ['198.19.2.1/24'] }), nb, net.endpoint('tap', p4, 'eth1', { ips: ['198.19.2.2/24'] }));
  // Both ends on one daemon, one of them a tap.
  await net.localWire(3, na, net.endpoint('tap', p5, 'eth1', { ips: ['198.19.3.1/24'] }), net.endpoint('veth', p6, 'eth1', { ips: ['198.19.3.2/24'] }));
  await net.crossWire(4, na, net.endpoint('host', p7, 'h0'), nb, net.endpoint('tap', p8, 'eth1', { ips: ['198.19.4.2/24'] }));
  const pods: Array<[string, string]> = [[p7, 'h1'], [p8, 'eth1'], [p1, 'eth1'], [p2, 'eth1'], [p3, 'eth1'], [p4, 'eth1'], [p5, 'eth1'], [p6, 'eth1']];

  await t.test('bring-up: carrier once the far end is ready, nothing lost before', async (t) => {
    await waitFor('carrier on every pod interface', () => pods.every(([ns, i]) => hasCarrier(ns, i)));
    t.equal((await ping(p1, '198.19.1.2')), 0, 'veth wire carries ping');
    t.equal((await ping(p3, '198.19.2.2')), 0, 'tap wire carries ping');
    t.equal((await ping(p5, '198.19.3.2')), 0, 'local wire carries ping');
    t.equal((await ping(p7, '198.19.4.2')), 0, 'host-to-tap wire carries ping');
    for (const n of [na, nb]) {
      for (const w of await n.client.listWires()) {
        for (const e of w.ends) {
          t.equal(e.counters.drops.peer_down, 0, `${n.name} ${e.name}: no frame lost as peer_down at bring-up`);
          t.equal(e.carrier?.on, true, `${n.name} ${e.name}: carrier on in status`);
        }
      }
    }
    const ev = await na.client.listLinkEvents('');
    t.ok(ev.some((e) => e.end === `${p1}/eth1` && e.carrier && /far end ready/.test(e.reason) && Number(e.timestamp_us) > 0), 'the carrier-on event of p1/eth1 has a time and a reason');
  });

  await t.test('pull the cable: both ends lose carrier, then get it back', async (t) => {
    const mons = [await monitor(p1), await monitor(p2)];
    try {
      const w = await na.client.setLinkCable(`${p1}/eth1`, false);
      t.equal(w.ends[0]!.carrier?.cable, 'CABLE_STATE_PULLED', 'the API answers with the pulled end');
      await waitFor('NO-CARRIER at both veth ends', () => !hasCarrier(p1, 'eth1') && !hasCarrier(p2, 'eth1'));
      await waitFor('netlink events saying NO-CARRIER in both pods', () => mons.every((m) => noCarrierLines(m.out(), 'eth1').length > 0));
      t.pass('the kernel reported NO-CARRIER on p1/eth1 and p2/eth1 (ip monitor link)');
      t.not(await ping(p1, '198.19.1.2'), 0, 'ping fails with the cable pulled');
      const [wa, wb] = [await wire(na, 1), await wire(nb, 1)];
      t.match(wa.message, /no carrier: cable pulled at this end/, 'the wire on na says why it carries nothing');
      t.match(wb.ends[0]!.carrier, { on: false, far: 'pulled' }, 'nb knows the far cable is out');
      t.match(wb.ends[0]!.carrier?.reason, /cable pulled at the far end/);
      const evb = await nb.client.listLinkEvents(`${p2}/eth1`);
      t.match(evb.at(-1), { carrier: false, reason: /cable pulled at the far end/ }, 'the far end recorded the change with its reason');

      await na.client.setLinkCable(`${p1}/eth1`, true);
      await waitFor('carrier back at both ends', () => hasCarrier(p1, 'eth1') && hasCarrier(p2, 'eth1'));
      t.equal(await ping(p1, '198.19.1.2', 3), 0, 'ping works again once plugged');
    } finally {
      for (const m of mons) m.stop();
    }
  });

  await t.test('frames an impairment holds when the cable comes out are counted as cable_pulled', async (t) => {
    // nb holds what it delivers to p2 for a second; the cable comes out meanwhile.
    await nb.client.setImpair(`${p2}/eth1`, 'in', { delayUs: 1_000_000 });
    const before = (await wire(nb, 1)).ends[0]!.counters;
    const pinging = net.exec(p1, 'ping', ['-c', '3', '-i', '0.2', '-W', '1', '198.19.1.2']);
    await sleep(700);
    await nb.client.setLinkCable(`${p2}/eth1`, false);
    await pinging;
    const after = await waitFor('the held frames released and counted', async () => {
      const c = (await wire(nb, 1)).ends[0]!.counters;
      return c.drops.cable_pulled - before.drops.cable_pulled >= 3 ? c : undefined;
    }, 5000, 100);
    t.ok(after.drops.cable_pulled - before.drops.cable_pulled >= 3, `the 3 echo requests held by the delay met the pulled cable (${after.drops.cable_pulled - before.drops.cable_pulled} counted)`);
    t.equal(after.drops.send_error - before.drops.send_error, 0, 'none was sent into the downed interface (send_error)');
    t.equal(after.tx_frames - before.tx_frames, 0, 'and none reached p2');
    await nb.client.resetImpair(`${p2}/eth1`, 'in');
    await nb.client.setLinkCable(`${p2}/eth1`, true);
    await waitFor('carrier back at both ends', () => hasCarrier(p1, 'eth1') && hasCarrier(p2, 'eth1'));
  });

  await t.test('frames that meet a pulled cable are counted as cable_pulled', async (t) => {
    // A pod without carrier sends nothing (its qdisc, even a qdisc-bypass
    // sender, gets ENOBUFS), so the frames that meet a pulled cable are those
    // in flight, and those of an interface patchwire does not own: a `host`
    // end keeps its own carrier, and what it sends while the cable is out is
    // read and counted. Here h0 (host kind, its veth peer h1 the sender) is
    // wired to the tap p8/eth1 on the other node.
    await t.test('pulled at the far end', async (t) => {
      await nb.client.setLinkCable(`${p8}/eth1`, false);
      await waitFor('NO-CARRIER on the tap p8/eth1', () => !hasCarrier(p8, 'eth1'));
      await waitFor('na to know the far cable is out', async () => (await wire(na, 4)).ends[0]!.carrier?.far === 'pulled');
      const w = await wire(na, 4);
      t.match(w.ends[0]!.carrier, { on: false, reason: /cable pulled at the far end/ }, 'the host end is off in status');
      t.ok(hasCarrier(p7, 'h0'), 'the host interface itself is not touched (not ours)');
      const a0 = w.ends[0]!.counters;
      const b0 = (await wire(nb, 4)).ends[0]!.counters;
      t.equal(await sendFrames(net, p7, 'h1', frames('PWPAFAR', 30)), 30, 'an independent sender put 30 frames on h1');
      await waitFor('30 frames read at h0', async () => (await wire(na, 4)).ends[0]!.counters.rx_frames - a0.rx_frames >= 30);
      const a1 = (await wire(na, 4)).ends[0]!.counters;
      t.equal(a1.drops.cable_pulled - a0.drops.cable_pulled, 30, 'each counted as cable_pulled');
      t.equal(a1.drops.peer_down - a0.drops.peer_down, 0, 'none as peer_down');
      const b1 = (await wire(nb, 4)).ends[0]!.counters;
      t.equal(b1.tx_frames - b0.tx_frames, 0, 'none reached p8');
      await nb.client.setLinkCable(`${p8}/eth1`, true);
      await waitFor('carrier back', async () => hasCarrier(p8, 'eth1') && (await wire(na, 4)).ends[0]!.carrier?.on === true);
    });
    await t.test('pulled at this end', async (t) => {
      await na.client.setLinkCable(`${p7}/h0`, false);
      await waitFor('NO-CARRIER on the far tap p8/eth1', () => !hasCarrier(p8, 'eth1'));
      const a0 = (await wire(na, 4)).ends[0]!.counters;
      t.equal(await sendFrames(net, p7, 'h1', frames('PWPANEAR', 20)), 20, 'an independent sender put 20 frames on h1');
      await waitFor('20 frames read at h0', async () => (await wire(na, 4)).ends[0]!.counters.rx_frames - a0.rx_frames >= 20);
      const a1 = (await wire(na, 4)).ends[0]!.counters;
      t.equal(a1.drops.cable_pulled - a0.drops.cable_pulled, 20, 'each counted as cable_pulled');
      t.not(await ping(p7, '198.19.4.2'), 0, 'ping across fails');
      await na.client.setLinkCable(`${p7}/h0`, true);
      await waitFor('carrier back', () => hasCarrier(p8, 'eth1'));
      t.equal(await ping(p7, '198.19.4.2', 3), 0, 'ping across works again');
    });
  });

  await t.test('a local wire: a pull at one end takes carrier from both', async (t) => {
    await na.client.setLinkCable(`${p6}/eth1`, false);
    await waitFor('NO-CARRIER on both local ends', () => !hasCarrier(p5, 'eth1') && !hasCarrier(p6, 'eth1'));
    t.match((await wire(na, 3)).ends[0]!.carrier?.reason, /cable pulled at the far end/, 'the tap end says the other end was pulled');
    await na.client.setLinkCable(`${p6}/eth1`, true);
    await waitFor('carrier back', () => hasCarrier(p5, 'eth1') && hasCarrier(p6, 'eth1'));
  });

  await t.test('the far end removed: this end loses carrier', async (t) => {
    await nb.client.removeWire(1);
    await waitFor('NO-CARRIER on p1/eth1', () => !hasCarrier(p1, 'eth1'));
    t.match((await wire(na, 1)).ends[0]!.carrier, { on: false, far: 'gone', reason: /far end gone/ }, 'with the reason');
    await nb.client.addWire({ uid: 1, local: net.endpoint('veth', p2, 'eth1', { ips: ['198.19.1.2/24'] }), peer: { node: na.name, address: na.address } });
    await waitFor('carrier back once the far end is there again', () => hasCarrier(p1, 'eth1') && hasCarrier(p2, 'eth1'));
    t.equal(await ping(p1, '198.19.1.2', 3), 0, 'ping works again');
  });

  await t.test('kill -9 and restart within the hold time: no carrier change at either end', async (t) => {
    const changes = async (n: TestNode): Promise<number[]> => (await n.client.listWires()).flatMap((w) => w.ends.map((e) => Number(e.carrier?.changes ?? 0)));
    const before = await changes(na);
    // p4/eth1, a tap held by the killed daemon, is left out: the kernel
    // takes a tap's carrier when the last fd holding it closes, so the dying
    // daemon's own tap blinks (README, "Carrier"); its far end must not.
    const mons = await Promise.all([p1, p2, p3].map((ns) => monitor(ns)));
    try {
      await net.killDaemon(nb, 'SIGKILL');
      await net.startDaemon(nb);
      await waitFor('the wires up again', async () => (await Promise.all([1, 2, 4].map((u) => wire(nb, u)))).every((w) => w.state === 'WIRE_STATE_UP') && (await Promise.all([1, 2, 4].map((u) => wire(na, u)))).every((w) => w.state === 'WIRE_STATE_UP' && w.ends.every((e) => e.carrier?.on)));
      t.same(await changes(na), before, 'no carrier change on na');
      t.same(await changes(nb), [0, 0, 0], 'the restarted nb changed no carrier (it kept what the interfaces had)');
      t.same(await nb.client.listLinkEvents(''), [], 'and recorded no event');
      mons.forEach((m, i) => t.same(noCarrierLines(m.out(), 'eth1'), [], `no NO-CARRIER seen by ip monitor in ${[p1, p2, p3][i]}`));
      t.ok([p1, p2, p3, p4].every((ns) => hasCarrier(ns, 'eth1')), 'every pod interface still has carrier');
      t.equal(await ping(p1, '198.19.1.2', 3), 0, 'and traffic crosses');
    } finally {
      for (const m of mons) m.stop();
    }
  });

  await t.test('far daemon gone longer than the hold time: carrier drops, with the reason', async (t) => {
    const evBefore = (await na.client.listLinkEvents(`${p1}/eth1`)).length;
    await net.killDaemon(nb, 'SIGKILL');
    await waitFor('na to see the peer gone', async () => (await wire(na, 1)).state === 'WIRE_STATE_DOWN');
    t.ok(hasCarrier(p1, 'eth1'), 'carrier held while within the hold time');
    await waitFor('NO-CARRIER on p1/eth1 after the hold time', () => !hasCarrier(p1, 'eth1'), 15000);
    t.ok(!hasCarrier(p3, 'eth1'), 'and on the tap p3/eth1');
    const ev = (await na.client.listLinkEvents(`${p1}/eth1`)).slice(evBefore);
    t.match(ev, [{ carrier: false, reason: /far daemon pwpanb unreachable for more than 3000 ms/ }], 'one event, with the reason');
    await net.startDaemon(nb);
    await waitFor('carrier back when the daemon is', () => [p1, p2, p3, p4].every((ns) => hasCarrier(ns, 'eth1')));
    t.equal(await ping(p1, '198.19.1.2', 3), 0, 'ping works again');
  });
});
