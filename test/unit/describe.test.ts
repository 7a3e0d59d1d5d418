// validate's report and graph's output from a parsed model, without root.
import '../helpers/product-env.js';
import t from 'tap';

import { describeModel, graphModel } from '../../src/topology/describe.js';
import { loadTopology } from '../../src/topology/load.js';

t.test('validate names pods, links, what it skipped and what it expanded', async (t) => {
  const m = await loadTopology('test/fixtures/meshnet/2node-docs-namespace.yml');
  const text = describeModel(m, 'f.yml');
  t.match(text, /^f\.yml: ok \(meshnet format, 2 pods, 2 links\)\n/);
  t.match(text, /pods: sts-0, sts-1\n/);
  t.match(text, /\n {2}1: sts-0:eth1 <-> sts-1:eth1\n {2}2: sts-0:eth2 <-> sts-1:eth2\n/);
  t.match(text, /skipped \(not part of the topology\):\n {2}document 1: Namespace lab7\n {2}document 4: StatefulSet sts\n/);
  t.match(text, /expanded:\n {2}uids numbered from 0/);
});

t.test('graph: one node per pod, one edge per link, in Mermaid and DOT', async (t) => {
  const m = await loadTopology('test/fixtures/meshnet/3node-list.yml');
  const mer = graphModel(m, 'mermaid').split('\n');
  t.equal(mer[0], 'graph LR');
  t.equal(mer.filter((l) => /\["r\d"\]$/.test(l)).length, 3, 'three pods');
  t.same(mer.filter((l) => l.includes('---')), ['  n_r1 ---|"eth1 - eth1"| n_r2', '  n_r1 ---|"eth2 - eth1"| n_r3', '  n_r2 ---|"eth2 - eth2"| n_r3']);
  const dot = graphModel(m, 'dot');
  t.match(dot, /^graph "topology" \{\n/);
  t.match(dot, /"r1" -- "r3" \[taillabel="eth2", headlabel="eth1"\];/);
  t.match(dot, /\}\n$/);
});

t.test('segments show in validate and graph', async (t) => {
  const m = await loadTopology('test/fixtures/containerlab/bridge-host.clab.yml', { env: {} });
  t.match(describeModel(m, 'b.yml'), /segments \(shared, more than two members\):\n {2}br-access: h1:eth1, h2:eth1, h3:eth1\n/);
  const mer = graphModel(m, 'mermaid');
  t.match(mer, /n_seg_br_access\(\("br-access"\)\)/, 'the segment is a circle');
  t.equal(mer.split('\n').filter((l) => l.endsWith('| n_seg_br_access')).length, 3, 'one edge per member');
  t.match(graphModel(m, 'dot'), /"h2" -- "segment br-access" \[taillabel="eth1"\];/);
});

t.test('the CLI: validate --json, graph --format, usage errors', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const cli = (...args: string[]): { code: number | null; out: string; err: string } => {
    const r = spawnSync(process.execPath, ['bin/patchwire.js', ...args], { encoding: 'utf8', env: { ...process.env, ALPINE_TAG: '' } });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const v = cli('validate', '-f', 'test/fixtures/netlab/frr-triangle.yml', '--json');
  t.equal(v.code, 0);
  const j = JSON.parse(v.out) as { ok: boolean; format: string; links: Array<{ impairments?: unknown }>; segments: unknown[] };
  t.same([j.ok, j.format, j.links.length, j.segments.length], [true, 'netlab', 4, 1]);
  t.same(j.links[3]!.impairments, { lossPercent: 1.5, rateKbps: 100000, delayMs: 10 }, 'impairments are in the model');
  t.match(cli('graph', '-f', 'examples/kne/3node-host.pb.txt', '--format', 'dot').out, /"vm2" -- "vm3" \[taillabel="eth2", headlabel="eth2"\];/);
  const bad = cli('graph', '-f', 'examples/kne/3node-host.pb.txt', '--format', 'svg');
  t.equal(bad.code, 2, 'an unknown graph format is a usage error');
  t.match(bad.err, /--format 'svg' must be mermaid or dot/);
  const e = cli('validate', '-f', 'test/fixtures/containerlab/err-link-types.clab.yml');
  t.equal(e.code, 1);
  t.match(e.err, /11 errors in the topology:/);
});
