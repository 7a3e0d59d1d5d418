// npm run bench:scale [-- --sizes 100,500,1000] [--cluster] [--json]: how patchwire's
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
//               as a percentage of one core (each thread's schedstat), with
//               the frames the wires carried meanwhile (the pods' own)
// --cluster measures the same in cluster mode (bench/scale-cluster.ts).
// Not a timed test: numbers depend on the machine. Writes
// bench/results/scale-latest.json or scale-cluster-latest.json (and a dated copy).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { PACKAGE_ROOT } from '../src/paths.js';
import { ringWithChords } from '../test/helpers/gen.js';
import { measureCluster } from './scale-cluster.js';
import { cpuSeconds, probeAll, round, type Row, rssKb } from './scale-common.js';

const CLI = path.join(PACKAGE_ROOT, 'bin', 'patchwire.js');
const RESULTS = path.join(PACKAGE_ROOT, 'bench', 'results');
const IDLE_SECONDS = 10;
const SETTLE_MS = 5000;

const log = (m: string): void => void process.stderr.write(`bench:scale: ${m}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function args(): { sizes: number[]; json: boolean; cluster: boolean } {
  const argv = process.argv.slice(2);
  let sizes = [100, 500, 1000];
  const i = argv.indexOf('--sizes');
  if (i >= 0) {
    sizes = (argv[i + 1] ?? '').split(',').map(Number);
    if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 4 || n % 2 !== 0 || n > 2000)) {
      throw new Error(`--sizes wants even link counts from 4 to 2000, comma separated (got '${argv[i + 1] ?? ''}')`);
    }
  }
  for (const a of argv) {
    if (a.startsWith('--') && !['--sizes', '--json', '--cluster'].includes(a)) throw new Error(`unknown option ${a} (bench:scale takes --sizes N,N,... --cluster --json)`);
  }
  return { sizes, json: argv.includes('--json'), cluster: argv.includes('--cluster') };
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
    const probe = await probeAll((pod) => `/var/run/netns/pw-${lab}-${pod}`, links, 120000);
    if (probe.reopened.length) log(`${size} links: probe sockets opened again after ${probe.reopened.length > 1 ? 'they' : 'it'} saw nothing for 10 s: ${probe.reopened.join(', ')}`);
    const tFrames = probe.at;
    const firstFrameS = (tFrames - t0) / 1000;
    const pids = labPids(lab);
    // Let the work of bringing the lab up and probing it settle (V8 collects
    // garbage for a few seconds after a burst) before idling is measured.
    await sleep(SETTLE_MS);
    const rssKbNow = pids.daemons.reduce((a, pid) => a + rssKb(pid), 0);
    // What the wires carry meanwhile is not idle: the pods' kernels still
    // send on fresh interfaces. Read before and after, outside the window.
    const carried = async (): Promise<number> =>
      (JSON.parse(await pw('status', lab, '--json')) as { wires: Array<{ a_to_b: { frames: number }; b_to_a: { frames: number } }> }).wires.reduce((a, w) => a + w.a_to_b.frames + w.b_to_a.frames, 0);
    const f0 = await carried();
    log(`${size} links: idling ${IDLE_SECONDS} s`);
    const d0 = cpuSeconds(pids.daemons);
    const s0 = cpuSeconds([pids.supervisor]);
    const w0 = Date.now();
    await sleep(IDLE_SECONDS * 1000);
    const pct = (seconds: number): number => (100 * seconds) / ((Date.now() - w0) / 1000);
    const daemonsCpu = pct(cpuSeconds(pids.daemons) - d0);
    const supCpu = pct(cpuSeconds([pids.supervisor]) - s0);
    const idleFrames = (await carried()) - f0;
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
      idle_frames: idleFrames,
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

function table(rows: Row[]): string {
  const head = ['links', 'pods', 'up s', 'first frame s', 'down s', 'RSS per idle end kB', 'daemons RSS MB (0 wires)', 'idle CPU %', 'frames carried meanwhile'];
  const body = rows.map((r) => [r.links, r.pods, r.up_s, r.first_frame_s, r.down_s, r.rss_per_end_kb, `${r.rss_mb} (${r.baseline_rss_mb})`, r.idle_cpu_pct, r.idle_frames ?? '-'].map(String));
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const lines = all.map((r) => '| ' + r.map((c, i) => c.padEnd(w[i]!)).join(' | ') + ' |');
  lines.splice(1, 0, '|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  const { sizes, json, cluster } = args();
  const rows: Row[] = [];
  if (cluster) {
    for (const size of sizes) {
      rows.push(await measureCluster(size, { idleSeconds: IDLE_SECONDS, settleMs: SETTLE_MS, log }));
      log(JSON.stringify(rows.at(-1)));
    }
  } else {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pwnbs-'));
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
  }
  const mode = cluster ? 'cluster' : 'lab';
  const result = {
    mode,
    machine: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model ?? '', mem_gb: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version },
    date: new Date().toISOString(),
    nodes: 2,
    idle_seconds: IDLE_SECONDS,
    rows,
  };
  mkdirSync(RESULTS, { recursive: true });
  const text = JSON.stringify(result, null, 2) + '\n';
  const base = cluster ? 'scale-cluster' : 'scale';
  writeFileSync(path.join(RESULTS, `${base}-latest.json`), text);
  writeFileSync(path.join(RESULTS, `${base}-${result.date.slice(0, 19).replace(/[:]/g, '')}.json`), text);
  process.stdout.write(json ? text : table(rows));
}

main().catch((err: Error) => {
  process.stderr.write(`bench:scale: ${err.message}\n`);
  process.exit(1);
});
