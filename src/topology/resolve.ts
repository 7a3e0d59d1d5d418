// The one resolver: turns a model link into the wire specs the daemons get,
// for lab mode and cluster mode alike. Pure: where each pod runs and what its
// namespace is come in through a Placement, so callers do the I/O.
import type { WireSpec } from '../dataplane/wire.js';
import type { EndpointSpec } from '../endpoint/endpoint.js';
import type { LabModel, LinkEnd, LinkModel, SegmentModel } from './model.js';
import { SEGMENT_LIMITS } from '../dataplane/wire.js';

/** Where one pod of a link runs. */
export interface PodPlace {
  /** node (emulated or Kubernetes) whose daemon owns the pod's link ends */
  node: string;
  /** that daemon's data-plane address (host:port), which its peers dial */
  address: string;
}

export interface ResolveContext {
  /** the wire id on the daemons (lab: the link's uid; cluster: a hash of namespace and uid) */
  wireId: number;
  place(pod: string): PodPlace;
  /** The endpoint of a link end (a host end: in the machine's namespace); asked only for ends on the nodes being resolved. */
  endpoint(end: LinkEnd): EndpointSpec;
}

/** What one daemon must hold for a link. */
export interface NodeWire {
  node: string;
  spec: WireSpec;
}

/** An endpoint spec from a link end, once the pod's namespace is known. */
export function endpointFor(end: LinkEnd, pod: string, netns: string): EndpointSpec {
  return {
    kind: end.kind,
    pod,
    netns,
    ifname: end.intf,
    mac: end.mac ?? '',
    mtu: end.mtu ?? 0,
    ips: [end.ip, end.ip6].filter((x): x is string => !!x),
    ...(end.cable ? { cable: end.cable } : {}),
  };
}

/** A per-link ring size applies to the end that asks for it; 0 turns that end's ring off. */
function ring(e: LinkEnd): Partial<WireSpec> {
  return { ...(e.captureBytes !== undefined ? { captureRingBytes: e.captureBytes } : {}), ...(e.carrierHoldMs !== undefined ? { carrierHoldMs: e.carrierHoldMs } : {}) };
}

/**
 * The wires a link needs, one per node it touches, in the order they should
 * be created (a's node first). Ends on one node make one wire through that
 * node's daemon (so the link is still counted and captured); ends on two
 * nodes make one wire on each, each naming the other node as its peer.
 * `only`: resolve just that node's wire (cluster mode, where a daemon knows
 * only its own pods' namespaces); none when the link does not touch it.
 */
export function resolveLink(link: LinkModel, ctx: ResolveContext, only?: string): NodeWire[] {
  // A host end is an existing interface of the machine: the daemon of the
  // other end's node reads it, so the link is one local wire.
  const pa = ctx.place(link.a.kind === 'host' ? link.b.pod : link.a.pod);
  const pb = ctx.place(link.b.kind === 'host' ? link.a.pod : link.b.pod);
  const endpoint = ctx.endpoint;
  if (pa.node === pb.node) {
    if (only !== undefined && only !== pa.node) return [];
    const impair = link.impair?.a || link.impair?.b ? { impair: { ...(link.impair.a ? { local: link.impair.a } : {}), ...(link.impair.b ? { localPeer: link.impair.b } : {}) } } : {};
    return [{ node: pa.node, spec: { uid: ctx.wireId, local: endpoint(link.a), localPeer: endpoint(link.b), ...ring(link.a), ...impair } }];
  }
  const out: NodeWire[] = [];
  for (const [mine, here, there, imp] of [
    [link.a, pa, pb, link.impair?.a],
    [link.b, pb, pa, link.impair?.b],
  ] as const) {
    if (only !== undefined && only !== here.node) continue;
    out.push({ node: here.node, spec: { uid: ctx.wireId, local: endpoint(mine), peer: { node: there.node, address: there.address }, ...ring(mine), ...(imp ? { impair: { local: imp } } : {}) } });
  }
  return out;
}

/** The same link with its ends in a fixed order, so it always resolves to the same specs. */
export function canonicalLink(link: LinkModel): LinkModel {
  const key = (e: LinkEnd): string => `${e.pod}\0${e.intf}`;
  if (key(link.a) <= key(link.b)) return link;
  const flipped: LinkModel = { ...link, a: link.b, b: link.a };
  if (link.impair) flipped.impair = { ...(link.impair.b ? { a: link.impair.b } : {}), ...(link.impair.a ? { b: link.impair.a } : {}) };
  return flipped;
}

/** The pod whose node carries a link end: the end's own, or for a host end the other end's. */
export function carrierPod(link: LinkModel, end: 'a' | 'b'): string {
  const e = link[end];
  return e.kind === 'host' ? link[end === 'a' ? 'b' : 'a'].pod : e.pod;
}

/** Segment uids start here, above any link uid a file uses, so the two never meet on a daemon. */
export const SEGMENT_UID_BASE = 2 ** 47;

/** The wire id of a model's n-th segment (lab mode). */
export function segmentUid(index: number): number {
  return SEGMENT_UID_BASE + index + 1;
}

/**
 * The specs a shared segment needs: one per node holding members, each with
 * that node's members (local, then segment.moreLocal) and the other nodes
 * as segment.peers. `only`: that node's spec alone.
 */
export function resolveSegment(seg: SegmentModel, ctx: ResolveContext, only?: string): NodeWire[] {
  const byNode = new Map<string, { place: PodPlace; ends: LinkEnd[] }>();
  for (const m of seg.members) {
    const place = ctx.place(m.pod);
    const slot = byNode.get(place.node) ?? { place, ends: [] };
    slot.ends.push(m);
    byNode.set(place.node, slot);
  }
  const out: NodeWire[] = [];
  for (const [node, { ends }] of byNode) {
    if (only !== undefined && only !== node) continue;
    const [first, ...rest] = ends.map((e) => ctx.endpoint(e));
    const peers = [...byNode.values()].filter((o) => o.place.node !== node).map((o) => ({ node: o.place.node, address: o.place.address }));
    const ring = first && seg.members[0]?.captureBytes !== undefined ? { captureRingBytes: seg.members[0].captureBytes } : {};
    out.push({ node, spec: { uid: ctx.wireId, local: first!, segment: { moreLocal: rest, peers }, ...ring } });
  }
  return out;
}

/**
 * What a file declares that lab mode cannot build, checked before anything
 * is created: segments beyond the engine's bounds or with members it cannot
 * place (a host interface belongs to no pod's node).
 */
export function labModeProblems(model: LabModel): string[] {
  const out: string[] = [];
  for (const p of model.pods) if (p.kubevirt) out.push(`pod ${p.name}: patchwire.kubevirt names a KubeVirt VirtualMachineInstance, which only cluster mode reaches; a lab starts its own guests with patchwire.vm`);
  for (const l of model.links) if (l.uid >= SEGMENT_UID_BASE) out.push(`link ${l.uid}: uids from ${SEGMENT_UID_BASE} up are kept for segments`);
  for (const s of model.segments) {
    const host = s.members.filter((m) => m.kind === 'host');
    if (host.length) out.push(`segment ${s.name} (${s.where}): host interface ${host.map((m) => m.intf).join(', ')} cannot be a segment member (only pod interfaces can)`);
    if (s.members.length > SEGMENT_LIMITS.membersPerDaemon) out.push(`segment ${s.name} (${s.where}) has ${s.members.length} members; lab mode takes at most ${SEGMENT_LIMITS.membersPerDaemon}`);
  }
  return out;
}
