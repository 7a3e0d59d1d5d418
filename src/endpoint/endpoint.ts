// One interface for every endpoint kind; each kind lives in its own module.
import { wire, type NativePort } from '../native/wire.js';
import { cidrProblem, ifnameProblem, macProblem, mtuProblem, netnsExists } from '../netns/ip.js';

export type EndpointKind = 'veth' | 'tap' | 'host';
export const ENDPOINT_KINDS: readonly EndpointKind[] = ['veth', 'tap', 'host'];

export interface EndpointSpec {
  kind: EndpointKind;
  /** pod name, for status output */
  pod: string;
  /** network namespace name (under /var/run/netns) or path */
  netns: string;
  ifname: string;
  mac: string;
  /** 0 means the default, 1500 */
  mtu: number;
  ips: string[];
}

export interface Endpoint {
  readonly spec: EndpointSpec;
  /** "pod/ifname" */
  readonly name: string;
  readonly port: NativePort;
  readonly vnetHdr: boolean;
  /** index of the interface inside the pod */
  readonly ifindex: number;
  /** largest frame (without virtio-net header, with two VLAN tags) the endpoint can send */
  readonly maxFrame: number;
  /**
   * Creates the interface, or, when `attach` is set and it is already there
   * from an earlier run of the daemon, takes it over without recreating it.
   */
  open(attach: boolean): Promise<void>;
  /** Stops I/O and, when `remove` is set, deletes what open() created. */
  close(remove: boolean): Promise<void>;
}

export const DEFAULT_MTU = 1500;
/** Room for a GSO super-frame (gso_max_size 64 KiB) plus virtio-net header. */
const VNET_SLOT = 65536 + 256;
export const RX_SLOTS = 64;

export function effectiveMtu(spec: EndpointSpec): number {
  return spec.mtu || DEFAULT_MTU;
}

/** Ethernet header plus an 802.1ad and an 802.1Q tag: QinQ frames of a full MTU still fit. */
export function maxFrameFor(mtu: number): number {
  return mtu + 14 + 8;
}

/**
 * How AF_PACKET ports receive, for the whole daemon: 'mmsg' (recvmmsg, the
 * default: measured faster and without the ring's retire-timer latency) or
 * 'ring' (a TPACKET_V3 ring, kept to measure against).
 */
export const rxSettings = { mode: 'mmsg' as 'mmsg' | 'ring', ringBlockBytes: 1 << 20, ringBlocks: 16, ringRetireMs: 1 };

export function makePort(fd: number, kind: 'packet' | 'tap', vnetHdr: boolean, mtu: number): NativePort {
  const slot = vnetHdr ? Math.max(VNET_SLOT, mtu + 256) : mtu + 256;
  const port = new wire.Port(fd, kind, vnetHdr, slot, RX_SLOTS);
  if (kind === 'packet' && rxSettings.mode === 'ring') {
    try {
      port.useRing(rxSettings.ringBlockBytes, rxSettings.ringBlocks, rxSettings.ringRetireMs);
    } catch (err) {
      port.close();
      throw err;
    }
  }
  return port;
}

/** Every problem with an endpoint spec, before anything is created. */
export function endpointProblems(spec: EndpointSpec): string[] {
  const out: string[] = [];
  if (!ENDPOINT_KINDS.includes(spec.kind)) out.push(`endpoint kind '${String(spec.kind)}' is not one of ${ENDPOINT_KINDS.join(', ')}`);
  const n = ifnameProblem(spec.ifname);
  if (n) out.push(n);
  const m = macProblem(spec.mac);
  if (m) out.push(m);
  const t = mtuProblem(spec.mtu);
  if (t) out.push(t);
  for (const ip of spec.ips) {
    const c = cidrProblem(ip);
    if (c) out.push(c);
  }
  if (spec.netns !== '' && !netnsExists(spec.netns)) out.push(`network namespace '${spec.netns}' does not exist`);
  return out;
}

/** What every kind shares: its name, its port once open, and the frame size its MTU allows. */
export abstract class EndpointBase implements Endpoint {
  readonly name: string;
  /** from the spec's MTU; a host endpoint sets it from its interface on open */
  maxFrame: number;
  port!: NativePort;
  vnetHdr = false;
  ifindex = 0;

  constructor(readonly spec: EndpointSpec) {
    this.name = `${spec.pod}/${spec.ifname}`;
    this.maxFrame = maxFrameFor(effectiveMtu(spec));
  }

  abstract open(attach: boolean): Promise<void>;
  abstract close(remove: boolean): Promise<void>;
}
