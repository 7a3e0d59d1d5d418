// Cluster mode: the daemon watches Topology objects and pods, wires the pods
// of its own node (pod namespaces come from the CNI plugin), and writes each
// of its pods' Topology status. Loaded only in cluster mode, so lab mode
// never needs a cluster or the Kubernetes client.
import { existsSync } from 'node:fs';
import type net from 'node:net';

import * as k8s from '@kubernetes/client-node';

import type { Daemon, WireState } from '../daemon/daemon.js';
import type { WireSpec } from '../dataplane/wire.js';
import { linkExists } from '../netns/ip.js';
import { type CniAttachment, CNI_ERR, CniError, type CniRequest } from '../cni/protocol.js';
import { startCniServer } from '../cni/server.js';
import { ApiClient } from './api.js';
import { ensureGuestTap, KUBEVIRT_GROUP, KUBEVIRT_VERSION, LAUNCHER_UID_LABEL, VMI_PLURAL, type VmiInfo, vmiInfo } from './kubevirt.js';
import {
  computePlan,
  type LinkStatus,
  type Plan,
  type PlannedTopology,
  type PodInfo,
  sameWireSpec,
  TOPOLOGY_GROUP,
  TOPOLOGY_PLURAL,
  TOPOLOGY_VERSION,
  type TopologyObject,
  type TopologyStatus,
} from './plan.js';
import { podKey, PodRegistry, type RegisteredPod } from './registry.js';
import { serialized } from '../util/serial.js';

export interface ClusterOptions {
  /** kubeconfig file; absent: $KUBECONFIG, ~/.kube/config or the in-cluster service account */
  kubeconfig?: string;
  /** port the peer daemons listen on (on their host IPs) */
  dataPort: number;
  cniSocket: string;
  /** full reconcile period (retries failed plumbing), ms */
  resyncMs?: number;
  /** how often wire states are compared with the written status, ms */
  statusMs?: number;
  /** a CNI registration without a pod object is dropped after this long, ms */
  orphanGraceMs?: number;
  /**
   * every API request must be answered within this, ms; watches ask the
   * server to end them after five times as long (see api.ts)
   */
  apiTimeoutMs?: number;
}

const PLUMB_PARALLEL = 8;
/** status is written while a pod's plumbing goes on: every this many wires, or each second */
const PROGRESS_EVERY = 25;
/** how long CNI ADD waits for a new pod's object to be watched (to know a KubeVirt launcher) */
const GUEST_POD_WAIT_MS = 2000;

function podInfo(p: k8s.V1Pod): PodInfo {
  const phase = p.status?.phase;
  return {
    namespace: p.metadata?.namespace ?? 'default',
    name: p.metadata?.name ?? '',
    uid: p.metadata?.uid ?? '',
    nodeName: p.spec?.nodeName ?? '',
    hostIP: p.status?.hostIP ?? '',
    gone: !!p.metadata?.deletionTimestamp || phase === 'Succeeded' || phase === 'Failed',
    ...(p.metadata?.labels ? { labels: p.metadata.labels } : {}),
    // RFC 3339 as the API sends it (the watch gives JSON, not Dates): compared as text.
    ...(p.metadata?.creationTimestamp ? { created: String(p.metadata.creationTimestamp) } : {}),
  };
}

/** Restarts an informer after an error, backing off to 30 s; relists happen inside on 410 Gone. */
class Watched<T extends k8s.KubernetesObject> {
  synced = false;
  lastError = '';
  private backoff = 500;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** an optional API's 404 (not installed) was said once */
  private saidMissing = false;
  readonly informer: k8s.ListWatch<T>;

