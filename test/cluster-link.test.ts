// Cluster mode, link control through Topology objects, against the STAND-IN
// API server (see test/helpers/apiserver.ts): `state: down` and impairments
// declared in a link's patchwire block are applied when the wire is made and
// again, in place, whenever the object changes; a cable pulled by hand stays
// pulled until the object changes it; the status shows each end's cable,
// carrier and impairments in effect.
import t from 'tap';

import { TestCluster, type TestPod } from './helpers/cluster.js';
import { sh, waitFor } from './helpers/testnet.js';

const cluster = new TestCluster('pwqa');
t.teardown(() => cluster.cleanup());

type LinkSt = { uid: number; state: string; message?: string; cable?: string; carrier?: boolean; impair?: { in?: { delayUs?: number }; out?: { delayUs?: number } } };

function link(name: string): LinkSt | undefined {
  return ((cluster.topologyStatus('lab1', name)?.links as LinkSt[] | undefined) ?? []).find((l) => l.uid === 1);
}

function carrier(pod: TestPod): string {
  return sh('ip', 'netns', 'exec', pod.netns, 'cat', '/sys/class/net/eth1/carrier').trim();
}

function ifindex(pod: TestPod): number {
  return (JSON.parse(sh('ip', '-n', pod.netns, '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ ifindex: number }>)[0]!.ifindex;
}

function topology(name: string, peer: string, ip: string, peerIp: string, patchwire?: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: 'networkop.co.uk/v1beta1',
    kind: 'Topology',
    metadata: { name },
    spec: { links: [{ uid: 1, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1', local_ip: ip, peer_ip: peerIp, ...(patchwire ? { patchwire } : {}) }] },
  };
}

async function setPatchwire(name: string, patchwire: Record<string, unknown> | null): Promise<void> {
  const cur = cluster.api.get('topologies', 'lab1', name) as { spec: { links: Array<Record<string, unknown>> } };
  const links = cur.spec.links.map((l) => {
    const { patchwire: _p, ...rest } = l;
    return patchwire ? { ...rest, patchwire } : rest;
  });
  const r = await cluster.request('PATCH', `/apis/networkop.co.uk/v1beta1/namespaces/lab1/topologies/${name}`, { spec: { links } }, 'application/merge-patch+json');
  if (r.status !== 200) throw new Error(`patching Topology ${name}: ${JSON.stringify(r.body)}`);
  // Seen once the status its daemon writes carries the new generation.
  const gen = r.body.metadata.generation;
  await waitFor(`Topology ${name} generation ${gen} observed`, () => cluster.topologyStatus('lab1', name)?.observedGeneration === gen);
}

/** Smallest RTT of a few pings from r1 to r2, in ms. */
async function minRtt(pod: TestPod): Promise<number> {
  const r = await cluster.exec(pod, 'ping', ['-c', '4', '-i', '0.2', '-W', '2', '192.0.2.2']);
  const m = /= ([0-9.]+)\//.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`ping failed: ${r.stdout}${r.stderr}`);
  return Number(m[1]);
}

t.test('declared cable state and impairments follow the Topology objects', async (t) => {
  await cluster.start();
  const n1 = await cluster.addNode('n1');
  await cluster.addNode('n2');
  // r1's end declared down, r2's end declared with 20 ms on what it sends.
  t.equal((await cluster.createTopology('lab1', topology('r1', 'r2', '192.0.2.1/30', '192.0.2.2/30', { state: 'down' }))).status, 201);
  const created = await cluster.createTopology('lab1', topology('r2', 'r1', '192.0.2.2/30', '192.0.2.1/30', { impair: { delay: '20ms' } }));
  t.equal(created.status, 201);
  t.same((created.body.spec as { links: Array<{ patchwire: unknown }> }).links[0]!.patchwire, { impair: { delay: '20ms' } }, 'the CRD schema keeps the impair block');
  const { pod: r1 } = await cluster.startPod('n1', 'lab1', 'r1');
  const { pod: r2 } = await cluster.startPod('n2', 'lab1', 'r2');

  const down1 = await waitFor('r1 status: cable pulled', () => {
    const l = link('r1');
    return l?.cable === 'pulled' ? l : undefined;
  });
  t.equal(down1.state, 'down', 'a link pulled at this end is down');
  t.match(down1.message, /cable is pulled at this end/);
  // Not any 'far end' message: while n1 has not plumbed r1 yet, r2's status
  // says so ('far end r1/eth1 ... is not plumbed yet'), which CI caught here.
  const down2 = await waitFor('r2 status: cable pulled at the far end', () => {
    const l = link('r2');
    return l?.state === 'down' && /cable is pulled at the far end/.test(l.message ?? '') ? l : undefined;
  });
  t.match(down2.message, /cable is pulled at the far end \(r1\/eth1\)/, 'the far end says where the cable is out');
  t.equal(down2.carrier, false, 'r2 status: no carrier');
  t.same(down2.impair, { out: { delayUs: 20000 } }, 'r2 status shows the impairment in effect');
  t.equal(carrier(r1), '0', 'r1 eth1 has no carrier');
  t.equal(carrier(r2), '0', 'r2 eth1 has no carrier');
  t.equal(cluster.topologyStatus('lab1', 'r1')!.ready, '0/1');
  const idx = [ifindex(r1), ifindex(r2)];

  // Plugged by changing the object: applied in place.
  await setPatchwire('r1', { state: 'up' });
  await cluster.waitReady('lab1', 'r1', '1/1');
  await cluster.waitReady('lab1', 'r2', '1/1');
  t.equal(carrier(r1), '1', 'r1 eth1 has carrier once the object says up');
  t.equal(carrier(r2), '1', 'r2 eth1 too');
  t.ok((await minRtt(r1)) >= 20, 'the declared 20 ms delay applies to what r2 sends');

  // A changed impairment is applied in place too.
  await setPatchwire('r2', { impair: { delay: '50ms' } });
  await waitFor('r2 status shows 50 ms', () => link('r2')?.impair?.out?.delayUs === 50000);
  t.ok((await minRtt(r1)) >= 50, 'the changed delay (50 ms) applies');
  t.same([ifindex(r1), ifindex(r2)], idx, 'neither interface was re-created');

  // A cable pulled by hand stays pulled while the objects do not change it.
  await n1.client.setLinkCable('lab1/r1/eth1', false);
  await waitFor('r2 loses carrier', () => carrier(r2) === '0');
  await setPatchwire('r2', null);
  await waitFor('r2 status shows no impairment', () => {
    const l = link('r2');
    return l !== undefined && l.impair === undefined && l.cable === 'plugged';
  });
  t.equal(link('r1')?.cable, 'pulled', 'a reconcile after another change leaves the hand-pulled cable out');
  t.equal(carrier(r1), '0', 'r1 still without carrier');
  // The object says down, then up again: the declared change plugs it.
  await setPatchwire('r1', { state: 'down' });
  await setPatchwire('r1', { state: 'up' });
  await cluster.waitReady('lab1', 'r1', '1/1');
  await waitFor('r2 carrier back', () => carrier(r2) === '1');
  t.ok((await minRtt(r1)) < 20, 'with the impairment removed, no 20 ms delay remains');

  // A bad impairment in the object: the CRD keeps it (its block is open), the daemon says what is wrong.
  await setPatchwire('r2', { impair: { loss: '150%' } });
  const bad = await waitFor('r2 link shows the problem', () => {
    const l = link('r2');
    return l?.state === 'error' ? l : undefined;
  });
  t.match(bad.message, /loss/, `the status names the bad field (${bad.message})`);
  await setPatchwire('r2', null);
  await cluster.waitReady('lab1', 'r2', '1/1');
});
