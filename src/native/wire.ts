// Typed access to the native frame I/O addon built from wire/.
import { createRequire } from 'node:module';
import path from 'node:path';

import { PACKAGE_ROOT } from '../paths.js';

export interface OpenedFd {
  fd: number;
  ifindex: number;
  /** whether frames carry a virtio-net header on this fd */
  vnetHdr: boolean;
}

export interface PortStats {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  kernelDrops: number;
  truncated: number;
  vlanRestored: number;
  txBusy: number;
  txTooBig: number;
  txError: number;
  lastTxError: string;
}

/**
 * A native port. Received frames are written into `rx`; for frame i of a
 * batch, `meta[2i]` is its offset in `rx` and `meta[2i+1]` its length, the
 * virtio-net header included when the port has one. The contents are only
 * valid during the onFrames callback.
 */
export interface NativePort {
  readonly rx: ArrayBuffer;
  readonly meta: Int32Array;
  start(onFrames: (count: number) => void): void;
  pause(): void;
  send(buf: Uint8Array, hdrOff: Int32Array, dataOff: Int32Array, dataLen: Int32Array, count: number): number;
  stats(): PortStats;
  close(): void;
  /** receive through a TPACKET_V3 ring instead of recvmmsg (AF_PACKET ports, before start) */
  useRing(blockBytes: number, blocks: number, retireMs: number): void;
}

interface Addon {
  openPacket(ifname: string, netnsPath: string, opts: { vnetHdr: boolean; bufBytes?: number }): OpenedFd;
  openTap(name: string, netnsPath: string, opts: { vnetHdr: boolean; persist: boolean }): OpenedFd;
  unpersistTap(fd: number): void;
  /** SCHED_RR at `priority` for every thread of the process (0: back to SCHED_OTHER); returns threads changed */
  setScheduling(priority: number): number;
  /** glibc trim threshold: free heap memory kept up to `bytes` rather than returned to the kernel; false where not glibc */
  keepFreedMemory(bytes: number): boolean;
  Port: new (fd: number, kind: 'packet' | 'tap', vnetHdr: boolean, slotSize: number, slots: number) => NativePort;
  HEADROOM: number;
  VNET_HDR_LEN: number;
}

const require = createRequire(import.meta.url);

/**
 * Where `npm install` builds the addon (child processes in tests load it by path).
 * PATCHWIRE_ADDON overrides it: `npm run test:asan` runs the daemons on a sanitizer build.
 */
export const ADDON_PATH = process.env.PATCHWIRE_ADDON || path.join(PACKAGE_ROOT, 'wire', 'build', 'Release', 'patchwire_wire.node');
export const wire: Addon = require(ADDON_PATH) as Addon;
export const VNET_HDR_LEN = wire.VNET_HDR_LEN;
