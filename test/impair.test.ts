// Link impairments across two daemon processes (a lab on two emulated
// nodes): declared in the topology file and changed at runtime with
// `patchwire link set|reset`. Real ping and iperf3 see them; every frame an
// impairment removes is counted by its cause; they apply per direction,
// survive a kill -9 of a daemon, and bad values are refused with the reason.
// Lower bounds only (an added delay is at least what was set): timing
// targets live in bench/impair.ts.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import t, { type Test } from 'tap';

import { labTraces, pw, pwOk, statusJson, type EndStatus } from './helpers/labcli.js';
import { sh, TestNet, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwja');
const LAB = 'pwja1';
const ns = (pod: string): string => `pw-${LAB}-${pod}`;
const file = path.join(net.dir, 'lab.clab.yml');

type Imp = Record<string, unknown>;
type End = EndStatus & { impair: { in?: Imp; out?: Imp } | null };

function topology(declaredDelay: string): string {
  return `name: ${LAB}
topology:
  nodes:
    a: {patchwire: {node: 1}}
    b: {patchwire: {node: 2}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
      ipv4: [10.0.1.1/24, 10.0.1.2/24]
    - endpoints: ["a:eth2", "b:eth2"]
      ipv4: [10.0.2.1/24, 10.0.2.2/24]
      patchwire:
        impair: {delay: ${declaredDelay}}
`;
}

async function ends(): Promise<Record<string, End>> {
  const s = await statusJson(LAB);
  const out: Record<string, End> = {};
  for (const w of s.wires) for (const e of w.ends) out[e.name] = e as End;
  return out;
}

interface PingResult {
  sent: number;
  received: number;
  dups: number;
  minMs: number;
  out: string;
}

async function ping(pod: string, ip: string, count: number, intervalS: string, quiet = true): Promise<PingResult> {
  const r = await pw('exec', LAB, pod, '--', 'ping', '-n', ...(quiet ? ['-q'] : []), '-c', String(count), '-i', intervalS, '-W', '2', ip);
  const m = /(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?/.exec(r.stdout);
  const rtt = /= ([0-9.]+)\//.exec(r.stdout);
  if (!m) throw new Error(`ping printed no summary: ${r.stdout} ${r.stderr}`);
  return { sent: Number(m[1]), received: Number(m[2]), dups: Number(m[3] ?? 0), minMs: rtt ? Number(rtt[1]) : NaN, out: r.stdout };
}

async function set(end: string, ...args: string[]): Promise<void> {
  await pwOk('link', 'set', LAB, end, ...args);
}
async function reset(end: string): Promise<void> {
  await pwOk('link', 'reset', LAB, end);
}

const drop = (e: End, cause: string): number => Number(e.drops[cause] ?? 0);

/** Counters once they stop moving and nothing waits in an impairment (frames in flight would skew the sums). */
async function settled(): Promise<Record<string, End>> {
  let prev = '';
  return waitFor(
    'counters at rest',
    async () => {
      const e = await ends();
      const key = JSON.stringify(Object.values(e).map((x) => [x.rx_frames, x.tx_frames, x.drops]));
      const held = Object.values(e).some((x) => Number((x as unknown as { impair_held_bytes?: number }).impair_held_bytes ?? 0) > 0);
      const same = key === prev;
      prev = key;
      return same && !held ? e : undefined;
    },
    15000,
    300,
  );
}

t.before(async () => {
  await pw('down', LAB);
  writeFileSync(file, topology('30ms'));
  await pwOk('up', '-f', file, '--name', LAB);
  // No IPv6 chatter and no ARP: the counters must hold only what the tests send.
  for (const [pod, peerPod, peerIp] of [
    ['a', 'b', '10.0.1.2'],
    ['b', 'a', '10.0.1.1'],
  ] as const) {
    sh('ip', 'netns', 'exec', ns(pod), 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.eth1.disable_ipv6=1');
    const mac = (JSON.parse(sh('ip', '-n', ns(peerPod), '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ address: string }>)[0]!.address;
    sh('ip', '-n', ns(pod), 'neigh', 'replace', peerIp, 'lladdr', mac, 'dev', 'eth1', 'nud', 'permanent');
  }
});
t.teardown(async () => {
  await pw('down', LAB);
  await net.cleanup();
});

t.test('a lab declared with impairments comes up impaired; an edited file changes them in place', async (t) => {
  const e = await ends();
  t.same(e['a/eth2']!.impair, { out: { delayUs: 30000 } }, 'a/eth2 sends with 30 ms delay');
  t.same(e['b/eth2']!.impair, { out: { delayUs: 30000 } }, 'and so does b/eth2');
  t.equal(e['a/eth1']!.impair, null, 'the other link is not impaired');
  const p = await ping('a', '10.0.2.2', 5, '0.2');
  t.equal(p.received, 5);
  t.ok(p.minMs >= 60, `every echo waited both ends' 30 ms (min RTT ${p.minMs} ms >= 60)`);
  const table = await pwOk('status', LAB);
  t.match(table, /a\/eth2\s+node1\s+delay 30ms/, 'the status table lists the impairment');

  writeFileSync(file, topology('5ms'));
  const r = JSON.parse(await pwOk('up', '-f', file, '--name', LAB, '--json')) as { added: number; removed: number; kept: number };
  t.same([r.added, r.removed, r.kept], [0, 0, 2], 'reconcile kept both wires');
  const after = await ends();
  t.same(after['a/eth2']!.impair, { out: { delayUs: 5000 } }, 'with the new delay');
  t.equal(after['a/eth2']!.ifindex, e['a/eth2']!.ifindex, 'on the same interface (not re-created)');
});

t.test('link set: ping sees the added delay, on the direction set', async (t) => {
  const base = await ping('a', '10.0.1.2', 5, '0.1');
  t.equal(base.received, 5, 'the link carries pings unimpaired');
  await set('a/eth1', '--delay', '50ms', '--dir', 'out');
  const e = await ends();
  t.same(e['a/eth1']!.impair, { out: { delayUs: 50000 } }, 'status shows the effective impairment');
  const p = await ping('a', '10.0.1.2', 5, '0.1');
  t.ok(p.minMs >= 50, `min RTT ${p.minMs} ms >= the 50 ms set`);
  await reset('a/eth1');
});

t.test('loss 100% on one direction: counted exactly, the other direction untouched', async (t) => {
  await set('b/eth1', '--loss', '100%', '--dir', 'in');
  const before = await settled();
  // a -> b: every request is lost at b's in. b -> a: requests reach a, a's replies are lost at b's in.
  const [ab, ba] = await Promise.all([ping('a', '10.0.1.2', 20, '0.02'), ping('b', '10.0.1.1', 20, '0.02')]);
  t.equal(ab.received, 0, 'a hears no reply');
  t.equal(ba.received, 0, 'nor does b');
  const after = await settled();
  const d = (name: string, f: (x: End) => number): number => f(after[name]!) - f(before[name]!);
  t.equal(d('b/eth1', (x) => drop(x, 'impaired_loss')), d('a/eth1', (x) => x.rx_frames), "every frame a sent is counted as b's impaired_loss");
  t.ok(d('a/eth1', (x) => x.rx_frames) >= 40, 'a sent its 20 requests and 20 replies');
  t.equal(d('b/eth1', (x) => x.tx_frames), 0, 'none reached b');
  t.equal(d('a/eth1', (x) => x.tx_frames), d('b/eth1', (x) => x.rx_frames), 'b -> a is not impaired: all b sent reached a');
  t.ok(d('b/eth1', (x) => x.rx_frames) >= 20, "b's 20 requests among them");
  t.equal(d('a/eth1', (x) => drop(x, 'impaired_loss')), 0, 'a lost nothing');
  await reset('b/eth1');
});

t.test('loss 30%: sent = delivered + impaired_loss, and ping lost about as many', async (t) => {
  await set('a/eth1', '--loss', '30%', '--dir', 'out');
  const before = await settled();
  const p = await ping('a', '10.0.1.2', 300, '0.005');
  const after = await settled();
  const d = (name: string, f: (x: End) => number): number => f(after[name]!) - f(before[name]!);
  const sent = d('a/eth1', (x) => x.rx_frames);
  const lost = d('a/eth1', (x) => drop(x, 'impaired_loss'));
  t.equal(sent, d('b/eth1', (x) => x.tx_frames) + lost, `a sent ${sent} = ${d('b/eth1', (x) => x.tx_frames)} delivered + ${lost} impaired_loss`);
  t.ok(lost >= 45 && lost <= 135, `${lost} of 300 lost (30% expected; 15% to 45% allowed)`);
  t.ok(Math.abs(p.sent - p.received - lost) <= 2, `ping lost ${p.sent - p.received}, the engine counted ${lost}`);
  await reset('a/eth1');
});

t.test('duplicate: ping sees DUP!', async (t) => {
  await set('a/eth1', '--duplicate', '100%', '--dir', 'out');
  const before = await settled();
  const p = await ping('a', '10.0.1.2', 3, '0.1', false);
  const after = await settled();
  t.match(p.out, /icmp_seq=1 .*DUP!/, 'ping printed DUP! for a second reply');
  t.ok(p.dups >= 2, `ping counted ${p.dups} duplicates (the last may come after it stopped)`);
  t.equal(after['a/eth1']!.tx_frames - before['a/eth1']!.tx_frames, 6, 'a received 6 replies');
  await reset('a/eth1');
});

t.test('rate limit: an iperf3 UDP flood past the rate is counted as rate_limited', async (t) => {
  await set('a/eth1', '--rate', '1mbit', '--dir', 'out');
  const before = await settled();
  const server = net.spawnIn(ns('b'), 'iperf3', ['-s', '-1']);
  try {
    await waitFor('iperf3 listening', () => /:5201\b/.test(sh('ip', 'netns', 'exec', ns('b'), 'ss', '-ltn')), 10000, 100);
    const r = await net.exec(ns('a'), 'iperf3', ['-c', '10.0.1.2', '-u', '-b', '20M', '-l', '1200', '-t', '2', '-J'], { timeoutMs: 60000 });
    t.equal(r.code, 0, `iperf3 ran ${r.stderr}`);
  } finally {
    server.kill('SIGKILL');
  }
  const after = await settled();
  const d = (name: string, f: (x: End) => number): number => f(after[name]!) - f(before[name]!);
  const limited = d('a/eth1', (x) => drop(x, 'rate_limited'));
  t.ok(limited > 1000, `${limited} datagrams over the rate were dropped as rate_limited`);
  t.equal(d('a/eth1', (x) => x.rx_frames), d('b/eth1', (x) => x.tx_frames) + limited + d('a/eth1', (x) => drop(x, 'impair_overflow')), 'sent = delivered + rate_limited + impair_overflow');
  await reset('a/eth1');
});

t.test('impairments survive a kill -9 of the daemon, and reset removes them', async (t) => {
  await set('a/eth1', '--delay', '40ms', '--loss', '100%', '--dir', 'out');
  const s = await statusJson(LAB);
  const node1 = s.nodes.find((n) => n.name === 'node1')!;
  const stateFile = (JSON.parse(readFileSync(`/run/patchwire/labs/${LAB}/lab.json`, 'utf8')) as { nodes: Array<{ name: string; state: string }> }).nodes.find((n) => n.name === 'node1')!.state;
  t.match(readFileSync(stateFile, 'utf8'), /"impair"/, "the daemon's state file holds them");
  process.kill(node1.pid, 'SIGKILL');
  await waitFor('node1 restarted with its wires up', async () => {
    const x = await statusJson(LAB);
    const n = x.nodes.find((m) => m.name === 'node1')!;
    return n.healthy && n.pid !== node1.pid && x.wires.every((w) => w.state === 'up') ? x : undefined;
  }, 30000, 200);
  const e = await ends();
  t.same(e['a/eth1']!.impair, { out: { delayUs: 40000, lossPercent: 100 } }, 'the restarted daemon applies them again');
  const lostAll = await ping('a', '10.0.1.2', 5, '0.1');
  t.equal(lostAll.received, 0, 'and the engine does: every request is lost');
  t.ok(drop((await ends())['a/eth1']!, 'impaired_loss') >= 5, 'counted as impaired_loss by the new daemon');
  await set('a/eth1', '--delay', '40ms', '--dir', 'out');
  const slow = await ping('a', '10.0.1.2', 3, '0.1');
  t.ok(slow.minMs >= 40, `min RTT ${slow.minMs} ms >= 40`);
  await reset('a/eth1');
  t.equal((await ends())['a/eth1']!.impair, null, 'reset leaves none');
  const ok = await ping('a', '10.0.1.2', 5, '0.1');
  t.equal(ok.received, 5, 'every ping answered again');
});

t.test('bad values are refused with the reason', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--delay', '20'], /--delay '20' is not a time with a unit/],
    [['--loss', '150%'], /--loss '150%' is over 100%/],
    [['--loss', '1'], /is not a percentage/],
    [['--rate', '100mbps'], /bits per second; tc's 'bps' means bytes/],
    [['--rate', '1bit'], /must be 8kbit to 400gbit/],
    [['--reorder', '5%'], /reorder needs a delay/],
    [['--delay', '61s'], /over 60s/],
    [['--jitter-dist', 'normal', '--delay', '1ms'], /--jitter-dist needs --jitter/],
    [['--delay', '1ms', '--dir', 'sideways'], /--dir 'sideways' must be in, out or both/],
    [['--burst', '32kb'], /burst needs a rate/],
    [[], /nothing to set/],
  ];
  for (const [args, re] of cases) {
    const r = await pw('link', 'set', LAB, 'a/eth1', ...args);
    t.equal(r.code, 2, `${args.join(' ') || '(no option)'}: usage error`);
    t.match(r.stderr, re, `${args.join(' ') || '(no option)'}: says why`);
  }
  const r = await pw('link', 'set', LAB, 'c/eth1', '--delay', '1ms');
  t.match(r.stderr, /has no pod 'c'/, 'an unknown pod is named');
  t.equal((await ends())['a/eth1']!.impair, null, 'nothing was applied');
});

t.test('down leaves nothing', async (t: Test) => {
  await pwOk('down', LAB);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false });
});
