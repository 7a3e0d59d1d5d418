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
  generation?: number;
  pod: PodInfo;
  registered?: RegisteredPod;
  links: PlannedLink[];
  errors: string[];
}

export interface Plan {
  wires: Map<number, WireSpec>;
  topologies: PlannedTopology[];
}

export interface PlanInput {
  node: string;
  dataPort: number;
  topologies: TopologyObject[];
  pods: Map<string, PodInfo>;
  registry: (namespace: string, pod: string) => RegisteredPod | undefined;
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
    const pod = (name: string): PodInfo | undefined => {
      const p = input.pods.get(podKey(ns, name));
      return p && !p.gone ? p : undefined;
    };
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
      if (!local(link.a.pod) && !local(link.b.pod)) continue;
      const r = planLink(input, ns, link, pod);
      if ('blocked' in r) linkBlock.set(link.uid, r.blocked);
      else wires.set(r.spec.uid, r.spec);
    }
    for (const o of objs) {
      const name = o.metadata?.name ?? '';
      const p = pod(name);
      if (!p || p.nodeName !== input.node) continue;
      const links = Array.isArray(o.spec?.links) ? (o.spec!.links as unknown[]) : [];
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
        generation: o.metadata?.generation,
        pod: p,
        registered: input.registry(ns, name),
        links: planned,
        errors: objErrors.get(name) ?? [],
      });
    }
  }
  return { wires, topologies };
}

function planLink(input: PlanInput, ns: string, link: LinkModel, pod: (n: string) => PodInfo | undefined): { spec: WireSpec } | { blocked: NonNullable<PlannedLink['blocked']> } {
  // A fixed order of the two ends, so the same link always gives the same spec.
  const canon = canonicalLink(link);
  const pa = pod(canon.a.pod);
  const pb = pod(canon.b.pod);
  for (const [e, p] of [[canon.a, pa], [canon.b, pb]] as const) {
    if (!p) return { blocked: { state: 'pending', message: `waiting for pod ${e.pod} to exist` } };
    if (!p.nodeName) return { blocked: { state: 'pending', message: `waiting for pod ${e.pod} to be scheduled` } };
  }
  // This node's ends need their pods' namespaces from CNI ADD first.
  for (const [e, p] of [[canon.a, pa!], [canon.b, pb!]] as const) {
    if (p.nodeName !== input.node) continue;
    const reg = input.registry(ns, e.pod);
    if (!reg) return { blocked: { state: 'pending', message: `waiting for pod ${e.pod} to start on node ${input.node} (no CNI ADD yet)` } };
    if (reg.podUid && p.uid && reg.podUid !== p.uid) return { blocked: { state: 'pending', message: `waiting for the new pod ${e.pod} to start (CNI ADD seen for an older pod of that name)` } };
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
      endpoint: (e) => endpointFor(e, `${ns}/${e.pod}`, input.registry(ns, e.pod)!.netns),
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
