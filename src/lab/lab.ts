// Lab mode on one machine: pods are network namespaces, each emulated node
// is a namespace with its own daemon process, and every link is a wire.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';

import { ControlClient } from '../control/client.js';
import { errorFromGrpc } from '../control/service.js';
import { NotFound } from '../errors.js';
import { ensureTokenFile, LAB_TOKEN_FILE } from '../capture/auth.js';
import type { PbWireStatus } from '../control/convert.js';
import { type EndImpairments, endImpairFromPb } from '../dataplane/impair.js';
import type { EndpointSpec } from '../endpoint/endpoint.js';
import { pidsInNamespaces } from '../netns/ip.js';
import { PACKAGE_ROOT } from '../paths.js';
import { loadTopology } from '../topology/load.js';
import type { LabModel, LinkEnd, LinkModel, SegmentModel } from '../topology/model.js';
import { carrierPod, endpointFor, labModeProblems, type NodeWire, resolveLink, resolveSegment, segmentUid } from '../topology/resolve.js';
import { makeLabIdentities } from '../tls/identity.js';
import { buildUnderlay, createNamespaces, deleteNamespaces, netnsList } from './plumb.js';
import { pool, Progress } from './progress.js';
import { startVm, vmEndpoint, vmNics, vmPaths, vmPid } from './vm.js';
import {
  alive,
  labDir,
  labNameProblem,
  type LabNode,
  type LabPod,
  type LabState,
  type LabVm,
  makeNode,
  podNs,
  readLab,
  readSupervisor,
  underlayNs,
  writeLab,
} from './state.js';

const CLI = `${PACKAGE_ROOT}/bin/patchwire.js`;

export class LabError extends Error {}

