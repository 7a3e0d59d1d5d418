// Cluster mode with a KubeVirt VM as a link end, against the STAND-IN API
// server (test/helpers/apiserver.ts) with a real QEMU guest: a Topology with
// `patchwire.kubevirt: true` names a VirtualMachineInstance; the daemon finds
// its virt-launcher pod by KubeVirt's label, makes the tap in the launcher's
// namespace during CNI ADD, and reads it as a `host` end once QEMU (started
// here as virt-launcher's libvirt would: ifname=, script=no, vnet_hdr=on)
// has opened it. No bridge in the path: IEEE link-local groups and VLAN tags
// cross byte for byte both ways. A cable pull stops frames on patchwire's
// side (counted cable_pulled; the guest's NIC keeps its link, see
// docs/vms.md); a VMI restart (new launcher pod, namespace and tap) is back
// on its wire by itself; a Topology naming a missing VMI says so; deleting
// everything leaves nothing behind.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import t, { type Test } from 'tap';

import { clusterWireId } from '../src/cluster/plan.js';
import { kvmUsable } from '../src/lab/vm.js';
import { TestCluster, type ClusterNode, type TestPod } from './helpers/cluster.js';
import { marked, matrixFrames, startCapture, stopCapture, waitUntil } from './helpers/frames.js';
import { GuestShell, hexFrames, testGuest, waitReady } from './helpers/guest.js';
import { links, listNetns, ROOT, run, sh, sleep, waitFor } from './helpers/testnet.js';

const NS = 'kv';
const VMI_PATH = `/apis/kubevirt.io/v1/namespaces/${NS}/virtualmachineinstances`;
const GUEST_MAC = '02:4b:56:00:00:01';
const WIRE = clusterWireId(NS, 1);

const cluster = new TestCluster('pwkv');
const shells: GuestShell[] = [];
const qemuPids: number[] = [];
t.teardown(async () => {
  for (const s of shells) await s.close().catch(() => undefined);
  for (const pid of qemuPids) killQuietly(pid);
  await cluster.cleanup();
});

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

let guest: ReturnType<typeof testGuest>;

type LinkSt = { uid: number; state: string; message?: string; cable?: string };
const linkOf = (name: string, uid = 1): LinkSt | undefined => ((cluster.topologyStatus(NS, name)?.links as LinkSt[] | undefined) ?? []).find((l) => l.uid === uid);

function topology(name: string, links: Array<Record<string, unknown>>, kubevirt = false): Record<string, unknown> {
  return { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name }, spec: { ...(kubevirt ? { patchwire: { kubevirt: true } } : {}), links } };
}

/** A VirtualMachineInstance as KubeVirt keeps it once scheduled: one interface per link, running on `node`. */
async function createVmi(name: string, ifaces: string[], node: ClusterNode | null): Promise<string> {
  const r = await cluster.request('POST', VMI_PATH, {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: { name },
    spec: { domain: { devices: { interfaces: ifaces.map((i) => ({ name: i, binding: { name: 'patchwire' } })) } }, networks: ifaces.map((i) => ({ name: i, multus: { networkName: i } })) },
    status: { phase: node ? 'Running' : 'Pending', ...(node ? { nodeName: node.name } : {}), interfaces: ifaces.map((i) => ({ name: i, mac: GUEST_MAC, interfaceName: i })) },
  });
  if (r.status !== 201) throw new Error(`creating VMI ${name}: ${JSON.stringify(r.body)}`);
  return r.body.metadata.uid!;
}

interface Launcher {
  pod: TestPod;
  dir: string;
  pid: number;
  shell: GuestShell;
}

/**
 * What KubeVirt does for a VMI: a virt-launcher pod labelled with the VMI's
 * uid (CNI ADD runs for it), then QEMU in the pod's namespace on the tap
 * named in the domain (`<interface type='ethernet'><target dev='eth1'
 * managed='no'/>`: libvirt opens it, never creates it).
 */