  /** `optional`: the API may not be installed (KubeVirt): its 404 is said once, and retried quietly */
  constructor(
    readonly what: string,
    api: ApiClient,
    path: string,
    onChange: () => void,
    log: (m: string) => void,
    readonly optional = false,
  ) {
    const listed = async (): Promise<k8s.KubernetesListObject<T>> => {
      const r = await api.list<T>(path);
      // The informer applies the list right after this resolves; onChange is debounced past that.
      this.synced = true;
      this.lastError = '';
      this.backoff = 500;
      onChange();
      return r;
    };
    this.informer = new k8s.ListWatch<T>(path, api.watcher(), listed, false);
    this.informer.on('add', onChange);
    this.informer.on('update', onChange);
    this.informer.on('delete', onChange);
    this.informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      const e = err as { message?: string; code?: string | number; statusCode?: number };
      this.lastError = `${e.message ?? String(err)}${e.statusCode ? ` (HTTP ${e.statusCode})` : ''}`;
      const missing = optional && e.statusCode === 404;
      if (!missing || !this.saidMissing) log(`watch of ${what} failed: ${this.lastError}; ${missing ? 'not installed? retrying quietly' : `retrying in ${this.backoff} ms`}`);
      if (missing) this.saidMissing = true;
      this.timer = setTimeout(() => {
        this.timer = null;
        if (!this.stopped) this.informer.start().catch(() => undefined);
      }, this.backoff);
      this.backoff = Math.min(this.backoff * 2, 30000);
    });
  }

  start(): void {
    this.informer.start().catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.informer.stop();
  }
}

/** Per end of a wire (local, local peer): whether its cable is declared pulled. */
function declaredCables(spec: WireSpec): boolean[] {
  return [spec.local.cable === 'pulled', spec.localPeer?.cable === 'pulled'];
}

export class ClusterController {
  readonly registry = new PodRegistry();
  private readonly kc = new k8s.KubeConfig();
  private api!: ApiClient;
  private topologies!: Watched<k8s.KubernetesObject>;
  private pods!: Watched<k8s.V1Pod>;
  private vmis!: Watched<k8s.KubernetesObject>;
  /** why each KubeVirt VM named by a Topology cannot be reached, as last logged */
  private vmiLogged = new Map<string, string>();
  /** taps of KubeVirt VMs that could not be made, by "netns\0ifname" */
  private tapErrors = new Map<string, string>();
  private cni: net.Server | null = null;
  private plan: Plan = { wires: new Map(), topologies: [], taps: [], vmiWaiting: new Map() };
  /** grows with every plan computed */
  private planRevision = 0;
  /** grows with every event that asks for a reconcile */
  private triggers = 0;
  /** reconcileInputs() after the last complete reconcile */
  private reconciled = '';
  /** what the last complete status pass was made of (doWriteStatuses) */
  private statusInputs = '';
  /** plumbing failures by wire id, shown in status until a retry succeeds */
  private readonly plumbErrors = new Map<number, string>();
  /** status last written per Topology, to patch only changes */
  private readonly written = new Map<string, string>();
  /** cable state each wire's ends were declared with at the last reconcile (true: pulled) */
  private readonly declared = new Map<number, boolean[]>();
  /** why a declared cable state or impairment could not be applied, by wire id */
  private readonly declareErrors = new Map<number, string>();
  /** first time a registration was seen without its pod object */
  private readonly orphanSince = new Map<string, number>();
  private running: Promise<void> | null = null;
  private again = false;
  private debounce: NodeJS.Timeout | null = null;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private readonly log: (m: string) => void;

  constructor(
    private readonly daemon: Daemon,
    private readonly opts: ClusterOptions,
    log?: (m: string) => void,
  ) {
    this.log = log ?? ((m) => process.stderr.write(`[${daemon.opts.node}] ${m}\n`));
    // Credentials first: a daemon that cannot reach its cluster should not start at all.
    try {
      if (opts.kubeconfig) this.kc.loadFromFile(opts.kubeconfig);
      else this.kc.loadFromDefault();
    } catch (err) {
      throw new Error(`kubeconfig ${opts.kubeconfig ?? process.env.KUBECONFIG ?? '(default)'}: ${(err as Error).message}`);
    }
    if (!this.kc.getCurrentCluster()) throw new Error('no Kubernetes API server configured (give --kubeconfig, set KUBECONFIG, or run in a pod)');
    // Registered before the daemon starts, so its restore brings the pods back too.
    daemon.addStateSection('cniPods', this.registry);
  }