/** iproute2 for the few steps made once per lab (not per link or pod). */
function ipq(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function labNameFor(model: LabModel, file: string, name?: string): string {
  const n = name ?? model.name ?? path.basename(file).replace(/\.(clab\.)?ya?ml$/, '').replace(/[^a-z0-9_]/gi, '_').toLowerCase();
  const p = labNameProblem(n);
  if (p) throw new LabError(`${p}; choose one with --name`);
  return n;
}

/** Places pods on nodes: pinned pods where pinned, the rest round-robin in file order. */
export function placePods(model: LabModel, nodes: number, existing: LabPod[], lab: string): LabPod[] {
  const out: LabPod[] = [];
  const have = new Map(existing.map((p) => [p.name, p]));
  let rr = existing.length;
  for (const pod of model.pods) {
    const prev = have.get(pod.name);
    if (prev) {
      out.push(prev);
      continue;
    }
    let node: string;
    if (pod.node) {
      const idx = Number(pod.node.slice(4));
      if (idx > nodes) throw new LabError(`pod ${pod.name} is pinned to ${pod.node}, but the lab has ${nodes} nodes`);
      node = pod.node;
    } else node = `node${(rr++ % nodes) + 1}`;
    out.push({ name: pod.name, ns: podNs(lab, pod.name), node });
  }
  return out;
}

class Clients {
  private readonly map = new Map<string, ControlClient>();
  constructor(private readonly state: LabState) {}
  node(name: string): LabNode {
    const n = this.state.nodes.find((x) => x.name === name);
    if (!n) throw new LabError(`lab ${this.state.name} has no node ${name}`);
    return n;
  }
  get(name: string): ControlClient {
    let c = this.map.get(name);
    if (!c) {
      c = new ControlClient(this.node(name).control);
      this.map.set(name, c);
    }
    return c;
  }
  close(): void {
    for (const c of this.map.values()) c.close();
  }
}

function podOf(state: LabState, name: string): LabPod {
  const p = state.pods.find((x) => x.name === name);
  if (!p) throw new LabError(`lab ${state.name} has no pod ${name}`);
  return p;
}

/**
 * The machine's own namespace under a name the daemons can open (they run
 * in the emulated nodes' namespaces): `host` link ends live there. Not a
 * pod namespace: nothing is ever killed or deleted inside it.
 */
function hostNs(lab: string): string {
  return `pwh-${lab}`;
}

/** Where a pod runs (its node's name and data-plane address), for the resolver. */
function podPlace(state: LabState, clients: Clients, pod: string): { node: string; address: string } {
  const node = clients.node(podOf(state, pod).node);
  return { node: node.name, address: node.address };
}

/** A link end's endpoint: a host end in the machine's namespace, a VM's NIC its QEMU tap, else a pod interface. */
function labEndpoint(state: LabState, end: LinkEnd): EndpointSpec {
  if (end.kind === 'host') return endpointFor(end, 'host', hostNs(state.name));
  const p = podOf(state, end.pod);
  return p.vm ? vmEndpoint(state.name, p, endpointFor(end, p.name, p.ns)) : endpointFor(end, p.name, p.ns);
}

/** Adds each node's wire of one link or segment; on a failure takes back those added (half a link is no link). */
async function addNodeWires(clients: Clients, wires: NodeWire[], uid: number): Promise<void> {
  const added: string[] = [];
  try {
    for (const w of wires) {
      await clients.get(w.node).addWire(w.spec);
      added.push(w.node);
    }
  } catch (err) {
    for (const n of added) await clients.get(n).removeWire(uid).catch(() => undefined);
    throw err;
  }
}

/** A shared segment's member ends on each node holding some (a node's first one added, then its peers'). */
async function addSegment(state: LabState, clients: Clients, seg: SegmentModel & { uid: number }): Promise<void> {
  const wires = resolveSegment(seg, { wireId: seg.uid, place: (pod) => podPlace(state, clients, pod), endpoint: (end) => labEndpoint(state, end) });
  try {
    await addNodeWires(clients, wires, seg.uid);
  } catch (err) {
    throw new LabError(`segment ${seg.name} (${seg.where}): ${(err as Error).message}`);
  }
}

/** The model's segments with their wire ids. */
function segmentsOf(model: LabModel): Array<SegmentModel & { uid: number }> {
  return model.segments.map((s, i) => ({ ...s, uid: segmentUid(i) }));
}

/**
 * Adds the model's segments (but those in `kept`) and waits until each is
 * up. Re-running `up` on a running lab keeps a segment whose members are
 * unchanged; a changed one is re-created whole (the reconcile removes every
 * wire id it does not keep).
 */
async function addSegments(state: LabState, clients: Clients, model: LabModel, progress: Progress, kept = new Set<number>()): Promise<void> {
  const segs = segmentsOf(model).filter((s) => !kept.has(s.uid));
  if (segs.length === 0) return;
  state.segments = state.segments ?? [];
  for (const s of segs) {
    progress.update(`segment ${s.name}: ${s.members.map((m) => `${m.pod}:${m.intf}`).join(', ')}`);
    await addSegment(state, clients, s);
    state.segments.push(s);
    writeLab(state);
  }
  progress.update(`waiting for ${segs.length} segments to come up`, true);
  const pulled = new Set(segs.filter((s) => s.members.some((m) => m.cable === 'pulled')).map((s) => s.uid));
  await waitWiresUp(state, clients, new Set(segs.map((s) => s.uid).filter((u) => !pulled.has(u))), 30000);
}

async function addLink(state: LabState, clients: Clients, link: LinkModel): Promise<void> {
  const wires = resolveLink(link, { wireId: link.uid, place: (pod) => podPlace(state, clients, pod), endpoint: (end) => labEndpoint(state, end) });
  await addNodeWires(clients, wires, link.uid);
}

/** The wire ids each node's daemon holds (restoring ones too: the daemon retries them itself). */
async function heldWires(state: LabState, clients: Clients): Promise<Map<string, Set<number>>> {
  const out = new Map<string, Set<number>>();
  await Promise.all(state.nodes.map(async (n) => out.set(n.name, new Set((await clients.get(n.name).listWires()).map((w) => Number(w.spec.uid))))));
  return out;
}

/** Whether every node a member of the segment lives on holds its wire id. */
function segmentHeld(state: LabState, held: Map<string, Set<number>>, seg: SegmentModel & { uid: number }): boolean {
  return seg.members.every((m) => held.get(podOf(state, m.pod).node)?.has(seg.uid) ?? false);
}

/** Whether every node an end of `link` lives on holds its wire. */
function linkHeld(state: LabState, held: Map<string, Set<number>>, link: LinkModel): boolean {
  // A host end lives on its carrier pod's node (as removeLink and addLink place it).
  const nodes = [carrierPod(link, 'a'), carrierPod(link, 'b')].map((p) => state.pods.find((x) => x.name === p)?.node);
  return nodes.every((n) => n !== undefined && held.get(n)?.has(link.uid));
}

async function removeLink(state: LabState, clients: Clients, link: LinkModel): Promise<void> {
  const nodes = new Set([podOf(state, carrierPod(link, 'a')).node, podOf(state, carrierPod(link, 'b')).node]);
  for (const n of nodes) {
    await clients.get(n).removeWire(link.uid).catch((err: unknown) => {
      if (!(errorFromGrpc(err) instanceof NotFound)) throw err;
    });
  }
}

function startSupervisor(state: LabState): void {
  const log = openSync(path.join(labDir(state.name), 'supervisor.log'), 'a');
  const child = spawn(process.execPath, [CLI, 'supervise', state.name], { detached: true, stdio: ['ignore', log, log] });
  child.unref();
}

async function waitHealthy(state: LabState, clients: Clients, timeoutMs = 60000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const node of state.nodes) {
    for (;;) {
      try {
        await clients.get(node.name).health(1000);
        break;
      } catch (err) {
        if (Date.now() > deadline) {
          let tail = '';
          try {
            tail = readFileSync(node.log, 'utf8').trim().split('\n').slice(-5).join('\n');
          } catch {
            /* no log yet */
          }
          throw new LabError(`daemon on ${node.name} did not start: ${(err as Error).message}${tail ? `\n${tail}` : ''}`);
        }
        await sleep(100);
      }
    }
  }
}

/**
 * Gives each VM pod of the model its guest: started when it is not running,
 * started again when its NICs changed (QEMU has no NIC hot-plug here). Runs
 * before the links are added: the daemons read the taps QEMU creates.
 */
