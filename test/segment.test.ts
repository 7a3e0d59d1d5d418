// A shared segment (a containerlab `kind: bridge` node with three members)
// over two emulated nodes, brought up with `patchwire up`: h1 and h3 land on
// node1, h2 on node2, so the segment fans out locally and across daemons.
// ARP and ping between all pairs; every frame one member sends (IEEE
// link-local groups, unknown unicast, VLAN-tagged, and unicast to another
// member's MAC after that MAC has been seen) reaches every other member
// exactly once and never comes back to the sender; per member, frames sent
// into the segment equal what the other members received from it; a pulled
// cable takes carrier from that member and, once no other member is left,
// from the last one; down leaves nothing behind.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { marked, matrixFrames, sendFrames, startCapture, stopCapture, waitUntil } from './helpers/frames.js';
import { labTraces, pw, pwOk, settled } from './helpers/labcli.js';
import { sh, TestNet } from './helpers/testnet.js';

const LAB = 'pwsalab';
const net = new TestNet('pwsa');
const MEMBERS = ['h1', 'h2', 'h3'] as const;
const IP: Record<string, string> = { h1: '10.0.9.1', h2: '10.0.9.2', h3: '10.0.9.3' };
const ns = (pod: string): string => `pw-${LAB}-${pod}`;

interface SegMember {
  name: string;
  node: string;
  rx_frames: number;
  tx_frames: number;
  drops: Record<string, number>;
  carrier: { on: boolean; reason: string; cable: string };
}
interface SegStatus {
  pods: Array<{ name: string; node: string }>;
  segments: Array<{ uid: number; name: string; state: string; members: SegMember[] }>;
}
const segStatus = async (): Promise<SegStatus> => JSON.parse(await pwOk('status', LAB, '--json')) as SegStatus;

t.before(async () => {
  await pw('down', LAB);
});
t.teardown(async () => {
  await pw('down', LAB);
  await net.cleanup();
});

const FILE = `name: ${LAB}
topology:
  nodes:
    lan:
      kind: bridge
    h1: {kind: linux}
    h2: {kind: linux}
    h3: {kind: linux}
  links:
    - type: veth
      endpoints:
        - {node: h1, interface: eth1, ipv4: 10.0.9.1/24, mac: "02:5a:00:00:00:01"}
        - {node: lan, interface: p1}
    - type: veth
      endpoints:
        - {node: h2, interface: eth1, ipv4: 10.0.9.2/24, mac: "02:5a:00:00:00:02"}
        - {node: lan, interface: p2}
    - endpoints: ["h3:eth1", "lan:p3"]
      ipv4: ["10.0.9.3/24"]
`;