async function startLauncher(t: Test, node: string, podName: string, vmiUid: string): Promise<Launcher> {
  const { pod, add } = await cluster.startPod(node, NS, podName, { labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': vmiUid, 'vm.kubevirt.io/name': 'vm1' } });
  t.equal(add.code, 0, `CNI ADD of ${podName} succeeds (${add.stdout.trim()})`);
  // The domain starts right after ADD: the tap must be there now, with no waiting.
  const tap = JSON.parse(sh('ip', '-n', pod.netns, '-d', '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ flags: string[]; linkinfo: { info_kind: string; info_data: { type: string; vnet_hdr: boolean; user?: number; multi_queue?: boolean } } }>;
  t.match(tap[0]!.linkinfo, { info_kind: 'tun', info_data: { type: 'tap', vnet_hdr: true, user: 107 } }, 'ADD made the tap, with a virtio-net header, for QEMU as KubeVirt runs it (uid 107)');
  t.notOk(tap[0]!.linkinfo.info_data.multi_queue, 'single-queue, as QEMU attaches without queues=');
  t.ok(tap[0]!.flags.includes('UP'), 'and up');
  // TCG unless KVM really works: here /dev/kvm opens but KVM cannot run the guest (nested, MSR 0x10a).
  const kvm = kvmUsable() && process.env.PATCHWIRE_TEST_KVM === '1';
  const dir = path.join(cluster.net.dir, podName);
  sh('mkdir', '-p', dir);
  const consoleLog = path.join(dir, 'console.log');
  const args = [
    '-name', `pwkv-${podName}`,
    '-machine', `q35,accel=${kvm ? 'kvm' : 'tcg'}`, '-cpu', kvm ? 'host' : 'max', '-m', '256',
    '-nodefaults', '-display', 'none', '-no-user-config', '-no-reboot',
    '-chardev', `socket,id=console,path=${path.join(dir, 'console.sock')},server=on,wait=off,logfile=${consoleLog}`,
    '-serial', 'chardev:console',
    '-pidfile', path.join(dir, 'qemu.pid'), '-daemonize',
    '-kernel', guest.kernel, '-initrd', guest.initrd,
    '-append', `console=ttyS0 panic=-1 pw.if=eth1,${GUEST_MAC} pw.ip=eth1,10.62.0.2/24`,
    '-netdev', 'tap,id=net1,ifname=eth1,script=no,downscript=no,vnet_hdr=on',
    '-device', `virtio-net-pci,netdev=net1,mac=${GUEST_MAC},addr=10`,
  ];
  const q = await run('ip', ['netns', 'exec', pod.netns, 'qemu-system-x86_64', ...args], { timeoutMs: 60000 });
  t.equal(q.code, 0, `QEMU started on the tap patchwire made ${q.stderr}`);
  const pid = Number(readFileSync(path.join(dir, 'qemu.pid'), 'utf8').trim());
  qemuPids.push(pid);
  const up = await waitReady(consoleLog);
  t.comment(`guest ready at ${up} s uptime (${kvm ? 'KVM' : 'TCG'})`);
  const shell = await GuestShell.open(path.join(dir, 'console.sock'));
  shells.push(shell);
  return { pod, dir, pid, shell };
}

/** The virt-launcher pod goes (the VMI stopped): its QEMU exits, then the kubelet's CNI DEL and sandbox removal. */
async function stopLauncher(l: Launcher): Promise<void> {
  await l.shell.close();
  shells.splice(shells.indexOf(l.shell), 1);
  killQuietly(l.pid);
  await waitFor(`QEMU ${l.pid} gone`, () => !existsSync(`/proc/${l.pid}`));
  const del = await cluster.deletePod(NS, l.pod.name);
  if (del.code !== 0) throw new Error(`CNI DEL of ${l.pod.name}: ${del.stdout}${del.stderr}`);
}

async function wireOn(node: ClusterNode): Promise<Awaited<ReturnType<ClusterNode['client']['listWires']>>[number] | undefined> {
  return (await node.client.listWires()).find((w) => Number(w.spec.uid) === WIRE);
}

async function podToGuest(t: Test, r1: TestPod, shell: GuestShell, tag: string): Promise<void> {
  const frames = matrixFrames(tag, { jumbo: false }).map((f) => f.bytes);
  await shell.ok(`(l2frames recv eth1 6000 PWT${tag} > /tmp/rx 2>&1 &)`);
  await waitFor('guest receiver listening', async () => (await shell.ok('cat /tmp/rx')).includes('listening'));
  const input = frames.map((f) => f.toString('hex')).join('\n') + '\n';
  // One CPU for the sender: a veth delivers through the sending CPU's backlog (see vm-lab.test.ts).
  const sent = await cluster.net.exec(r1.netns, 'taskset', ['-c', '0', 'python3', path.join(ROOT, 'test', 'tools', 'sendframes.py'), 'eth1', '0.0005'], { input });
  t.equal(sent.code, 0, `sendframes: ${sent.stderr}`);
  await waitFor('guest receiver done', async () => /end \d+/.test(await shell.ok('cat /tmp/rx')), 20000, 300);
  const got = hexFrames(await shell.ok('cat /tmp/rx', 60000));
  t.same(
    got.map((f) => f.toString('hex')).sort(),
    frames.map((f) => f.toString('hex')).sort(),
    `pod to guest: all ${frames.length} frames (STP 01:80:C2:00:00:00, LLDP 01:80:C2:00:00:0E and the rest of the link-local group, 802.1Q, QinQ, ...) once, byte for byte`,
  );
  // In order (the guest's receive path batches no frames: see test/vm-lab.test.ts).
  t.same(
    got.map((f) => f.toString('hex')),
    frames.map((f) => f.toString('hex')),
    'pod to guest: in the order sent',
  );
}

async function guestToPod(t: Test, r1: TestPod, shell: GuestShell, tag: string): Promise<void> {
  const frames = matrixFrames(tag, { jumbo: false }).map((f) => f.bytes);
  await shell.writeFrames('/tmp/tx', frames);
  const file = path.join(cluster.net.dir, `${tag}.pcap`);
  const cap = await startCapture(cluster.net, r1.netns, 'eth1', file);
  try {
    t.match(await shell.ok('l2frames send eth1 < /tmp/tx'), new RegExp(`sent ${frames.length}`), 'the guest sent every frame');
    await waitUntil(() => marked(file, `PWT${tag}`).length >= frames.length, 10000);
  } finally {
    await stopCapture(cap);
  }
  t.same(
    marked(file, `PWT${tag}`).map((f) => f.toString('hex')),
    frames.map((f) => f.toString('hex')),
    'guest to pod: every frame once, byte for byte, in order',
  );
}

const ping = async (r1: TestPod): Promise<number> => (await cluster.exec(r1, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '10.62.0.2'])).code;

async function setState(name: string, state: 'up' | 'down'): Promise<void> {
  const cur = cluster.api.get('topologies', NS, name) as { spec: { links: Array<Record<string, unknown>> } };
  const links = cur.spec.links.map((l) => ({ ...l, patchwire: { state } }));
  const r = await cluster.request('PATCH', `/apis/networkop.co.uk/v1beta1/namespaces/${NS}/topologies/${name}`, { spec: { links } }, 'application/merge-patch+json');
  if (r.status !== 200) throw new Error(`patching Topology ${name}: ${JSON.stringify(r.body)}`);
}

t.test('a KubeVirt VM on a wire to a pod on another node, without a bridge', async (t) => {
  guest = testGuest();
  await cluster.start();
  const n1 = await cluster.addNode('n1');
  const n2 = await cluster.addNode('n2');
  t.equal((await cluster.createTopology(NS, topology('r1', [{ uid: 1, peer_pod: 'vm1', local_intf: 'eth1', peer_intf: 'eth1', local_ip: '10.62.0.1/24' }]))).status, 201);
  const vmTopo = await cluster.createTopology(NS, topology('vm1', [{ uid: 1, peer_pod: 'r1', local_intf: 'eth1', peer_intf: 'eth1' }], true));
  t.equal(vmTopo.status, 201);
  t.same((vmTopo.body.spec as Record<string, unknown>).patchwire, { kubevirt: true }, 'the CRD schema keeps patchwire.kubevirt');
  const { pod: r1 } = await cluster.startPod('n1', NS, 'r1');

  // No VMI yet: the pod's side says what it waits for.
  const waiting = await waitFor('r1 waits for the VM', () => (/VirtualMachineInstance vm1 does not exist/.test(linkOf('r1')?.message ?? '') ? linkOf('r1') : undefined));
  t.equal(waiting.state, 'pending', `r1's link is pending: ${waiting.message}`);

  const uid = await createVmi('vm1', ['eth1'], n2);
  let launcher = await startLauncher(t, 'n2', 'virt-launcher-vm1-x7k2p', uid);
  const s1 = await cluster.waitReady(NS, 'vm1', '1/1', 60000);
  await cluster.waitReady(NS, 'r1', '1/1');
  t.equal(s1.node, n2.name, "the VM's Topology status is written by the launcher's node");
  t.equal(s1.net_ns, `/var/run/netns/${launcher.pod.netns}`, "and names the launcher pod's namespace");
  const w2 = (await wireOn(n2))!;
  t.equal(w2.spec.local?.kind, 'ENDPOINT_KIND_HOST', 'n2 reads the tap as a host end (QEMU owns it; patchwire never configures it)');
  t.same(JSON.parse(sh('ip', '-n', launcher.pod.netns, '-j', 'link', 'show', 'type', 'bridge')), [], 'no Linux bridge in the launcher pod');

  t.equal(await ping(r1), 0, 'the pod pings the guest across nodes');
  t.match(await launcher.shell.ok('ping -c 2 -W 2 10.62.0.1'), /2 packets received/, 'the guest pings the pod');
  await podToGuest(t, r1, launcher.shell, 'kv1');
  await guestToPod(t, r1, launcher.shell, 'kv2');

  await t.test('a cable pull stops frames on the wire, counted as cable_pulled; the guest keeps its link', async (t) => {
    await setState('vm1', 'down');
    const down = await waitFor('vm1 link down', () => (linkOf('vm1')?.cable === 'pulled' ? linkOf('vm1') : undefined));
    t.match(down.message, /cable is pulled at this end/, 'the VM\'s Topology status says where the cable is out');
    await waitFor('r1 eth1 loses carrier', () => sh('ip', 'netns', 'exec', r1.netns, 'cat', '/sys/class/net/eth1/carrier').trim() === '0');
    t.equal((await launcher.shell.ok('cat /sys/class/net/eth1/carrier')).trim(), '1', "the guest's NIC keeps carrier: KubeVirt offers no way to set it (docs/vms.md)");
    const before = (await wireOn(n2))!.ends[0]!.counters;
    const far = (await wireOn(n1))!.ends[0]!.counters;
    const frames = matrixFrames('kv3', { jumbo: false }).slice(0, 20).map((f) => f.bytes);
    await launcher.shell.writeFrames('/tmp/tx', frames);
    t.match(await launcher.shell.ok('l2frames send eth1 < /tmp/tx'), /sent 20/, 'the guest sent 20 frames into its tap');
    const after = await waitFor('20 frames read from the tap', async () => {
      const c = (await wireOn(n2))!.ends[0]!.counters;
      return c.rx_frames - before.rx_frames >= 20 ? c : undefined;
    });
    t.equal(after.drops.cable_pulled - before.drops.cable_pulled, after.rx_frames - before.rx_frames, `each frame the guest sent was counted as cable_pulled (${after.drops.cable_pulled - before.drops.cable_pulled})`);
    await sleep(300);
    t.equal((await wireOn(n1))!.ends[0]!.counters.tx_frames - far.tx_frames, 0, 'none reached the pod');
    await setState('vm1', 'up');
    await cluster.waitReady(NS, 'vm1', '1/1');
    await cluster.waitReady(NS, 'r1', '1/1');
    t.equal(await ping(r1), 0, 'plugged again: ping works');
  });

  await t.test('a VMI restart (new launcher pod, namespace and tap) gets back on its wire by itself', async (t) => {
    const oldNs = launcher.pod.netns;
    await stopLauncher(launcher);
    t.equal((await cluster.request('DELETE', `${VMI_PATH}/vm1`)).status, 200, 'the VMI is deleted (a VirtualMachine restart makes a new one)');
    await waitFor('n2 lets the wire go', async () => (await wireOn(n2)) === undefined);
    const newUid = await createVmi('vm1', ['eth1'], n2);
    t.not(newUid, uid, 'the new VMI has a new uid');
    launcher = await startLauncher(t, 'n2', 'virt-launcher-vm1-q9w3z', newUid);
    const s = await cluster.waitReady(NS, 'vm1', '1/1', 60000);
    await cluster.waitReady(NS, 'r1', '1/1');
    t.equal(s.net_ns, `/var/run/netns/${launcher.pod.netns}`, 'the status names the new launcher namespace');
    t.not(launcher.pod.netns, oldNs);
    t.equal(await ping(r1), 0, 'the pod pings the restarted guest');
    await podToGuest(t, r1, launcher.shell, 'kv4');
  });

  await t.test('a Topology naming a VMI that does not exist, or an interface it lacks, says so; nothing is made', async (t) => {
    t.equal((await cluster.createTopology(NS, topology('r2', [{ uid: 2, peer_pod: 'vm9', local_intf: 'eth1', peer_intf: 'eth1' }]))).status, 201);
    t.equal((await cluster.createTopology(NS, topology('vm9', [{ uid: 2, peer_pod: 'r2', local_intf: 'eth1', peer_intf: 'eth1' }], true))).status, 201);
    const { pod: r2 } = await cluster.startPod('n1', NS, 'r2');
    const l = await waitFor('r2 status', () => (linkOf('r2', 2)?.message ? linkOf('r2', 2) : undefined));
    t.equal(l.state, 'pending');
    t.match(l.message, /VirtualMachineInstance vm9 does not exist in namespace kv/, `r2's status says why (${l.message})`);
    await waitFor('n1 logged it', () => /Topology kv\/vm9: VirtualMachineInstance vm9 does not exist/.test(readFileSync(n1.log, 'utf8')));
    t.pass("n1's log names the Topology and the missing VMI");
    t.same(links(r2.netns), ['lo'], 'nothing was made in r2');
    // The VMI appears with another interface than the Topology names.
    await createVmi('vm9', ['net1'], null);
    const bad = await waitFor('r2 link error', () => (linkOf('r2', 2)?.state === 'error' ? linkOf('r2', 2) : undefined));
    t.match(bad.message, /declares no interface eth1 \(its interfaces: net1\)/, `r2's status names the mismatch (${bad.message})`);
    t.same(links(r2.netns), ['lo'], 'still nothing made in r2');
    await cluster.deletePod(NS, 'r2');
    for (const name of ['r2', 'vm9']) await cluster.request('DELETE', `/apis/networkop.co.uk/v1beta1/namespaces/${NS}/topologies/${name}`);
    await cluster.request('DELETE', `${VMI_PATH}/vm9`);
  });

  await t.test('deleting the pods, the VMI and the Topologies leaves nothing behind', async (t) => {
    const pid = launcher.pid;
    await stopLauncher(launcher);
    await cluster.request('DELETE', `${VMI_PATH}/vm1`);
    await cluster.deletePod(NS, 'r1');
    for (const name of ['r1', 'vm1']) await cluster.request('DELETE', `/apis/networkop.co.uk/v1beta1/namespaces/${NS}/topologies/${name}`);
    for (const n of [n1, n2]) {
      await waitFor(`no wires on ${n.name}`, async () => (await n.client.listWires()).length === 0);
      t.same(links(n.ns), ['lo', 'ul0'], `nothing left in node ${n.name}'s namespace`);
    }
    t.same(listNetns().filter((x) => x.startsWith(`pwkv${NS}`)), [], 'no pod namespaces left');
    t.notOk(existsSync(`/proc/${pid}`), 'no QEMU left');
    t.same((await run('pgrep', ['-af', 'pwkv-virt-launcher'])).stdout.trim(), '', 'no process of a launcher left');
  });
});