function ensureVms(state: LabState, model: LabModel, progress: Progress): void {
  for (const m of model.pods) {
    const pod = state.pods.find((p) => p.name === m.name);
    if (!pod) continue;
    if (!m.vm) {
      delete pod.vm;
      continue;
    }
    const want: LabVm = { spec: m.vm, nics: vmNics(state.name, m.name, model.links) };
    const running = vmPid(state.name, pod.name);
    if (running && JSON.stringify(pod.vm) === JSON.stringify(want)) continue;
    if (running) process.kill(running, 'SIGKILL');
    pod.vm = want;
    writeLab(state);
    progress.update(`starting VM ${pod.name} (${want.nics.length} NICs)`, true);
    startVm(state.name, { ...pod, vm: want });
  }
}

/** Whether a link's cable is declared pulled at either end (`state: down`). */
function declaredDown(l: LinkModel): boolean {
  return l.a.cable === 'pulled' || l.b.cable === 'pulled';
}

/**
 * Waits until every wire carries: both ends have carrier, so what the pods
 * send from now on crosses (nothing is lost to a wire still coming up).
 * A link declared down is ready once its ends know the cable is out.
 */
async function waitWiresUp(state: LabState, clients: Clients, uids: Set<number>, timeoutMs = 30000, pulled = new Set<number>()): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lists = await Promise.all(state.nodes.map((n) => clients.get(n.name).listWires()));
    const down = new Set<number>();
    const ready = (w: PbWireStatus): boolean =>
      pulled.has(w.spec.uid) ? w.ends.every((e) => e.carrier?.cable === 'CABLE_STATE_PULLED' || e.carrier?.far === 'pulled') : w.state === 'WIRE_STATE_UP' && w.ends.every((e) => e.carrier?.on);
    for (const l of lists) for (const w of l) if (uids.has(w.spec.uid) && !ready(w)) down.add(w.spec.uid);
    if (down.size === 0) return;
    if (Date.now() > deadline) throw new LabError(`wires still down after ${timeoutMs / 1000}s: ${[...down].slice(0, 10).join(', ')}`);
    await sleep(100);
  }
}

export interface UpOptions {
  file: string;
  name?: string;
  nodes?: number;
  quiet?: boolean;
  /** capture ring per wire end for the lab's daemons */
  captureRingBytes?: number;
  /** SCHED_RR priority for the lab's daemons (0 or absent: normal scheduling) */
  rtPriority?: number;
  /** no TLS between the lab's daemons (set when the lab is created) */
  plainText?: boolean;
}

export interface UpResult {
  state: LabState;
  created: boolean;
  added: number;
  removed: number;
  kept: number;
  /** links in the lab file that a daemon no longer held, added again (counted in added too) */
  repaired: number;
  seconds: number;
}

/** The link without its declared cable state: a changed `state:` is applied to the running wire, not by re-creating it. */
function withoutCable(l: LinkModel): LinkModel {
  const strip = ({ cable: _c, ...e }: LinkModel['a']): LinkModel['a'] => e;
  return { ...l, a: strip(l.a), b: strip(l.b) };
}

/** Same wire: a changed cable state or changed impairments are applied to the running wire (applyCableChanges, applyImpairChanges). */
function sameLink(x: LinkModel, y: LinkModel): boolean {
  const norm = (l: LinkModel): unknown => ({ ...withoutCable(l), impair: undefined, impairments: undefined });
  return JSON.stringify(norm(x)) === JSON.stringify(norm(y));
}

/**
 * A kept link whose declared impairments changed gets the new ones on each
 * end in place (SetImpair / ResetImpair): its wire keeps carrying frames.
 */
async function applyImpairChanges(state: LabState, clients: Clients, model: LinkModel, was: LinkModel): Promise<boolean> {
  if (JSON.stringify(model.impair ?? {}) === JSON.stringify(was.impair ?? {})) return false;
  for (const side of ['a', 'b'] as const) {
    const end = model[side];
    const node = podOf(state, carrierPod(model, side)).node;
    const name = `${end.kind === 'host' ? 'host' : end.pod}/${end.intf}`;
    for (const dir of ['in', 'out'] as const) {
      const want = model.impair?.[side]?.[dir];
      const had = was.impair?.[side]?.[dir];
      if (JSON.stringify(want ?? null) === JSON.stringify(had ?? null)) continue;
      if (want) await clients.get(node).setImpair(name, dir, want);
      else await clients.get(node).resetImpair(name, dir);
    }
  }
  return true;
}

/**
 * Applies a changed `state: up|down` of a kept link: pulls the cable at the
 * ends newly declared down, plugs it at the ends no longer declared down.
 * A cable pulled by hand stays as it is while the file does not change it.
 */
async function applyCableChanges(state: LabState, clients: Clients, model: LabModel, kept: Set<number>): Promise<number> {
  let changed = 0;
  for (const next of model.links) {
    const prev = state.links.find((l) => l.uid === next.uid);
    if (!prev || !kept.has(next.uid)) continue;
    for (const which of ['a', 'b'] as const) {
      if ((prev[which].cable === 'pulled') === (next[which].cable === 'pulled')) continue;
      const node = podOf(state, carrierPod(next, which)).node;
      const end = next[which].kind === 'host' ? `host/${next[which].intf}` : `${next[which].pod}/${next[which].intf}`;
      await clients.get(node).setLinkCable(end, next[which].cable !== 'pulled');
      changed++;
    }
    // Only the cable state is taken from the file here; impairments are
    // recorded once applied (applyImpairChanges), so a failure there is retried.
    const cableOf = (e: LinkModel['a']): Pick<LinkModel['a'], 'cable'> => (e.cable ? { cable: e.cable } : {});
    const strip = ({ cable: _c, ...e }: LinkModel['a']): LinkModel['a'] => e;
    state.links = state.links.map((l) => (l.uid === next.uid ? { ...l, a: { ...strip(l.a), ...cableOf(next.a) }, b: { ...strip(l.b), ...cableOf(next.b) } } : l));
  }
  if (changed) writeLab(state);
  return changed;
}

