// Scale: 100 pods and 200 links on 4 emulated nodes come up, pass a ping on
// every link, and go down without a trace.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { ringWithChords } from './helpers/gen.js';
import { type EndStatus, type StatusJson, direction, labTraces, pw, settledStatus, statusJson } from './helpers/labcli.js';
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

  // One ping per link and no retry: a wire reported up must carry its very
  // first frames (a retry, or ARP's own, would hide one that does not yet).
  const failed: string[] = [];
  await pool(links, 12, async (l) => {
    const pod = l.a.split(':')[0]!;
    const r = await net.exec(`pw-${LAB}-${pod}`, 'ping', ['-c', '1', '-W', '5', l.ipB]);
    if (r.code !== 0) failed.push(`${l.a}->${l.b}`);
  });
  t.same(failed, [], 'a ping crosses every one of the 200 links');

  const end = await settledStatus(LAB);
  const sum = (e: EndStatus, cause: string): number => Number(e.drops[cause] ?? 0);
  const lateDrops = end.wires.flatMap((w, i) => w.ends.map((e, j) => ({ end: e.name, peer_down: sum(e, 'peer_down') - sum(s.wires[i]!.ends[j]!, 'peer_down') }))).filter((x) => x.peer_down !== 0);
  t.same(lateDrops, [], 'no frame found its peer daemon missing once every wire was reported up');
  const unknown = (x: StatusJson): number => x.nodes.reduce((a, n) => a + n.unknown_wire, 0);
  t.equal(unknown(end) - unknown(s), 0, 'and none reached a daemon that did not have its wire yet');
  // The lab's whole accounting since it was built: every frame read from an
  // end was written into the other, dropped with a cause, or counted as
  // unknown_wire by a daemon that did not have the wire yet.
  const excess = end.wires.flatMap((w) => [direction(w.ends[0], w.ends[1]), direction(w.ends[1], w.ends[0])].map((d) => ({ uid: w.uid, excess: d.read - d.delivered - d.dropped })));
  t.same(excess.filter((x) => x.excess < 0), [], 'no wire delivered more than it read');
  t.equal(excess.reduce((a, x) => a + x.excess, 0), unknown(end), `frames read = delivered + dropped by cause + unknown_wire, over all 400 directions (${end.wires.reduce((a, w) => a + w.ends[0].rx_frames + w.ends[1].rx_frames, 0)} frames read)`, {
    unaccounted: excess.filter((x) => x.excess > 0).slice(0, 20),
  });

  const t1 = Date.now();
  const down = await pw('down', LAB);
  const downSeconds = (Date.now() - t1) / 1000;
  t.equal(down.code, 0, down.stderr);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false }, 'nothing left');
  t.comment(`scale: up ${upSeconds.toFixed(1)} s, down ${downSeconds.toFixed(1)} s for 100 pods / 200 links / 4 nodes`);
});
