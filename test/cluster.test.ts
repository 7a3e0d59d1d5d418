// Cluster mode end to end, against the STAND-IN API server (no real API
// server runs on these machines; see test/helpers/apiserver.ts): meshnet
// Topology objects and pods in, real wires between real namespaces on two
// emulated nodes out, status written back; pod deletion, daemon restart,
// watch loss and 410 Gone, plumbing errors and a pod with 100 links.
import { readFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';
import { parseAllDocuments } from 'yaml';

import { ControlClient } from '../src/control/client.js';
import { TestCluster, type TestPod } from './helpers/cluster.js';
import { readPcapng } from './helpers/pcap.js';
import { CLI, ROOT, run, sh, waitFor } from './helpers/testnet.js';

const cluster = new TestCluster('pwtk');
t.teardown(() => cluster.cleanup());

function ifindex(pod: TestPod, ifname: string): number {
  return (JSON.parse(sh('ip', '-n', pod.netns, '-j', 'link', 'show', 'dev', ifname)) as Array<{ ifindex: number }>)[0]!.ifindex;
}

function triangle(): Array<Record<string, unknown>> {
  return parseAllDocuments(readFileSync(path.join(ROOT, 'examples', 'triangle.yaml'), 'utf8')).map((d) => d.toJSON() as Record<string, unknown>);
}

type LinkSt = { uid: number; state: string; message?: string; wire?: number; local_intf: string };
const links = (s: Record<string, unknown> | undefined): LinkSt[] => (s?.links as LinkSt[] | undefined) ?? [];

async function wiresOf(client: ControlClient): Promise<Array<{ uid: number; ends: string[]; state: string }>> {
  return (await client.listWires()).map((w) => ({ uid: Number(w.spec.uid), ends: w.ends.map((e) => e.name), state: w.state }));
}

t.test('cluster mode', async (t) => {
  await cluster.start();
  const n1 = await cluster.addNode('n1');
  const n2 = await cluster.addNode('n2');
  await waitFor('both daemons ready', async () => (await cluster.ready(n1)).code === 200 && (await cluster.ready(n2)).code === 200);
  t.equal((await cluster.ready(n1)).body, 'ready', '/readyz says ready once the watches have listed');

  // meshnet's own example objects go in unchanged; the CRD schema keeps every field.
  const objs = triangle();
  for (const o of objs) {
    const r = await cluster.createTopology('lab1', o);
    t.equal(r.status, 201, `Topology ${(o.metadata as { name: string }).name} accepted by the CRD schema`);
    t.same(r.body.spec, o.spec, 'nothing pruned from its spec');
  }

  const r1 = await cluster.startPod('n1', 'lab1', 'r1');
  const r2 = await cluster.startPod('n2', 'lab1', 'r2');
  const r3 = await cluster.startPod('n1', 'lab1', 'r3');
  for (const { add, pod } of [r1, r2, r3]) {
    t.equal(add.code, 0, `CNI ADD of ${pod.name} succeeds (${add.stdout.trim()})`);
    t.same(add.json, JSON.parse(cluster.cniConfig(pod)).prevResult, 'ADD returns the previous result unchanged');
  }
  const s1 = await cluster.waitReady('lab1', 'r1', '2/2');
  const s2 = await cluster.waitReady('lab1', 'r2', '2/2');
  await cluster.waitReady('lab1', 'r3', '2/2');
  t.equal(s1.node, n1.name, 'r1 status written by n1');
  t.equal(s2.node, n2.name, 'r2 status written by n2');
  t.equal(s1.net_ns, `/var/run/netns/${r1.pod.netns}`, 'status carries the netns from CNI ADD');
  t.equal(s1.src_ip, n1.ip, 'status carries the host IP');
  t.ok(links(s1).every((l) => l.state === 'up'), 'every link of r1 up');

  // Frames cross: r1-r2 across nodes, r2-r3 across nodes, r1-r3 a wire inside n1.
  t.equal((await cluster.exec(r1.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.2'])).code, 0, 'r1 -> r2 across nodes');
  t.equal((await cluster.exec(r2.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.6'])).code, 0, 'r2 -> r3 across nodes');
  t.equal((await cluster.exec(r1.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.10'])).code, 0, 'r1 -> r3 on the same node');
  const w1 = await wiresOf(n1.client);
  t.same(w1.map((w) => w.ends.sort()).sort(), [['lab1/r1/eth1'], ['lab1/r1/eth2', 'lab1/r3/eth2'], ['lab1/r3/eth1']].sort(), 'n1 owns its ends and the local wire');

  await t.test('capture from a cluster-mode daemon by its control socket', async (t) => {
    const file = path.join(cluster.net.dir, 'r1-eth1.pcapng');
    const cap = await run(process.execPath, [CLI, 'capture', '--control', n1.control, 'lab1/r1/eth1', '-w', file, '--json']);
    t.equal(cap.code, 0, cap.stderr);
    const pcap = readPcapng(file);
    t.same(pcap.interfaces.map((i) => i.name), ['lab1/r1/eth1'], 'one interface named namespace/pod/intf');
    const icmp = pcap.packets.filter((p) => p.data.readUInt16BE(12) === 0x0800 && p.data[23] === 1);
    t.ok(icmp.length >= 4, `the ring holds the pings sent earlier (${icmp.length} ICMP frames)`);
    const unknown = await run(process.execPath, [CLI, 'capture', '--control', n1.control, 'lab1/r9/eth1']);
    t.equal(unknown.code, 1);
    t.match(unknown.stderr, /no wire end lab1\/r9\/eth1 on node pwtkn1/, 'an unknown end is named');
  });

  await t.test('control API is read-only in cluster mode', async (t) => {
    const err = await n1.client.removeWire(w1[0]!.uid).then(
      () => '',
      (e: { details?: string }) => e.details ?? '',
    );
    t.match(err, /cluster mode: wires come from Topology objects/, 'hand edits refused with a reason');
  });

  await t.test('another lab reuses the same uids without sharing wires', async (t) => {
    for (const o of triangle().slice(0, 2)) {
      const spec = o.spec as { links: Array<Record<string, unknown>> };
      spec.links = spec.links.filter((l) => l.uid === 1);
      t.equal((await cluster.createTopology('lab2', o)).status, 201);
    }
    const a = await cluster.startPod('n1', 'lab2', 'r1');
    const b = await cluster.startPod('n2', 'lab2', 'r2');
    await cluster.waitReady('lab2', 'r1', '1/1');
    await cluster.waitReady('lab2', 'r2', '1/1');
    const id1 = links(cluster.topologyStatus('lab1', 'r1')).find((l) => l.uid === 1)!.wire;
    const id2 = links(cluster.topologyStatus('lab2', 'r1')).find((l) => l.uid === 1)!.wire;
    t.not(id1, id2, 'uid 1 of lab1 and uid 1 of lab2 are different wires');
    t.equal((await cluster.exec(a.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.2'])).code, 0, 'lab2 r1 -> r2');
    t.equal((await cluster.exec(r1.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.2'])).code, 0, 'lab1 r1 -> r2 still');
    // Both labs use 192.0.2.1/2.2 on eth1: ARP replies come from the pod of the same lab.
    const mac = (p: TestPod): string => (JSON.parse(sh('ip', '-n', p.netns, '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ address: string }>)[0]!.address;
    const neigh = sh('ip', '-n', a.pod.netns, 'neigh', 'show', '192.0.2.2');
    t.match(neigh, mac(b.pod), 'lab2 r1 learned lab2 r2 MAC');
    t.notMatch(neigh, mac(r2.pod), 'not lab1 r2 MAC');
    await cluster.deletePod('lab2', 'r1');
    await cluster.deletePod('lab2', 'r2');
  });

  await t.test('a deleted pod loses its wires; a new pod of that name gets them back', async (t) => {
    const del = await cluster.deletePod('lab1', 'r2');
    t.equal(del.code, 0, 'CNI DEL succeeds');
    await waitFor('n2 drops r2 wires', async () => (await wiresOf(n2.client)).every((w) => !w.ends.some((e) => e.startsWith('lab1/r2/'))));
    await waitFor('n1 drops r1-r2 and r3-r2 wires', async () => (await wiresOf(n1.client)).length === 1);
    t.same((await wiresOf(n1.client)).map((w) => w.ends.sort()), [['lab1/r1/eth2', 'lab1/r3/eth2']], 'only the local r1-r3 wire is left on n1');
    const st = await waitFor('r1 status shows the link pending', () => {
      const l = links(cluster.topologyStatus('lab1', 'r1')).find((x) => x.uid === 1);
      return l?.state === 'pending' ? l : undefined;
    });
    t.match(st.message, /waiting for pod r2/, 'status says what the link waits for');
    t.equal(cluster.topologyStatus('lab1', 'r1')!.ready, '1/2');
    t.notOk(sh('ip', '-n', r1.pod.netns, '-o', 'link').includes('eth1@'), 'r1 eth1 removed with its wire');

    // The new r2 is scheduled but its sandbox has not run CNI ADD yet: n1 plumbs
    // its end, but does not call the link up while the far end is missing.
    const again = await cluster.startPod('n2', 'lab1', 'r2', { cni: false });
    const half = await waitFor('r1 link to r2 down, far end not plumbed', () => {
      const l = links(cluster.topologyStatus('lab1', 'r1')).find((x) => x.uid === 1);
      // (it may first be down while the stream to n2 reconnects)
      return l?.state === 'down' && /far end/.test(l.message ?? '') ? l : undefined;
    });
    t.match(half.message, /far end r2\/eth1 on node pwtkn2 is not plumbed yet \(waiting for pod r2 to start/, 'status names the far end and what it waits for');
    t.equal((half as { plumbed?: boolean }).plumbed, true, 'while saying this end is plumbed');
    t.equal((await cluster.cni('ADD', again.pod)).code, 0, 'then CNI ADD runs');
    await cluster.waitReady('lab1', 'r1', '2/2');
    await cluster.waitReady('lab1', 'r2', '2/2');
    t.equal((await cluster.exec(r1.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.2'])).code, 0, 'r1 -> new r2');
  });

  await t.test('a Topology deleted and made again under its name gets its status', async (t) => {
    await cluster.waitReady('lab1', 'r3', '2/2');
    const r3 = triangle()[2]!;
    // Back to back, so the daemon sees both within one pass: same plan, same
    // status text, but a new object that has no status yet.
    const del = await cluster.request('DELETE', '/apis/networkop.co.uk/v1beta1/namespaces/lab1/topologies/r3');
    t.equal(del.status, 200, 'deleted');
    const made = await cluster.createTopology('lab1', r3);
    t.equal(made.status, 201, 'made again');
    t.equal(cluster.topologyStatus('lab1', 'r3'), undefined, 'the new object starts without a status');
    const st = await cluster.waitReady('lab1', 'r3', '2/2');
    t.equal(st.node, n1.name, 'n1 writes the status of the new object');
  });

  await t.test('a restarted daemon restores everything without recreating interfaces', async (t) => {
    const before = { r1e1: ifindex(r1.pod, 'eth1'), r1e2: ifindex(r1.pod, 'eth2'), r3e1: ifindex(r3.pod, 'eth1') };
    await cluster.net.killDaemon(n1, 'SIGKILL');
    await cluster.startDaemon(n1);
    await waitFor('n1 ready again', async () => (await cluster.ready(n1)).code === 200);
    await waitFor('n1 wires up', async () => {
      const w = await wiresOf(n1.client);
      return w.length === 3 && w.every((x) => x.state === 'WIRE_STATE_UP');
    });
    t.same({ r1e1: ifindex(r1.pod, 'eth1'), r1e2: ifindex(r1.pod, 'eth2'), r3e1: ifindex(r3.pod, 'eth1') }, before, 'same pod interfaces (ifindex unchanged)');
    const log = readFileSync(n1.log, 'utf8').split('listening on').pop()!;
    t.notMatch(log, /plumbing \d+ wire/, 'the restarted daemon plumbed nothing anew');
    t.equal((await cluster.exec(r1.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.2'])).code, 0, 'r1 -> r2 after restart');
    t.equal((await cluster.exec(r1.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.10'])).code, 0, 'r1 -> r3 after restart');
    await cluster.waitReady('lab1', 'r1', '2/2');
  });

  await t.test('watches survive a dropped connection, a 410 Gone and a failing list', async (t) => {
    const lists = (): number => cluster.api.requests.filter((r) => r.method === 'GET' && !r.watch && r.path.endsWith('/topologies')).length;
    const listsBefore = lists();
    // Everything before now is compacted away, and open watches end: resuming gets 410.
    cluster.api.compact();
    cluster.api.failNext((m, p, w) => m === 'GET' && !w && p.endsWith('/topologies'), 500, 1);
    cluster.api.closeWatches();
    for (const o of triangle()) {
      const name = (o.metadata as { name: string }).name;
      (o.metadata as { name: string }).name = `${name}x`;
      for (const l of (o.spec as { links: Array<Record<string, unknown>> }).links) l.peer_pod = `${l.peer_pod as string}x`;
      t.equal((await cluster.createTopology('lab3', o)).status, 201);
    }
    await waitFor('watches resumed and told 410 Gone', () => cluster.api.expired >= 4);
    t.ok(cluster.api.expired >= 4, `both daemons' pod and Topology watches got 410 Gone (${cluster.api.expired})`);
    await cluster.startPod('n1', 'lab3', 'r1x');
    await cluster.startPod('n2', 'lab3', 'r2x');
    await cluster.startPod('n2', 'lab3', 'r3x');
    await cluster.waitReady('lab3', 'r1x', '2/2');
    await cluster.waitReady('lab3', 'r2x', '2/2');
    t.ok(lists() >= listsBefore + 2, `daemons relisted after 410 Gone (${lists() - listsBefore} lists)`);
    t.ok(cluster.api.requests.some((r) => !r.watch && r.status === 500), 'a list failed and was retried');
    for (const p of ['r1x', 'r2x', 'r3x']) await cluster.deletePod('lab3', p);
  });

  await t.test('plumbing and topology errors show in the status', async (t) => {
    // "lo" exists in every pod: the daemon cannot create a veth of that name.
    t.equal((await cluster.createTopology('lab4', { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name: 'a' }, spec: { links: [{ uid: 1, peer_pod: 'b', local_intf: 'lo', peer_intf: 'eth1' }, { uid: 2, peer_pod: 'b', local_intf: 'eth2', peer_intf: 'eth2' }] } })).status, 201);
    t.equal((await cluster.createTopology('lab4', { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name: 'b' }, spec: { links: [{ uid: 1, peer_pod: 'a', local_intf: 'eth1', peer_intf: 'lo' }] } })).status, 201);
    const bad = await cluster.createTopology('lab4', { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name: 'c' }, spec: { links: [{ uid: 'one', peer_pod: 'a' }] } });
    t.equal(bad.status, 422, 'the CRD schema rejects a malformed Topology');
    t.match(String(bad.body.message), /uid.*must be of type integer/, 'naming the field');
    await cluster.startPod('n1', 'lab4', 'a');
    await cluster.startPod('n1', 'lab4', 'b');
    const st = await waitFor('errors in the status', () => {
      const l = links(cluster.topologyStatus('lab4', 'a'));
      return l.length === 2 && l.every((x) => x.state === 'error') ? l : undefined;
    });
    t.match(st.find((l) => l.uid === 1)!.message, /'lo' already exists/, 'plumbing error names the interface');
    t.match(st.find((l) => l.uid === 2)!.message, /does not declare this link back/, 'topology error names the problem');
    t.equal(cluster.topologyStatus('lab4', 'a')!.ready, '0/2');
    const check = await cluster.cni('CHECK', cluster.pods.get('lab4/a')!);
    t.equal(check.code, 1, 'CNI CHECK fails for a pod whose link cannot be plumbed');
    t.equal(check.json?.code, 100, 'with patchwire error code 100');
    t.equal((await cluster.cni('CHECK', r1.pod)).code, 0, 'CNI CHECK passes for a fully wired pod');
    await cluster.deletePod('lab4', 'a');
    await cluster.deletePod('lab4', 'b');
  });

  await t.test('a pod with 100 links: ADD answers at once, plumbing follows', async (t) => {
    const n = 100;
    const mk = (me: string, peer: string, octet: number): Record<string, unknown> => ({
      apiVersion: 'networkop.co.uk/v1beta1',
      kind: 'Topology',
      metadata: { name: me },
      spec: { links: Array.from({ length: n }, (_, i) => ({ uid: i + 1, peer_pod: peer, local_intf: `e${i + 1}`, peer_intf: `e${i + 1}`, local_ip: `198.19.${i}.${octet}/24` })) },
    });
    t.equal((await cluster.createTopology('lab5', mk('big1', 'big2', 1))).status, 201);
    t.equal((await cluster.createTopology('lab5', mk('big2', 'big1', 2))).status, 201);
    const t0 = Date.now();
    const a = await cluster.startPod('n1', 'lab5', 'big1');
    const addMs = Date.now() - t0;
    const b = await cluster.startPod('n2', 'lab5', 'big2');
    t.equal(a.add.code, 0);
    t.equal(b.add.code, 0);
    t.comment(`CNI ADD of a pod with ${n} links took ${addMs} ms (pod object, status and plugin run included)`);
    // The status shows progress while plumbing goes on, then everything up.
    // Read from every status the daemon wrote (the stand-in keeps them), not
    // sampled: the daemon writes one every 25 plumbed wires, however fast.
    await cluster.waitReady('lab5', 'big1', `${n}/${n}`, 120000);
    const plumbedCounts = cluster.api.events
      .filter((e) => e.resource === 'topologies' && e.object.metadata.namespace === 'lab5' && e.object.metadata.name === 'big1')
      .map((e) => ((e.object.status as { links?: Array<{ plumbed?: boolean }> } | undefined)?.links ?? []).filter((l) => l.plumbed).length);
    const partial = plumbedCounts.filter((c) => c > 0 && c < n);
    t.ok(partial.length > 0, `status written while plumbing went on, with part of the links plumbed (${plumbedCounts.join(', ')})`);
    await cluster.waitReady('lab5', 'big2', `${n}/${n}`, 120000);
    t.equal((await cluster.exec(a.pod, 'ping', ['-c', '1', '-W', '2', '198.19.99.2'])).code, 0, 'the 100th link carries ping');
    await cluster.deletePod('lab5', 'big1');
    await cluster.deletePod('lab5', 'big2');
    await waitFor('big pods unwired', async () => (await wiresOf(n2.client)).every((w) => !w.ends.some((e) => e.startsWith('lab5/'))), 60000);
  });

  await t.test('the daemons made no request that deploy/rbac.yaml forbids', async (t) => {
    t.ok(cluster.daemonRequests().length > 0, 'they made requests');
    t.same(cluster.api.forbidden.map((r) => `${r.user} ${r.verb} ${r.resource} ${r.path}`), [], 'none refused');
  });
});
