// npm run bench:scale [-- --sizes 100,500,1000] [--json]: how patchwire's
// lab plumbing and idle wires scale. For each size, a lab of size/2 pods in
// a ring with chords (two links per pod, meshnet Topology objects with an
// address on every end) on 2 emulated nodes is brought up and torn down with
// the CLI, and the bench reports:
//   up          seconds `patchwire up` took
//   first frame seconds from the start of `up` until every wire carried a
//               frame both ways (raw frames sent and read on the pods'
//               interfaces by this process, no spawned tools)
//   down        seconds `patchwire down` took
//   rss/end     daemons' RSS above their own with no wires, per wire end,
//               measured once the wires have carried their frames and idled
//   idle cpu    CPU of the lab's daemons and supervisor over 10 s of idling,
//               as a percentage of one core (from /proc/PID/stat)
// Not a timed test: numbers depend on the machine. Writes
// bench/results/scale-latest.json (and a dated copy).
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { wire, type NativePort } from '../src/native/wire.js';
import { PACKAGE_ROOT } from '../src/paths.js';
import { ringWithChords } from '../test/helpers/gen.js';

const CLI = path.join(PACKAGE_ROOT, 'bin', 'patchwire.js');
const RESULTS = path.join(PACKAGE_ROOT, 'bench', 'results');
const IDLE_SECONDS = 10;
const SETTLE_MS = 5000;
const ETHERTYPE = 0x88b5; // IEEE local experimental: nothing in a pod answers or sends it
const MAGIC = Buffer.from('pwscale!');

