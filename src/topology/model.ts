// The one internal model both topology formats map onto.
import type { EndpointKind } from '../endpoint/endpoint.js';

export interface LinkEnd {
  pod: string;
  intf: string;
  /** CIDR, configured on the interface */
  ip?: string;
  mac?: string;
  mtu?: number;
  /** capture ring of this end, bytes (absent: the daemon's default) */
  captureBytes?: number;
  kind: Exclude<EndpointKind, 'host'>;
}

export interface LinkModel {
  uid: number;
  a: LinkEnd;
  b: LinkEnd;
}

export interface PodModel {
  name: string;
  /** emulated node the pod is pinned to ("node2"), if any */
  node?: string;
}

export interface LabModel {
  /** lab name from the file (containerlab's `name`), if any */
  name?: string;
  format: 'meshnet' | 'containerlab';
  /** in order of first appearance in the file */
  pods: PodModel[];
  links: LinkModel[];
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