/** Brings a lab up, or reconciles a running one with an edited file. */
export async function up(o: UpOptions): Promise<UpResult> {
  const t0 = Date.now();
  const model = await loadTopology(o.file); // validation before anything is created
  const name = labNameFor(model, o.file, o.name);
  const unsupported = labModeProblems(model);
  if (unsupported.length) throw new LabError(`${o.file}: cannot be built in lab mode yet:\n${unsupported.join('\n')}`);
  const progress = new Progress(o.quiet);
  const existing = readLab(name);
  if (existing) return reconcile(existing, model, o, progress, t0);

  const nodeCount = o.nodes ?? 2;
  if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > 64) throw new LabError(`--nodes ${o.nodes} must be 1 to 64`);
  const pods = placePods(model, nodeCount, [], name);
  const taken = netnsList();
  for (const p of pods) if (taken.has(p.ns)) throw new LabError(`network namespace ${p.ns} already exists (left from another run? 'patchwire down ${name}' removes it)`);
  const state: LabState = {
    version: 1,
    name,
    file: path.resolve(o.file),
    created: new Date().toISOString(),
    underlay: underlayNs(name),
    nodes: Array.from({ length: nodeCount }, (_, i) => {
      const n = makeNode(name, i + 1);
      if (o.plainText) delete n.tls;
      return n;
    }),
    pods,
    links: [],
    ...(o.captureRingBytes !== undefined ? { captureRingBytes: o.captureRingBytes } : {}),
    ...(o.rtPriority ? { rtPriority: o.rtPriority } : {}),
  };
  const clients = new Clients(state);
  try {
    progress.update(`creating ${nodeCount} nodes`, true);
    mkdirSync(labDir(name), { recursive: true, mode: 0o755 });
    writeLab(state); // written first, so 'down' can clean up whatever follows
    // One identity per node: a daemon proves which node it is to its peers.
    if (!o.plainText) await makeLabIdentities(path.join(labDir(name), 'tls'), name, state.nodes.map((n) => n.name));
    // The lab's capture credential: only its owner can read it (SECURITY.md).
    ensureTokenFile(path.join(labDir(name), LAB_TOKEN_FILE));
    await buildUnderlay(state);
    startSupervisor(state);
    // The pods' namespaces are made while the daemons start.
    progress.update(`creating ${pods.length} pods`, true);
    await Promise.all([createNamespaces(pods.map((p) => p.ns)), waitHealthy(state, clients)]);
    if (model.links.some((l) => l.a.kind === 'host' || l.b.kind === 'host')) ipq('netns', 'attach', hostNs(name), String(process.pid));
    ensureVms(state, model, progress);
    await addLinks(state, clients, model.links, progress);
    await addSegments(state, clients, model, progress);
    runExecs(state, model, progress);
    progress.done();
    return { state, created: true, added: model.links.length, removed: 0, kept: 0, repaired: 0, seconds: (Date.now() - t0) / 1000 };
  } catch (err) {
    progress.done();
    clients.close();
    await down(name, { quiet: true }).catch(() => undefined);
    throw err;
  } finally {
    clients.close();
  }
}

/**
 * Runs each pod's exec commands (containerlab's exec) once its links are up,
 * in file order, through sh in the pod's namespace. As in containerlab, a
 * failing command is reported and the lab stays up.
 */
function runExecs(state: LabState, model: LabModel, progress: Progress): void {
  for (const pod of model.pods) {
    for (const cmd of pod.exec ?? []) {
      const p = podOf(state, pod.name);
      progress.update(`exec on ${pod.name}: ${cmd}`, true);
      const r = spawnSync('ip', ['netns', 'exec', p.ns, 'sh', '-c', cmd], { encoding: 'utf8' });
      const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
      if (r.status !== 0) process.stderr.write(`patchwire: exec on ${pod.name} failed (exit ${r.status ?? r.signal}): ${cmd}${out ? `\n${out}` : ''}\n`);
    }
  }
}

/** Links being added at once over the lab's daemons. */
const LINK_CONCURRENCY = 16;

async function addLinks(state: LabState, clients: Clients, links: LinkModel[], progress: Progress): Promise<void> {
  let done = 0;
  // Each daemon plumbs several links at once (rtnetlink calls on its thread
  // pool, engine and control work on its event loop); the kernel serializes
  // only the rtnetlink part.
  await pool(links, LINK_CONCURRENCY, async (link) => {
    await addLink(state, clients, link);
    state.links.push(link);
    done++;
    progress.update(`wiring [${done}/${links.length}] ${link.a.pod}:${link.a.intf} <-> ${link.b.pod}:${link.b.intf}`);
  });
  state.links.sort((a, b) => a.uid - b.uid);
  writeLab(state);
  progress.update(`waiting for ${links.length} wires to come up`, true);
  await waitWiresUp(state, clients, new Set(links.map((l) => l.uid)), 30000, new Set(links.filter(declaredDown).map((l) => l.uid)));
}