t.test('a three-member segment over two nodes', async (t) => {
  const file = path.join(net.dir, 'segment.clab.yml');
  writeFileSync(file, FILE);
  await pwOk('up', '-f', file);
  let s = await segStatus();
  t.same(
    s.pods.map((p) => [p.name, p.node]),
    [
      ['h1', 'node1'],
      ['h2', 'node2'],
      ['h3', 'node1'],
    ],
    'h1 and h3 share node1, h2 is on node2',
  );
  t.equal(s.segments.length, 1, 'status lists the segment');
  t.equal(s.segments[0]!.name, 'lan');
  t.equal(s.segments[0]!.state, 'up', 'and it is up');
  t.same(s.segments[0]!.members.map((m) => [m.name, m.node, m.carrier.on]), [
    ['h1/eth1', 'node1', true],
    ['h2/eth1', 'node2', true],
    ['h3/eth1', 'node1', true],
  ]);
  const macs: Record<string, string> = {};
  for (const m of MEMBERS) macs[m] = (JSON.parse(sh('ip', '-n', ns(m), '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ address: string }>)[0]!.address;

  t.test('ARP and ping between every pair', async (t) => {
    for (const a of MEMBERS) {
      for (const b of MEMBERS) {
        if (a === b) continue;
        const r = await pw('exec', LAB, a, '--', 'arping', '-c', '1', '-w', '3', '-I', 'eth1', IP[b]!);
        t.equal(r.code, 0, `${a} ARPs ${b}`);
        t.equal((await pw('exec', LAB, a, '--', 'ping', '-c', '2', '-i', '0.2', '-W', '2', IP[b]!)).code, 0, `${a} pings ${b}`);
      }
    }
  });

  // Counters from here on: frames sent before the peer stream was up (the
  // pods' first IPv6 frames) were counted as peer_down at their sender.
  let base: SegMember[] = [];
  t.test('every frame reaches every other member exactly once, none comes back', async (t) => {
    base = (await settled('segment counters', segStatus, (x) => x.segments[0]!.members.map((m) => [m.rx_frames, m.tx_frames]))).segments[0]!.members;
    for (const [i, from] of MEMBERS.entries()) {
      const others = MEMBERS.filter((m) => m !== from);
      const tag = `S${i}`;
      // The link-local groups 01:80:C2:00:00:00-0F (STP, pause, LACP, 802.1X,
      // LLDP...), unknown unicast and 802.1Q tagged frames from the matrix,
      // and unicast to another member whose MAC the pings made known: a
      // learning bridge would send that one to its owner only.
      const matrix = matrixFrames(tag, { jumbo: false }).filter((f) => /^01:80:c2|unknown unicast|802\.1Q/.test(f.label));
      const src = Buffer.from(macs[from]!.replace(/:/g, ''), 'hex');
      const toMember = others.map((o, k) => {
        const f = Buffer.alloc(64);
        Buffer.from(macs[o]!.replace(/:/g, ''), 'hex').copy(f, 0);
        src.copy(f, 6);
        f.writeUInt16BE(0x88b5, 12);
        f.write(`PWT${tag}U${k}${o}`, 14, 'ascii');
        return { label: `unicast to ${o}'s MAC`, bytes: f };
      });
      const frames = [...matrix, ...toMember];
      const caps = new Map<string, { file: string; proc: Awaited<ReturnType<typeof startCapture>> }>();
      for (const m of MEMBERS) {
        const f = path.join(net.dir, `${tag}-${m}.pcap`);
        caps.set(m, { file: f, proc: await startCapture(net, ns(m), 'eth1', f) });
      }
      try {
        t.equal(await sendFrames(net, ns(from), 'eth1', frames.map((f) => f.bytes)), frames.length, `${from} sent ${frames.length} frames`);
        // The last frame's arrival at a member means the earlier ones are there too (one path, in order).
        const last = frames[frames.length - 1]!.bytes;
        for (const o of others) {
          const arrived = await waitUntil(() => marked(caps.get(o)!.file, `PWT${tag}`).some((d) => d.equals(last)), 10000);
          t.ok(arrived, `the last frame from ${from} reached ${o}`);
        }
        // A moment more for any duplicate or reflection to show.
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        for (const c of caps.values()) await stopCapture(c.proc);
      }
      for (const o of others) {
        const got = marked(caps.get(o)!.file, `PWT${tag}`);
        const missing = frames.filter((f) => got.filter((g) => g.equals(f.bytes)).length !== 1).map((f) => `${f.label} (x${got.filter((g) => g.equals(f.bytes)).length})`);
        t.same(missing, [], `${o} got each of ${from}'s ${frames.length} frames exactly once, unchanged`);
        t.equal(got.length, frames.length, `and nothing else of them`);
      }
      t.same(marked(caps.get(from)!.file, `PWT${tag}`), [], `nothing came back to ${from}`);
    }
  });

  t.test('counters: what each member sent is what every other member received from it', async (t) => {
    // Over the frames test, per member m: frames delivered to m = frames the
    // other members sent (sum of all rx minus m's own), once nothing is in flight.
    const st = await settled('segment counters', segStatus, (x) => x.segments[0]!.members.map((m) => [m.rx_frames, m.tx_frames]));
    const mem = st.segments[0]!.members.map((m, i) => ({
      name: m.name,
      rx: m.rx_frames - base[i]!.rx_frames,
      tx: m.tx_frames - base[i]!.tx_frames,
      drops: Object.entries(m.drops).filter(([k, v]) => Number(v) !== Number(base[i]!.drops[k] ?? 0)),
    }));
    const rxAll = mem.reduce((a, m) => a + m.rx, 0);
    for (const m of mem) {
      t.equal(m.tx, rxAll - m.rx, `${m.name}: received ${m.tx} = frames the other members sent`);
      t.ok(m.rx >= 20, `${m.name} sent at least the test's ${20} frames (${m.rx})`);
      t.same(m.drops, [], `${m.name}: no drops meanwhile`);
    }
  });

  t.test('cable pull per member', async (t) => {
    await pwOk('link', 'down', LAB, 'h2/eth1');
    t.ok(await waitUntil(async () => {
      const m = (await segStatus()).segments[0]!.members;
      return !m[1]!.carrier.on && m[0]!.carrier.on && m[2]!.carrier.on;
    }), 'h2 lost carrier; h1 and h3 keep it (they still have each other)');
    t.match(sh('ip', '-n', ns('h2'), 'link', 'show', 'dev', 'eth1'), /NO-CARRIER|state DOWN|LOWERLAYERDOWN/, "h2's interface shows it");
    t.not((await pw('exec', LAB, 'h1', '--', 'ping', '-c', '1', '-W', '1', IP.h2!)).code, 0, 'h1 no longer reaches h2');
    t.equal((await pw('exec', LAB, 'h1', '--', 'ping', '-c', '1', '-W', '2', IP.h3!)).code, 0, 'h1 still reaches h3');
    await pwOk('link', 'down', LAB, 'h3/eth1');
    t.ok(await waitUntil(async () => !(await segStatus()).segments[0]!.members[0]!.carrier.on), 'h1, the last member plugged, lost carrier too');
    s = await segStatus();
    t.match(s.segments[0]!.members[0]!.carrier.reason, /no other segment member/, 'and status says why');
    // h1's ARP for h2 crossed to node2 and met h2's pulled cable there.
    t.ok(Number(s.segments[0]!.members[1]!.drops.cable_pulled) > 0, `frames for h2 while pulled counted as its cable_pulled (${s.segments[0]!.members[1]!.drops.cable_pulled})`);
    await pwOk('link', 'up', LAB, 'h2/eth1');
    await pwOk('link', 'up', LAB, 'h3/eth1');
    t.ok(await waitUntil(async () => (await segStatus()).segments[0]!.members.every((m) => m.carrier.on)), 'plugged again: every member has carrier');
    t.equal((await pw('exec', LAB, 'h3', '--', 'ping', '-c', '2', '-i', '0.2', '-W', '2', IP.h2!)).code, 0, 'h3 reaches h2 again');
  });

  t.test("a daemon killed and restarted by the supervisor re-creates its members from its state file", async (t) => {
    const before = JSON.parse(await pwOk('status', LAB, '--json')) as { nodes: Array<{ name: string; pid: number }> };
    const old = before.nodes.find((n) => n.name === 'node2')!.pid;
    process.kill(old, 'SIGKILL');
    t.ok(
      await waitUntil(async () => {
        const st = JSON.parse(await pwOk('status', LAB, '--json')) as SegStatus & { nodes: Array<{ name: string; pid: number; healthy: boolean }> };
        const n2 = st.nodes.find((n) => n.name === 'node2')!;
        return n2.healthy && n2.pid !== old && st.segments[0]!.state === 'up';
      }, 30000),
      'node2 runs again and the segment is up',
    );
    t.equal((await pw('exec', LAB, 'h2', '--', 'ping', '-c', '2', '-i', '0.2', '-W', '2', IP.h3!)).code, 0, 'h2 (node2) reaches h3 (node1) again');
  });

  t.test('a second up keeps the unchanged segment, and it carries frames', async (t) => {
    const ifindex = (): number => (JSON.parse(sh('ip', '-n', `pw-${LAB}-h1`, '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ ifindex: number }>)[0]!.ifindex;
    const before = ifindex();
    const rx0 = (await segStatus()).segments[0]!.members.find((m) => m.name === 'h1/eth1')!.rx_frames;
    t.match(await pwOk('up', '-f', file), /0 links added, 0 removed/);
    const seg = (await segStatus()).segments[0]!;
    t.equal(seg.state, 'up');
    t.equal(ifindex(), before, "h1's member interface was kept, not re-created");
    t.ok(seg.members.find((m) => m.name === 'h1/eth1')!.rx_frames >= rx0, 'its counters were kept');
    t.equal((await pw('exec', LAB, 'h2', '--', 'ping', '-c', '2', '-i', '0.2', '-W', '2', IP.h1!)).code, 0, 'h2 reaches h1');
  });

  t.test('down leaves nothing behind', async (t) => {
    await pwOk('down', LAB);
    t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false });
  });
});
