// Lab mode end to end through the CLI: up, traffic, status, exec, reconcile
// without loss, kill -9 recovery, down without a trace.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { marked, markedAt, startCapture, startStream, stopCapture, waitUntil } from './helpers/frames.js';
import { labTraces, pw, pwOk, statusJson } from './helpers/labcli.js';
import { ROOT, TestNet, links, listNetns, sh, waitFor } from './helpers/testnet.js';

/** Running (a zombie, killed but not yet reaped by whoever inherited it, is not). */
function alive(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Link events from `ip -ts monitor link`: when, which interface, added/changed or deleted. */
function linkEvents(out: string): Array<{ tsUs: number; ifname: string; deleted: boolean }> {
  const events: Array<{ tsUs: number; ifname: string; deleted: boolean }> = [];
  for (const m of out.matchAll(/^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{6})\] (Deleted )?\d+: ([^:@\s]+)/gm)) {
    // ip prints local time; Date reads a time without a zone as local too.
    events.push({ tsUs: new Date(m[1]!).getTime() * 1000 + Number(m[2]), ifname: m[4]!, deleted: m[3] !== undefined });
  }
  return events;
}

const LAB = 'pwtlab';
// TestNet only for its scratch dir, exec helpers and cleanup of stray namespaces.
const net = new TestNet('pwtlx');
t.teardown(async () => {
  await pw('down', LAB);
  await net.cleanup();
});

const triangle = path.join(ROOT, 'examples', 'triangle.yaml');
const ns = (pod: string): string => `pw-${LAB}-${pod}`;
const ifindex = (pod: string, ifname: string): number =>
  (JSON.parse(sh('ip', '-n', ns(pod), '-j', 'link', 'show', 'dev', ifname)) as Array<{ ifindex: number }>)[0]!.ifindex;

t.before(async () => {
  await pw('down', LAB); // an earlier run that died
});

/** The scheduling policies of a process's threads, as the kernel reports them. */
function schedPolicies(pid: number): string[] {
  const policies = readdirSync(`/proc/${pid}/task`).map((tid) => spawnSync('chrt', ['-p', tid], { encoding: 'utf8' }).stdout.match(/policy: (\S+)/)?.[1] ?? '?');
  return [...new Set(policies)];
}

t.test('up, traffic, status, exec', async (t) => {
  const out = await pwOk('up', '-f', triangle, '--name', LAB);
  t.match(out, new RegExp(`lab ${LAB} is up`));
  t.match(out, /UID\s+A\s+B\s+NODES\s+STATE/, 'a summary table');
  for (const [pod, ip] of [
    ['r1', '192.0.2.2'],
    ['r2', '192.0.2.6'],
    ['r3', '192.0.2.9'],
  ] as const) {
    const r = await pw('exec', LAB, pod, '--', 'ping', '-c', '2', '-i', '0.2', '-W', '2', ip);
    t.equal(r.code, 0, `ping from ${pod} to ${ip} crosses its wire`);
  }
  const s = await statusJson(LAB);
  t.equal(s.nodes.length, 2);
  t.ok(s.nodes.every((n) => n.pid > 0 && n.healthy), 'nodes have live daemon pids');
  t.same(schedPolicies(s.nodes[0]!.pid), ['SCHED_OTHER'], 'lab daemons run at normal priority unless asked');
  t.ok(readFileSync(`/proc/${s.nodes[0]!.pid}/cmdline`, 'utf8').split('\0').includes('--single-threaded-gc'), 'and with V8 GC on their own thread');
  t.same(s.pods.map((p) => [p.name, p.node]), [['r1', 'node1'], ['r2', 'node2'], ['r3', 'node1']], 'round-robin placement in file order');
  t.same(s.wires.map((w) => w.endpoints), [['r1/eth1', 'r2/eth1'], ['r2/eth2', 'r3/eth1'], ['r1/eth2', 'r3/eth2']]);
  t.ok(s.wires.every((w) => w.state === 'up'));
  t.same(s.wires[2]!.nodes, ['node1', 'node1'], 'a link inside one node is a wire too');
  for (const w of s.wires) {
    t.ok(w.a_to_b.frames >= 2 && w.b_to_a.frames >= 2, `wire ${w.uid} counted frames both ways`);
    t.ok('peer_down' in w.drops[w.endpoints[0]]! && 'queue_full' in w.drops[w.endpoints[1]]!, 'drops by cause for each end');
  }
  const code = await pw('exec', LAB, 'r1', '--', 'sh', '-c', 'exit 7');
  t.equal(code.code, 7, 'exec returns the command exit code');
  const noPod = await pw('exec', LAB, 'r9', '--', 'true');
  t.equal(noPod.code, 1);
  t.match(noPod.stderr, /lab pwtlab has no pod 'r9' \(pods: r1, r2, r3\)/);
  const ls = JSON.parse(await pwOk('ls', '--json')) as { labs: Array<{ name: string; running: boolean; links: number }> };
  t.match(ls.labs.find((l) => l.name === LAB), { running: true, links: 3 });
});

