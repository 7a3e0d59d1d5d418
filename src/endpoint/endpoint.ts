// One interface for every endpoint kind; each kind lives in its own module.
import { closeSync } from 'node:fs';

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
  /** the cable at this end: 'pulled' (patchwire link down, or `state: down`) takes carrier from both ends; absent: plugged */
  cable?: 'plugged' | 'pulled';
  /** a host end that is a QEMU guest's NIC: its carrier reaches the guest through QMP set_link on `socket` for `netdev` */
  qmp?: { socket: string; netdev: string };
}

/** How a wire end's carrier is shown to its pod (see wire/src/engine/carrier.h). */
export interface CarrierIo {
  how: 'veth' | 'tap' | 'none';
  /** 'veth': the host end's ifindex in the daemon's namespace */
  ifindex: number;
}

/** The fd a wire end's frames move through, and how the engine should read it. */
export interface PortIo {
  fd: number;
  kind: 'packet' | 'tap';
  vnetHdr: boolean;
  /** bytes per receive slot: the largest frame plus its virtio-net header */
  slotSize: number;
  slots: number;
}

export interface Endpoint {
  readonly spec: EndpointSpec;
  /** "pod/ifname" */
  readonly name: string;
  /** set by open(); the frame engine takes the fd over with handOff() */
  readonly io: PortIo | null;
  readonly vnetHdr: boolean;
  /** index of the interface inside the pod */
  readonly ifindex: number;
  /** largest frame (without virtio-net header, with two VLAN tags) the endpoint can send */
  readonly maxFrame: number;
  /** set by open() */
  readonly carrier: CarrierIo;
  /** open() found the interface from an earlier run and took it over (a restart: carrier is left as it is) */
  readonly reattached: boolean;
  /**
   * Creates the interface, or, when `attach` is set and it is already there
   * from an earlier run of the daemon, takes it over without recreating it.
   */
  open(attach: boolean): Promise<void>;
  /** Gives the fd to the frame engine, which closes it when the wire goes. */
  handOff(): PortIo;
  /**
   * Frames the pod sent that the kernel dropped before they reached our fd,
   * since open(): the host end's input backlog (veth), the tap's queue (tap).
   * Read from the interface's counters, synchronously (see countersOpen).
   */
  kernelQueueDrops(): number;
  /**
   * Closes the fd if the engine never took it and, when `remove` is set,
   * deletes what open() created. Called after the engine let the wire go.
   */
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

/** Receive slots big enough for the endpoint's largest frame (a GSO super-frame with a virtio-net header). */
export function slotSizeFor(vnetHdr: boolean, mtu: number): number {
  return vnetHdr ? Math.max(VNET_SLOT, mtu + 256) : mtu + 256;
}

/** A port driven from JavaScript (the floor relay bench); daemons use the frame engine. */
export function makePort(fd: number, kind: 'packet' | 'tap', vnetHdr: boolean, mtu: number): NativePort {
  const slot = slotSizeFor(vnetHdr, mtu);
  return new wire.Port(fd, kind, vnetHdr, slot, RX_SLOTS);
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
  if (spec.qmp) {
    if (spec.kind !== 'host') out.push(`a QMP socket is for host endpoints (a QEMU guest's tap), not ${spec.kind}`);
    if (!spec.qmp.socket.startsWith('/') || spec.qmp.socket.length > 107) out.push(`QMP socket '${spec.qmp.socket.slice(0, 120)}' must be an absolute path of at most 107 bytes`);
    if (!/^[A-Za-z][A-Za-z0-9_.-]{0,127}$/.test(spec.qmp.netdev)) out.push(`QMP netdev '${spec.qmp.netdev.slice(0, 130)}' is not a QEMU id (a letter, then letters, digits, - . _)`);
  }
  return out;
}

/** What every kind shares: its name, its fd once open, and the frame size its MTU allows. */
export abstract class EndpointBase implements Endpoint {
  readonly name: string;
  /** from the spec's MTU; a host endpoint sets it from its interface on open */
  maxFrame: number;
  io: PortIo | null = null;
  /** whether the engine owns the fd (it closes it) */
  protected handedOff = false;
  vnetHdr = false;
  ifindex = 0;
  carrier: CarrierIo = { how: 'none', ifindex: 0 };
  reattached = false;

  constructor(readonly spec: EndpointSpec) {
    this.name = `${spec.pod}/${spec.ifname}`;
    this.maxFrame = maxFrameFor(effectiveMtu(spec));
  }

  /** `mtu`: the interface's, when it is not the spec's (a host endpoint's own). */
  protected setIo(fd: number, kind: 'packet' | 'tap', vnetHdr: boolean, mtu = effectiveMtu(this.spec)): void {
    this.vnetHdr = vnetHdr;
    this.io = { fd, kind, vnetHdr, slotSize: slotSizeFor(vnetHdr, mtu), slots: RX_SLOTS };
    this.handedOff = false;
  }

  handOff(): PortIo {
    if (!this.io) throw new Error(`${this.name} is not open`);
    this.handedOff = true;
    return this.io;
  }

  /** where kernelQueueDrops() reads, and its value when the end opened */
  private queueDrops: { counters: number; ifindex: number; field: 'rxDropped' | 'txDropped'; base: number; last: number } | null = null;

  /** Makes kernelQueueDrops() follow `field` of interface `ifindex`, counted from now. */
  protected watchQueueDrops(counters: number, ifindex: number, field: 'rxDropped' | 'txDropped'): void {
    const now = wire.netlink.countersDrops(counters, ifindex);
    this.queueDrops = { counters, ifindex, field, base: now ? now[field] : 0, last: 0 };
  }

  kernelQueueDrops(): number {
    const q = this.queueDrops;
    if (!q) return 0;
    try {
      const now = wire.netlink.countersDrops(q.counters, q.ifindex);
      // An interface gone (being removed) keeps its last count.
      if (now) q.last = Math.max(q.last, now[q.field] - q.base);
    } catch {
      /* the last count stands */
    }
    return q.last;
  }

  /** Closes the fd unless the engine has it. */
  protected closeFd(): void {
    if (this.io && !this.handedOff) closeSync(this.io.fd);
    this.io = null;
    this.handedOff = false;
  }

  abstract open(attach: boolean): Promise<void>;
  abstract close(remove: boolean): Promise<void>;
}
