// Scale: 100 pods and 200 links on 4 emulated nodes come up, pass a ping on
// every link, and go down without a trace.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { ringWithChords } from './helpers/gen.js';
import { labTraces, pw, statusJson } from './helpers/labcli.js';
import { TestNet } from './helpers/testnet.js';
import { pool } from '../src/lab/progress.js';

const LAB = 'pwtscale';
const net = new TestNet('pwtsx');
t.teardown(async () => {
  await pw('down', LAB);
  await net.cleanup();
});

t.test('100 pods, 200 links, 4 nodes', async (t) => {
  await pw('down', LAB);
  const { yaml, links } = ringWithChords(100);
  const file = path.join(net.dir, 'scale.yaml');
  writeFileSync(file, yaml);
  t.equal(links.length, 200);

  const t0 = Date.now();
  const up = await pw('up', '-f', file, '--name', LAB, '--nodes', '4', '--json');
  const upSeconds = (Date.now() - t0) / 1000;
  t.equal(up.code, 0, up.stderr);
  const s = await statusJson(LAB);
  t.equal(s.nodes.length, 4);
  t.equal(s.pods.length, 100);
  t.equal(s.wires.length, 200);
  t.equal(s.wires.filter((w) => w.state === 'up').length, 200, 'all 200 wires up');
  t.equal(new Set(s.pods.map((p) => p.node)).size, 4, 'pods spread over 4 nodes');

  const failed: string[] = [];
  await pool(links, 12, async (l) => {
    const pod = l.a.split(':')[0]!;
    let r = await net.exec(`pw-${LAB}-${pod}`, 'ping', ['-c', '1', '-W', '2', l.ipB]);
    if (r.code !== 0) r = await net.exec(`pw-${LAB}-${pod}`, 'ping', ['-c', '1', '-W', '2', l.ipB]);
    if (r.code !== 0) failed.push(`${l.a}->${l.b}`);
  });
  t.same(failed, [], 'a ping crosses every one of the 200 links');

  const t1 = Date.now();
  const down = await pw('down', LAB);
  const downSeconds = (Date.now() - t1) / 1000;
  t.equal(down.code, 0, down.stderr);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false }, 'nothing left');
  t.comment(`scale: up ${upSeconds.toFixed(1)} s, down ${downSeconds.toFixed(1)} s for 100 pods / 200 links / 4 nodes`);
});