async function reconcile(state: LabState, model: LabModel, o: UpOptions, progress: Progress, t0: number): Promise<UpResult> {
  if (o.nodes !== undefined && o.nodes !== state.nodes.length) {
    throw new LabError(`lab ${state.name} runs on ${state.nodes.length} nodes; the node count cannot change while it is up (down it first)`);
  }
  const clients = new Clients(state);
  try {
    const sup = readSupervisor(state.name);
    if (!alive(sup?.pid)) {
      progress.update('restarting the lab supervisor', true);
      startSupervisor(state);
    }
    await waitHealthy(state, clients);
    const want = new Map(model.links.map((l) => [l.uid, l]));
    const removed = state.links.filter((l) => !want.has(l.uid) || !sameLink(want.get(l.uid)!, l));
    // What the daemons hold, not only what the lab file says: a wire removed
    // behind our back (wire rm, the control API) is added again, and wires
    // the file does not know (an interrupted up) are removed before adding.
    const held = await heldWires(state, clients);
    const missing = state.links.filter((l) => !removed.includes(l) && !linkHeld(state, held, l));
    const keptUids = new Set(state.links.filter((l) => !removed.includes(l) && !missing.includes(l)).map((l) => l.uid));
    const added = model.links.filter((l) => !keptUids.has(l.uid));
    // Segments the file declares as they are (same uid, same members) and the
    // daemons hold are kept: their pods' interfaces, counters and cables stay.
    const sameSeg = (x: SegmentModel, y: SegmentModel): boolean => JSON.stringify(x.members) === JSON.stringify(y.members);
    const newSegs = segmentsOf(model);
    const keptSegs = (state.segments ?? []).filter((g) => {
      const n = newSegs.find((x) => x.uid === g.uid);
      return n !== undefined && sameSeg(n, g) && segmentHeld(state, held, g);
    });
    for (const g of keptSegs) keptUids.add(g.uid);
    await applyCableChanges(state, clients, model, keptUids);
    progress.update(`reconciling: ${added.length} links to add (${missing.length} the daemons lost), ${removed.length} to remove`, true);
    for (const l of [...removed, ...missing]) {
      await removeLink(state, clients, l);
      state.links = state.links.filter((x) => x !== l);
      writeLab(state);
    }
    for (const [node, uids] of held) {
      for (const uid of uids) {
        if (keptUids.has(uid)) continue;
        await clients.get(node).removeWire(uid).catch(() => undefined);
      }
    }
    const wantPods = new Set(model.pods.map((p) => p.name));
    const gone = state.pods.filter((x) => !wantPods.has(x.name)).map((p) => p.ns);
    await stopProcessesIn(gone);
    await deleteNamespaces(gone);
    const pods = placePods(model, state.nodes.length, state.pods.filter((p) => wantPods.has(p.name)), state.name);
    const have = netnsList();
    await createNamespaces(pods.filter((p) => !have.has(p.ns)).map((p) => p.ns));
    state.pods = pods;
    state.file = path.resolve(o.file);
    writeLab(state);
    if (added.some((l) => l.a.kind === 'host' || l.b.kind === 'host') && !netnsList().has(hostNs(state.name))) ipq('netns', 'attach', hostNs(state.name), String(process.pid));
    ensureVms(state, model, progress);
    await addLinks(state, clients, added, progress);
    // Other segments were removed with the wire ids not kept above: made again from the file.
    state.segments = keptSegs;
    await addSegments(state, clients, model, progress, new Set(keptSegs.map((g) => g.uid)));
    writeLab(state);
    for (const l of state.links.filter((x) => keptUids.has(x.uid))) {
      const m = want.get(l.uid);
      if (m && (await applyImpairChanges(state, clients, m, l))) {
        state.links = state.links.map((x) => (x.uid === l.uid ? m : x));
        writeLab(state);
      }
    }
    progress.done();
    return { state, created: false, added: added.length, removed: removed.length, kept: keptUids.size, repaired: missing.length, seconds: (Date.now() - t0) / 1000 };
  } finally {
    progress.done();
    clients.close();
  }
}

/**
 * Stops every process inside the given namespaces (lldpd, iperf3 -D, ...
 * started with exec): they would keep a deleted namespace alive. Returns the
 * pids found.
 */
async function stopProcessesIn(namespaces: string[]): Promise<number[]> {
  const inside = (): number[] => pidsInNamespaces(namespaces);
  const found = inside();
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    for (const pid of inside()) {
      try {
        process.kill(pid, signal);
      } catch {
        /* already gone */
      }
    }
    for (let i = 0; i < 20 && inside().length > 0; i++) await sleep(100);
  }
  return found;
}

function isSupervisor(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('supervise');
  } catch {
    return false;
  }
}

/** Processes of a lab: its supervisor and daemons, found from /proc (a crash may have lost the pid files). */
function labProcesses(name: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    let cmd: string[];
    try {
      cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!cmd.some((a) => a.endsWith('patchwire.js'))) continue;
    const isSup = cmd.includes('supervise') && cmd[cmd.indexOf('supervise') + 1] === name;
    const li = cmd.indexOf('--lab');
    const isDaemon = cmd.includes('daemon') && li >= 0 && cmd[li + 1] === name;
    if (isSup || isDaemon) out.push(Number(d));
  }
  return out;
}

