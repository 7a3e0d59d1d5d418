// Capture: ring download of frames sent before anyone asked, follow mode,
// merged captures across nodes in time order, pcap and pcapng read by tshark,
// HTTP errors, and a stalled reader that costs capture data, never wire frames.
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { sendFrames, waitUntil } from './helpers/frames.js';
import { direction, labTraces, pw, pwOk, settledStatus, statusJson } from './helpers/labcli.js';
import { parsePcapng, readPcap, readPcapng } from './helpers/pcap.js';
import { CLI, ROOT, TestNet, run, sh, waitFor, waitListening } from './helpers/testnet.js';

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

/** Frames the kernel dropped sending out of a pod's interface (its own counter, not patchwire's). */
function podTxDropped(netns: string, ifname: string): number {
  const [l] = JSON.parse(sh('ip', '-n', netns, '-s', '-j', 'link', 'show', 'dev', ifname)) as Array<{ stats64: { tx: { dropped: number } } }>;
  return l!.stats64.tx.dropped;
}

/** Running (a zombie, killed but not yet reaped, is not). */
function running(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

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
  const file = path.join(net.dir, 'ring.pcapng');
  // The far end's ring has them once the wire has carried them.
  await waitFor('both rings to hold the frames', async () => {
    await pwOk('capture', LAB, 'r1/eth1', 'r2/eth1', '-w', file);
    const got = readPcapng(file).packets.filter((p) => has(p.data, 'PWTRING'));
    return [0, 1].every((i) => got.filter((p) => p.iface === i).length >= 40);
  });
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

t.test('follow: ring content, then frames sent after the stream is live', async (t) => {
  // Four ends on two daemons: r1/eth1 (node1) -> r2/eth1 (node2), and
  // r3/eth2 -> r1/eth2 (both node1). Read from stdout as it comes.
  const ends = ['r1/eth1', 'r2/eth1', 'r3/eth2', 'r1/eth2'];
  const proc = spawn(process.execPath, [CLI, 'capture', LAB, ...ends, '--follow'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => chunks.push(d));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((r) => proc.once('close', (code) => r(code ?? 128)));
  const sofar = (): ReturnType<typeof parsePcapng> => parsePcapng(Buffer.concat(chunks));
  try {
    // The ring dump comes first: the frames the first test sent.
    await waitFor('the ring dump', () => sofar().packets.some((p) => has(p.data, 'PWTRING')));
    // Probes, one per wire at a time, until the output holds one at every
    // end: from then on the stream is delivering, and the ring dump (a
    // snapshot taken when the capture started) lies behind it.
    let k = 0;
    const probed = await waitUntil(
      async () => {
        const probe = (i: number): Buffer[] => marked(`PWYPROBE${i}`, 1);
        await sendFrames(net, ns('r1'), 'eth1', probe(k));
        await sendFrames(net, ns('r3'), 'eth2', probe(k));
        k++;
        const got = sofar().packets.filter((p) => has(p.data, 'PWYPROBE'));
        return ends.every((_, i) => got.some((p) => p.iface === i)) || proc.exitCode !== null;
      },
      20000,
      200,
    );
    t.ok(probed && proc.exitCode === null, `probes sent after the capture started show up at all four ends (after ${k} rounds), and it is still running`);
    const liveFrom = Date.now() * 1000;
    const live = marked('PWTLIVE', 25);
    await sendFrames(net, ns('r1'), 'eth1', live, 0.002);
    await sendFrames(net, ns('r3'), 'eth2', live, 0.002);
    const counts = (): number[] => ends.map((_, i) => sofar().packets.filter((p) => p.iface === i && has(p.data, 'PWTLIVE')).length);
    await waitUntil(() => counts().every((n) => n >= 25));
    t.same(counts(), [25, 25, 25, 25], 'every live frame, once at each end, arrived through the running follow stream');
    t.equal(proc.exitCode, null, 'while the capture was still following');
    const got = sofar().packets.filter((p) => has(p.data, 'PWTLIVE'));
    t.same(got.filter((p) => p.tsUs < liveFrom), [], 'stamped after the output already held the probes, so not from the ring dump');
    t.same([0, 2].map((i) => got.filter((p) => p.iface === i).every((p) => p.flags === 2)), [true, true], 'outbound at the sending ends');
    t.same([1, 3].map((i) => got.filter((p) => p.iface === i).every((p) => p.flags === 1)), [true, true], 'inbound at the receiving ends');
  } finally {
    if (proc.exitCode === null) proc.kill('SIGINT');
  }
  t.equal(await exited, 0, `Ctrl-C ends a follow capture cleanly ${stderr}`);
  const file = path.join(net.dir, 'follow.pcapng');
  writeFileSync(file, Buffer.concat(chunks));
  const ts = await tshark(file);
  t.equal(ts.warnings, '', 'tshark reads the followed stream without a warning');
  const f = readPcapng(file);
  t.ok(f.packets.every((p, i) => i === 0 || p.tsUs >= f.packets[i - 1]!.tsUs), 'time order across both daemons');
  const firstLive = f.packets.findIndex((p) => has(p.data, 'PWTLIVE'));
  const lastRing = f.packets.map((p) => has(p.data, 'PWTRING')).lastIndexOf(true);
  t.ok(lastRing >= 0 && firstLive > lastRing, 'the ring content comes before the live frames');
});

t.test('follow with --duration ends by itself', async (t) => {
  const file = path.join(net.dir, 'duration.pcapng');
  const r = await pw('capture', LAB, 'r2/eth1', '--follow', '--duration', '1', '-w', file);
  t.equal(r.code, 0, r.stderr);
  t.equal(readPcapng(file).packets.filter((p) => has(p.data, 'PWTRING')).length, 40, 'with the ring content');
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
  // The lab's capture token (test/capture-auth.test.ts checks what happens without it).
  const auth = ['-H', `Authorization: Bearer ${readFileSync(`/run/patchwire/labs/${LAB}/capture.token`, 'utf8').trim()}`];
  const code = async (q: string): Promise<string> => (await net.exec(node, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', ...auth, `${url}${q}`])).stdout;
  t.equal(await code('/capture?wire=r9/eth1'), '404', 'unknown wire end: 404');
  t.equal(await code('/capture?wire=r1/eth1&format=xx'), '400', 'unknown format: 400');
  t.equal(await code('/capture'), '400', 'no wire: 400');
  t.equal(await code('/nothing'), '404');
  const ok = await net.exec(node, 'curl', ['-s', '-D', '-', '-o', '/dev/null', ...auth, `${url}/capture?wire=r1/eth1`]);
  t.match(ok.stdout, /content-disposition: attachment; filename="pwtcap-node1-r1_eth1-\d{8}T\d{6}\.pcapng"; filename\*=UTF-8''pwtcap-node1-r1_eth1-\d{8}T\d{6}\.pcapng/i);
});

t.test('a stalled reader loses capture data, never wire frames', async (t) => {
  // curl follows the capture of r1/eth1 and is then stopped: it reads nothing more.
  const followed = path.join(net.dir, 'stalled.pcapng');
  const token = readFileSync(`/run/patchwire/labs/${LAB}/capture.token`, 'utf8').trim();
  const curl = net.spawnIn(`pwn-${LAB}-node1`, 'curl', ['-sN', '-o', followed, '-H', `Authorization: Bearer ${token}`, 'http://198.18.0.2:8080/capture?wire=r1/eth1&follow=1']);
  const server = net.spawnIn(ns('r2'), 'iperf3', ['-s', '-1']);
  try {
    // Attached: the ring dump (frames of the first test) has reached the file.
    await waitFor('curl to get the ring dump', () => (statSync(followed, { throwIfNoEntry: false })?.size ?? 0) > 0 && parsePcapng(readFileSync(followed)).packets.some((p) => has(p.data, 'PWTRING')));
    process.kill(curl.pid!, 'SIGSTOP');
    await waitListening(ns('r2'), 5201);
    const before = await settledStatus(LAB);
    const podBefore = podTxDropped(ns('r1'), 'eth1');
    const load = await net.exec(ns('r1'), 'iperf3', ['-c', '192.0.2.2', '-u', '-b', '300M', '-l', '1400', '-t', '3', '-J'], { timeoutMs: 30000 });
    t.equal(load.code, 0, `the load ran ${load.stderr}`);
    const after = await settledStatus(LAB);
    const [a, b] = after.wires[0]!.ends;
    const [a0, b0] = before.wires[0]!.ends;
    t.ok(a.capture_drops > a0.capture_drops, `the stalled reader's losses are counted (${a.capture_drops - a0.capture_drops} frames)`);
    // What the wire owes, whatever the machine's load: every frame it read
    // from r1/eth1 was written into r2/eth1 or counted as dropped with a cause.
    const d = direction(a, b, { from: a0, to: b0 });
    t.equal(d.read, d.delivered + d.dropped, `r1/eth1 -> r2/eth1: ${d.read} frames read = ${d.delivered} delivered + ${d.dropped} dropped with a cause (${JSON.stringify(a.drops)} / ${JSON.stringify(b.drops)})`);
    // And every datagram iperf3 sent reached the daemon or was counted by a
    // kernel on the way (the daemon's socket: kernel_ring; the pod's veth).
    const res = JSON.parse(load.stdout) as { end: { sum: { packets: number } } };
    const veth = podTxDropped(ns('r1'), 'eth1') - podBefore;
    t.ok(res.end.sum.packets <= d.read + d.kernel + veth, `${res.end.sum.packets} datagrams sent <= ${d.read} read + ${d.kernel} kernel_ring/truncated + ${veth} dropped by the pod's veth`);
    t.comment(`stalled reader under 300 Mbit/s: ${d.delivered} of ${d.read} frames delivered, ${d.dropped} dropped by cause, ${d.kernel} in the kernel`);
  } finally {
    server.kill('SIGKILL');
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
    // Gone (a zombie until the held supervisor reaps it; its sockets are closed).
    await waitFor('node2 daemon to die', () => !running(node2.pid));
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
