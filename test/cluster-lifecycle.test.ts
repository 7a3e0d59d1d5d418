// Cluster mode over a pod's and a Topology's life, against the STAND-IN API
// server (test/helpers/apiserver.ts) with real daemons on two emulated nodes:
// /readyz and CNI STATUS before and after the watches list, graceful pod
// deletion (deletionTimestamp first, the object gone later), a missed CNI
// DEL that --orphan-grace-seconds settles, a Topology edit, and a plumbing
// error that the periodic resync clears.
import { readFileSync } from 'node:fs';

import t from 'tap';

import { runPlugin, TestCluster, type TestPod } from './helpers/cluster.js';
import { sh, waitFor } from './helpers/testnet.js';

const cluster = new TestCluster('pwza');
t.teardown(() => cluster.cleanup());

const ORPHAN_GRACE_S = 4;

type LinkSt = { uid: number; state: string; message?: string; local_intf: string; plumbed?: boolean };
const links = (ns: string, pod: string): LinkSt[] => (cluster.topologyStatus(ns, pod)?.links as LinkSt[] | undefined) ?? [];
const link = (ns: string, pod: string, uid: number): LinkSt | undefined => links(ns, pod).find((l) => l.uid === uid);

function topo(name: string, ls: Array<{ uid: number; peer: string; intf: string; peerIntf: string; ip?: string }>): Record<string, unknown> {
  return {
    apiVersion: 'networkop.co.uk/v1beta1',
    kind: 'Topology',
    metadata: { name },
    spec: { links: ls.map((l) => ({ uid: l.uid, peer_pod: l.peer, local_intf: l.intf, peer_intf: l.peerIntf, ...(l.ip ? { local_ip: l.ip } : {}) })) },
  };
}

const hasLink = (pod: TestPod, ifname: string): boolean => sh('ip', '-n', pod.netns, '-o', 'link').includes(` ${ifname}@`) || sh('ip', '-n', pod.netns, '-o', 'link').includes(` ${ifname}:`);

async function ends(node: { client: { listWires(): Promise<Array<{ ends: Array<{ name: string }> }>> } }, prefix: string): Promise<string[]> {
  return (await node.client.listWires()).flatMap((w) => w.ends.map((e) => e.name)).filter((e) => e.startsWith(prefix)).sort();
}

const statusConf = (socket: string): string => JSON.stringify({ cniVersion: '1.1.0', name: 'k8s-pod-network', type: 'patchwire', socket });