export async function down(name: string, o: { quiet?: boolean } = {}): Promise<{ namespaces: number; processes: number }> {
  const p = labNameProblem(name);
  if (p) throw new LabError(p);
  // A damaged lab file (truncated by a crash, say) must not keep the lab up:
  // what it would have listed is found by name below.
  let state: LabState | null = null;
  let damaged = '';
  try {
    state = readLab(name);
  } catch (err) {
    damaged = (err as Error).message;
  }
  const dirExists = existsSync(labDir(name));
  // Supervisor first, so it does not restart the daemons we stop; found from
  // /proc, as its pid file may be damaged too.
  const procs = labProcesses(name);
  for (const pid of procs) if (isSupervisor(pid)) process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 50 && labProcesses(name).length > 0; i++) await sleep(100);
  const left = labProcesses(name);
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  const names = new Set<string>();
  if (state) {
    for (const pd of state.pods) names.add(pd.ns);
    for (const n of state.nodes) names.add(n.ns);
    names.add(state.underlay);
  }
  // Namespaces of this lab that the state file does not list (an interrupted
  // up, a damaged lab file). Lab names have no '-', so `pw-LAB-` is this
  // lab's pod prefix and no other lab's.
  for (const ns of netnsList()) {
    if (ns === underlayNs(name) || (ns.startsWith(`pwn-${name}-node`) && /^\d+$/.test(ns.slice(`pwn-${name}-node`.length)))) names.add(ns);
    if (ns.startsWith(podNs(name, ''))) names.add(ns);
  }
  const present = netnsList();
  const podProcs = await stopProcessesIn([...names].filter((ns) => present.has(ns)));
  const removed = await deleteNamespaces([...names].filter((ns) => present.has(ns)));
  // The name of the machine's namespace only: unmounting it leaves the machine's namespace as it was.
  if (netnsList().has(hostNs(name))) await deleteNamespaces([hostNs(name)]);
  rmSync(labDir(name), { recursive: true, force: true });
  if (!state && !dirExists && removed === 0 && procs.length === 0 && podProcs.length === 0) throw new LabError(`no lab named '${name}'`);
  const total = procs.length + podProcs.length;
  if (!o.quiet) process.stderr.write(`lab ${name}: removed ${removed} namespaces and ${total} processes${damaged ? ` (${damaged}: found them by name)` : ''}\n`);
  return { namespaces: removed, processes: total };
}

export interface WireReport {
  uid: number;
  endpoints: [string, string];
  nodes: [string, string];
  /** restoring: a daemon holds it but is re-attaching an end (a host interface vanished or was recreated, or a restart) */
  state: 'up' | 'down' | 'missing' | 'restoring';
  /** why it is not up, when a daemon says */
  message?: string;
  /** 'api': a daemon of the lab holds it but the lab file does not list it (patchwire wire add, the control API) */
  added_by?: 'api';
  a_to_b: { frames: number; bytes: number };
  b_to_a: { frames: number; bytes: number };
  drops: Record<string, Record<string, number>>;
  ends: Array<{
    name: string;
    node: string;
    ifindex: number;
    rx_frames: number;
    rx_bytes: number;
    tx_frames: number;
    tx_bytes: number;
    drops: Record<string, number>;
    capture_drops: number;
    impair: EndImpairments | null;
    impair_held_bytes: number;
    /** what the pod's interface shows, and why; the cable at this end and the far end as its daemon said */
    carrier: { on: boolean; reason: string; cable: 'plugged' | 'pulled'; far: string; changes: number };
  }>;
}

/** A carrier change of a wire end (see `patchwire link events`). */
export interface CarrierEventReport {
  time: string;
  timestamp_us: number;
  uid: number;
  end: string;
  node: string;
  carrier: boolean;
  reason: string;
}

/** A shared segment in status: each member's counters and carrier. */
export interface SegmentReport {
  uid: number;
  name: string;
  /** up: every member present, its daemon connected to the others, its interface with carrier */
  state: 'up' | 'down' | 'missing';
  members: Array<{
    name: string;
    node: string;
    /** frames the member sent into the segment, and frames the segment delivered to it */
    rx_frames: number;
    rx_bytes: number;
    tx_frames: number;
    tx_bytes: number;
    drops: Record<string, number>;
    carrier: { on: boolean; reason: string; cable: 'plugged' | 'pulled' };
  }>;
}

export interface StatusReport {
  name: string;
  file: string;
  nodes: Array<{
    name: string;
    pid: number;
    address: string;
    healthy: boolean;
    restarts: number;
    unknown_wire: number;
    /** the supervisor's view: the daemon keeps exiting soon after each start */
    crash_looping: boolean;
    /** delay before the supervisor's last restart of it, ms */
    backoff_ms: number;
    /** when it last exited, ms since the epoch, newest last */
    exits: number[];
    /** '' or what was wrong with its state file when it started */
    state_file: string;
    /** wires of its state file it has not re-created yet */
    restoring: number;
  }>;
  pods: Array<{ name: string; node: string; netns: string }>;
  /** VM pods: whether QEMU runs, how often the supervisor started it again, where its console is */
  vms: Array<{ name: string; node: string; running: boolean; pid: number; restarts: number; nics: string[]; console: string; console_log: string }>;
  wires: WireReport[];
  /** shared segments (links with more than two members) */
  segments: SegmentReport[];
  /** the latest carrier changes over the lab (at most 20), oldest first */
  carrier_events: CarrierEventReport[];
}