  /** Call after daemon.start(): its restored wires are then the starting point. */
  async start(): Promise<void> {
    const requestMs = this.opts.apiTimeoutMs ?? 60000;
    this.api = new ApiClient(this.kc, { requestMs, watchSeconds: Math.max(1, Math.round((requestMs * 5) / 1000)) });
    const changed = (): void => this.schedule();
    this.topologies = new Watched('Topology objects', this.api, `/apis/${TOPOLOGY_GROUP}/${TOPOLOGY_VERSION}/${TOPOLOGY_PLURAL}`, changed, this.log);
    this.pods = new Watched('pods', this.api, '/api/v1/pods', changed, this.log);
    // KubeVirt VMs as link ends: optional, a cluster without KubeVirt is fine.
    this.vmis = new Watched('VirtualMachineInstances', this.api, `/apis/${KUBEVIRT_GROUP}/${KUBEVIRT_VERSION}/${VMI_PLURAL}`, changed, this.log, true);
    this.daemon.notReady = () => this.notReady();
    this.cni = await startCniServer(this.opts.cniSocket, (req) => this.handleCni(req), this.log);
    this.topologies.start();
    this.pods.start();
    this.vmis.start();
    this.timers.push(setInterval(() => this.resync(), this.opts.resyncMs ?? 10000));
    this.timers.push(setInterval(() => void this.writeStatuses().catch(() => undefined), this.opts.statusMs ?? 2000));
    this.log(`cluster mode: API ${this.kc.getCurrentCluster()!.server}, CNI socket ${this.opts.cniSocket}`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    if (this.debounce) clearTimeout(this.debounce);
    this.cni?.close();
    await Promise.all([this.topologies?.stop(), this.pods?.stop(), this.vmis?.stop()]);
    await this.running?.catch(() => undefined);
  }

  /** The Topology objects and pods as last listed (null before both are): the browser view draws the lab from them. */
  listed(): { topologies: TopologyObject[]; pods: Map<string, PodInfo> } | null {
    if (!this.topologies?.synced || !this.pods?.synced) return null;
    return { topologies: this.topologies.informer.list() as TopologyObject[], pods: this.podMap() };
  }

  notReady(): string | null {
    for (const w of [this.topologies, this.pods]) {
      if (!w.synced) return `${w.what} not listed yet${w.lastError ? `: ${w.lastError}` : ''}`;
    }
    return null;
  }

  /**
   * The periodic pass: skipped while nothing changed since the last complete
   * reconcile (no event, no wire or carrier change) and nothing waits for a
   * retry. Planning 1000 links every 10 s for nothing was most of an idle
   * node's CPU.
   */
  private resync(): void {
    const retries = this.plumbErrors.size + this.declareErrors.size + this.tapErrors.size + this.orphanSince.size + this.plan.vmiWaiting.size + this.plan.taps.length;
    if (retries === 0 && this.reconcileInputs() === this.reconciled) return;
    this.schedule();
  }

  private reconcileInputs(): string {
    return `${this.triggers}/${this.daemon.statesRevision()}`;
  }

  /** Coalesces bursts of events into one reconcile. */
  private schedule(): void {
    this.triggers++;
    if (this.stopped || this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = null;
      void this.reconcileNow();
    }, 50);
  }

  /** Runs a reconcile now, or right after the one under way. */
  reconcileNow(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          await this.reconcile();
        } catch (err) {
          this.log(`reconcile failed: ${(err as Error).message}`);
        }
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private podMap(): Map<string, PodInfo> {
    const out = new Map<string, PodInfo>();
    for (const p of this.pods.informer.list()) {
      const info = podInfo(p);
      out.set(podKey(info.namespace, info.name), info);
    }
    return out;
  }

