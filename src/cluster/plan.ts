// From Topology objects, pods and the CNI registry to the wires this node
// must own and what each of its pods' Topology status should say. Pure: the
// controller feeds it informer caches and applies the result.
import { createHash } from 'node:crypto';

import type { EndpointSpec } from '../endpoint/endpoint.js';
import type { EndImpairments } from '../dataplane/impair.js';
import type { WireSpec } from '../dataplane/wire.js';
import { MESHNET_API_VERSION, parseMeshnet } from '../topology/meshnet.js';
import type { LinkModel, TopologyError } from '../topology/model.js';
import { canonicalLink, endpointFor, resolveLink } from '../topology/resolve.js';
import { ifnameProblem } from '../netns/ip.js';
import { type GuestTap, LAUNCHER_UID_LABEL, type VmiInfo } from './kubevirt.js';
import { podKey, type RegisteredPod } from './registry.js';

export const TOPOLOGY_GROUP = 'networkop.co.uk';
export const TOPOLOGY_VERSION = 'v1beta1';
export const TOPOLOGY_PLURAL = 'topologies';

export interface TopologyObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; generation?: number; resourceVersion?: string; uid?: string };
  spec?: { links?: unknown };
  status?: unknown;
}

export interface PodInfo {
  namespace: string;
  name: string;
  uid: string;
  nodeName: string;
  hostIP: string;
  /** being deleted, or finished: its wires should go */
  gone: boolean;
  labels?: Record<string, string>;
  /** metadata.creationTimestamp */
  created?: string;
}

export type LinkState = 'pending' | 'up' | 'down' | 'error';

export interface LinkStatus {
  uid: number;
  local_intf: string;
  peer_pod: string;
  peer_intf: string;
  state: LinkState;
  message?: string;
  /** wire id on the daemons (a hash of namespace and uid) */
  wire?: number;
  /** node of the peer pod, when known */
  peer_node?: string;
  /** this node's end of the link exists (the far node reads it before saying up) */
  plumbed?: boolean;
  /** this pod's end: the cable (`state: down` or `patchwire link down`) and whether its interface has carrier */
  cable?: 'plugged' | 'pulled';
  carrier?: boolean;
  /** this pod's end: the impairments in effect */
  impair?: EndImpairments;
}

export interface TopologyStatus {
  /** meshnet's fields, for tools that read them */
  src_ip: string;
  net_ns: string;
  container_id: string;
  node: string;
  /** "N/M": links up out of links declared */
  ready: string;
  links: LinkStatus[];
  /** problems with the object itself (not with one link) */
  errors?: string[];
  observedGeneration?: number;
}

/** A link of a local pod, before wire states are known. */
export interface PlannedLink extends Omit<LinkStatus, 'state'> {
  /** set when the link cannot be wired yet or at all */
  blocked?: { state: 'pending' | 'error'; message: string };
}

export interface PlannedTopology {
  namespace: string;
  name: string;
  /** the object's uid: one deleted and made again under the same name is another object */
  uid?: string;
  generation?: number;
  /** the pod itself; for a KubeVirt VM (`vmi`), its virt-launcher pod */
  pod: PodInfo;
  registered?: RegisteredPod;
  /** set when the Topology names a KubeVirt VirtualMachineInstance */
  vmi?: string;
  links: PlannedLink[];
  errors: string[];
}

export interface Plan {
  wires: Map<number, WireSpec>;
  topologies: PlannedTopology[];
  /** taps this node's KubeVirt VMs' QEMUs open: every link end of their Topologies, wired yet or not */
  taps: GuestTap[];
  /** why a KubeVirt VM named by a Topology cannot be reached yet, by "namespace/name" (for logs) */
  vmiWaiting: Map<string, string>;
}

