// Cluster mode against the API server behaviours our daemon depends on, as
// the STAND-IN API server (test/helpers/apiserver.ts) reproduces them: RBAC
// refusals, watch timeouts (timeoutSeconds), BOOKMARKs, 410 Gone as an HTTP
// status, an API server that goes silent on open connections, and the
// update rules (resourceVersion) of the real server.
import t from 'tap';

import { serviceAccountUser } from './helpers/apiserver.js';
import { TestCluster } from './helpers/cluster.js';
import { sh, sleep, waitFor } from './helpers/testnet.js';

const cluster = new TestCluster('pwzb');
t.teardown(() => cluster.cleanup());

/** Daemon requests are abandoned after this; watches ask for 5x as long. */
const API_TIMEOUT_S = 2;
const WATCH_S = API_TIMEOUT_S * 5;

function pair(ns: string, a: string, b: string, uid: number): Array<[string, Record<string, unknown>]> {
  const mk = (me: string, peer: string): Record<string, unknown> => ({
    apiVersion: 'networkop.co.uk/v1beta1',
    kind: 'Topology',
    metadata: { name: me },
    spec: { links: [{ uid, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1' }] },
  });
  return [
    [ns, mk(a, b)],
    [ns, mk(b, a)],
  ];
}

t.test('cluster mode against API server behaviours', async (t) => {
  await cluster.start();
  const extra = ['--api-timeout-seconds', String(API_TIMEOUT_S)];
  const n1 = await cluster.addNode('n1', extra);
  const n2 = await cluster.addNode('n2', extra);
  await waitFor('both daemons ready', async () => (await cluster.ready(n1)).code === 200 && (await cluster.ready(n2)).code === 200);
  const watches = (token: string, resource: string): ReturnType<typeof cluster.daemonRequests> => cluster.daemonRequests().filter((r) => r.token === token && r.verb === 'watch' && r.resource === resource);
  const lists = (token: string, resource: string): number => cluster.daemonRequests().filter((r) => r.token === token && r.verb === 'list' && r.resource === resource).length;

  await t.test('RBAC from deploy/ is enforced: a daemon without the binding is refused and never ready', async (t) => {
    const outsider = serviceAccountUser('default', 'nobody');
    // Its identity is made beforehand: the outsider could not ask for one.
    const n3 = await cluster.addNode('n3', extra, outsider, 'files');
    const r = await waitFor('n3 tells why it is not ready', async () => {
      const x = await cluster.ready(n3);
      return x.code === 503 && /HTTP 403/.test(x.body) ? x : undefined;
    });
    t.match(r.body, /not listed yet: .*HTTP 403: (pods|topologies.networkop.co.uk) is forbidden: User "system:serviceaccount:default:nobody" cannot list resource "(pods|topologies)" in API group "(|networkop.co.uk)" at the cluster scope/, '/readyz carries the real Forbidden message');
    t.ok(cluster.api.forbidden.some((x) => x.token === n3.token), 'the stand-in recorded the refusal');
    await cluster.net.killDaemon(n3);
    // The DaemonSet's own account may not change Topology specs (only their status).
    cluster.api.addToken('pwzb-probe', cluster.daemonUser);
    const asDaemon = await fetch(`${cluster.api.url}/apis/networkop.co.uk/v1beta1/namespaces/x/topologies/y`, {
      method: 'PATCH',
      headers: { authorization: 'Bearer pwzb-probe', 'content-type': 'application/merge-patch+json' },
      body: '{}',
    });
    t.equal(asDaemon.status, 403, "the daemons' account may not patch a Topology spec");
    const anon = await fetch(`${cluster.api.url}/api/v1/pods`);
    t.equal(anon.status, 401, 'no token: 401');
  });

  await t.test('watches ask for bookmarks and a timeout, and resume after the server ends them', async (t) => {
    const first = watches(n1.token, 'pods')[0]!;
    t.equal(first.query.allowWatchBookmarks, 'true', 'the daemon asks for BOOKMARKs');
    t.equal(first.query.timeoutSeconds, String(WATCH_S), `and for the server to end the watch after ${WATCH_S} s (5x --api-timeout-seconds)`);
    const listsBefore = lists(n1.token, 'pods');
    const ended = await waitFor('the server ends a pod watch at its timeout', () => watches(n1.token, 'pods').find((r) => r.watchEnd === 'timeout'), WATCH_S * 3000);
    const next = await waitFor('a new pod watch after it', () => watches(n1.token, 'pods').find((r) => r.at >= ended.at && r !== ended && r.status === 200));
    t.ok(Number(next.resourceVersion) >= Number(ended.resourceVersion), `resumed from resourceVersion ${next.resourceVersion} (was ${ended.resourceVersion})`);
    t.equal(lists(n1.token, 'pods'), listsBefore, 'without listing again');
  });

  await t.test('a BOOKMARK moves the resume point: no 410 and no relist after compaction', async (t) => {
    // Pod events only: the Topology watches fall behind the current resourceVersion.
    for (const name of ['b1', 'b2', 'b3']) {
      const r = await cluster.request('POST', '/api/v1/namespaces/bm/pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name }, spec: { containers: [{ name: 'c', image: 'i' }] } });
      t.equal(r.status, 201);
    }
    const expiredBefore = cluster.api.expired;
    const listsBefore = [n1, n2].map((n) => lists(n.token, 'topologies'));
    const at = cluster.api.requests.length;
    // Bookmark, then compact everything before it and end the watches (an API server restart).
    const rv = cluster.api.bookmark();
    cluster.api.compact(rv);
    cluster.api.closeWatches();
    for (const n of [n1, n2]) {
      const again = await waitFor(`${n.short} watches Topology objects again`, () => cluster.api.requests.slice(at).find((r) => r.token === n.token && r.verb === 'watch' && r.resource === 'topologies'));
      t.equal(again.resourceVersion, String(rv), `${n.short} resumed its Topology watch from the bookmark (${rv})`);
      t.equal(again.status, 200, 'and it was accepted');
    }
    t.equal(cluster.api.expired, expiredBefore, 'no watch got 410 Gone');
    t.same([n1, n2].map((n) => lists(n.token, 'topologies')), listsBefore, 'no Topology relist');
  });

  await t.test('410 Gone as an HTTP status: the daemons relist and go on', async (t) => {
    const expiredBefore = cluster.api.expired;
    const listsBefore = lists(n1.token, 'topologies') + lists(n2.token, 'topologies');
    cluster.api.goneAs = 'status';
    cluster.api.compact();
    cluster.api.closeWatches();
    await waitFor('all four watches told 410', () => cluster.api.expired >= expiredBefore + 4);
    t.ok(cluster.daemonRequests().some((r) => r.verb === 'watch' && r.status === 410), 'the watch requests were answered with HTTP 410');
    await waitFor('Topology relists', () => lists(n1.token, 'topologies') + lists(n2.token, 'topologies') >= listsBefore + 2);
    cluster.api.goneAs = 'event';
    for (const [ns, o] of pair('g410', 'a', 'b', 1)) t.equal((await cluster.createTopology(ns, o)).status, 201);
    await cluster.startPod('n1', 'g410', 'a');
    await cluster.startPod('n2', 'g410', 'b');
    await cluster.waitReady('g410', 'a', '1/1');
    await cluster.waitReady('g410', 'b', '1/1');
    t.pass('objects made after the relist are wired');
    await cluster.deletePod('g410', 'a');
    await cluster.deletePod('g410', 'b');
  });

  await t.test('a silent API server does not stall the daemons', async (t) => {
    // Open watches stop getting events and are never ended; new requests get no answer.
    const stuck = cluster.api.silence().filter((r) => cluster.daemonRequests().includes(r));
    // (normally all four; one being reopened at this instant waits unanswered instead)
    t.ok(stuck.length >= 1, `${stuck.length} open watches of the daemons went silent`);
    const silencedAt = Date.now();
    for (const [ns, o] of pair('quiet', 's1', 's2', 3)) t.equal((await cluster.createTopology(ns, o)).status, 201);
    const { pod: s1 } = await cluster.startPod('n1', 'quiet', 's1');
    const { pod: s2 } = await cluster.startPod('n2', 'quiet', 's2');
    // Until the daemons give up on their silent connections they cannot know of the new lab.
    await sleep(API_TIMEOUT_S * 1000);
    t.equal((await n1.client.listWires()).filter((w) => w.ends.some((e) => e.name.startsWith('quiet/'))).length, 0, 'nothing wired while the daemons hear nothing');
    cluster.api.speak();
    // Stuck watches are abandoned at most timeoutSeconds + --api-timeout-seconds after they began.
    await cluster.waitReady('quiet', 's1', '1/1', 90000);
    await cluster.waitReady('quiet', 's2', '1/1', 90000);
    t.comment(`recovered ${Date.now() - silencedAt} ms after the silence began`);
    t.ok(sh('ip', '-n', s1.netns, '-o', 'link').includes('eth1@') && sh('ip', '-n', s2.netns, '-o', 'link').includes('eth1@'), 'both ends plumbed');
    t.same(stuck.map((r) => r.watchEnd), stuck.map(() => 'client'), 'the daemons hung up the silent watches themselves');
    const during = cluster.daemonRequests().filter((r) => r.at >= silencedAt);
    t.ok(during.some((r) => r.verb === 'watch' && r.status === 200), 'and opened new ones');
    await cluster.deletePod('quiet', 's1');
    await cluster.deletePod('quiet', 's2');
  });

  await t.test('updates follow the real server: resourceVersion required for custom resources, checked when given', async (t) => {
    for (const [ns, o] of pair('upd', 'u1', 'u2', 1)) t.equal((await cluster.createTopology(ns, o)).status, 201);
    const cur = cluster.api.get('topologies', 'upd', 'u1')!;
    const { resourceVersion, ...noRv } = cur.metadata;
    const unconditional = await cluster.request('PUT', '/apis/networkop.co.uk/v1beta1/namespaces/upd/topologies/u1', { ...cur, metadata: noRv });
    t.equal(unconditional.status, 422, 'PUT of a Topology without resourceVersion: 422');
    t.match(String(unconditional.body.message), /metadata.resourceVersion: Invalid value: 0x0: must be specified for an update/);
    const stale = await cluster.request('PUT', '/apis/networkop.co.uk/v1beta1/namespaces/upd/topologies/u1', { ...cur, metadata: { ...cur.metadata, resourceVersion: '1' } });
    t.equal(stale.status, 409, 'PUT with a stale resourceVersion: 409 Conflict');
    t.match(String(stale.body.message), /the object has been modified/);
    const ok = await cluster.request('PUT', '/apis/networkop.co.uk/v1beta1/namespaces/upd/topologies/u1', cur);
    t.equal(ok.status, 200, 'PUT with the current resourceVersion succeeds');
    const stalePatch = await cluster.request('PATCH', '/apis/networkop.co.uk/v1beta1/namespaces/upd/topologies/u1', { metadata: { resourceVersion: '1' }, spec: { links: [] } }, 'application/merge-patch+json');
    t.equal(stalePatch.status, 409, 'a merge patch with a stale resourceVersion precondition: 409');
    const pod = await cluster.request('POST', '/api/v1/namespaces/upd/pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [] } });
    const { resourceVersion: _rv, ...podMeta } = pod.body.metadata;
    const podPut = await cluster.request('PUT', '/api/v1/namespaces/upd/pods/p', { ...pod.body, metadata: podMeta });
    t.equal(podPut.status, 200, 'pods allow an unconditional update, as the real server does');
  });

  await t.test('the daemons made no request that deploy/rbac.yaml forbids', async (t) => {
    const made = cluster.daemonRequests();
    t.ok(made.some((r) => r.verb === 'patch' && r.resource === 'topologies/status'), 'they wrote status');
    t.same(made.filter((r) => !r.allowed).map((r) => `${r.verb} ${r.resource} ${r.path}`), [], 'none refused');
    t.same(cluster.api.forbidden.filter((r) => r.user === cluster.daemonUser.name && r.token !== 'pwzb-probe').map((r) => r.path), [], 'and none refused under any token of that account');
  });
});