t.test('cluster mode over a pod lifetime', async (t) => {
  await cluster.start();

  await t.test('/readyz answers 503 and CNI STATUS says 50 until the watches have listed', async (t) => {
    // The Topology list is held unanswered: the daemon starts, but cannot be ready.
    const release = cluster.api.hold((r) => r.verb === 'list' && r.resource === 'topologies');
    const n1 = await cluster.addNode('n1', ['--orphan-grace-seconds', String(ORPHAN_GRACE_S)]);
    await waitFor('the daemon asked for the Topology list', () => cluster.daemonRequests().some((r) => r.verb === 'list' && r.resource === 'topologies'));
    const before = await cluster.ready(n1);
    t.equal(before.code, 503, '/readyz: 503 while the Topology list is outstanding');
    t.match(before.body, /Topology objects not listed yet/, 'naming what it waits for');
    const status = await runPlugin({ CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' }, statusConf(n1.cniSocket));
    t.equal(status.code, 1, 'CNI STATUS fails');
    t.equal(status.json?.code, 50, 'with code 50 (plugin not available), as CNI 1.1.0 asks');
    t.match(String(status.json?.msg), /not ready: Topology objects not listed yet/, 'and the reason');
    release();
    await waitFor('n1 ready', async () => (await cluster.ready(n1)).code === 200);
    t.equal((await cluster.ready(n1)).body, 'ready');
    const after = await runPlugin({ CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' }, statusConf(n1.cniSocket));
    t.equal(after.code, 0, 'CNI STATUS succeeds once the watches have listed');
    t.equal(after.stdout, '', 'printing nothing');
  });

  const n1 = cluster.nodes.get('n1')!;
  const n2 = await cluster.addNode('n2', ['--orphan-grace-seconds', String(ORPHAN_GRACE_S)]);
  await waitFor('n2 ready', async () => (await cluster.ready(n2)).code === 200);

  await t.test('graceful deletion: the wires go at deletionTimestamp, before CNI DEL; the object later', async (t) => {
    t.equal((await cluster.createTopology('gd', topo('p1', [{ uid: 1, peer: 'p2', intf: 'eth1', peerIntf: 'eth1' }]))).status, 201);
    t.equal((await cluster.createTopology('gd', topo('p2', [{ uid: 1, peer: 'p1', intf: 'eth1', peerIntf: 'eth1' }]))).status, 201);
    const { pod: p1 } = await cluster.startPod('n1', 'gd', 'p1');
    const { pod: p2 } = await cluster.startPod('n2', 'gd', 'p2');
    await cluster.waitReady('gd', 'p1', '1/1');
    await cluster.waitReady('gd', 'p2', '1/1');
    t.ok(hasLink(p2, 'eth1'), 'p2 has eth1');

    // kubectl delete pod: the API server only marks it.
    const marked = await cluster.request('DELETE', '/api/v1/namespaces/gd/pods/p2');
    t.equal(marked.status, 200);
    t.ok(marked.body.metadata.deletionTimestamp, 'the pod is marked with a deletionTimestamp');
    t.equal(marked.body.metadata.deletionGracePeriodSeconds, 30, 'and its grace period');
    t.ok(cluster.api.get('pods', 'gd', 'p2'), 'the pod object still exists');
    await waitFor('n2 drops the terminating pod wire', async () => (await ends(n2, 'gd/')).length === 0);
    t.notOk(hasLink(p2, 'eth1'), "the terminating pod's eth1 is gone (its cable pulled), before any CNI DEL");
    await waitFor('n1 drops its end', async () => (await ends(n1, 'gd/')).length === 0);
    const st = await waitFor('p1 link pending', () => (link('gd', 'p1', 1)?.state === 'pending' ? link('gd', 'p1', 1) : undefined));
    t.match(st.message, /waiting for pod p2 to exist/, 'p1 status: its peer is going away');
    t.ok(cluster.api.get('pods', 'gd', 'p2')?.metadata.deletionTimestamp, 'while the object is still there, marked');

    // The kubelet stops the pod, runs CNI DEL, and deletes the object for good.
    const del = await cluster.cni('DEL', p2);
    t.equal(del.code, 0, 'CNI DEL after the wires went: succeeds, nothing left to do');
    const gone = await cluster.request('DELETE', '/api/v1/namespaces/gd/pods/p2?gracePeriodSeconds=0');
    t.equal(gone.status, 200);
    t.notOk(cluster.api.get('pods', 'gd', 'p2'), 'the object is gone after the grace-0 delete');
    const seq = cluster.api.events.filter((e) => e.resource === 'pods' && e.object.metadata.name === 'p2' && e.object.metadata.namespace === 'gd').map((e) => `${e.type}${e.object.metadata.deletionTimestamp ? '+deletionTimestamp' : ''}`);
    t.same(seq.slice(-2), ['MODIFIED+deletionTimestamp', 'DELETED+deletionTimestamp'], 'watchers saw the mark first, then the deletion');
    sh('ip', 'netns', 'del', p2.netns);
    cluster.pods.delete('gd/p2');

    // A new p2 gets the link back.
    const again = await cluster.startPod('n2', 'gd', 'p2');
    t.equal(again.add.code, 0);
    await cluster.waitReady('gd', 'p1', '1/1');
    t.ok(hasLink(p1, 'eth1'), 'p1 eth1 back');
  });

  await t.test('a missed CNI DEL: the registration is dropped after --orphan-grace-seconds', async (t) => {
    t.equal((await cluster.createTopology('od', topo('q1', [{ uid: 1, peer: 'q2', intf: 'eth1', peerIntf: 'eth1' }]))).status, 201);
    t.equal((await cluster.createTopology('od', topo('q2', [{ uid: 1, peer: 'q1', intf: 'eth1', peerIntf: 'eth1' }]))).status, 201);
    const { pod: q1 } = await cluster.startPod('n1', 'od', 'q1');
    await cluster.startPod('n1', 'od', 'q2');
    await cluster.waitReady('od', 'q1', '1/1');
    // The pod object goes (graceful, then for good) but the runtime never runs CNI DEL for it.
    t.equal((await cluster.request('DELETE', '/api/v1/namespaces/od/pods/q1')).status, 200);
    t.equal((await cluster.request('DELETE', '/api/v1/namespaces/od/pods/q1?gracePeriodSeconds=0')).status, 200);
    const deletedAt = Date.now();
    t.notOk(cluster.api.get('pods', 'od', 'q1'), 'pod object gone');
    await waitFor('the wire of the deleted pod goes', async () => (await ends(n1, 'od/')).length === 0);
    const dropped = await waitFor('registration dropped', async () => ((await cluster.cni('CHECK', q1)).json?.code === 3 ? Date.now() : undefined), 20000, 250);
    t.ok(dropped - deletedAt >= ORPHAN_GRACE_S * 1000, `dropped ${dropped - deletedAt} ms after the object went, not before the ${ORPHAN_GRACE_S} s grace`);
    t.match(readFileSync(n1.log, 'utf8'), /forgetting pod od\/q1: its pod object is gone/, 'the daemon says why');
    const again = await cluster.cni('CHECK', q1);
    t.match(String(again.json?.msg), /is not known to patchwire/, 'CHECK: unknown container');
    cluster.pods.delete('od/q1');
    await cluster.deletePod('od', 'q2');
  });

  await t.test('a Topology edit re-plumbs the link; status follows the generation', async (t) => {
    const a = topo('e1', [{ uid: 5, peer: 'e2', intf: 'eth2', peerIntf: 'eth2', ip: '192.0.2.9/30' }]);
    const b = topo('e2', [{ uid: 5, peer: 'e1', intf: 'eth2', peerIntf: 'eth2', ip: '192.0.2.10/30' }]);
    t.equal((await cluster.createTopology('ed', a)).status, 201);
    t.equal((await cluster.createTopology('ed', b)).status, 201);
    const { pod: e1 } = await cluster.startPod('n1', 'ed', 'e1');
    const { pod: e2 } = await cluster.startPod('n2', 'ed', 'e2');
    const s0 = await cluster.waitReady('ed', 'e1', '1/1');
    t.equal(s0.observedGeneration, 1, 'status observed generation 1');
    t.equal((await cluster.exec(e1, 'ping', ['-c', '1', '-W', '2', '192.0.2.10'])).code, 0, 'e1 -> e2 over eth2');

    // Edit both ends: the link moves to eth7 (PUT with the resourceVersion read, as kubectl replace does).
    for (const [name, me, peer] of [['e1', 'eth7', 'eth7'], ['e2', 'eth7', 'eth7']] as const) {
      const cur = cluster.api.get('topologies', 'ed', name)!;
      const spec = cur.spec as { links: Array<Record<string, unknown>> };
      spec.links[0]!.local_intf = me;
      spec.links[0]!.peer_intf = peer;
      const put = await cluster.request('PUT', `/apis/networkop.co.uk/v1beta1/namespaces/ed/topologies/${name}`, cur);
      t.equal(put.status, 200, `Topology ${name} replaced`);
      t.equal(put.body.metadata.generation, 2, 'generation 2');
    }
    const s1 = await waitFor('e1 status at generation 2 and up', () => {
      const s = cluster.topologyStatus('ed', 'e1');
      return s?.observedGeneration === 2 && s.ready === '1/1' ? s : undefined;
    });
    t.equal((s1.links as LinkSt[])[0]!.local_intf, 'eth7', 'status names the new interface');
    await waitFor('e2 up at generation 2', () => cluster.topologyStatus('ed', 'e2')?.observedGeneration === 2 && cluster.topologyStatus('ed', 'e2')?.ready === '1/1');
    t.notOk(hasLink(e1, 'eth2'), 'e1 eth2 removed');
    t.ok(hasLink(e1, 'eth7'), 'e1 eth7 made');
    t.ok(hasLink(e2, 'eth7'), 'e2 eth7 made');
    t.equal((await cluster.exec(e1, 'ping', ['-c', '1', '-W', '2', '192.0.2.10'])).code, 0, 'e1 -> e2 over the new eth7');

    // Removing the link from both objects removes the wire.
    for (const name of ['e1', 'e2']) {
      const r = await cluster.request('PATCH', `/apis/networkop.co.uk/v1beta1/namespaces/ed/topologies/${name}`, { spec: { links: [] } }, 'application/merge-patch+json');
      t.equal(r.status, 200);
    }
    await waitFor('wires of the edited lab gone', async () => (await ends(n1, 'ed/')).length === 0 && (await ends(n2, 'ed/')).length === 0);
    t.notOk(hasLink(e1, 'eth7'), 'e1 eth7 removed with the link');
    await waitFor('e1 status 0/0 at generation 3', () => cluster.topologyStatus('ed', 'e1')?.observedGeneration === 3 && cluster.topologyStatus('ed', 'e1')?.ready === '0/0');
    await cluster.deletePod('ed', 'e1');
    await cluster.deletePod('ed', 'e2');
  });

  await t.test('a plumbing error clears on the periodic resync', async (t) => {
    t.equal((await cluster.createTopology('pe', topo('f1', [{ uid: 9, peer: 'f2', intf: 'eth3', peerIntf: 'eth3' }]))).status, 201);
    t.equal((await cluster.createTopology('pe', topo('f2', [{ uid: 9, peer: 'f1', intf: 'eth3', peerIntf: 'eth3' }]))).status, 201);
    // f1's sandbox already has an eth3 when the runtime calls CNI ADD: the wire cannot be plumbed.
    const { pod: f1 } = await cluster.startPod('n1', 'pe', 'f1', { cni: false });
    sh('ip', '-n', f1.netns, 'link', 'add', 'eth3', 'type', 'bridge');
    t.equal((await cluster.cni('ADD', f1)).code, 0);
    const { pod: f2 } = await cluster.startPod('n1', 'pe', 'f2');
    const err = await waitFor('f1 link in error', () => (link('pe', 'f1', 9)?.state === 'error' ? link('pe', 'f1', 9) : undefined));
    t.match(err.message, /'eth3' already exists/, 'status names the plumbing error');
    t.equal((await cluster.cni('CHECK', f1)).json?.code, 100, 'CNI CHECK reports the broken wire');
    const eventsBefore = cluster.api.events.filter((e) => e.object.metadata.namespace === 'pe' && !(e.resource === 'topologies' && e.type === 'MODIFIED')).length;
    // The obstacle goes and no API object changes: the retry comes from the
    // daemon's own loop (the periodic resync; the reconcile its own status
    // writes trigger may come first), not from an edit.
    sh('ip', '-n', f1.netns, 'link', 'del', 'eth3');
    const up = await waitFor('f1 link up after a resync', () => (link('pe', 'f1', 9)?.state === 'up' ? link('pe', 'f1', 9) : undefined), 30000);
    t.equal(up.message, undefined, 'the error message is gone from the status');
    t.equal(cluster.api.events.filter((e) => e.object.metadata.namespace === 'pe' && !(e.resource === 'topologies' && e.type === 'MODIFIED')).length, eventsBefore, 'no API object changed in between (only status writes)');
    t.equal((await cluster.cni('CHECK', f1)).code, 0, 'CNI CHECK passes');
    t.ok(hasLink(f1, 'eth3') && hasLink(f2, 'eth3'), 'both ends plumbed');
    await cluster.deletePod('pe', 'f1');
    await cluster.deletePod('pe', 'f2');
  });

  await t.test('the daemons made no request that deploy/rbac.yaml forbids', async (t) => {
    const made = cluster.daemonRequests();
    t.ok(made.some((r) => r.verb === 'patch' && r.resource === 'topologies/status'), 'they wrote status');
    t.same(cluster.api.forbidden.map((r) => `${r.user} ${r.verb} ${r.resource} ${r.path}`), [], 'none refused');
  });
});
