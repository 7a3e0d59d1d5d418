// One sample of each topology format comes up with `patchwire up` and passes
// traffic: interface names, addresses, MTU and MAC from the file are on the
// pods' interfaces, containerlab's exec ran after the links were up, a host
// link reaches an existing interface of the machine, a netlab multi-access
// link comes up as a shared segment, and a segment with a member lab mode
// cannot place (a host interface) is refused before anything is created.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import t, { type Test } from 'tap';

import { labTraces, pw, pwOk, statusJson } from './helpers/labcli.js';
import { listNetns, ROOT, sh, TestNet } from './helpers/testnet.js';

const net = new TestNet('pwoa');
const LABS = ['pwoaclab', 'pwoahost', 'pwoaseg', 'pwoamesh', 'pwoanet', 'pwoakne'];
const ns = (lab: string, pod: string): string => `pw-${lab}-${pod}`;

t.before(async () => {
  for (const l of LABS) await pw('down', l);
});
t.teardown(async () => {
  for (const l of LABS) await pw('down', l);
  await net.cleanup();
});

interface IpLink {
  ifname: string;
  mtu: number;
  address: string;
  addr_info: Array<{ local: string; prefixlen: number }>;
}
const link = (lab: string, pod: string, ifname: string): IpLink => (JSON.parse(sh('ip', '-n', ns(lab, pod), '-j', 'addr', 'show', 'dev', ifname)) as IpLink[])[0]!;
// Link-local IPv6 addresses come by themselves; the file's addresses are the others.
const addrs = (l: IpLink): string[] => l.addr_info.filter((a) => !a.local.startsWith('fe80:')).map((a) => `${a.local}/${a.prefixlen}`);

async function ping(lab: string, pod: string, ip: string): Promise<number> {
  return (await pw('exec', lab, pod, '--', 'ping', '-c', '2', '-i', '0.2', '-W', '2', ip)).code;
}

async function assertCounted(t: Test, lab: string): Promise<void> {
  const s = await statusJson(lab);
  for (const w of s.wires) t.ok(w.state === 'up' && w.a_to_b.frames >= 2 && w.b_to_a.frames >= 2, `wire ${w.endpoints.join(' <-> ')} up and counted frames both ways`);
}

t.test('containerlab: aliases, addresses, MTU, MAC, environment and exec', async (t) => {
  process.env.HOST_ID = '7'; // ${HOST_ID:=1} in the file
  try {
    await pwOk('up', '-f', path.join(ROOT, 'examples', 'srl-leaf.clab.yml'), '--name', 'pwoaclab');
  } finally {
    delete process.env.HOST_ID;
  }
  const e11 = link('pwoaclab', 'leaf1', 'e1-1');
  t.equal(e11.mtu, 9000, 'ethernet-1/1 became e1-1, with the link MTU');
  t.same(addrs(e11), ['10.1.1.1/24'], 'and the first address of the link ipv4 list');
  const e12 = link('pwoaclab', 'leaf1', 'e1-2');
  t.equal(e12.address, '1a:b0:01:ff:00:02', 'the extended endpoint MAC');
  t.same(addrs(e12), ['10.1.2.1/24']);
  t.equal(await ping('pwoaclab', 'client1', '10.1.1.1'), 0, 'client1 reaches leaf1 over its wire');
  t.equal(await ping('pwoaclab', 'client2', '10.1.2.1'), 0, 'client2 reaches leaf1 over its wire');
  t.match(sh('ip', '-n', ns('pwoaclab', 'client1'), 'route', 'show', '10.99.0.0/24'), /via 10\.1\.1\.1 dev eth1/, "client1's exec added a route through its link (it needs the link up)");
  t.same(addrs(link('pwoaclab', 'client2', 'lo')).filter((a) => a.startsWith('192.0.2.')), ['192.0.2.7/32'], "client2 ran its kind's exec with HOST_ID from the environment");
  t.same(addrs(link('pwoaclab', 'leaf1', 'lo')).filter((a) => a.startsWith('192.0.2.')), [], 'leaf1 (another kind) did not');
  await assertCounted(t, 'pwoaclab');
  await pwOk('down', 'pwoaclab');
  t.same(labTraces('pwoaclab'), { namespaces: [], processes: [], dir: false }, 'down leaves nothing');
});

t.test("containerlab host link: a pod wired to an existing interface of the machine", async (t) => {
  // The machine's interface pwoah0 is one end of a veth whose other end is in
  // a namespace this test made, so the traffic stays inside the test.
  sh('ip', 'netns', 'add', 'pwoax');
  sh('ip', 'link', 'add', 'pwoah0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', 'pwoax');
  sh('ip', 'link', 'set', 'pwoah0', 'up');
  sh('ip', '-n', 'pwoax', 'addr', 'add', '10.9.9.2/24', 'dev', 'eth0');
  sh('ip', '-n', 'pwoax', 'link', 'set', 'eth0', 'up');
  const file = path.join(net.dir, 'host.clab.yml');
  writeFileSync(file, 'name: pwoahost\ntopology:\n  nodes:\n    gw: {kind: linux}\n  links:\n    - endpoints: ["gw:eth1", "host:${UPLINK:=pwoah0}"]\n      ipv4: ["10.9.9.1/24"]\n');
  await pwOk('up', '-f', file);
  t.equal(await ping('pwoahost', 'gw', '10.9.9.2'), 0, 'gw reaches the far side of the machine interface');
  const s = await statusJson('pwoahost');
  t.same(s.wires.map((w) => w.endpoints), [['gw/eth1', 'host/pwoah0']], 'the wire names the host end');
  t.ok(s.wires[0]!.a_to_b.frames >= 2 && s.wires[0]!.b_to_a.frames >= 2, 'and counted frames both ways');
  // up again with the same file: the host link is held by its carrier pod's daemon, so nothing is redone.
  t.match(await pwOk('up', '-f', file), /0 links added, 0 removed, 1 untouched/, 'a second up leaves the host link alone');
  await pwOk('down', 'pwoahost');
  t.match(sh('ip', 'link', 'show', 'dev', 'pwoah0'), /pwoah0/, 'down leaves the machine interface (it was not ours)');
  t.notOk(listNetns().includes('pwh-pwoahost'), "down removes the name it gave the machine's namespace");
  t.same(labTraces('pwoahost'), { namespaces: [], processes: [], dir: false }, 'and everything else of the lab');
});