const log = (m: string): void => void process.stderr.write(`bench:scale: ${m}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function args(): { sizes: number[]; json: boolean } {
  const argv = process.argv.slice(2);
  let sizes = [100, 500, 1000];
  const i = argv.indexOf('--sizes');
  if (i >= 0) {
    sizes = (argv[i + 1] ?? '').split(',').map(Number);
    if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 4 || n % 2 !== 0 || n > 2000)) {
      throw new Error(`--sizes wants even link counts from 4 to 2000, comma separated (got '${argv[i + 1] ?? ''}')`);
    }
  }
  return { sizes, json: argv.includes('--json') };
}

/** Runs the CLI, progress passed through to our stderr; throws with its stderr on failure. */
function pw(...a: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...a], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      process.stderr.write(d);
    });
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`patchwire ${a.join(' ')} exited ${code}: ${err.trim().split('\n').slice(-5).join('\n')}`))));
  });
}

interface LabPids {
  daemons: number[];
  supervisor: number;
}

/** From the supervisor's file: `ip netns exec` execs the daemon in place, so its pid is the daemon's. */
function labPids(lab: string): LabPids {
  const sup = JSON.parse(readFileSync(`/run/patchwire/labs/${lab}/supervisor.json`, 'utf8')) as { pid: number; daemons: Record<string, number> };
  return { daemons: Object.values(sup.daemons), supervisor: sup.pid };
}

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

function cpuTicks(pids: number[]): number {
  let t = 0;
  for (const pid of pids) {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    t += Number(f[11]) + Number(f[12]); // utime + stime
  }
  return t;
}

function clkTck(): number {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  return Number(r.stdout.trim()) || 100;
}

/** A 64-byte broadcast frame naming the wire and direction it is sent into. */
function probeFrame(uid: number, dir: number): Buffer {
  const f = Buffer.alloc(64);
  f.fill(0xff, 0, 6);
  Buffer.from([0x02, 0x5c, 0, 0, 0, dir]).copy(f, 6);
  f.writeUInt16BE(ETHERTYPE, 12);
  MAGIC.copy(f, 14);
  f.writeUInt32BE(uid, 22);
  f[26] = dir;
  return f;
}

interface ProbeEnd {
  port: NativePort;
  frame: Buffer;
}

/**
 * Sends a probe frame into both ends of every link until each has arrived at
 * the other end; resolves with the time the last one arrived.
 */
async function probeAll(lab: string, links: Array<{ uid: number; a: string; b: string }>, timeoutMs: number): Promise<number> {
  const pending = new Set<string>();
  const ports: ProbeEnd[] = [];
  const hdr = new Int32Array([-1]);
  const off = new Int32Array([0]);
  const len = new Int32Array([64]);
  const open = (end: string, uid: number, dir: number): ProbeEnd => {
    const [pod, intf] = end.split(':') as [string, string];
    const opened = wire.openPacket(intf, `/var/run/netns/pw-${lab}-${pod}`, { vnetHdr: false, bufBytes: 64 << 10 });
    const port = new wire.Port(opened.fd, 'packet', false, 2048, 4);
    port.start((count) => {
      const rx = Buffer.from(port.rx);
      for (let i = 0; i < count; i++) {
        const o = port.meta[2 * i]!;
        const l = port.meta[2 * i + 1]!;
        if (l < 27 || rx.readUInt16BE(o + 12) !== ETHERTYPE || !rx.subarray(o + 14, o + 22).equals(MAGIC)) continue;
        pending.delete(`${rx.readUInt32BE(o + 22)}/${rx[o + 26]}`);
      }
    });
    return { port, frame: probeFrame(uid, dir) };
  };
  try {
    for (const l of links) {
      ports.push(open(l.a, l.uid, 0), open(l.b, l.uid, 1));
      pending.add(`${l.uid}/0`).add(`${l.uid}/1`);
    }
    const deadline = Date.now() + timeoutMs;
    while (pending.size > 0) {
      if (Date.now() > deadline) throw new Error(`${pending.size} wire directions carried no frame within ${timeoutMs / 1000} s: ${[...pending].slice(0, 8).join(', ')}`);
      for (const p of ports) {
        const key = `${p.frame.readUInt32BE(22)}/${p.frame[26]}`;
        if (pending.has(key)) p.port.send(p.frame, hdr, off, len, 1);
      }
      // Frames sent into a wire that is not forwarding yet are lost, so resend
      // to whatever has not arrived; arrivals are read as they come.
      for (let i = 0; i < 10 && pending.size > 0; i++) await sleep(20);
    }
    return Date.now();
  } finally {
    for (const p of ports) p.port.close();
  }
}

interface Row {
  links: number;
  pods: number;
  up_s: number;
  first_frame_s: number;
  down_s: number;
  baseline_rss_mb: number;
  rss_mb: number;
  rss_per_end_kb: number;
  /** daemons, supervisor included; percent of one core */
  idle_cpu_pct: number;
  idle_cpu_pct_daemons: number;
}

async function daemonsBaselineKb(dir: string): Promise<number> {
  // The same daemons with no wires: a lab of two pods and no links.
  const lab = 'pwnbs0';
  const file = path.join(dir, 'empty.clab.yml');
  writeFileSync(file, 'name: empty\ntopology:\n  nodes:\n    a: {}\n    b: {}\n');
  await pw('down', lab).catch(() => undefined);
  await pw('up', '-f', file, '--name', lab, '--nodes', '2', '--json');
  try {
    // As long as the labs below idle: past the daemons' settling after start (src/util/idle-memory.ts).
    await sleep(SETTLE_MS);
    return labPids(lab).daemons.reduce((a, pid) => a + rssKb(pid), 0);
  } finally {
    await pw('down', lab);
  }
}

async function measure(size: number, dir: string, baselineKb: number): Promise<Row> {
  const lab = `pwnbs${size}`;
  const pods = size / 2;
  const { yaml, links } = ringWithChords(pods);
  const file = path.join(dir, `ring${size}.yaml`);
  writeFileSync(file, yaml);
  await pw('down', lab).catch(() => undefined);
  log(`${size} links, ${pods} pods: up`);
  const t0 = Date.now();
  await pw('up', '-f', file, '--name', lab, '--nodes', '2');
  const upS = (Date.now() - t0) / 1000;
  let row: Row;
  try {
    log(`${size} links: probing every wire both ways`);
    const tFrames = await probeAll(lab, links, 120000);
    const firstFrameS = (tFrames - t0) / 1000;
    const pids = labPids(lab);
    // Let the work of bringing the lab up and probing it settle (V8 collects
    // garbage for a few seconds after a burst) before idling is measured.
    await sleep(SETTLE_MS);
    const rssKbNow = pids.daemons.reduce((a, pid) => a + rssKb(pid), 0);
    log(`${size} links: idling ${IDLE_SECONDS} s`);
    const d0 = cpuTicks(pids.daemons);
    const s0 = cpuTicks([pids.supervisor]);
    const w0 = Date.now();
    await sleep(IDLE_SECONDS * 1000);
    const pct = (ticks: number): number => (100 * ticks) / clkTck() / ((Date.now() - w0) / 1000);
    const daemonsCpu = pct(cpuTicks(pids.daemons) - d0);
    const supCpu = pct(cpuTicks([pids.supervisor]) - s0);
    row = {
      links: size,
      pods,
      up_s: round(upS),
      first_frame_s: round(firstFrameS),
      down_s: NaN,
      baseline_rss_mb: round(baselineKb / 1024),
      rss_mb: round(rssKbNow / 1024),
      rss_per_end_kb: round((rssKbNow - baselineKb) / (2 * size)),
      idle_cpu_pct: round(daemonsCpu + supCpu),
      idle_cpu_pct_daemons: round(daemonsCpu),
    };
  } catch (err) {
    await pw('down', lab).catch(() => undefined);
    throw err;
  }
  log(`${size} links: down`);
  const t1 = Date.now();
  await pw('down', lab);
  row.down_s = round((Date.now() - t1) / 1000);
  return row;
}

const round = (x: number): number => Math.round(x * 100) / 100;

function table(rows: Row[]): string {
  const head = ['links', 'pods', 'up s', 'first frame s', 'down s', 'RSS per idle end kB', 'daemons RSS MB (0 wires)', 'idle CPU %'];
  const body = rows.map((r) => [r.links, r.pods, r.up_s, r.first_frame_s, r.down_s, r.rss_per_end_kb, `${r.rss_mb} (${r.baseline_rss_mb})`, r.idle_cpu_pct].map(String));
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const lines = all.map((r) => '| ' + r.map((c, i) => c.padEnd(w[i]!)).join(' | ') + ' |');
  lines.splice(1, 0, '|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  const { sizes, json } = args();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pwnbs-'));
  const rows: Row[] = [];
  try {
    log('daemons with no wires: baseline RSS');
    const baseline = await daemonsBaselineKb(dir);
    for (const size of sizes) {
      rows.push(await measure(size, dir, baseline));
      log(JSON.stringify(rows.at(-1)));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const result = {
    machine: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model ?? '', mem_gb: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version },
    date: new Date().toISOString(),
    nodes: 2,
    idle_seconds: IDLE_SECONDS,
    rows,
  };
  mkdirSync(RESULTS, { recursive: true });
  const text = JSON.stringify(result, null, 2) + '\n';
  writeFileSync(path.join(RESULTS, 'scale-latest.json'), text);
  writeFileSync(path.join(RESULTS, `scale-${result.date.slice(0, 19).replace(/[:]/g, '')}.json`), text);
  process.stdout.write(json ? text : table(rows));
}

main().catch((err: Error) => {
  process.stderr.write(`bench:scale: ${err.message}\n`);
  process.exit(1);
});