export interface PlanInput {
  node: string;
  dataPort: number;
  topologies: TopologyObject[];
  pods: Map<string, PodInfo>;
  registry: (namespace: string, pod: string) => RegisteredPod | undefined;
  /** VirtualMachineInstances by "namespace/name"; null while they are not listed yet */
  vmis?: Map<string, VmiInfo> | null;
}

/**
 * The virt-launcher pod of a VirtualMachineInstance: a live pod that KubeVirt
 * labelled with the VMI's uid, on the node the VMI says it runs on when
 * several exist (a migration's target pod is not it until the VMI moves).
 */
export function launcherPod(input: PlanInput, ns: string, name: string): { pod: PodInfo } | { waiting: string } {
  if (input.vmis === null || input.vmis === undefined) return { waiting: 'VirtualMachineInstances are not listed yet (is KubeVirt installed?)' };
  const vmi = input.vmis.get(podKey(ns, name));
  if (!vmi) return { waiting: `VirtualMachineInstance ${name} does not exist in namespace ${ns} (its Topology says patchwire.kubevirt)` };
  if (vmi.gone) return { waiting: `VirtualMachineInstance ${name} is stopping` };
  const pods = [...input.pods.values()].filter((p) => p.namespace === ns && !p.gone && p.labels?.[LAUNCHER_UID_LABEL] === vmi.uid);
  const here = pods.filter((p) => vmi.nodeName && p.nodeName === vmi.nodeName);
  const pick = (here.length ? here : pods).sort((a, b) => (b.created ?? '').localeCompare(a.created ?? ''))[0];
  if (!pick) return { waiting: `no virt-launcher pod of VirtualMachineInstance ${name} yet (none labelled ${LAUNCHER_UID_LABEL}=${vmi.uid})` };
  return { pod: pick };
}

/**
 * Wire ids are per cluster while meshnet uids are per namespace (each lab
 * numbers its links from 1): hash both, so labs never share a wire.
 */
export function clusterWireId(namespace: string, uid: number): number {
  const h = createHash('sha256').update(`${namespace}\0${uid}`).digest();
  const id = h.readUIntBE(0, 6);
  // Tests only: keep fewer bits, so two labs' ids collide and the refusal
  // below can be seen (test/isolation.test.ts). Unset, the id is 48 bits.
  return (TEST_WIRE_ID_BITS ? id % 2 ** TEST_WIRE_ID_BITS : id) || 1;
}

const TEST_WIRE_ID_BITS = Math.min(48, Math.max(0, Math.trunc(Number(process.env.PATCHWIRE_TEST_WIRE_ID_BITS ?? 0)) || 0));

/**
 * Links of different namespaces whose wire ids collide (48 bits of a hash:
 * rare, but then both labs' frames would share one wire). Every such link is
 * refused, on every Topology that declares it, with a message naming the
 * other; by key `namespace\0uid`.
 */
export function wireIdCollisions(byNs: Map<string, TopologyObject[]>, wireId: (ns: string, uid: number) => number = clusterWireId): Map<string, string> {
  const owners = new Map<number, Map<string, { ns: string; uid: number }>>();
  for (const [ns, objs] of byNs) {
    for (const o of objs) {
      const links = Array.isArray(o.spec?.links) ? (o.spec!.links as unknown[]) : [];
      for (const l of links) {
        const { uid } = rawLink(l);
        if (!Number.isSafeInteger(uid)) continue;
        const id = wireId(ns, uid);
        const m = owners.get(id) ?? new Map<string, { ns: string; uid: number }>();
        m.set(`${ns}\0${uid}`, { ns, uid });
        owners.set(id, m);
      }
    }
  }
  const out = new Map<string, string>();
  for (const [id, m] of owners) {
    if (m.size < 2) continue;
    for (const [key, me] of m) {
      const others = [...m.values()].filter((x) => x !== me).map((x) => `uid ${x.uid} in namespace ${x.ns}`);
      out.set(key, `wire id ${id} of this link collides with ${others.join(', ')}; refused so the labs' frames can never mix (change one of the uids)`);
    }
  }
  return out;
}

