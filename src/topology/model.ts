// The one internal model every topology format maps onto.
import type { EndpointKind } from '../endpoint/endpoint.js';
import type { EndImpairments } from '../dataplane/impair.js';

export interface LinkEnd {
  pod: string;
  intf: string;
  /** CIDR, configured on the interface */
  ip?: string;
  /** a second (IPv6) CIDR on the same interface (containerlab's ipv6, netlab's dual stack) */
  ip6?: string;
  mac?: string;
  mtu?: number;
  /** capture ring of this end, bytes (absent: the daemon's default) */
  captureBytes?: number;
  /** 'pulled': declared `state: down`, the cable is out at this end (absent: plugged) */
  cable?: 'pulled';
  /** how long this end keeps carrier while the far daemon is out of reach, ms (absent: the daemon's default) */
  carrierHoldMs?: number;
  kind: EndpointKind;
}

/** Impairments as netlab's tc.* declares them (kept for validate's output; applied through LinkModel.impair). */
export interface Impairments {
  delayMs?: number;
  jitterMs?: number;
  lossPercent?: number;
  corruptPercent?: number;
  duplicatePercent?: number;
  reorderPercent?: number;
  rateKbps?: number;
}

export interface LinkModel {
  uid: number;
  a: LinkEnd;
  b: LinkEnd;
  /** impairments as netlab's tc.* declares them (LinkModel.impair is what is applied) */
  impairments?: Impairments;
  /** impairments of each end, by direction (from `patchwire: impair:` or netlab's tc.*) */
  impair?: { a?: EndImpairments; b?: EndImpairments };
}

/**
 * A link with more than two members (a containerlab bridge, a netlab
 * multi-access link): every frame from one member goes to every other.
 */
export interface SegmentModel {
  /** a name for messages and graphs: the bridge node, or "link N" */
  name: string;
  members: LinkEnd[];
  /** where the file declares it, e.g. "topology.links[3]" */
  where: string;
}

/**
 * A pod that is a QEMU guest (`patchwire: {vm: ...}`): patchwire starts it in
 * the pod's namespace with one virtio-net NIC per link (see docs/vms.md).
 */
export interface VmSpec {
  /** a kernel to boot directly (with `initrd`), or absent when `disk` boots */
  kernel?: string;
  initrd?: string;
  /** a disk image (booted with snapshot=on: the image is never written) */
  disk?: string;
  /** MiB */
  memory: number;
  cpus: number;
  /** more QEMU arguments, appended as given */
  args: string[];
  /** more kernel command line (with `kernel`) */
  append?: string;
}

export interface PodModel {
  name: string;
  /** a QEMU guest rather than a namespace's own processes */
  vm?: VmSpec;
  /** cluster mode: the pod is the KubeVirt VirtualMachineInstance of this name, reached in its virt-launcher pod */
  kubevirt?: true;
  /** emulated node the pod is pinned to ("node2"), if any */
  node?: string;
  /** Kubernetes namespace of its Topology object (meshnet), when the file names one */
  namespace?: string;
  /** commands to run in the pod once its links are up (containerlab's exec) */
  exec?: string[];
}

export type TopologyFormat = 'meshnet' | 'containerlab' | 'netlab' | 'kne';

export interface LabModel {
  /** lab name from the file (containerlab's `name`), if any */
  name?: string;
  format: TopologyFormat;
  /** in order of first appearance in the file */
  pods: PodModel[];
  links: LinkModel[];
  segments: SegmentModel[];
  /** what the file holds that is not part of the topology, and was passed over ("document 2: Pod r1") */
  skipped: string[];
  /** what patchwire filled in or rewrote (defaults, inherited values, expanded variables, renamed interfaces) */
  expanded: string[];
}

/** A problem found in a topology file, located as precisely as possible. */
export interface TopologyError {
  file: string;
  line?: number;
  col?: number;
  /** e.g. "Topology r1" */
  object?: string;
  /** e.g. "spec.links[2].local_intf" */
  field?: string;
  message: string;
}

export function formatTopologyError(e: TopologyError): string {
  const where = e.line !== undefined ? `${e.file}:${e.line}:${e.col ?? 1}` : e.file;
  const parts = [where];
  if (e.object) parts.push(e.object);
  if (e.field) parts.push(e.field);
  return `${parts.join(': ')}: ${e.message}`;
}

export class TopologyErrors extends Error {
  constructor(readonly errors: TopologyError[]) {
    super(errors.map(formatTopologyError).join('\n'));
  }
}

/** Pod names become namespace names: keep them to a portable set. */
export const POD_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Whether two link-end descriptions name the same pod interface. */
export function sameEnd(x: { pod: string; intf: string }, y: { pod: string; intf: string }): boolean {
  return x.pod === y.pod && x.intf === y.intf;
}