t.test('a segment with a host interface as a member is refused before anything is created', async (t) => {
  const before = listNetns();
  const file = path.join(net.dir, 'seg-host.clab.yml');
  writeFileSync(file, 'name: pwoaseg\ntopology:\n  nodes:\n    br: {kind: bridge}\n    h1: {kind: linux}\n    h2: {kind: linux}\n  links:\n    - endpoints: ["h1:eth1", "br:p1"]\n    - endpoints: ["h2:eth1", "br:p2"]\n    - endpoints: ["host:pwoanone", "br:p3"]\n');
  const r = await pw('up', '-f', file);
  t.equal(r.code, 1);
  t.match(r.stderr, /segment br \(.*\): host interface pwoanone cannot be a segment member/);
  t.same(labTraces('pwoaseg'), { namespaces: [], processes: [], dir: false }, 'no namespace, process or file');
  t.same(listNetns().sort(), before.sort(), 'no namespace at all');
});

t.test('meshnet: Topology objects among Pods in one List', async (t) => {
  await pwOk('up', '-f', path.join(ROOT, 'examples', 'meshnet-list.yaml'), '--name', 'pwoamesh');
  t.equal(await ping('pwoamesh', 'r1', '198.51.100.2'), 0, 'r1 -> r2');
  t.equal(await ping('pwoamesh', 'r3', '203.0.113.1'), 0, 'r3 -> r1');
  t.equal(await ping('pwoamesh', 'r2', '192.0.2.3'), 0, 'r2 -> r3');
  t.same((await statusJson('pwoamesh')).pods.map((p) => p.name), ['r1', 'r2', 'r3'], 'the Pods were skipped, not made pods twice');
  await assertCounted(t, 'pwoamesh');
  await pwOk('down', 'pwoamesh');
});

t.test('netlab: interface names and addresses from the default pools', async (t) => {
  await pwOk('up', '-f', path.join(ROOT, 'examples', 'netlab', 'topology.yml'), '--name', 'pwoanet');
  t.same(addrs(link('pwoanet', 'r1', 'eth1')), ['10.1.0.1/30'], 'the router-router link took the first p2p /30');
  const h1 = link('pwoanet', 'h1', 'eth1');
  t.same(addrs(h1), ['172.16.0.3/24'], 'the host link a lan /24, host part the node id (3)');
  t.equal(h1.mtu, 1400, 'with the link MTU');
  t.equal(await ping('pwoanet', 'r1', '10.1.0.2'), 0, 'r1 -> r2');
  t.equal(await ping('pwoanet', 'h1', '172.16.0.2'), 0, 'h1 -> r2');
  await assertCounted(t, 'pwoanet');
  await pwOk('down', 'pwoanet');
});

t.test('netlab: a multi-access link comes up as a shared segment (beside tc.* impairments)', async (t) => {
  await pwOk('up', '-f', path.join(ROOT, 'test/fixtures/netlab/frr-triangle.yml'), '--name', 'pwoanet');
  // r1 on node1, r2 and h1 on node2: the segment spans both daemons.
  t.equal(await ping('pwoanet', 'r1', '172.16.1.2'), 0, 'r1 -> r2 over the segment');
  t.equal(await ping('pwoanet', 'r1', '172.16.1.3'), 0, 'r1 -> h1 over the segment');
  t.equal(await ping('pwoanet', 'h1', '172.16.1.2'), 0, 'h1 -> r2 over the segment (same node)');
  const s = (await statusJson('pwoanet')) as unknown as { segments: Array<{ name: string; state: string; members: Array<{ name: string; rx_frames: number; tx_frames: number }> }> };
  t.same(s.segments.map((g) => [g.name, g.state, g.members.map((m) => m.name)]), [['shared', 'up', ['r1/eth3', 'r2/eth3', 'h1/eth2']]], 'status shows the segment up with its members');
  t.ok(s.segments[0]!.members.every((m) => m.rx_frames >= 2 && m.tx_frames >= 2), 'and counted frames in and out of each member');
  await pwOk('down', 'pwoanet');
  t.same(labTraces('pwoanet'), { namespaces: [], processes: [], dir: false });
});

t.test('KNE: a text-format topology', async (t) => {
  await pwOk('up', '-f', path.join(ROOT, 'examples', 'kne', '3node-host.pb.txt'), '--name', 'pwoakne');
  t.equal(link('pwoakne', 'vm3', 'eth2').mtu, 9000, 'the MTU under interfaces');
  t.equal(await ping('pwoakne', 'vm1', '192.0.2.2'), 0, 'vm1 -> vm2');
  t.equal(await ping('pwoakne', 'vm1', '192.0.2.6'), 0, 'vm1 -> vm3');
  t.equal(await ping('pwoakne', 'vm2', '192.0.2.10'), 0, 'vm2 -> vm3');
  await assertCounted(t, 'pwoakne');
  await pwOk('down', 'pwoakne');
});
