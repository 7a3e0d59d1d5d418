// Real network namespaces for tests: emulated nodes on a shared underlay,
// pod namespaces, and real daemon processes. Every name starts with the
// test's own prefix, and everything is removed on teardown, on failure too.
import './product-env.js';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ControlClient } from '../../src/control/client.js';
import type { EndpointSpec } from '../../src/endpoint/endpoint.js';
import type { WireSpec } from '../../src/dataplane/wire.js';
import { pidsInNetns } from '../../src/netns/ip.js';
import { PACKAGE_ROOT } from '../../src/paths.js';

// The package root also when these helpers run compiled, from dist/ (bench:scale --cluster).
export const ROOT = PACKAGE_ROOT;
export const CLI = path.join(ROOT, 'bin', 'patchwire.js');
const DATA_PORT = 7000;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; never throws on a non-zero exit. */
export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // a command that exits early closes its stdin
    child.stdin.end(opts.input ?? '');
  });
}

export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(everyMs);
  }
}

/**
 * Waits until something in network namespace `ns` listens on TCP `port`
 * (an iperf3 server, say): readiness, instead of sleeping and hoping.
 */
export async function waitListening(ns: string, port: number, timeoutMs = 15000): Promise<void> {
  await waitFor(`a listener on port ${port} in ${ns}`, async () => (await run('ip', ['netns', 'exec', ns, 'ss', '-Hltn', `sport = :${port}`])).stdout.trim() !== '', timeoutMs);
}

export interface TestNode {
  name: string;
  ns: string;
  ip: string;
  address: string;
  control: string;
  state: string;
  log: string;
  proc: ChildProcess | null;
  client: ControlClient;
}

export class TestNet {
  readonly dir: string;
  readonly nodes = new Map<string, TestNode>();
  readonly pods: string[] = [];
  private readonly underlay: string;
  private cleaned = false;
  private readonly exitHook = (): void => this.cleanupSync();

  /** `prefix` must be unique per test file and short (names are limited to 15 bytes). */
  constructor(readonly prefix: string, readonly lab = 'test') {
    TestNet.removeLeftovers(prefix);
    this.dir = mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
    // lldpd's unprivileged half must reach its control socket in here.
    chmodSync(this.dir, 0o755);
    this.underlay = `${prefix}ul`;
    sh('ip', 'netns', 'add', this.underlay);
    sh('ip', '-n', this.underlay, 'link', 'add', 'br0', 'type', 'bridge');
    sh('ip', '-n', this.underlay, 'link', 'set', 'br0', 'up');
    process.on('exit', this.exitHook);
  }