function rawLink(v: unknown): { uid: number; local_intf: string; peer_pod: string; peer_intf: string } {
  const o = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  return {
    uid: typeof o.uid === 'number' ? o.uid : 0,
    local_intf: typeof o.local_intf === 'string' ? o.local_intf : '',
    peer_pod: typeof o.peer_pod === 'string' ? o.peer_pod : '',
    peer_intf: typeof o.peer_intf === 'string' ? o.peer_intf : '',
  };
}

function linkIndexOf(e: TopologyError): number | null {
  const m = /^spec\.links\[(\d+)\]/.exec(e.field ?? '');
  return m ? Number(m[1]) : null;
}

export function computePlan(input: PlanInput): Plan {
  const wires = new Map<number, WireSpec>();
  const topologies: PlannedTopology[] = [];
  const taps: GuestTap[] = [];
  const vmiWaiting = new Map<string, string>();
  const byNs = new Map<string, TopologyObject[]>();
  for (const t of input.topologies) {
    const ns = t.metadata?.namespace ?? 'default';
    byNs.set(ns, [...(byNs.get(ns) ?? []), t]);
  }
  const collisions = wireIdCollisions(byNs);
  for (const [ns, objs] of byNs) {
    // List items may come without apiVersion/kind; they are Topologies by construction.
    const docs = objs.map((o) => ({ ...o, apiVersion: MESHNET_API_VERSION, kind: 'Topology' }));
    const { model, errors } = parseMeshnet(docs, `namespace ${ns}`);
    // Problems per (pod, link index) and per object.
    const linkErrors = new Map<string, string>();
    const objErrors = new Map<string, string[]>();
    for (const e of errors) {
      const pod = e.object?.replace(/^Topology /, '') ?? '';
      const i = linkIndexOf(e);
      const text = `${e.field ? `${e.field}: ` : ''}${e.message}`;
      if (i === null) objErrors.set(pod, [...(objErrors.get(pod) ?? []), text]);
      else if (!linkErrors.has(`${pod}\0${i}`)) linkErrors.set(`${pod}\0${i}`, text);
    }
    const erroredEnds = new Set<string>();
    for (const o of objs) {
      const links = Array.isArray(o.spec?.links) ? (o.spec!.links as unknown[]) : [];
      links.forEach((l, i) => {
        if (linkErrors.has(`${o.metadata?.name}\0${i}`)) erroredEnds.add(`${o.metadata?.name}\0${rawLink(l).local_intf}`);
      });
    }
    // KubeVirt VMs stand in for pods of their name through their launcher pods.
    const vmiPods = new Map<string, PodInfo | null>();
    for (const pm of model.pods) {
      if (!pm.kubevirt) continue;
      const r = launcherPod(input, ns, pm.name);
      vmiPods.set(pm.name, 'pod' in r ? r.pod : null);
      if ('waiting' in r) vmiWaiting.set(podKey(ns, pm.name), r.waiting);
    }
    const pod = (name: string): PodInfo | undefined => {
      if (vmiPods.has(name)) return vmiPods.get(name) ?? undefined;
      const p = input.pods.get(podKey(ns, name));
      return p && !p.gone ? p : undefined;
    };
    const reg = (name: string): RegisteredPod | undefined => input.registry(ns, vmiPods.get(name)?.name ?? name);
    const waiting = (name: string): string | undefined => vmiWaiting.get(podKey(ns, name));
    const vmiFor = (name: string): VmiInfo | undefined => (vmiPods.has(name) ? input.vmis?.get(podKey(ns, name)) : undefined);
    const local = (name: string): boolean => pod(name)?.nodeName === input.node;
    const linkBlock = new Map<number, PlannedLink['blocked']>();
    for (const link of model.links) {
      const collision = collisions.get(`${ns}\0${link.uid}`);
      if (collision) {
        linkBlock.set(link.uid, { state: 'error', message: collision });
        continue;
      }
      if (erroredEnds.has(`${link.a.pod}\0${link.a.intf}`) || erroredEnds.has(`${link.b.pod}\0${link.b.intf}`)) {
        linkBlock.set(link.uid, { state: 'error', message: 'the other end of this link is declared wrongly' });
        continue;
      }
      const vmiProblem = [link.a, link.b].map((e) => vmiEndProblem(e, vmiFor(e.pod))).find(Boolean);
      if (vmiProblem) {
        linkBlock.set(link.uid, { state: 'error', message: vmiProblem });
        continue;
      }
      if (!local(link.a.pod) && !local(link.b.pod)) continue;
      const r = planLink(input, ns, link, { pod, reg, waiting, isVmi: (n) => vmiPods.has(n) });
      if ('blocked' in r) linkBlock.set(link.uid, r.blocked);
      else wires.set(r.spec.uid, r.spec);
    }
    for (const o of objs) {
      const name = o.metadata?.name ?? '';
      const p = pod(name);
      if (!p || p.nodeName !== input.node) continue;
      const links = Array.isArray(o.spec?.links) ? (o.spec!.links as unknown[]) : [];
      const registered = reg(name);
      // The VM's QEMU opens every tap its Topology declares when it starts,
      // so each one exists whether its link can be wired yet or not.
      if (vmiPods.has(name) && registered) {
        const mtus = new Map(model.links.flatMap((l) => [l.a, l.b]).filter((e) => e.pod === name && e.mtu).map((e) => [e.intf, e.mtu!]));
        const names = new Set(links.map((l) => rawLink(l).local_intf).filter((n) => n && !ifnameProblem(n)));
        for (const ifname of names) taps.push({ netns: registered.netns, ifname, mtu: mtus.get(ifname) ?? 0, vmi: podKey(ns, name) });
      }
      const planned: PlannedLink[] = links.map((l, i) => {
        const raw = rawLink(l);
        const peer = pod(raw.peer_pod);
        const out: PlannedLink = { ...raw, ...(peer?.nodeName ? { peer_node: peer.nodeName } : {}) };
        const err = linkErrors.get(`${name}\0${i}`);
        if (err) out.blocked = { state: 'error', message: err };
        else if (linkBlock.has(raw.uid)) out.blocked = linkBlock.get(raw.uid);
        else out.wire = clusterWireId(ns, raw.uid);
        return out;
      });
      topologies.push({
        namespace: ns,
        name,
        ...(o.metadata?.uid ? { uid: o.metadata.uid } : {}),
        generation: o.metadata?.generation,
        pod: p,
        registered,
        ...(vmiPods.has(name) ? { vmi: name } : {}),
        links: planned,
        errors: objErrors.get(name) ?? [],
      });
    }
  }
  return { wires, topologies, taps, vmiWaiting };
}

