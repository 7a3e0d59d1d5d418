// Capture: ring download of frames sent before anyone asked, follow mode,
// merged captures across nodes in time order, pcap and pcapng read by tshark,
// HTTP errors, and a stalled reader that costs capture data, never wire frames.
import { readFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { sendFrames } from './helpers/frames.js';
import { labTraces, pw, pwOk, statusJson } from './helpers/labcli.js';
import { readPcap, readPcapng } from './helpers/pcap.js';
import { ROOT, TestNet, run, sleep, waitFor } from './helpers/testnet.js';

const LAB = 'pwtcap';
const net = new TestNet('pwtcx');
t.teardown(async () => {
  await pw('down', LAB);
  await net.cleanup();
});
const ns = (pod: string): string => `pw-${LAB}-${pod}`;

function marked(tag: string, n: number, size = 100): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const f = Buffer.alloc(size, 0x5a);
    Buffer.from('02ee000000020' + '2ee00000001' + '88b5', 'hex').copy(f);
    f.write(`${tag}${String(i).padStart(5, '0')}`, 14, 'ascii');
    return f;
  });
}
const has = (d: Buffer, tag: string): boolean => d.includes(Buffer.from(tag));

async function tshark(file: string, ...args: string[]): Promise<{ out: string; warnings: string }> {
  const r = await run('tshark', ['-r', file, ...args]);
  const warnings = r.stderr
    .split('\n')
    .filter((l) => l && !/^Running as user "root"/.test(l))
    .join('\n');
  if (r.code !== 0) throw new Error(`tshark -r ${file}: ${r.stderr}`);
  return { out: r.stdout, warnings };
}

t.before(async () => {
  await pw('down', LAB);
  await pwOk('up', '-f', path.join(ROOT, 'examples', 'triangle.yaml'), '--name', LAB);
});

t.test('ring download holds frames sent before the capture was asked for', async (t) => {
  const frames = marked('PWTRING', 40);
  await sendFrames(net, ns('r1'), 'eth1', frames);
  await sleep(300);
  const file = path.join(net.dir, 'ring.pcapng');
  await pwOk('capture', LAB, 'r1/eth1', 'r2/eth1', '-w', file);
  const ts = await tshark(file, '-T', 'fields', '-e', 'frame.interface_name', '-e', 'frame.packet_flags_direction', '-e', 'frame.len');
  t.equal(ts.warnings, '', 'tshark reads it without a warning');
  const f = readPcapng(file);
  t.same(f.interfaces.map((i) => i.name), ['r1/eth1', 'r2/eth1'], 'one interface per wire end, named pod/intf');
  t.match(f.interfaces[0]!.description, /node node1, lab pwtcap/);
  t.match(f.interfaces[1]!.description, /node node2, lab pwtcap/);
  const out = f.packets.filter((p) => has(p.data, 'PWTRING') && p.iface === 0);
  const inn = f.packets.filter((p) => has(p.data, 'PWTRING') && p.iface === 1);
  t.equal(out.length, 40, 'every frame, as the pod sent it out of r1/eth1');
  t.equal(inn.length, 40, 'and as the wire delivered it into r2/eth1');
  t.ok(out.every((p) => p.flags === 2), 'outbound direction flag on the sender side');
  t.ok(inn.every((p) => p.flags === 1), 'inbound direction flag on the receiver side');
  t.ok(out.every((p, i) => p.data.equals(frames[i]!) && p.origLen === 100), 'bytes and original length match what was sent');
  t.ok(f.packets.every((p, i) => i === 0 || p.tsUs >= f.packets[i - 1]!.tsUs), 'merged across two nodes in time order');
  const names = new Set(ts.out.trim().split('\n').map((l) => l.split('\t')[0]));
  t.same([...names].sort(), ['r1/eth1', 'r2/eth1'], 'tshark shows the pod/intf names');
  const dirs = ts.out.trim().split('\n').filter((l) => l.startsWith('r1/eth1')).map((l) => l.split('\t')[1]);
  t.ok(dirs.includes('0x00000002'), 'tshark sees outbound flags');
});

t.test('classic pcap on request', async (t) => {
  const file = path.join(net.dir, 'ring.pcap');
  await pwOk('capture', LAB, 'r2/eth1', '--format', 'pcap', '-w', file);
  const ts = await tshark(file);
  t.equal(ts.warnings, '');
  t.equal(readFileSync(file).readUInt32LE(0), 0xa1b2c3d4, 'pcap magic');
  const recs = readPcap(file).filter((r) => has(r.data, 'PWTRING'));
  t.equal(recs.length, 40);
  const bytes = recs.reduce((a, r) => a + r.data.length, 0);
  t.equal(bytes, 40 * 100, 'byte count matches');
});

t.test('follow: ring content, then live frames until the duration', async (t) => {
  const file = path.join(net.dir, 'follow.pcapng');
  const cap = pw('capture', LAB, 'r3/eth2', 'r1/eth2', '--follow', '--duration', '3', '-w', file);
  await sleep(800);
  const live = marked('PWTLIVE', 25);
  await sendFrames(net, ns('r3'), 'eth2', live, 0.002);
  const r = await cap;
  t.equal(r.code, 0, r.stderr);
  const ts = await tshark(file);
  t.equal(ts.warnings, '');
  const f = readPcapng(file);
  const got = f.packets.filter((p) => has(p.data, 'PWTLIVE'));
  t.equal(got.filter((p) => p.iface === 0 && p.flags === 2).length, 25, 'live frames leaving r3/eth2');
  t.equal(got.filter((p) => p.iface === 1 && p.flags === 1).length, 25, 'live frames arriving at r1/eth2 (same node)');
  t.ok(f.packets.every((p, i) => i === 0 || p.tsUs >= f.packets[i - 1]!.tsUs), 'time order');
});

