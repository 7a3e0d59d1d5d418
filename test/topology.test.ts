// Topology validation: every error named with file, object and field, all
// errors of a file at once, nothing created.
import t from 'tap';

import { parseTopology } from '../src/topology/load.js';
import { TopologyErrors } from '../src/topology/model.js';

function errorsOf(text: string): string[] {
  try {
    parseTopology(text, 'topo.yaml');
  } catch (err) {
    if (err instanceof TopologyErrors) return err.message.split('\n');
    throw err;
  }
  return [];
}

const topo = (name: string, links: string, extra = ''): string => `apiVersion: networkop.co.uk/v1beta1
kind: Topology
metadata:
  name: ${name}
spec:${extra}
  links:
${links}`;
const link = (uid: number, peer: string, li: string, pi: string, more = ''): string =>
  `    - uid: ${uid}\n      peer_pod: ${peer}\n      local_intf: ${li}\n      peer_intf: ${pi}\n${more}`;

t.test('a valid meshnet file in each accepted shape', async (t) => {
  const a = topo('r1', link(1, 'r2', 'eth1', 'eth1', '      local_ip: 192.0.2.1/30\n'));
  const b = topo('r2', link(1, 'r1', 'eth1', 'eth1', '      patchwire:\n        kind: tap\n        mtu: 9000\n        mac: 02:00:00:00:00:02\n        capture_bytes: 65536\n'));
  const m = parseTopology(`${a}\n---\n${b}`, 'x.yaml');
  t.equal(m.format, 'meshnet');
  t.same(m.pods.map((p) => p.name), ['r1', 'r2']);
  t.equal(m.links.length, 1);
  t.same(m.links[0]!.a, { pod: 'r1', intf: 'eth1', ip: '192.0.2.1/30', kind: 'veth' });
  t.same(m.links[0]!.b, { pod: 'r2', intf: 'eth1', mac: '02:00:00:00:00:02', mtu: 9000, captureBytes: 65536, kind: 'tap' });
  const indent = (s: string): string => s.split('\n').map((l) => `    ${l}`).join('\n');
  const list = `apiVersion: v1\nkind: List\nitems:\n  -\n${indent(a)}\n  -\n${indent(b)}\n`;
  t.equal(parseTopology(list, 'list.yaml').links.length, 1, 'kind: List with items');
});

t.test('containerlab format', async (t) => {
  const m = parseTopology(
    'name: lab1\ntopology:\n  nodes:\n    a: {kind: linux}\n    b: {patchwire: {node: 2}}\n  links:\n    - endpoints: ["a:eth1", "b:eth1"]\n      patchwire: {kind: tap}\n',
    'c.yml',
  );
  t.equal(m.format, 'containerlab');
  t.equal(m.name, 'lab1');
  t.same(m.pods, [{ name: 'a' }, { name: 'b', node: 'node2' }]);
  t.same(m.links, [{ uid: 1, a: { pod: 'a', intf: 'eth1', kind: 'tap' }, b: { pod: 'b', intf: 'eth1', kind: 'tap' } }]);
  const errs = errorsOf(
    'name: lab1\ntopology:\n  nodes:\n    a: {}\n  links:\n    - endpoints: ["a:eth1", "z:eth1"]\n    - endpoints: ["a:eth2", "a:eth3"]\n    - endpoints: ["a:eth2", "a:eth4"]\n    - endpoints: ["a"]\n    - endpoints: ["a:eth5", "a:eth5"]\n',
  );
  t.match(errs.join('\n'), /topo.yaml: lab lab1: topology.links\[0\].endpoints\[1\]: node 'z' is not in topology.nodes/);
  t.match(errs.join('\n'), /topology.links\[2\].endpoints\[0\]: interface a:eth2 already carries topology.links\[1\]/);
  t.match(errs.join('\n'), /topology.links\[3\].endpoints: must list exactly two/);
  t.match(errs.join('\n'), /topology.links\[4\]: links interface a:eth5 to itself/);
});

