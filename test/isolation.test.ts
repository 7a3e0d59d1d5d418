// Tenant isolation does not rest on a hash never colliding (#14 item 6).
// Cluster wire ids are 48 bits of sha256(namespace, uid); two links whose ids
// collide are refused, with a status message on every Topology that declares
// them, instead of sharing a wire. Real daemons in cluster mode on two
// emulated nodes against the STAND-IN API server (test/helpers/apiserver.ts);
// the daemons run with PATCHWIRE_TEST_WIRE_ID_BITS=4 (ids cut to 4 bits, a
// test-only switch) so a collision can be chosen. Both labs use the same
// addresses, so a frame that crossed would be answered.
import { createHash } from 'node:crypto';

import t from 'tap';

import { clusterWireId, type TopologyObject, wireIdCollisions } from '../src/cluster/plan.js';
import { TestCluster } from './helpers/cluster.js';
import { waitFor } from './helpers/testnet.js';

const BITS = 4;
/** The id the daemons compute under the test switch (clusterWireId's hash, cut to BITS). */
const shortId = (ns: string, uid: number): number => createHash('sha256').update(`${ns}\0${uid}`).digest().readUIntBE(0, 6) % 2 ** BITS || 1;

const NS_A = 'tenanta';
const NS_B = 'tenantb';
// Lab A's link is uid 1; lab B's is first a uid whose short id is the same, then one whose is not.
const UID_A = 1;
const UID_CLASH = Array.from({ length: 200 }, (_, i) => i + 1).find((u) => shortId(NS_B, u) === shortId(NS_A, UID_A))!;
const UID_APART = Array.from({ length: 200 }, (_, i) => i + 1).find((u) => shortId(NS_B, u) !== shortId(NS_A, UID_A) && u !== UID_CLASH)!;

