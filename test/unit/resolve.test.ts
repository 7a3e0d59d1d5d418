// The one resolver: a model link to the wire specs of lab and cluster mode,
// checked without root (no daemons, no namespaces).
import t from 'tap';

import type { LinkModel } from '../../src/topology/model.js';
import { canonicalLink, endpointFor, resolveLink, type ResolveContext } from '../../src/topology/resolve.js';

const link: LinkModel = {
  uid: 7,
  a: { pod: 'r2', intf: 'eth1', ip: '192.0.2.2/30', captureBytes: 0, kind: 'veth' },
  b: { pod: 'r1', intf: 'eth3', mac: '02:00:00:00:00:01', mtu: 9000, kind: 'tap' },
};

function ctx(nodes: Record<string, string>, asked: string[] = []): ResolveContext {
  return {
    wireId: 4242,
    place: (pod) => ({ node: nodes[pod]!, address: `${nodes[pod]}.example:7000` }),
    endpoint: (e) => {
      asked.push(e.pod);
      return endpointFor(e, `ns/${e.pod}`, `netns-${e.pod}`);
    },
  };
}

t.test('endpointFor carries every end attribute', async (t) => {
  t.same(endpointFor(link.a, 'r2', 'n2'), { kind: 'veth', pod: 'r2', netns: 'n2', ifname: 'eth1', mac: '', mtu: 0, ips: ['192.0.2.2/30'] });
  t.same(endpointFor(link.b, 'r1', 'n1'), { kind: 'tap', pod: 'r1', netns: 'n1', ifname: 'eth3', mac: '02:00:00:00:00:01', mtu: 9000, ips: [] });
});

t.test('both ends on one node: one wire with a local peer', async (t) => {
  const w = resolveLink(link, ctx({ r1: 'node1', r2: 'node1' }));
  t.equal(w.length, 1);
  t.equal(w[0]!.node, 'node1');
  t.same(w[0]!.spec, {
    uid: 4242,
    local: endpointFor(link.a, 'ns/r2', 'netns-r2'),
    localPeer: endpointFor(link.b, 'ns/r1', 'netns-r1'),
    captureRingBytes: 0,
  });
  t.same(resolveLink(link, ctx({ r1: 'node1', r2: 'node1' }), 'node2'), [], 'a node the link does not touch gets nothing');
});

t.test('ends on two nodes: one wire each, naming the other node as peer', async (t) => {
  const w = resolveLink(link, ctx({ r1: 'node1', r2: 'node2' }));
  t.same(
    w.map((x) => [x.node, x.spec.local.pod, x.spec.peer, x.spec.captureRingBytes]),
    [
      ['node2', 'ns/r2', { node: 'node1', address: 'node1.example:7000' }, 0],
      ['node1', 'ns/r1', { node: 'node2', address: 'node2.example:7000' }, undefined],
    ],
  );
  t.notOk(w.some((x) => x.spec.localPeer), 'no local peer across nodes');
  const asked: string[] = [];
  const mine = resolveLink(link, ctx({ r1: 'node1', r2: 'node2' }, asked), 'node1');
  t.same(mine.map((x) => x.node), ['node1']);
  t.same(asked, ['r1'], 'only the end on the resolved node needs an endpoint (the far namespace is unknown there)');
});

t.test('canonical order does not depend on how the file lists the ends', async (t) => {
  const flipped: LinkModel = { ...link, a: link.b, b: link.a };
  t.same(canonicalLink(link), canonicalLink(flipped));
  t.equal(canonicalLink(link).a.pod, 'r1');
  const nodes = { r1: 'node1', r2: 'node1' };
  t.same(resolveLink(canonicalLink(link), ctx(nodes)), resolveLink(canonicalLink(flipped), ctx(nodes)));
});