t.test('reconcile: an untouched wire loses nothing while others change', async (t) => {
  const edited = path.join(net.dir, 'triangle-edited.yaml');
  // Drop link 3 (r1:eth2-r3:eth2), add link 4 (r1:eth3-r3:eth3).
  const text = (await import('node:fs')).readFileSync(triangle, 'utf8');
  const docs = text.split('\n---\n');
  const r1 = docs[0]!.replace(/    - uid: 3[\s\S]*$/, '    - uid: 4\n      peer_pod: r3\n      local_intf: eth3\n      peer_intf: eth3\n      local_ip: 192.0.2.13/30\n');
  const r3 = docs[2]!.replace(/    - uid: 3[\s\S]*$/, '    - uid: 4\n      peer_pod: r1\n      local_intf: eth3\n      peer_intf: eth3\n      local_ip: 192.0.2.14/30\n');
  writeFileSync(edited, [r1, docs[1], r3].join('\n---\n'));
  const before = { r2: ifindex('r2', 'eth1') };
  // Drops on the untouched wire before the edit: none at all, since a pod
  // has no carrier (and so sends nothing) until the far end is ready (#15);
  // the reconcile itself must add none either.
  const drops0 = (await statusJson(LAB)).wires[0]!.drops['r1/eth1']!;
  t.equal(drops0.peer_down, 0, 'bring-up lost no frame as peer_down: carrier came on only once the far end was ready');

  // The edit itself, as the kernel saw it: link events in the pods whose
  // links change (r1, r3), with their times. A veth pair added and removed
  // in each shows the monitor is listening before anything happens.
  const monitors = ['r1', 'r3'].map((pod) => {
    const proc = spawn('ip', ['-n', ns(pod), '-ts', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const m = { pod, proc, out: '' };
    proc.stdout.on('data', (d: Buffer) => (m.out += d.toString()));
    return m;
  });
  try {
    for (const m of monitors) {
      sh('ip', '-n', ns(m.pod), 'link', 'add', 'pwymon0', 'type', 'veth', 'peer', 'name', 'pwymon1');
      sh('ip', '-n', ns(m.pod), 'link', 'del', 'pwymon0');
      await waitFor(`ip monitor in ${m.pod}`, () => /Deleted \d+: pwymon0/.test(m.out));
    }

    // A continuous stream on wire 1 (r1 -> r2), seen arriving before `up`
    // starts and stopped only once frames have arrived after the edit.
    const cap = path.join(net.dir, 'reconcile.pcap');
    const tcpdump = await startCapture(net, ns('r2'), 'eth1', cap);
    const stream = startStream(net, ns('r1'), 'eth1', 'PWTREC', 0.004);
    try {
      await waitFor('the stream to arrive at r2', () => marked(cap, 'PWTREC').length >= 20);
      const r = await pw('up', '-f', edited, '--name', LAB);
      t.equal(r.code, 0, 'up on a running lab reconciles');
      t.match(r.stdout, /reconciled: 1 links added, 1 removed, 2 untouched/);
      // The kernel's record of the edit: r1/eth2 and r3/eth2 deleted, eth3 added in both.
      const events = (): Array<{ pod: string; tsUs: number; ifname: string; deleted: boolean }> =>
        monitors.flatMap((m) => linkEvents(m.out).map((e) => ({ ...e, pod: m.pod }))).filter((e) => !e.ifname.startsWith('pwymon'));
      const edits = (): ReturnType<typeof events> => events().filter((e) => e.ifname === 'eth2' || e.ifname === 'eth3');
      const seen = (): boolean[][] => ['r1', 'r3'].map((pod) => [edits().some((e) => e.pod === pod && e.deleted && e.ifname === 'eth2'), edits().some((e) => e.pod === pod && !e.deleted && e.ifname === 'eth3')]);
      await waitUntil(() => seen().flat().every(Boolean), 5000);
      t.same(seen(), [[true, true], [true, true]], 'the kernel saw eth2 deleted and eth3 added in r1 and r3 while the stream ran');
      t.same(events().filter((e) => e.pod === 'r1' && e.ifname === 'eth1'), [], 'and no change at all to r1/eth1, the untouched end');
      const window = { from: Math.min(...edits().map((e) => e.tsUs)), to: Math.max(...edits().map((e) => e.tsUs)) };
      await waitFor('frames that left after the edit', () => markedAt(cap, 'PWTREC').filter((f) => f.tsUs > window.to).length >= 20);
      const sent = await stream.stop();
      await waitUntil(() => marked(cap, 'PWTREC').length >= sent);
      const got = markedAt(cap, 'PWTREC');
      const early = got.filter((f) => f.tsUs < window.from).length;
      const late = got.filter((f) => f.tsUs > window.to).length;
      t.ok(early > 0 && late > 0, `frames of the stream arrived before (${early}) and after (${late}) the edit (${((window.to - window.from) / 1000).toFixed(1)} ms, ${got.length - early - late} frames during it)`);
      t.equal(got.length, sent, `every one of the ${sent} frames of the stream arrived across the reconcile`);
      const seqs = got.map((f) => Number(f.data.subarray(20, 26).toString('ascii')));
      t.same(seqs, Array.from({ length: sent }, (_, i) => i), 'each once, in the order sent');
    } finally {
      await stream.stop().catch(() => undefined);
      await stopCapture(tcpdump);
    }
    t.equal(ifindex('r2', 'eth1'), before.r2, 'the untouched wire was not recreated');
  } finally {
    for (const m of monitors) m.proc.kill('SIGKILL');
  }

  const s = await statusJson(LAB);
  t.same(s.wires.map((w) => w.uid), [1, 2, 4]);
  t.equal(s.wires[0]!.drops['r1/eth1']!.peer_down, drops0.peer_down, 'the reconcile added no peer_down drop on the untouched wire');
  t.equal(s.wires[0]!.drops['r1/eth1']!.queue_full, drops0.queue_full, 'nor queue_full');
  const ping = await pw('exec', LAB, 'r1', '--', 'ping', '-c', '2', '-i', '0.2', '-W', '2', '192.0.2.14');
  t.equal(ping.code, 0, 'the added link carries traffic');
  const gone = await pw('exec', LAB, 'r1', '--', 'ip', 'link', 'show', 'eth2');
  t.not(gone.code, 0, 'the removed link is gone from the pod');
});

t.test('kill -9 of a daemon: the lab brings it back, wires return, pod interfaces stay', async (t) => {
  const s = await statusJson(LAB);
  const node2 = s.nodes.find((n) => n.name === 'node2')!;
  const before = { r2eth1: ifindex('r2', 'eth1'), r2eth2: ifindex('r2', 'eth2') };
  process.kill(node2.pid, 'SIGKILL');
  const after = await waitFor('node2 restarted', async () => {
    const x = await statusJson(LAB);
    const n = x.nodes.find((m) => m.name === 'node2')!;
    return n.healthy && n.pid !== node2.pid && x.wires.length === 3 && x.wires.every((w) => w.state === 'up') ? x : undefined;
  }, 30000, 200);
  t.not(after.nodes.find((n) => n.name === 'node2')!.pid, node2.pid, 'a new daemon process');
  t.equal(after.nodes.find((n) => n.name === 'node2')!.restarts, 1, 'the supervisor counted the restart');
  const ping = await pw('exec', LAB, 'r1', '--', 'ping', '-c', '3', '-i', '0.2', '-W', '2', '192.0.2.2');
  t.equal(ping.code, 0, 'traffic flows again over the veth wire');
  const ping2 = await pw('exec', LAB, 'r3', '--', 'ping', '-c', '3', '-i', '0.2', '-W', '2', '192.0.2.5');
  t.equal(ping2.code, 0, 'and over the tap wire');
  t.same({ r2eth1: ifindex('r2', 'eth1'), r2eth2: ifindex('r2', 'eth2') }, before, 'no pod interface was recreated (same ifindex)');
});

t.test('down leaves no namespace, interface, process or file', async (t) => {
  t.ok(labTraces(LAB).namespaces.length > 0, 'the lab had namespaces');
  // The daemons' ends of veth wires live in the node namespaces.
  const hostEnds = labTraces(LAB).namespaces.filter((n) => n.startsWith(`pwn-${LAB}-`)).flatMap((n) => links(n)).filter((l) => /^pw[0-9a-f]{12}$/.test(l));
  t.equal(hostEnds.length, 4, `the node namespaces hold the host ends of the 2 veth wires (${hostEnds.join(', ')})`);
  // A daemon a user started inside a pod must not outlive the lab.
  const bg = await pw('exec', LAB, 'r1', '--', 'sh', '-c', 'sleep 1000 >/dev/null 2>&1 & echo $!');
  const sleeper = Number(bg.stdout.trim());
  t.ok(sleeper > 0 && alive(sleeper), `a background process in pod r1 (pid ${sleeper})`);
  const r = await pw('down', LAB);
  t.notOk(alive(sleeper), 'down stopped the process running inside the pod');
  t.equal(r.code, 0);
  t.match(r.stderr, /removed 6 namespaces and \d+ processes/);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false });
  const everywhere = ['', ...listNetns()].flatMap((n) => {
    try {
      return links(n);
    } catch {
      return []; // a namespace of another test, deleted meanwhile
    }
  });
  t.same(hostEnds.filter((h) => everywhere.includes(h)), [], 'none of those host ends is left, in the root namespace or any other');
  const again = await pw('down', LAB);
  t.equal(again.code, 1, 'down of a lab that is not there says so');
  t.match(again.stderr, /no lab named 'pwtlab'/);
});