t.test('count stops a capture', async (t) => {
  const file = path.join(net.dir, 'count.pcap');
  const r = await run('sh', ['-c', `"${process.execPath}" "${path.join(ROOT, 'bin', 'patchwire.js')}" capture ${LAB} r1/eth1 --count 5 --format pcap > ${file}`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(readPcap(file).length, 5, 'stdout output, exactly 5 frames');
});

t.test('bad requests get clear errors', async (t) => {
  const a = await pw('capture', 'nolab', 'r1/eth1');
  t.equal(a.code, 1);
  t.match(a.stderr, /no lab named 'nolab'/);
  const b = await pw('capture', LAB, 'r1/eth9');
  t.equal(b.code, 1);
  t.match(b.stderr, /lab pwtcap has no wire end 'r1\/eth9'/);
  const c = await pw('capture', LAB, 'r1/eth1', '--format', 'erf');
  t.equal(c.code, 2);
  t.match(c.stderr, /--format 'erf' is not pcapng or pcap/);
  const node = `pwn-${LAB}-node1`;
  const url = 'http://198.18.0.2:8080';
  const code = async (q: string): Promise<string> => (await net.exec(node, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `${url}${q}`])).stdout;
  t.equal(await code('/capture?wire=r9/eth1'), '404', 'unknown wire end: 404');
  t.equal(await code('/capture?wire=r1/eth1&format=xx'), '400', 'unknown format: 400');
  t.equal(await code('/capture'), '400', 'no wire: 400');
  t.equal(await code('/nothing'), '404');
  const ok = await net.exec(node, 'curl', ['-s', '-D', '-', '-o', '/dev/null', `${url}/capture?wire=r1/eth1`]);
  t.match(ok.stdout, /content-disposition: attachment; filename="pwtcap-node1-r1_eth1-\d{8}T\d{6}\.pcapng"/i);
});

t.test('a stalled reader loses capture data, never wire frames', async (t) => {
  const before = await statusJson(LAB);
  const dropsBefore = Object.values(before.wires[0]!.drops).flatMap((d) => Object.values(d)).reduce((a, b) => a + Number(b), 0);
  // curl follows the capture and is then stopped: it reads nothing more.
  const curl = net.spawnIn(`pwn-${LAB}-node1`, 'curl', ['-sN', '-o', '/dev/null', 'http://198.18.0.2:8080/capture?wire=r1/eth1&follow=1']);
  try {
    await sleep(500);
    process.kill(curl.pid!, 'SIGSTOP');
    const server = net.spawnIn(ns('r2'), 'iperf3', ['-s', '-1']);
    await sleep(500);
    const load = await net.exec(ns('r1'), 'iperf3', ['-c', '192.0.2.2', '-u', '-b', '300M', '-l', '1400', '-t', '3', '-J'], { timeoutMs: 30000 });
    server.kill('SIGKILL');
    t.equal(load.code, 0, 'the load ran');
    const after = await waitFor('capture drops counted', async () => {
      const s = await statusJson(LAB);
      return (s.wires[0] as unknown as { ends: Array<{ capture_drops: number }> }).ends[0]!.capture_drops > 0 ? s : undefined;
    });
    const w = after.wires[0]! as unknown as { ends: Array<{ capture_drops: number; drops: Record<string, number> }>; a_to_b: { frames: number } };
    t.ok(w.ends[0]!.capture_drops > 0, `the stalled reader's losses are counted (${w.ends[0]!.capture_drops} frames)`);
    const dropsAfter = w.ends.flatMap((e) => Object.values(e.drops)).reduce((a, b) => a + Number(b), 0);
    t.equal(dropsAfter, dropsBefore, 'the wire counted no drop of its own');
    // iperf3's own count of lost datagrams includes its socket buffer in the
    // pod overflowing; what the wire owes is delivery to the interface.
    const res = JSON.parse(load.stdout) as { end: { sum: { packets: number } } };
    const delivered = w.a_to_b.frames - before.wires[0]!.a_to_b.frames;
    t.ok(delivered >= res.end.sum.packets, `the wire delivered all ${res.end.sum.packets} datagrams into r2/eth1 (${delivered} frames)`);
  } finally {
    try {
      process.kill(curl.pid!, 'SIGCONT');
    } catch {
      /* gone */
    }
    curl.kill('SIGKILL');
  }
});

t.test('a wire end on a node whose daemon cannot be reached: a clear error', async (t) => {
  const s = await statusJson(LAB);
  const sup = JSON.parse(readFileSync(`/run/patchwire/labs/${LAB}/supervisor.json`, 'utf8')) as { pid: number };
  const node2 = s.nodes.find((n) => n.name === 'node2')!;
  // Hold the supervisor so it does not restart the daemon at once.
  process.kill(sup.pid, 'SIGSTOP');
  try {
    process.kill(node2.pid, 'SIGKILL');
    await sleep(300);
    const r = await pw('capture', LAB, 'r1/eth1', 'r2/eth1');
    t.equal(r.code, 1);
    t.match(r.stderr, /the daemon of node node2 cannot be reached/);
  } finally {
    process.kill(sup.pid, 'SIGCONT');
  }
  await waitFor('node2 back', async () => (await statusJson(LAB)).nodes.every((n) => n.healthy));
  const again = await pw('capture', LAB, 'r2/eth1', '--count', '1', '--format', 'pcap', '-w', path.join(net.dir, 'back.pcap'));
  t.equal(again.code, 0, 'capture works again once the daemon is back');
});

t.test('down after captures leaves nothing', async (t) => {
  await pwOk('down', LAB);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false });
});
