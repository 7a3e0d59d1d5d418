// The one resolver: turns a model link into the wire specs the daemons get,
// for lab mode and cluster mode alike. Pure: where each pod runs and what its
// namespace is come in through a Placement, so callers do the I/O.
import type { WireSpec } from '../dataplane/wire.js';
import type { EndpointSpec } from '../endpoint/endpoint.js';
import type { LinkEnd, LinkModel } from './model.js';

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
  /** The endpoint of a link end; asked only for ends on the nodes being resolved. */
  endpoint(end: LinkEnd): EndpointSpec;
}

/** What one daemon must hold for a link. */
export interface NodeWire {
  node: string;
  spec: WireSpec;
}

/** An endpoint spec from a link end, once the pod's namespace is known. */
export function endpointFor(end: LinkEnd, pod: string, netns: string): EndpointSpec {
  return { kind: end.kind, pod, netns, ifname: end.intf, mac: end.mac ?? '', mtu: end.mtu ?? 0, ips: end.ip ? [end.ip] : [] };
}

/** A per-link ring size applies to the end that asks for it; 0 turns that end's ring off. */
function ring(e: LinkEnd): Partial<WireSpec> {
  return e.captureBytes !== undefined ? { captureRingBytes: e.captureBytes } : {};
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
  const pa = ctx.place(link.a.pod);
  const pb = ctx.place(link.b.pod);
  if (pa.node === pb.node) {
    if (only !== undefined && only !== pa.node) return [];
    return [{ node: pa.node, spec: { uid: ctx.wireId, local: ctx.endpoint(link.a), localPeer: ctx.endpoint(link.b), ...ring(link.a) } }];
  }
  const out: NodeWire[] = [];
  for (const [mine, here, there] of [
    [link.a, pa, pb],
    [link.b, pb, pa],
  ] as const) {
    if (only !== undefined && only !== here.node) continue;
    out.push({ node: here.node, spec: { uid: ctx.wireId, local: ctx.endpoint(mine), peer: { node: there.node, address: there.address }, ...ring(mine) } });
  }
  return out;
}

/** The same link with its ends in a fixed order, so it always resolves to the same specs. */
export function canonicalLink(link: LinkModel): LinkModel {
  const key = (e: LinkEnd): string => `${e.pod}\0${e.intf}`;
  return key(link.a) <= key(link.b) ? link : { ...link, a: link.b, b: link.a };
}