t.test('up failures leave nothing behind', async (t) => {
  const bad = path.join(net.dir, 'bad.yaml');
  writeFileSync(bad, 'apiVersion: networkop.co.uk/v1beta1\nkind: Topology\nmetadata: {name: a}\nspec:\n  links:\n    - {uid: 1, peer_pod: b, local_intf: eth1, peer_intf: eth1}\n');
  const r = await pw('up', '-f', bad, '--name', LAB);
  t.equal(r.code, 1);
  t.match(r.stderr, /1 error in the topology:\n.*bad.yaml: Topology a: spec.links\[0\].peer_pod: peer pod 'b' has no Topology object/);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false }, 'invalid file: nothing created');

  const pinned = path.join(net.dir, 'pinned.yml');
  writeFileSync(pinned, 'name: x\ntopology:\n  nodes:\n    a: {patchwire: {node: node3}}\n    b: {}\n  links:\n    - endpoints: ["a:eth1", "b:eth1"]\n');
  const p = await pw('up', '-f', pinned, '--name', LAB, '--nodes', '2');
  t.equal(p.code, 1);
  t.match(p.stderr, /pod a is pinned to node3, but the lab has 2 nodes/);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false });

  // A failure half-way through building (a pod's namespace is taken) is rolled back whole.
  sh('ip', 'netns', 'add', `pw-${LAB}-r3`);
  try {
    const c = await pw('up', '-f', triangle, '--name', LAB);
    t.equal(c.code, 1);
    t.match(c.stderr, /network namespace pw-pwtlab-r3 already exists/);
    const traces = labTraces(LAB);
    t.same(traces.namespaces, [`pw-${LAB}-r3`], 'only the namespace that was there before');
    t.same(traces.processes, []);
  } finally {
    sh('ip', 'netns', 'del', `pw-${LAB}-r3`);
  }

  const v = await pw('validate', '-f', bad);
  t.equal(v.code, 1);
  const ok = await pw('validate', '-f', triangle);
  t.equal(ok.code, 0);
  t.match(ok.stdout, /ok \(meshnet format, 3 pods, 3 links\)/);
});