  private vmiMap(): Map<string, VmiInfo> | null {
    if (!this.vmis.synced) return null;
    const out = new Map<string, VmiInfo>();
    for (const o of this.vmis.informer.list()) {
      const v = vmiInfo(o as Parameters<typeof vmiInfo>[0]);
      out.set(podKey(v.namespace, v.name), v);
    }
    return out;
  }

  private computePlan(pods = this.podMap()): Plan {
    return computePlan({
      node: this.daemon.opts.node,
      dataPort: this.opts.dataPort,
      topologies: this.topologies.informer.list() as TopologyObject[],
      pods,
      registry: (ns, pod) => this.registry.get(ns, pod),
      vmis: this.vmiMap(),
    });
  }

  /** one tap check at a time: CNI ADD and a reconcile may both find a tap missing */
  private tapQueue: Promise<void> = Promise.resolve();

  /** Makes the taps of this node's KubeVirt VMs that are missing (`netns`: only that namespace's); failures by netns and name. */
  private ensureTaps(plan: Plan, netns?: string): Promise<void> {
    const run = this.tapQueue.then(() => this.doEnsureTaps(plan, netns));
    this.tapQueue = run.catch(() => undefined);
    return run;
  }

  private async doEnsureTaps(plan: Plan, netns?: string): Promise<void> {
    for (const tap of plan.taps) {
      if (netns !== undefined && tap.netns !== netns) continue;
      const key = `${tap.netns}\0${tap.ifname}`;
      try {
        if (await ensureGuestTap(tap)) this.log(`made tap ${tap.ifname} for KubeVirt VM ${tap.vmi} (${tap.netns})`);
        this.tapErrors.delete(key);
      } catch (err) {
        if (this.tapErrors.get(key) !== (err as Error).message) this.log((err as Error).message);
        this.tapErrors.set(key, (err as Error).message);
      }
    }
  }

