// `patchwire supervise LAB`: keeps one daemon per emulated node running. A
// daemon that dies (kill -9, crash) is started again; it restores its wires
// from its state file and re-attaches to the pods' interfaces.
import { type ChildProcess, spawn } from 'node:child_process';
import { type FSWatcher, openSync, statSync, watch } from 'node:fs';
import path from 'node:path';

import { PACKAGE_ROOT } from '../paths.js';
import { ensureTokenFile, LAB_TOKEN_FILE } from '../capture/auth.js';
import { TapHolder } from '../endpoint/tap-holder.js';
import { labDir, type LabNode, readLab, type SupervisorState, writeSupervisor } from './state.js';
import { labTapEnds } from './tap-ends.js';
import { startVm, vmPid } from './vm.js';

const CLI = `${PACKAGE_ROOT}/bin/patchwire.js`;
/**
 * V8's GC helper threads compete with the data plane and the pods for a
 * node's cores; doing GC on the daemon's own thread gave 16% more TCP and a
 * 29% lower loaded ping p99 in five alternating runs on 2 cores (README).
 * bin/patchwire.js's shebang passes the same flag.
 */
const DAEMON_NODE_FLAGS = ['--single-threaded-gc'];

/** Each lab daemon proves its node with its own certificate (made by `up`, removed by `down`). */
function dataPlaneSecurity(node: LabNode): string[] {
  return node.tls ? ['--tls-cert', node.tls.cert, '--tls-key', node.tls.key, '--tls-ca', node.tls.ca] : ['--insecure'];
}

/**
 * Restart delays: 200 ms doubling to 30 s while a daemon keeps dying within
 * STABLE_MS of its start (a bad flag or state would otherwise restart it five
 * times a second forever); one that ran STABLE_MS is restarted after 200 ms.
 */
export const RESTART_MS = { first: 200, max: 30000 };
const STABLE_MS = 10000;
/** how often VM pods' QEMU processes are checked */
const VM_CHECK_MS = 500;
/** how often a lab without VM pods is checked for new ones */
const LAB_CHECK_MS = 5000;
/** exits of a daemon kept in supervisor.json, and how many young ones in a row make a crash loop */
const EXITS_KEPT = 10;
const CRASH_LOOP_EXITS = 3;

export function daemonArgs(lab: string, node: LabNode, ringBytes?: number, rtPriority?: number): string[] {
  const ring = ringBytes === undefined ? [] : ['--capture-ring-bytes', String(ringBytes)];
  const rt = rtPriority ? ['--rt-priority', String(rtPriority)] : [];
  return ['daemon', '--node', node.name, '--lab', lab, '--listen', node.address, '--control', node.control, '--state', node.state, ...dataPlaneSecurity(node), ...(node.http ? ['--http', node.http, '--capture-token-file', path.join(labDir(lab), LAB_TOKEN_FILE)] : []), ...ring, ...rt];
}