/**
 * What a link end cannot be when it is a KubeVirt VM's interface: the guest
 * owns its addresses and MAC (KubeVirt's VMI spec sets them), and the end is
 * always the tap patchwire makes for QEMU.
 */
function vmiEndProblem(e: LinkModel['a'], vmi: VmiInfo | undefined): string | null {
  if (!vmi) return null;
  const where = `${e.pod}:${e.intf} is an interface of KubeVirt VM ${vmi.name}`;
  if (e.ip || e.ip6) return `${where}: its address is the guest's to configure, not local_ip`;
  if (e.mac) return `${where}: its MAC is set in the VirtualMachineInstance's interface (macAddress), not patchwire.mac`;
  if (e.kind !== 'veth') return `${where}: it is always a tap QEMU opens; patchwire.kind does not apply`;
  if (vmi.interfaces.length && !vmi.interfaces.includes(e.intf)) {
    return `${where}, which declares no interface ${e.intf} (its interfaces: ${vmi.interfaces.join(', ')}); local_intf names the VMI interface whose tap it is`;
  }
  return null;
}

interface PlanLookups {
  pod: (n: string) => PodInfo | undefined;
  reg: (n: string) => RegisteredPod | undefined;
  /** why a KubeVirt VM's launcher pod is not known */
  waiting: (n: string) => string | undefined;
  isVmi: (n: string) => boolean;
}