  private async reconcile(): Promise<void> {
    if (!this.topologies.synced || !this.pods.synced) return;
    // What this pass starts from: a change made while it runs (a wire added
    // through the control API mid-plumbing) is not taken as reconciled.
    const inputs = this.reconcileInputs();
    const pods = this.podMap();
    this.dropOrphans(pods);
    const plan = this.computePlan(pods);
    this.plan = plan;
    this.planRevision++;
    // Said once per change: a Topology naming a VM that is not there (yet).
    for (const [vmi, why] of plan.vmiWaiting) if (this.vmiLogged.get(vmi) !== why) this.log(`Topology ${vmi}: ${why}`);
    this.vmiLogged = new Map(plan.vmiWaiting);
    await this.ensureTaps(plan);
    const live = new Set(plan.taps.map((x) => `${x.netns}\0${x.ifname}`));
    for (const k of this.tapErrors.keys()) if (!live.has(k)) this.tapErrors.delete(k);
    const states = this.daemon.wireStates();
    const current = new Map(states.map((w) => [w.spec.uid, w.spec]));
    let touched = false;
    for (const [id, spec] of current) {
      const want = plan.wires.get(id);
      if (want && sameWireSpec(want, spec)) continue;
      touched = true;
      await this.daemon.removeWire(id).catch((err: Error) => this.log(`removing wire ${id}: ${err.message}`));
      current.delete(id);
    }
    for (const id of this.plumbErrors.keys()) if (!plan.wires.has(id)) this.plumbErrors.delete(id);
    for (const m of [this.declared, this.declareErrors]) for (const id of m.keys()) if (!plan.wires.has(id)) m.delete(id);
    // Kept wires: a changed `state:` or impairment is applied in place.
    const restoring = new Set(states.filter((w) => w.state === 'restoring').map((w) => w.spec.uid));
    for (const [id, have] of current) {
      // A wire being restored takes what is declared once it is back.
      if (restoring.has(id)) continue;
      const want = plan.wires.get(id)!;
      try {
        if (this.daemon.applyDeclared(id, want, this.cableChanges(want, have))) touched = true;
        this.declared.set(id, declaredCables(want));
        this.declareErrors.delete(id);
      } catch (err) {
        this.declareErrors.set(id, (err as Error).message);
        this.log(`wire ${id}: ${(err as Error).message}`);
      }
    }
    const todo = [...plan.wires.values()].filter((s) => !current.has(s.uid));
    if (todo.length) {
      touched = true;
      this.log(`plumbing ${todo.length} wire(s)`);
    }
    let lastFlush = Date.now();
    let next = 0;
    let done = 0;
    const worker = async (): Promise<void> => {
      while (next < todo.length && !this.stopped) {
        const spec = todo[next++]!;
        // Its pod was deleted (CNI DEL) after this plan was made: nothing is
        // made in a namespace the runtime is removing.
        if ([spec.local, spec.localPeer].some((e) => e && !this.registry.hasNetns(e.netns))) continue;
        try {
          // A VM's tap that could not be made (a name taken by another interface) fails its wire.
          for (const e of [spec.local, spec.localPeer]) {
            const tapErr = e && this.tapErrors.get(`${e.netns}\0${e.ifname}`);
            if (tapErr) throw new Error(tapErr);
          }
          // attach: interfaces left from before a restart are taken over, not recreated.
          await this.daemon.addWire(spec, { attach: true, persist: false, checkPeer: false });
          this.plumbErrors.delete(spec.uid);
          this.declared.set(spec.uid, declaredCables(spec));
        } catch (err) {
          this.plumbErrors.set(spec.uid, (err as Error).message);
          this.log(`wire ${spec.uid} (${spec.local.pod}/${spec.local.ifname}): ${(err as Error).message}`);
        }
        // Progress for pods with many links shows in their status while plumbing goes on.
        done += 1;
        if (done % PROGRESS_EVERY === 0 || Date.now() - lastFlush > 1000) {
          lastFlush = Date.now();
          await this.writeStatuses().catch(() => undefined);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PLUMB_PARALLEL, todo.length) }, worker));
    if (touched) await this.daemon.persist();
    // Plumbing and declaration errors set or cleared during this pass are part
    // of the statuses: the last pass of a reconcile always rebuilds them.
    this.planRevision++;
    await this.writeStatuses();
    this.reconciled = inputs;
  }

  /**
   * The ends of a running wire whose cable to set: where the declared state
   * (`state: down`) changed since the last reconcile that applied it. A
   * cable pulled by hand (`patchwire link down`) stays pulled while the
   * Topology does not change it, as in lab mode. After a daemon restart
   * nothing was seen yet: the declared state wins where the wire differs
   * (a change made while the daemon was down is applied).
   */
  private cableChanges(want: WireSpec, have: WireSpec): Array<0 | 1> {
    const now = declaredCables(want);
    const was = this.declared.get(want.uid) ?? [have.local.cable === 'pulled', have.localPeer?.cable === 'pulled'];
    return ([0, 1] as const).filter((i) => was[i] !== now[i]);
  }

  /** Registrations whose pod object stays missing (its DEL was missed) are dropped. */
  private dropOrphans(pods: Map<string, PodInfo>): void {
    const now = Date.now();
    const grace = this.opts.orphanGraceMs ?? 30000;
    let dropped = false;
    const seen = new Set<string>();
    for (const p of this.registry.all()) {
      const key = podKey(p.namespace, p.pod);
      const obj = pods.get(key);
      if (obj && !(p.podUid && obj.uid && p.podUid !== obj.uid && obj.nodeName !== this.daemon.opts.node)) continue;
      seen.add(key);
      const since = this.orphanSince.get(key) ?? now;
      this.orphanSince.set(key, since);
      if (now - since >= grace) {
        this.registry.retain((x) => podKey(x.namespace, x.pod) !== key);
        this.orphanSince.delete(key);
        this.log(`forgetting pod ${key}: its pod object is gone`);
        dropped = true;
      }
    }
    for (const k of this.orphanSince.keys()) if (!seen.has(k)) this.orphanSince.delete(k);
    if (dropped) void this.daemon.persist();
  }

  private linkStatus(t: PlannedTopology, states: Map<number, WireState>): LinkStatus[] {
    return t.links.map((l) => {
      const { blocked, ...base } = l;
      if (blocked) return { ...base, state: blocked.state, message: blocked.message };
      const id = l.wire!;
      const err = this.plumbErrors.get(id);
      if (err) return { ...base, state: 'error', message: err };
      const w = states.get(id);
      if (!w) return { ...base, state: 'pending', message: 'being plumbed' };
      // In the state file but not re-created since the daemon restarted (retried with backoff).
      if (w.state === 'restoring') return { ...base, state: 'pending', message: w.message ?? 'being restored' };
      const declErr = this.declareErrors.get(id);
      if (declErr) return { ...base, plumbed: true, state: 'error', message: declErr };
      // This pod's end: its cable, carrier and effective impairments.
      const i = w.ends.findIndex((e) => e.name === `${t.namespace}/${t.name}/${l.local_intf}`);
      const end = w.ends[i];
      const impair = i >= 0 ? w.spec.impair?.[i === 0 ? 'local' : 'localPeer'] : undefined;
      const plumbed = { ...base, plumbed: true, ...(end ? { cable: end.carrier.cable, carrier: end.carrier.on } : {}), ...(impair ? { impair } : {}) };
      if (end?.carrier.cable === 'pulled') return { ...plumbed, state: 'down', message: 'the cable is pulled at this end' };
      const farPulled = w.spec.peer ? end?.carrier.far === 'pulled' : w.ends[1 - i]?.carrier.cable === 'pulled';
      if (farPulled) return { ...plumbed, state: 'down', message: `the cable is pulled at the far end (${l.peer_pod}/${l.peer_intf})` };
      if (!w.spec.peer) return { ...plumbed, state: w.state };
      // Up means both ends exist (the far node says so in its pod's status)
      // and the daemons' streams are connected. A missing far end is the
      // likelier cause, and the streams only connect once it exists.
      const far = this.farEnd(t.namespace, l.peer_pod, l.uid);
      if (!far?.plumbed) return { ...plumbed, state: 'down', message: `far end ${l.peer_pod}/${l.peer_intf} on node ${w.spec.peer.node} is not plumbed yet${far?.message ? ` (${far.message})` : ''}` };
      if (w.state !== 'up') return { ...plumbed, state: 'down', message: `peer daemon on node ${w.spec.peer.node} (${w.spec.peer.address}) is not connected` };
      return { ...plumbed, state: 'up' };
    });
  }

  /** The far node's view of a link, from the status it wrote on the peer pod's Topology. */
  private farEnd(namespace: string, pod: string, uid: number): LinkStatus | undefined {
    const obj = this.topologies.informer.get(pod, namespace) as TopologyObject | undefined;
    const links = (obj?.status as { links?: LinkStatus[] } | undefined)?.links;
    return Array.isArray(links) ? links.find((x) => x.uid === uid) : undefined;
  }

  statusOf(t: PlannedTopology, states: Map<number, WireState>): TopologyStatus {
    const links = this.linkStatus(t, states);
    return {
      src_ip: t.pod.hostIP,
      net_ns: t.registered?.netns ?? '',
      container_id: t.registered?.containerId ?? '',
      node: this.daemon.opts.node,
      ready: `${links.filter((l) => l.state === 'up').length}/${links.length}`,
      links,
      ...(t.errors.length ? { errors: t.errors } : {}),
      ...(t.generation !== undefined ? { observedGeneration: t.generation } : {}),
    };
  }

  /** Patches the status of this node's Topology objects where it changed; serialized. */
  readonly writeStatuses = serialized(() => this.doWriteStatuses());

  private async doWriteStatuses(): Promise<void> {
    if (this.stopped) return;
    // Nothing a status is made of changed since the last complete pass: a
    // node with 1000 wire ends would otherwise rebuild every status every 2 s.
    const inputs = `${this.planRevision}/${this.daemon.statesRevision()}`;
    if (inputs === this.statusInputs) return;
    let complete = true;
    const states = new Map(this.daemon.wireStates().map((w) => [w.spec.uid, w]));
    const live = new Set<string>();
    for (const t of this.plan.topologies) {
      // With the uid: a Topology deleted and made again under its name gets its status written.
      const key = `${t.namespace}/${t.name}/${t.uid ?? ''}`;
      live.add(key);
      const status = this.statusOf(t, states);
      const text = JSON.stringify(status);
      if (this.written.get(key) === text) continue;
      try {
        const where = `/apis/${TOPOLOGY_GROUP}/${TOPOLOGY_VERSION}/namespaces/${encodeURIComponent(t.namespace)}/${TOPOLOGY_PLURAL}/${encodeURIComponent(t.name)}/status`;
        // A merge patch keeps keys it does not name: errors that are gone must be removed by name.
        await this.api.request('PATCH', where, { status: { ...status, errors: status.errors ?? null } }, 'application/merge-patch+json');
        this.written.set(key, text);
      } catch (err) {
        const code = (err as { statusCode?: number }).statusCode;
        // Not written: tried again at the next pass (a Topology gone meanwhile is not).
        if (code !== 404) {
          complete = false;
          this.log(`status of Topology ${key}: ${(err as Error).message.split('\n')[0]}`);
        }
      }
    }
    for (const k of this.written.keys()) if (!live.has(k)) this.written.delete(k);
    if (complete) this.statusInputs = inputs;
  }

  /** ADD registers the pod and returns at once; plumbing follows asynchronously. */
  async handleCni(req: CniRequest): Promise<void> {
    const who = `${req.namespace}/${req.pod}`;
    switch (req.command) {
      case 'ADD': {
        if (!existsSync(req.netns)) throw new CniError(CNI_ERR.invalidEnv, `network namespace ${req.netns} does not exist`, 'CNI_NETNS');
        const changed = this.registry.add({ namespace: req.namespace, pod: req.pod, podUid: req.podUid, containerId: req.containerId, netns: req.netns, ifName: req.ifName, network: req.network });
        if (changed) {
          this.log(`CNI ADD ${who} (${req.netns})`);
          await this.daemon.persist();
          this.schedule();
        }
        await this.addGuestTaps(req);
        return;
      }
      case 'DEL': {
        const gone = this.registry.removeContainer(req.containerId);
        if (gone) await this.forget([gone], 'CNI DEL');
        return;
      }
      case 'CHECK':
        return this.check(req);
      case 'STATUS': {
        // CNI 1.1.0: a plugin that cannot serve ADD says so with code 50.
        // ADD would register the pod, but nothing gets wired until the watches have listed.
        const why = this.notReady();
        if (why) throw new CniError(CNI_ERR.notAvailable, `patchwire daemon on node ${this.daemon.opts.node} is not ready: ${why}`);
        return;
      }
      case 'GC':
        return this.collect(req.network, req.validAttachments ?? []);
    }
  }

  /**
   * A KubeVirt VM's QEMU opens its taps by name when virt-launcher starts the
   * domain, after the sandbox's CNI ADD: they are made before ADD answers. A
   * virt-launcher pod is known by KubeVirt's label; its object may reach the
   * watch a moment after the kubelet ran the plugin, so ADD waits briefly for
   * it. A pod that is no VM's launcher costs one lookup.
   */
  private async addGuestTaps(req: CniRequest): Promise<void> {
    if (!this.pods.synced || !this.topologies.synced) return;
    const vmTopologies = (this.topologies.informer.list() as TopologyObject[]).some((o) => (o.spec as { patchwire?: { kubevirt?: unknown } } | undefined)?.patchwire?.kubevirt === true);
    if (!vmTopologies) return;
    const deadline = Date.now() + GUEST_POD_WAIT_MS;
    // The pod object, and for a launcher the VMI its label names (created just before it).
    const seen = (): boolean => {
      const obj = this.pods.informer.get(req.pod, req.namespace);
      if (!obj || (req.podUid && obj.metadata?.uid !== req.podUid)) return false;
      const vmiUid = obj.metadata?.labels?.[LAUNCHER_UID_LABEL];
      return !vmiUid || this.vmis.informer.list().some((v) => v.metadata?.uid === vmiUid);
    };
    while (!seen() && Date.now() < deadline && !this.stopped) await new Promise((r) => setTimeout(r, 100));
    if (!this.pods.informer.get(req.pod, req.namespace)?.metadata?.labels?.[LAUNCHER_UID_LABEL]) return;
    const plan = this.computePlan();
    if (!plan.taps.some((x) => x.netns === req.netns)) return;
    await this.ensureTaps(plan, req.netns);
    const failed = plan.taps.filter((x) => x.netns === req.netns).map((x) => this.tapErrors.get(`${x.netns}\0${x.ifname}`)).filter(Boolean);
    if (failed.length) throw new CniError(CNI_ERR.io, failed.join('; '));
  }

  /**
   * CNI GC: the runtime names the attachments it still has; registrations
   * of this network that are not among them (their DEL never came) go, with
   * their wires. Registrations of other networks are not ours to judge.
   */
  private async collect(network: string, valid: CniAttachment[]): Promise<void> {
    const keep = new Set(valid.map((a) => `${a.containerId}\0${a.ifName}`));
    const keepIds = new Set(valid.map((a) => a.containerId));
    const stale = this.registry.retain((p) => {
      if (p.network && network && p.network !== network) return true;
      // Registrations from before ifName was recorded match on the container alone.
      return p.ifName ? keep.has(`${p.containerId}\0${p.ifName}`) : keepIds.has(p.containerId);
    });
    if (stale.length) await this.forget(stale, 'CNI GC');
  }

  /** Drops the wires of pods whose registration just went, persists, and reconciles. */
  private async forget(gone: RegisteredPod[], why: string): Promise<void> {
    for (const p of gone) this.log(`${why} ${p.namespace}/${p.pod} (container ${p.containerId})`);
    const netns = new Set(gone.map((p) => p.netns));
    // The pods' own wires go now, even while the API server is unreachable;
    // the reconcile that follows settles the rest (nothing, normally).
    for (const w of this.daemon.wireStates()) {
      const ends = [w.spec.local, ...(w.spec.localPeer ? [w.spec.localPeer] : [])];
      if (ends.some((e) => netns.has(e.netns))) await this.daemon.removeWire(w.spec.uid).catch((err: Error) => this.log(`removing wire ${w.spec.uid}: ${err.message}`));
    }
    await this.daemon.persist();
    // The rest (statuses, a segment's other members wired again) follows in
    // the next reconcile; the answer does not wait for it. Waiting made each
    // DEL of a pod among 500 take about a second (a full plan and status pass).
    this.schedule();
  }

  private async check(req: CniRequest): Promise<void> {
    const who = `${req.namespace}/${req.pod}`;
    const reg = this.registry.get(req.namespace, req.pod);
    if (!reg || reg.containerId !== req.containerId) {
      throw new CniError(CNI_ERR.containerUnknown, `pod ${who} (container ${req.containerId}) is not known to patchwire on node ${this.daemon.opts.node}`);
    }
    if (!existsSync(reg.netns)) throw new CniError(CNI_ERR.containerUnknown, `network namespace ${reg.netns} of pod ${who} is gone`);
    // A KubeVirt VM's Topology is found by its launcher pod.
    const t = this.plan.topologies.find((x) => x.namespace === req.namespace && x.pod.name === req.pod);
    if (!t) return;
    const states = new Map(this.daemon.wireStates().map((w) => [w.spec.uid, w]));
    for (const l of this.linkStatus(t, states)) {
      if (l.state === 'error') throw new CniError(CNI_ERR.wireBroken, `link ${l.uid} (${l.local_intf}) of pod ${who}: ${l.message}`);
      if (l.state === 'up' || l.state === 'down') {
        if (!(await linkExists(reg.netns, l.local_intf))) throw new CniError(CNI_ERR.wireBroken, `interface ${l.local_intf} of pod ${who} (link ${l.uid}) is missing`);
      }
    }
  }
}