export async function superviseMain(argv: string[]): Promise<void> {
  const lab = argv[0];
  if (!lab) throw new Error('supervise: lab name required');
  const state = readLab(lab);
  if (!state) throw new Error(`supervise: no lab named '${lab}'`);
  // Labs made before capture tokens existed get one here.
  ensureTokenFile(path.join(labDir(lab), LAB_TOKEN_FILE));
  const sup: SupervisorState = { pid: process.pid, daemons: {}, restarts: {}, backoffMs: {}, exits: {}, crashLooping: {} };
  const children = new Map<string, ChildProcess>();
  /** per node: exits in a row that came soon after their start */
  const young = new Map<string, number>();
  let stopping = false;

  const start = (node: LabNode): void => {
    const log = openSync(node.log, 'a');
    const startedAt = Date.now();
    const child = spawn('ip', ['netns', 'exec', node.ns, process.execPath, ...DAEMON_NODE_FLAGS, CLI, ...daemonArgs(lab, node, state.captureRingBytes, state.rtPriority)], { stdio: ['ignore', log, log] });
    children.set(node.name, child);
    sup.daemons[node.name] = child.pid ?? 0;
    writeSupervisor(lab, sup);
    child.on('exit', (code, signal) => {
      if (stopping) return;
      const n = node.name;
      sup.restarts[n] = (sup.restarts[n] ?? 0) + 1;
      sup.exits[n] = [...(sup.exits[n] ?? []), Date.now()].slice(-EXITS_KEPT);
      // A daemon that ran a while had a one-off crash: restart it soon. One
      // that keeps dying young is crash-looping: wait twice as long each time.
      const ranMs = Date.now() - startedAt;
      young.set(n, ranMs < STABLE_MS ? (young.get(n) ?? 0) + 1 : 0);
      const delay = Math.min(RESTART_MS.first * 2 ** Math.max(0, young.get(n)! - 1), RESTART_MS.max);
      sup.backoffMs[n] = delay;
      sup.crashLooping[n] = young.get(n)! >= CRASH_LOOP_EXITS;
      writeSupervisor(lab, sup);
      process.stderr.write(`supervise: daemon ${n} exited (${signal ?? code}) after ${ranMs} ms; restarting in ${delay} ms${sup.crashLooping[n] ? ' (crash-looping)' : ''}\n`);
      setTimeout(() => {
        if (stopping) return;
        start(node);
        // A restored daemon may re-create taps (a pod's namespace re-made): hold the new ones.
        taps.reconcile();
      }, delay);
    });
  };
  for (const node of state.nodes) start(node);
  // Taps keep their carrier while their daemon restarts (see src/endpoint/tap-holder.ts).
  const taps = new TapHolder(labTapEnds(lab), (m) => process.stderr.write(`supervise: ${m}\n`));
  taps.start();

  // VM pods: a guest whose QEMU is gone (crashed, killed, powered off) is
  // started again; its daemon re-attaches the recreated taps by itself.
  // The lab file is read each time: `up` adds and changes VMs.
  sup.vms = {};
  const vms = sup.vms;
  const startedAt = new Map<string, number>();
  const youngVmExits = new Map<string, number>();
  // The lab file is parsed again only when it changed (a lab without VMs
  // costs one stat per check). A lab without VM pods is checked every
  // LAB_CHECK_MS, and within VM_CHECK_MS of a write to lab.json: `up` writes
  // its VMs there after starting us, and a guest that died before we first
  // saw it running would never be restarted.
  let cached: { mtimeMs: number; lab: ReturnType<typeof readLab> } | null = null;
  const watchVms = (): void => {
    if (stopping) return;
    let current;
    try {
      const mtimeMs = statSync(path.join(labDir(state.name), 'lab.json')).mtimeMs;
      if (cached?.mtimeMs !== mtimeMs) cached = { mtimeMs, lab: readLab(state.name) };
      current = cached.lab;
    } catch {
      return;
    }
    if (!current) return;
    nextVmCheckMs = current.pods.some((p) => p.vm) ? VM_CHECK_MS : LAB_CHECK_MS;
    let changed = false;
    for (const pod of current.pods) {
      if (!pod.vm) continue;
      const v = (vms[pod.name] ??= { pid: 0, restarts: 0 });
      const pid = vmPid(current.name, pod.name);
      if (pid) {
        if (v.pid !== pid) {
          v.pid = pid;
          startedAt.set(pod.name, startedAt.get(pod.name) ?? Date.now());
          changed = true;
        }
        continue;
      }
      // Started by `up` (or by us) before, and gone now; a guest that keeps
      // dying young (a bad image, a QEMU that cannot start) is started again
      // after a delay doubling up to 30 s, like a crash-looping daemon.
      if (v.pid === 0 && !v.lastExit) continue;
      if (v.pid !== 0) {
        v.pid = 0;
        v.lastExit = Date.now();
        const young = Date.now() - (startedAt.get(pod.name) ?? 0) < STABLE_MS;
        youngVmExits.set(pod.name, young ? (youngVmExits.get(pod.name) ?? 0) + 1 : 0);
        changed = true;
      }
      const n = youngVmExits.get(pod.name) ?? 0;
      const delay = n === 0 ? 0 : Math.min(RESTART_MS.first * 2 ** (n - 1), RESTART_MS.max);
      if (Date.now() - (v.lastExit ?? 0) < delay) continue;
      v.restarts++;
      changed = true;
      startedAt.set(pod.name, Date.now());
      // Counted before QEMU writes its new pidfile: status must never show the
      // new guest with the old count (seen in CI: pid new, restarts 0).
      writeSupervisor(current.name, sup);
      try {
        v.pid = startVm(current.name, { ...pod, vm: pod.vm });
        process.stderr.write(`supervise: VM ${pod.name} was gone; started again (pid ${v.pid})\n`);
      } catch (err) {
        v.lastExit = Date.now();
        youngVmExits.set(pod.name, n + 1);
        process.stderr.write(`supervise: VM ${pod.name} was gone; starting it again failed: ${(err as Error).message}\n`);
      }
    }
    if (changed) writeSupervisor(current.name, sup);
  };
  let nextVmCheckMs = VM_CHECK_MS;
  let vmTimer: NodeJS.Timeout | null = null;
  let vmDueAt = 0;
  const scheduleVmCheck = (ms: number): void => {
    if (vmTimer) clearTimeout(vmTimer);
    vmDueAt = Date.now() + ms;
    (vmTimer = setTimeout(vmTick, ms)).unref();
  };
  const vmTick = (): void => {
    watchVms();
    if (!stopping) scheduleVmCheck(nextVmCheckMs);
  };
  scheduleVmCheck(VM_CHECK_MS);
  let labWatch: FSWatcher | null = null;
  try {
    // lab.json is replaced by a rename: watch its directory. `up` writes it
    // once per step (a thousand times for a big lab), so a write brings the
    // next check forward to VM_CHECK_MS at most, never to at once.
    labWatch = watch(labDir(state.name), (_event, file) => {
      if (file !== 'lab.json' || stopping) return;
      if (vmDueAt - Date.now() > VM_CHECK_MS) scheduleVmCheck(VM_CHECK_MS);
    });
    labWatch.unref();
  } catch {
    // no inotify: the periodic check alone
  }

  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    taps.stop();
    labWatch?.close();
    const pending = [...children.values()].filter((c) => c.exitCode === null && c.signalCode === null);
    let left = pending.length;
    if (left === 0) process.exit(0);
    for (const c of pending) {
      c.once('exit', () => --left === 0 && process.exit(0));
      c.kill('SIGTERM');
    }
    setTimeout(() => {
      for (const c of pending) c.kill('SIGKILL');
      process.exit(0);
    }, 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Stay alive; children keep the loop busy.
  await new Promise(() => undefined);
}