export async function status(name: string): Promise<StatusReport> {
  const state = readLab(name);
  if (!state) throw new LabError(`no lab named '${name}' (see 'patchwire ls')`);
  const sup = readSupervisor(name);
  const supView = (n: string): { crash_looping: boolean; backoff_ms: number; exits: number[] } => ({
    crash_looping: sup?.crashLooping?.[n] ?? false,
    backoff_ms: sup?.backoffMs?.[n] ?? 0,
    exits: sup?.exits?.[n] ?? [],
  });
  const clients = new Clients(state);
  try {
    const nodes: StatusReport['nodes'] = [];
    const wiresByNode = new Map<string, PbWireStatus[]>();
    const events: CarrierEventReport[] = [];
    await Promise.all(
      state.nodes.map(async (n) => {
        try {
          const [h, w, ev] = await Promise.all([clients.get(n.name).health(2000), clients.get(n.name).listWires(), clients.get(n.name).listLinkEvents()]);
          for (const e of ev) {
            const us = Number(e.timestamp_us);
            events.push({ time: new Date(us / 1000).toISOString(), timestamp_us: us, uid: Number(e.uid), end: e.end, node: e.node, carrier: e.carrier, reason: e.reason });
          }
          nodes.push({ name: n.name, pid: h.pid, address: n.address, healthy: true, restarts: sup?.restarts[n.name] ?? 0, unknown_wire: h.unknown_wire, ...supView(n.name), state_file: h.state_file, restoring: h.restoring });
          wiresByNode.set(n.name, w);
        } catch {
          nodes.push({ name: n.name, pid: sup?.daemons[n.name] ?? 0, address: n.address, healthy: false, restarts: sup?.restarts[n.name] ?? 0, unknown_wire: 0, ...supView(n.name), state_file: '', restoring: 0 });
        }
      }),
    );
    nodes.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    type Found = { w: PbWireStatus; e: PbWireStatus['ends'][number] } | undefined;
    const endReport = (x: Found, n: string, node: string): WireReport['ends'][number] => ({
      name: n,
      node,
      ifindex: x?.e.ifindex ?? 0,
      rx_frames: x?.e.counters.rx_frames ?? 0,
      rx_bytes: x?.e.counters.rx_bytes ?? 0,
      tx_frames: x?.e.counters.tx_frames ?? 0,
      tx_bytes: x?.e.counters.tx_bytes ?? 0,
      drops: { ...(x?.e.counters.drops ?? {}) } as unknown as Record<string, number>,
      capture_drops: x?.e.counters.capture_drops ?? 0,
      impair: endImpairFromPb(x?.e.impair) ?? null,
      impair_held_bytes: x?.e.counters.impair_held_bytes ?? 0,
      carrier: {
        on: x?.e.carrier?.on ?? false,
        reason: x ? (x.e.carrier?.reason ?? '') : 'wire end missing',
        cable: x?.e.carrier?.cable === 'CABLE_STATE_PULLED' ? 'pulled' : 'plugged',
        far: x?.e.carrier?.far ?? 'unknown',
        changes: Number(x?.e.carrier?.changes ?? 0),
      },
    });
    const wires: WireReport[] = state.links.map((l) => {
      const pa = podOf(state, carrierPod(l, 'a'));
      const pb = podOf(state, carrierPod(l, 'b'));
      const nameA = `${l.a.pod}/${l.a.intf}`;
      const nameB = `${l.b.pod}/${l.b.intf}`;
      const found = (node: string, end: string): { w: PbWireStatus; e: PbWireStatus['ends'][number] } | undefined => {
        for (const w of wiresByNode.get(node) ?? []) {
          if (w.spec.uid !== l.uid) continue;
          const e = w.ends.find((x) => x.name === end);
          if (e) return { w, e };
        }
        return undefined;
      };
      const ea = found(pa.node, nameA);
      const eb = found(pb.node, nameB);
      // Up: connected, and the pods' interfaces have carrier (a pulled cable is down).
      const restoring = [pa.node, pb.node].flatMap((n) => (wiresByNode.get(n) ?? []).filter((w) => w.spec.uid === l.uid && w.state === 'WIRE_STATE_RESTORING'));
      const message = restoring[0]?.message || (!ea || !eb ? undefined : ea.w.message || eb.w.message || undefined);
      const stateOf = restoring.length ? 'restoring' : !ea || !eb ? 'missing' : ea.w.state === 'WIRE_STATE_UP' && eb.w.state === 'WIRE_STATE_UP' && ea.e.carrier?.on && eb.e.carrier?.on ? 'up' : 'down';
      const ra = endReport(ea, nameA, pa.node);
      const rb = endReport(eb, nameB, pb.node);
      return {
        uid: l.uid,
        endpoints: [nameA, nameB],
        nodes: [pa.node, pb.node],
        state: stateOf,
        ...(message ? { message } : {}),
        // What left the far end's interface is what crossed the wire.
        a_to_b: { frames: rb.tx_frames, bytes: rb.tx_bytes },
        b_to_a: { frames: ra.tx_frames, bytes: ra.tx_bytes },
        drops: { [nameA]: ra.drops, [nameB]: rb.drops },
        ends: [ra, rb],
      };
    });
    const segments: SegmentReport[] = (state.segments ?? []).map((s) => {
      const members = s.members.map((m): SegmentReport['members'][number] & { found: boolean; up: boolean } => {
        const node = podOf(state, m.pod).node;
        const name = `${m.pod}/${m.intf}`;
        const w = (wiresByNode.get(node) ?? []).find((x) => Number(x.spec.uid) === s.uid);
        const e = w?.ends.find((x) => x.name === name);
        return {
          name,
          node,
          rx_frames: Number(e?.counters.rx_frames ?? 0),
          rx_bytes: Number(e?.counters.rx_bytes ?? 0),
          tx_frames: Number(e?.counters.tx_frames ?? 0),
          tx_bytes: Number(e?.counters.tx_bytes ?? 0),
          drops: { ...(e?.counters.drops ?? {}) } as unknown as Record<string, number>,
          carrier: { on: e?.carrier?.on ?? false, reason: e ? (e.carrier?.reason ?? '') : 'segment member missing', cable: e?.carrier?.cable === 'CABLE_STATE_PULLED' ? 'pulled' : 'plugged' },
          found: !!e,
          up: w?.state === 'WIRE_STATE_UP' && !!e?.carrier?.on,
        };
      });
      const segState = members.some((m) => !m.found) ? 'missing' : members.every((m) => m.up) ? 'up' : 'down';
      return { uid: s.uid, name: s.name, state: segState, members: members.map(({ found: _f, up: _u, ...m }) => m) };
    });
    // Wires the daemons hold that the lab file does not list (added by hand:
    // `patchwire wire add`, the control API): shown too, marked as such.
    const known = new Set([...state.links.map((l) => l.uid), ...(state.segments ?? []).map((g) => g.uid)]);
    const extra = new Map<number, Array<{ node: string; w: PbWireStatus }>>();
    for (const [node, ws] of wiresByNode) for (const w of ws) if (!known.has(w.spec.uid)) extra.set(w.spec.uid, [...(extra.get(w.spec.uid) ?? []), { node, w }]);
    for (const [uid, held] of [...extra].sort((a, b) => a[0] - b[0])) {
      const ends = held.flatMap(({ node, w }) => w.ends.map((e) => endReport({ w, e }, e.name, node)));
      const names = held.flatMap(({ w }) => w.ends.map((e) => e.name));
      const far = held.map(({ w }) => w.spec.peer?.node).find((n) => n && !held.some((h) => h.node === n));
      const restoring = held.find(({ w }) => w.state === 'WIRE_STATE_RESTORING');
      const up = !far && held.every(({ w }) => w.state === 'WIRE_STATE_UP') && ends.every((e) => e.carrier.on);
      const message = restoring?.w.message || (far ? `the far end is on ${far}, which holds no wire ${uid}` : held.find(({ w }) => w.message)?.w.message);
      wires.push({
        uid,
        added_by: 'api',
        endpoints: [names[0] ?? '?', names[1] ?? `(${far ?? 'none'})`],
        nodes: [held[0]!.node, held[1]?.node ?? far ?? held[0]!.node],
        state: restoring ? 'restoring' : up ? 'up' : 'down',
        ...(message ? { message } : {}),
        a_to_b: { frames: ends[1]?.tx_frames ?? 0, bytes: ends[1]?.tx_bytes ?? 0 },
        b_to_a: { frames: ends[0]?.tx_frames ?? 0, bytes: ends[0]?.tx_bytes ?? 0 },
        drops: Object.fromEntries(ends.map((e) => [e.name, e.drops])),
        ends,
      });
    }
    events.sort((a, b) => a.timestamp_us - b.timestamp_us);
    const vms = state.pods
      .filter((p) => p.vm)
      .map((p) => {
        const pid = vmPid(name, p.name);
        const paths = vmPaths(name, p.name);
        return { name: p.name, node: p.node, running: pid !== 0, pid, restarts: sup?.vms?.[p.name]?.restarts ?? 0, nics: p.vm!.nics.map((n) => n.intf), console: paths.console, console_log: paths.consoleLog };
      });
    return { name, file: state.file, nodes, pods: state.pods.map((p) => ({ name: p.name, node: p.node, netns: p.ns })), vms, wires, segments, carrier_events: events.slice(-20) };
  } finally {
    clients.close();
  }
}

export function execIn(name: string, pod: string, cmd: string[]): number {
  const state = readLab(name);
  if (!state) throw new LabError(`no lab named '${name}' (see 'patchwire ls')`);
  const p = state.pods.find((x) => x.name === pod);
  if (!p) throw new LabError(`lab ${name} has no pod '${pod}' (pods: ${state.pods.map((x) => x.name).join(', ')})`);
  if (cmd.length === 0) throw new LabError('exec: no command given (patchwire exec LAB POD -- CMD [ARGS...])');
  const r = spawnSync('ip', ['netns', 'exec', p.ns, ...cmd], { stdio: 'inherit' });
  if (r.error) throw new LabError(`exec ${cmd[0]}: ${r.error.message}`);
  return r.status ?? 128 + 1;
}