t.test('each validation error names file, object and field', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['peer does not declare it back', topo('r1', link(1, 'r2', 'eth1', 'eth1')) + '---\n' + topo('r2', '    []'), /topo.yaml: Topology r1: spec.links\[0\]: pod r2 does not declare this link back/],
    [
      'peer declares other interfaces',
      topo('r1', link(1, 'r2', 'eth1', 'eth1')) + '---\n' + topo('r2', link(1, 'r1', 'eth2', 'eth1')),
      /topo.yaml: Topology r1: spec.links\[0\].uid: uid 1 is used by different links/,
    ],
    ['peer pod missing', topo('r1', link(1, 'r9', 'eth1', 'eth1')), /Topology r1: spec.links\[0\].peer_pod: peer pod 'r9' has no Topology object/],
    [
      'uid used by two different links',
      topo('r1', link(1, 'r2', 'eth1', 'eth1') + link(1, 'r2', 'eth2', 'eth2')) + '---\n' + topo('r2', link(1, 'r1', 'eth1', 'eth1') + link(1, 'r1', 'eth2', 'eth2')),
      /uid 1 is used by different links/,
    ],
    [
      'two links on one interface',
      topo('r1', link(1, 'r2', 'eth1', 'eth1') + link(2, 'r2', 'eth1', 'eth2')) + '---\n' + topo('r2', link(1, 'r1', 'eth1', 'eth1') + link(2, 'r1', 'eth2', 'eth1')),
      /Topology r1: spec.links\[1\].local_intf: interface eth1 already carries link uid 1/,
    ],
    ['name longer than 15 bytes', topo('r1', link(1, 'r1', 'ethernet1234567890', 'eth2')), /spec.links\[0\].local_intf: interface name 'ethernet1234567890' is 18 bytes long/],
    ['name not valid', topo('r1', link(1, 'r1', 'eth 1', 'eth2')), /spec.links\[0\].local_intf: interface name 'eth 1' is not a valid Linux name/],
    ['bad CIDR', topo('r1', link(1, 'r1', 'eth1', 'eth2', '      local_ip: 10.0.0.1/33\n')), /spec.links\[0\].local_ip: address '10.0.0.1\/33' has a prefix length over 32/],
    ['link to itself', topo('r1', link(1, 'r1', 'eth1', 'eth1')), /Topology r1: spec.links\[0\]: links interface r1:eth1 to itself/],
    ['unknown extension key', topo('r1', link(1, 'r1', 'eth1', 'eth2', '      patchwire:\n        speed: 10G\n')), /spec.links\[0\].patchwire.speed: unknown key 'speed' \(known: kind, mtu, mac, capture_bytes, impair, state, carrier_hold_ms\)/],
    ['bad capture size', topo('r1', link(1, 'r1', 'eth1', 'eth2', '      patchwire:\n        capture_bytes: -5\n')), /patchwire.capture_bytes: capture_bytes -5 is out of range: a whole number from 1 to 268435456 \(256 MiB\)/],
    ['bad extension kind', topo('r1', link(1, 'r1', 'eth1', 'eth2', '      patchwire:\n        kind: vxlan\n')), /patchwire.kind: 'vxlan' is not an endpoint kind/],
    ['unknown pod extension key', topo('r1', link(1, 'r1', 'eth1', 'eth2'), '\n  patchwire:\n    zone: a'), /spec.patchwire.zone: unknown key 'zone'/],
    ['YAML that does not parse', 'apiVersion: x\nkind: [Topology\nmetadata: {', /^topo.yaml:\d+:\d+: /],
    ['wrong apiVersion', topo('r1', '    []').replace('networkop.co.uk/v1beta1', 'v1'), /Topology r1: apiVersion: must be networkop.co.uk\/v1beta1/],
    ['missing uid', topo('r1', '    - peer_pod: r1\n      local_intf: a\n      peer_intf: b\n'), /spec.links\[0\].uid: is required/],
  ];
  for (const [name, text, re] of cases) {
    const errs = errorsOf(text);
    t.ok(errs.length > 0, `${name}: rejected`);
    t.match(errs.join('\n'), re, name);
  }
});

t.test('all errors of a file at once', async (t) => {
  const text =
    topo('r1', link(1, 'r2', 'eth1', 'eth1') + link(2, 'r1', 'x'.repeat(16), 'eth3', '      local_ip: nope\n') + link(3, 'r1', 'eth4', 'eth4', '      patchwire: {foo: 1}\n')) +
    '---\n' +
    topo('r2', '    []');
  const errs = errorsOf(text);
  t.ok(errs.length >= 4, `${errs.length} errors reported together`);
  t.match(errs.join('\n'), /does not declare this link back/);
  t.match(errs.join('\n'), /16 bytes long/);
  t.match(errs.join('\n'), /address 'nope' is not in CIDR form/);
  t.match(errs.join('\n'), /unknown key 'foo'/);
  t.match(errs.join('\n'), /links interface r1:eth4 to itself/);
});

t.test('the example files validate', async (t) => {
  const { loadTopology } = await import('../src/topology/load.js');
  t.equal((await loadTopology('examples/triangle.yaml')).links.length, 3);
  t.equal((await loadTopology('examples/clos.clab.yml')).links.length, 3);
  await t.rejects(loadTopology('examples/absent.yaml'), /examples\/absent.yaml: cannot be read: ENOENT/);
});