function topo(ns: string, name: string, peer: string, uid: number, ip: string): TopologyObject & Record<string, unknown> {
  return { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name, namespace: ns }, spec: { links: [{ uid, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1', local_ip: ip }] } };
}

t.test('collisions are found by the planner; the product hash is the full 48 bits', async (t) => {
  const full = createHash('sha256').update(`${NS_A}\0${UID_A}`).digest().readUIntBE(0, 6);
  t.equal(clusterWireId(NS_A, UID_A), full, 'without the test switch the id is the whole 48 bits (this process has no switch)');
  const byNs = new Map([
    [NS_A, [topo(NS_A, 'r1', 'r2', UID_A, '10.9.0.1/30'), topo(NS_A, 'r2', 'r1', UID_A, '10.9.0.2/30')]],
    [NS_B, [topo(NS_B, 'r1', 'r2', UID_CLASH, '10.9.0.1/30'), topo(NS_B, 'r2', 'r1', UID_CLASH, '10.9.0.2/30')]],
  ]);
  t.same(wireIdCollisions(byNs), new Map(), 'the real hash: no collision');
  const forced = wireIdCollisions(byNs, shortId);
  t.same([...forced.keys()].sort(), [`${NS_A}\0${UID_A}`, `${NS_B}\0${UID_CLASH}`], 'the short hash: both links collide');
  t.match(forced.get(`${NS_A}\0${UID_A}`), new RegExp(`collides with uid ${UID_CLASH} in namespace ${NS_B}`), 'each names the other');
});

const cluster = new TestCluster('pwgc');
t.teardown(() => cluster.cleanup());

t.test('a forced collision is refused on both labs and no frame crosses; apart, both labs work and stay apart', async (t) => {
  process.env.PATCHWIRE_TEST_WIRE_ID_BITS = String(BITS); // the daemons inherit it
  t.teardown(() => delete process.env.PATCHWIRE_TEST_WIRE_ID_BITS);
  await cluster.start();
  const n1 = await cluster.addNode('n1');
  const n2 = await cluster.addNode('n2');
  for (const [ns, uid] of [[NS_A, UID_A], [NS_B, UID_CLASH]] as const) {
    t.equal((await cluster.createTopology(ns, topo(ns, 'r1', 'r2', uid, '10.9.0.1/30'))).status, 201);
    t.equal((await cluster.createTopology(ns, topo(ns, 'r2', 'r1', uid, '10.9.0.2/30'))).status, 201);
  }
  const a1 = (await cluster.startPod('n1', NS_A, 'r1')).pod;
  const a2 = (await cluster.startPod('n2', NS_A, 'r2')).pod;
  const b1 = (await cluster.startPod('n1', NS_B, 'r1')).pod;
  const b2 = (await cluster.startPod('n2', NS_B, 'r2')).pod;

  type LinkSt = { uid: number; state: string; message?: string };
  const linkOf = (ns: string, pod: string): LinkSt | undefined => ((cluster.topologyStatus(ns, pod)?.links as LinkSt[] | undefined) ?? [])[0];
  for (const [ns, other, otherUid] of [[NS_A, NS_B, UID_CLASH], [NS_B, NS_A, UID_A]] as const) {
    for (const pod of ['r1', 'r2']) {
      const l = await waitFor(`${ns}/${pod}: the collision in its status`, () => (linkOf(ns, pod)?.state === 'error' ? linkOf(ns, pod) : undefined));
      t.match(l.message, new RegExp(`wire id ${shortId(NS_A, UID_A)} of this link collides with uid ${otherUid} in namespace ${other}`), `${ns}/${pod}: refused, naming the other lab's link`);
    }
  }
  t.same([...(await n1.client.listWires()), ...(await n2.client.listWires())], [], 'no daemon holds a wire for either link');
  const ping = await cluster.exec(a1, 'ping', ['-c', '2', '-W', '1', '10.9.0.2']);
  t.not(ping.code, 0, "lab A's r1 reaches nobody at 10.9.0.2 (lab B's r2 has that address)");

  // Lab B renumbers its link: the ids differ, both labs come up.
  for (const pod of ['r1', 'r2']) {
    const cur = (await cluster.request('GET', `/apis/networkop.co.uk/v1beta1/namespaces/${NS_B}/topologies/${pod}`)).body;
    const spec = { links: [{ ...(cur.spec as { links: Array<Record<string, unknown>> }).links[0], uid: UID_APART }] };
    const r = await cluster.request('PUT', `/apis/networkop.co.uk/v1beta1/namespaces/${NS_B}/topologies/${pod}`, { ...cur, spec });
    t.equal(r.status, 200, `${NS_B}/${pod} renumbered to uid ${UID_APART}`);
  }
  for (const ns of [NS_A, NS_B]) for (const pod of ['r1', 'r2']) await cluster.waitReady(ns, pod, '1/1');
  const ids = (await n1.client.listWires()).map((w) => Number(w.spec.uid)).sort((x, y) => x - y);
  t.same(ids, [shortId(NS_A, UID_A), shortId(NS_B, UID_APART)].sort((x, y) => x - y), 'two wires with distinct ids');
  // Who answered: the MAC r1 learned for 10.9.0.2 is its own lab's r2's.
  const mac = async (pod: typeof a1): Promise<string> => JSON.parse((await cluster.exec(pod, 'ip', ['-j', 'link', 'show', 'dev', 'eth1'])).stdout)[0].address as string;
  const learned = async (pod: typeof a1): Promise<string> => (JSON.parse((await cluster.exec(pod, 'ip', ['-j', 'neigh', 'show', '10.9.0.2'])).stdout)[0]?.lladdr as string) ?? '';
  const [macA2, macB2] = [await mac(a2), await mac(b2)];
  t.not(macA2, macB2, "the two r2's differ");
  t.equal((await cluster.exec(a1, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '10.9.0.2'])).code, 0, "lab A's ping is answered");
  t.equal(await learned(a1), macA2, "by lab A's r2");
  t.equal((await cluster.exec(b1, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '10.9.0.2'])).code, 0, "lab B's ping is answered");
  t.equal(await learned(b1), macB2, "by lab B's r2");
});
