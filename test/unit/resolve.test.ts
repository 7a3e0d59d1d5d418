// The one resolver: a model link to the wire specs of lab and cluster mode,
// checked without root (no daemons, no namespaces).
import t from 'tap';

import type { LabModel, LinkModel, SegmentModel } from '../../src/topology/model.js';
import { canonicalLink, endpointFor, labModeProblems, resolveLink, resolveSegment, type ResolveContext, SEGMENT_UID_BASE, segmentUid } from '../../src/topology/resolve.js';

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

const seg: SegmentModel = {
  name: 'lan',
  where: 'links[4]',
  members: [
    { pod: 'h1', intf: 'eth1', ip: '10.0.0.1/24', kind: 'veth' },
    { pod: 'h2', intf: 'eth1', kind: 'veth' },
    { pod: 'h3', intf: 'eth2', kind: 'veth', cable: 'pulled' },
  ],
};

t.test('a segment: one spec per node holding members, naming the other nodes as peers', async (t) => {
  const w = resolveSegment(seg, ctx({ h1: 'node1', h2: 'node2', h3: 'node1' }));
  t.same(w.map((x) => x.node), ['node1', 'node2']);
  t.same(w[0]!.spec, {
    uid: 4242,
    local: endpointFor(seg.members[0]!, 'ns/h1', 'netns-h1'),
    segment: { moreLocal: [endpointFor(seg.members[2]!, 'ns/h3', 'netns-h3')], peers: [{ node: 'node2', address: 'node2.example:7000' }] },
  });
  t.same(w[1]!.spec, { uid: 4242, local: endpointFor(seg.members[1]!, 'ns/h2', 'netns-h2'), segment: { moreLocal: [], peers: [{ node: 'node1', address: 'node1.example:7000' }] } });
  t.equal(w[0]!.spec.segment!.moreLocal[0]!.cable, 'pulled', "a member's declared cable state goes with it");
  const asked: string[] = [];
  t.same(resolveSegment(seg, ctx({ h1: 'node1', h2: 'node2', h3: 'node1' }, asked), 'node2').map((x) => x.node), ['node2'], 'only: that node alone');
  t.same(asked, ['h2'], 'and only its members are asked for endpoints');
  const one = resolveSegment(seg, ctx({ h1: 'node1', h2: 'node1', h3: 'node1' }));
  t.same([one.length, one[0]!.spec.segment!.moreLocal.length, one[0]!.spec.segment!.peers], [1, 2, []], 'all on one node: one spec, no peers');
});

t.test('lab mode refuses what it cannot place, and keeps segment uids apart from link uids', async (t) => {
  const model = (segments: SegmentModel[], links: LinkModel[] = []): LabModel => ({ format: 'containerlab', pods: [], links, segments, skipped: [], expanded: [] });
  t.same(labModeProblems(model([seg])), []);
  t.match(labModeProblems(model([{ ...seg, members: [...seg.members, { pod: 'host', intf: 'ens3', kind: 'host' }] }])), [/segment lan \(links\[4\]\): host interface ens3 cannot be a segment member/]);
  const many = Array.from({ length: 65 }, (_, i) => ({ pod: `p${i}`, intf: 'eth1', kind: 'veth' as const }));
  t.match(labModeProblems(model([{ ...seg, members: many }])), [/has 65 members; lab mode takes at most 64/]);
  t.match(labModeProblems(model([], [{ ...link, uid: SEGMENT_UID_BASE }])), [/uids from \d+ up are kept for segments/]);
  t.ok(segmentUid(0) > SEGMENT_UID_BASE && segmentUid(0) <= 2 ** 48 - 1, 'a segment uid is a valid wire uid');
});
