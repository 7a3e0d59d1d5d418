// The `host` endpoint: an interface that exists before the wire (a VM's tap,
// a NIC), read and written where it is, never created or deleted by the
// daemon. Here it is one end of a veth pair the test makes itself; the
// "VM" is a namespace holding the other end. The transparency matrix crosses
// it both ways, and the interface outlives the wire and the daemon.
import t from 'tap';

import { matrixFrames, sendAcross } from './helpers/frames.js';
import { TestNet, type TestNode, sh } from './helpers/testnet.js';
import type { EndpointSpec } from '../src/endpoint/endpoint.js';

const net = new TestNet('pwya');
t.teardown(() => net.cleanup());

interface Link {
  ifindex: number;
  flags: string[];
  mtu: number;
  operstate: string;
  address: string;
}
/** The interface as the kernel reports it, or undefined when it does not exist. */
function link(ns: string, ifname: string): Link | undefined {
  try {
    const l = (JSON.parse(sh('ip', '-n', ns, '-j', 'link', 'show', 'dev', ifname)) as Link[])[0]!;
    return { ifindex: l.ifindex, flags: l.flags, mtu: l.mtu, operstate: l.operstate, address: l.address };
  } catch {
    return undefined;
  }
}

/**
 * A pre-existing interface `host` in namespace `hostNs` whose peer is `eth1`
 * in a new "VM" namespace with `ip`. Both MTU 9000 and up, as whoever made
 * them would leave them; the daemon is told nothing about the MTU.
 */
function hostInterface(hostNs: string, host: string, vm: string, ip: string): { vmNs: string; spec: EndpointSpec } {
  const vmNs = net.addPod(vm);
  sh('ip', '-n', hostNs, 'link', 'add', host, 'mtu', '9000', 'type', 'veth', 'peer', 'name', 'eth1', 'mtu', '9000', 'netns', vmNs);
  sh('ip', '-n', hostNs, 'link', 'set', host, 'up');
  sh('ip', '-n', vmNs, 'addr', 'add', ip, 'dev', 'eth1');
  sh('ip', '-n', vmNs, 'link', 'set', 'eth1', 'up');
  return { vmNs, spec: net.endpoint('host', hostNs, host, { pod: vm }) };
}

interface Case {
  name: string;
  tag: string;
  uid: number;
  /** where frames are sent from and captured: [namespace, interface] */
  a: [string, string];
  b: [string, string];
  ipB: string;
  host: { ns: string; ifname: string; before: Link };
  owners: TestNode[];
}
const cases: Case[] = [];

t.before(async () => {
  const na = await net.addNode('na');
  const nb = await net.addNode('nb');

  // A VM's interface on node na, wired to a veth pod on node nb.
  const h1 = hostInterface(na.ns, 'vnet1', 'vm1', '198.19.1.1/24');
  const b1 = net.endpoint('veth', net.addPod('b1'), 'eth1', { mtu: 9000, mac: '02:00:00:00:01:02', ips: ['198.19.1.2/24'] });
  await net.crossWire(1, na, h1.spec, nb, b1);
  cases.push({ name: 'host<->veth across nodes', tag: 'HV', uid: 1, a: [h1.vmNs, 'eth1'], b: [b1.netns, 'eth1'], ipB: '198.19.1.2', host: { ns: na.ns, ifname: 'vnet1', before: link(na.ns, 'vnet1')! }, owners: [na, nb] });

  // A VM's interface inside a pod's namespace, wired to a tap on the same node.
  const hostPod = net.addPod('hp2');
  const h2 = hostInterface(hostPod, 'vnet0', 'vm2', '198.19.2.1/24');
  const b2 = net.endpoint('tap', net.addPod('b2'), 'eth1', { mtu: 9000, ips: ['198.19.2.2/24'] });
  await net.localWire(2, nb, h2.spec, b2);
  cases.push({ name: 'host<->tap on one node', tag: 'HT', uid: 2, a: [h2.vmNs, 'eth1'], b: [b2.netns, 'eth1'], ipB: '198.19.2.2', host: { ns: hostPod, ifname: 'vnet0', before: link(hostPod, 'vnet0')! }, owners: [nb] });
});

for (const [idx, label] of ['host<->veth across nodes', 'host<->tap on one node'].entries()) {
  t.test(`transparency matrix over a host endpoint: ${label}`, async (t) => {
    const c = cases[idx]!;
    t.equal(c.name, label);
    for (const [dir, src, dst] of [
      ['F', c.a, c.b],
      ['R', c.b, c.a],
    ] as const) {
      const frames = matrixFrames(`Y${c.tag}${dir}`, { jumbo: true });
      const r = await sendAcross(net, src, dst, frames, `PWTY${c.tag}${dir}`);
      t.equal(r.received.length, frames.length, `${dir}: every frame arrives exactly once (${frames.length})`);
      const wrong = frames.filter((f, i) => !r.received[i]?.equals(f.bytes)).map((f) => f.label);
      t.same(wrong, [], `${dir}: all ${frames.length} frames byte for byte, in order (link-local groups, tags, 60 and 9014 bytes)`);
      t.equal(r.reflected.length, 0, `${dir}: nothing is reflected back to the sender`);
    }
    const ping = await net.exec(c.a[0], 'ping', ['-c', '3', '-i', '0.2', '-W', '2', c.ipB]);
    t.equal(ping.code, 0, `ping from the VM to ${c.ipB} crosses the wire`);
    const now = link(c.host.ns, c.host.ifname)!;
    t.same(now, c.host.before, 'the host interface is the same one, with its own MTU and MAC, untouched by the daemon');
  });
}

t.test('removing the wires leaves the host interfaces where they were', async (t) => {
  for (const c of cases) {
    for (const n of c.owners) await n.client.removeWire(c.uid);
    t.same(link(c.host.ns, c.host.ifname), c.host.before, `${c.name}: ${c.host.ns}/${c.host.ifname} still exists, same ifindex, MTU and state`);
    t.ok(link(c.a[0], 'eth1'), `${c.name}: and so does its peer in the VM`);
  }
  // The far ends the daemons made are gone: removal did happen.
  t.equal(link(cases[0]!.b[0], 'eth1'), undefined, 'the veth the daemon made for the far pod is gone');
  t.equal(link(cases[1]!.b[0], 'eth1'), undefined, 'and so is its tap');

  // The same interface takes a new wire, and a daemon that stops leaves it too.
  const [na, nb] = cases[0]!.owners as [TestNode, TestNode];
  // Same MAC as before: the VM's neighbor entry for the far pod stays right.
  const again = net.endpoint('veth', cases[0]!.b[0], 'eth1', { mtu: 9000, mac: '02:00:00:00:01:02', ips: ['198.19.1.2/24'] });
  await net.crossWire(3, na, net.endpoint('host', na.ns, 'vnet1', { pod: 'vm1' }), nb, again);
  const ping = await net.exec(cases[0]!.a[0], 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '198.19.1.2']);
  t.equal(ping.code, 0, 'a new wire on the same host interface carries traffic');
  await net.killDaemon(na, 'SIGTERM');
  t.same(link(na.ns, 'vnet1'), cases[0]!.host.before, 'a daemon that stops leaves the host interface too');
});