function planLink(input: PlanInput, ns: string, link: LinkModel, { pod, reg, waiting, isVmi }: PlanLookups): { spec: WireSpec } | { blocked: NonNullable<PlannedLink['blocked']> } {
  // A fixed order of the two ends, so the same link always gives the same spec.
  const canon = canonicalLink(link);
  const pa = pod(canon.a.pod);
  const pb = pod(canon.b.pod);
  for (const [e, p] of [[canon.a, pa], [canon.b, pb]] as const) {
    const why = waiting(e.pod);
    if (why) return { blocked: { state: 'pending', message: `waiting for KubeVirt VM ${e.pod}: ${why}` } };
    if (!p) return { blocked: { state: 'pending', message: `waiting for pod ${e.pod} to exist` } };
    if (!p.nodeName) return { blocked: { state: 'pending', message: `waiting for pod ${e.pod} to be scheduled` } };
  }
  // This node's ends need their pods' namespaces from CNI ADD first.
  for (const [e, p] of [[canon.a, pa!], [canon.b, pb!]] as const) {
    if (p.nodeName !== input.node) continue;
    const r = reg(e.pod);
    const shown = isVmi(e.pod) ? `the virt-launcher pod ${p.name} of KubeVirt VM ${e.pod}` : `pod ${e.pod}`;
    if (!r) return { blocked: { state: 'pending', message: `waiting for ${shown} to start on node ${input.node} (no CNI ADD yet)` } };
    if (r.podUid && p.uid && r.podUid !== p.uid) return { blocked: { state: 'pending', message: `waiting for the new ${shown} to start (CNI ADD seen for an older pod of that name)` } };
  }
  const theirs = pa!.nodeName === input.node ? pb! : pa!;
  if (pa!.nodeName !== pb!.nodeName && !theirs.hostIP) {
    const far = theirs === pa ? canon.a : canon.b;
    return { blocked: { state: 'pending', message: `waiting for peer pod ${far.pod} on node ${theirs.nodeName} to get a host IP` } };
  }
  const [w] = resolveLink(
    canon,
    {
      wireId: clusterWireId(ns, link.uid),
      place: (name) => {
        const p = pod(name)!;
        const host = p.hostIP.includes(':') ? `[${p.hostIP}]` : p.hostIP;
        return { node: p.nodeName, address: `${host}:${input.dataPort}` };
      },
      endpoint: (e) => {
        const ep = endpointFor(e, `${ns}/${e.pod}`, reg(e.pod)!.netns);
        // A VM's end is the tap its QEMU opened: read as it is, never configured.
        return isVmi(e.pod) ? { ...ep, kind: 'host' } : ep;
      },
    },
    input.node,
  );
  return { spec: w!.spec };
}

/** Whether two specs describe the same wire (a difference means: recreate it). */
export function sameWireSpec(x: WireSpec, y: WireSpec): boolean {
  const ep = (e?: EndpointSpec): string => (e ? JSON.stringify([e.kind, e.pod, e.netns, e.ifname, e.mac, e.mtu, [...e.ips].sort()]) : '');
  return (
    x.uid === y.uid &&
    ep(x.local) === ep(y.local) &&
    ep(x.localPeer) === ep(y.localPeer) &&
    (x.peer?.node ?? '') === (y.peer?.node ?? '') &&
    (x.peer?.address ?? '') === (y.peer?.address ?? '') &&
    (x.captureRingBytes ?? 0) === (y.captureRingBytes ?? 0)
  );
}
