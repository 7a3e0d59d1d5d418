// validate's report and graph's output from a parsed model, without root.
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