  /**
   * Namespaces and daemons of an earlier run that died before its teardown,
   * and any process still inside one of the namespaces (a tool a test started
   * there can outlive its handle: an lldpd monitor was once found orphaned in
   * a deleted namespace, its parent gone). Deleting a namespace does not end
   * its processes, so they are killed first.
   */
  static removeLeftovers(prefix: string): void {
    spawnSyncQuiet('pkill', ['-9', '-f', `patchwire.js daemon --node ${prefix}`]);
    for (const ns of listNetns()) {
      if (!ns.startsWith(prefix)) continue;
      for (const pid of pidsInNetns(ns)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      spawnSyncQuiet('ip', ['netns', 'del', ns]);
    }
  }

  /** An emulated node: a namespace on the underlay, with a daemon in it. */
  /** `wrap`: a command the daemon runs under, inside the node's namespace (e.g. to drop capabilities). */
  async addNode(short: string, opts: { start?: boolean; extraArgs?: string[]; wrap?: string[] } = {}): Promise<TestNode> {
    const index = this.nodes.size + 1;
    const ns = `${this.prefix}${short}`;
    const ip = `198.18.0.${index}`;
    sh('ip', 'netns', 'add', ns);
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    sh('ip', '-n', this.underlay, 'link', 'add', `u${index}`, 'type', 'veth', 'peer', 'name', 'ul0', 'netns', ns);
    sh('ip', '-n', this.underlay, 'link', 'set', `u${index}`, 'master', 'br0', 'up');
    sh('ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'ul0');
    sh('ip', '-n', ns, 'link', 'set', 'ul0', 'up');
    const control = `unix://${this.dir}/${short}.sock`;
    const node: TestNode = {
      name: ns,
      ns,
      ip,
      address: `${ip}:${DATA_PORT}`,
      control,
      state: path.join(this.dir, `${short}.state.json`),
      log: path.join(this.dir, `${short}.log`),
      proc: null,
      client: new ControlClient(control),
    };
    this.nodes.set(short, node);
    if (opts.start !== false) await this.startDaemon(node, opts.extraArgs, opts.wrap);
    return node;
  }

  daemonArgs(node: TestNode, extra: string[] = []): string[] {
    return ['daemon', '--node', node.name, '--lab', this.lab, '--listen', node.address, '--control', node.control, '--state', node.state, ...(extra.length ? extra : ['--insecure'])];
  }

  async startDaemon(node: TestNode, extra: string[] = [], wrap: string[] = []): Promise<void> {
    const log = openSync(node.log, 'a');
    node.proc = spawn('ip', ['netns', 'exec', node.ns, ...wrap, process.execPath, CLI, ...this.daemonArgs(node, extra)], { stdio: ['ignore', log, log] });
    const proc = node.proc;
    await waitFor(`daemon ${node.name} to answer`, async () => {
      if (proc.exitCode !== null) throw new Error(`daemon ${node.name} exited: ${readFileSync(node.log, 'utf8')}`);
      return (await node.client.health(500)).pid > 0;
    });
  }

  /** Kills a daemon (SIGKILL by default) and waits until it is gone. */
  async killDaemon(node: TestNode, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const proc = node.proc;
    // signalCode: a daemon a signal already ended (a sanitizer abort) would never emit 'exit' again.
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await exited;
    node.proc = null;
  }

  addPod(name: string): string {
    const ns = `${this.prefix}${name}`;
    sh('ip', 'netns', 'add', ns);
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    this.pods.push(ns);
    return ns;
  }

  endpoint(kind: EndpointSpec['kind'], podNs: string, ifname: string, o: Partial<EndpointSpec> = {}): EndpointSpec {
    return { kind, pod: podNs, netns: podNs, ifname, mac: '', mtu: 0, ips: [], ...o };
  }

  /** Adds both ends of a cross-node wire. */
  async crossWire(uid: number, a: TestNode, ea: EndpointSpec, b: TestNode, eb: EndpointSpec): Promise<void> {
    const sa: WireSpec = { uid, local: ea, peer: { node: b.name, address: b.address } };
    const sb: WireSpec = { uid, local: eb, peer: { node: a.name, address: a.address } };
    await a.client.addWire(sa);
    await b.client.addWire(sb);
    await waitFor(`wire ${uid} up`, async () => {
      const [wa, wb] = await Promise.all([a.client.listWires(), b.client.listWires()]);
      return wa.find((w) => w.spec.uid === uid)?.state === 'WIRE_STATE_UP' && wb.find((w) => w.spec.uid === uid)?.state === 'WIRE_STATE_UP';
    });
  }

  async localWire(uid: number, n: TestNode, ea: EndpointSpec, eb: EndpointSpec): Promise<void> {
    await n.client.addWire({ uid, local: ea, localPeer: eb });
  }

  exec(ns: string, cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
    return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
  }

  /** Starts a long-running command in a namespace. */
  spawnIn(ns: string, cmd: string, args: string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  async cleanup(): Promise<void> {
    // Under `npm run test:asan` daemons are asked to stop first, so they exit
    // through exit() and LeakSanitizer checks them (symbolizing hundreds of V8
    // records takes several daemons on two cores 20 s and more); SIGKILL
    // follows for any left after 120 s.
    if (process.env.PATCHWIRE_TEST_GRACEFUL_STOP === '1') {
      await Promise.all(
        [...this.nodes.values()].map(async (n) => {
          const proc = n.proc;
          if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
          const exited = new Promise((r) => proc.once('exit', r));
          proc.kill('SIGTERM');
          await Promise.race([exited, sleep(120000)]);
        }),
      );
    }
    for (const n of this.nodes.values()) {
      n.client.close();
      await this.killDaemon(n).catch(() => undefined);
    }
    this.cleanupSync();
  }

  cleanupSync(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    process.off('exit', this.exitHook);
    for (const n of this.nodes.values()) if (n.proc && n.proc.exitCode === null) n.proc.kill('SIGKILL');
    TestNet.removeLeftovers(this.prefix);
    // `npm run test:asan` keeps the daemons' logs: UBSan reports land on their stderr.
    const keep = process.env.PATCHWIRE_TEST_KEEP_LOGS;
    if (keep) {
      for (const n of this.nodes.values()) {
        try {
          copyFileSync(n.log, path.join(keep, `${path.basename(this.dir)}-${path.basename(n.log)}`));
        } catch {
          /* a node whose daemon never started has no log */
        }
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs a clean-up command, ignoring its failure (nothing to remove). */
export function spawnSyncQuiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
  } catch {
    /* nothing to remove */
  }
}

export function listNetns(): string[] {
  return sh('ip', 'netns', 'list')
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);
}

export function links(ns: string): string[] {
  const out = ns ? sh('ip', '-n', ns, '-o', 'link', 'show') : sh('ip', '-o', 'link', 'show');
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(':')[1]!.trim().split('@')[0]!)
    .sort();
}

/** The `details` of a gRPC call that must fail ('' and a thrown error if it succeeded). */
export async function rejectionDetails(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { details?: string }).details ?? String(err);
  }
  throw new Error('the call succeeded but was expected to fail');
}