t.test('containerlab file comes up with pinned pods', async (t) => {
  const clab = path.join(ROOT, 'examples', 'clos.clab.yml');
  const clabLinks = Number(/(\d+) links\)/.exec(await pwOk('validate', '-f', clab))?.[1]);
  t.ok(clabLinks > 0, `the file declares ${clabLinks} links`);
  const r = await pw('up', '-f', clab, '--name', LAB, '--nodes', '3', '--rt-priority', '1');
  t.equal(r.code, 0, r.stderr);
  const s = await statusJson(LAB);
  t.equal(s.nodes.length, 3);
  for (const n of s.nodes) t.same(schedPolicies(n.pid), ['SCHED_RR'], `up --rt-priority 1: every thread of the daemon of ${n.name} is SCHED_RR`);
  t.equal(s.pods.find((p) => p.name === 'host1')!.node, 'node1', 'host1 pinned to node1');
  t.equal(s.wires.length, clabLinks, `one wire per link of the file (${clabLinks})`);
  t.same(s.wires.filter((w) => w.state !== 'up'), [], 'and every one of them up');
  const mtu = await pw('exec', LAB, 'host1', '--', 'cat', '/sys/class/net/eth1/mtu');
  t.equal(mtu.stdout.trim(), '9000', 'the extension MTU is applied');
  await pwOk('down', LAB);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false });
});
