// Mapping between the control API's messages and the daemon's own types.
import type { EndpointKind, EndpointSpec } from '../endpoint/index.js';
import { DROP_CAUSES, type DropCause, type EndCounters, type PbDropCause, type WireSpec } from '../dataplane/wire.js';
import type { WireStatus } from '../daemon/daemon.js';
import { endImpairFromPb, endImpairToPb, normalizeEnd, type PbEndImpairments } from '../dataplane/impair.js';

export interface PbEndpoint {
  kind: string;
  pod: string;
  netns: string;
  ifname: string;
  mac: string;
  mtu: number;
  ips: string[];
  cable?: string;
  qmp_socket?: string;
  qmp_netdev?: string;
}
export interface PbWireSpec {
  uid: number;
  local: PbEndpoint | null;
  peer: { node: string; address: string } | null;
  local_peer: PbEndpoint | null;
  capture_ring_bytes: number;
  local_impair?: PbEndImpairments | null;
  local_peer_impair?: PbEndImpairments | null;
  carrier_hold_ms?: number;
  segment?: { more_local: PbEndpoint[]; peers: Array<{ node: string; address: string }> } | null;
}
export type PbDrops = Record<PbDropCause, number>;
export interface PbCounters {
  rx_frames: number;
  rx_bytes: number;
  tx_frames: number;
  tx_bytes: number;
  drops: PbDrops;
  capture_drops: number;
  backpressure_pauses: number;
  impair_duplicated: number;
  impair_corrupted: number;
  impair_reordered: number;
  impair_held_bytes: number;
}
export interface PbWireStatus {
  spec: PbWireSpec;
  state: string;
  /** why a wire is not up, where the daemon knows */
  message?: string;
  ends: Array<{ name: string; ifindex: number; vnet_hdr: boolean; counters: PbCounters; file_capture: string; impair?: PbEndImpairments | null; carrier?: PbCarrierStatus | null }>;
}
export interface PbCarrierStatus {
  on: boolean;
  reason: string;
  cable: string;
  far: string;
  hold_ms: number;
  last_error: string;
  changes: number;
}
export interface PbCarrierEvent {
  uid: number;
  end: string;
  node: string;
  timestamp_us: number;
  carrier: boolean;
  reason: string;
}

const KIND_TO_PB: Record<EndpointKind, string> = { veth: 'ENDPOINT_KIND_VETH', tap: 'ENDPOINT_KIND_TAP', host: 'ENDPOINT_KIND_HOST' };

export function endpointToPb(e: EndpointSpec): PbEndpoint {
  return { kind: KIND_TO_PB[e.kind], pod: e.pod, netns: e.netns, ifname: e.ifname, mac: e.mac, mtu: e.mtu, ips: e.ips, ...(e.cable === 'pulled' ? { cable: 'CABLE_STATE_PULLED' } : {}), ...(e.qmp ? { qmp_socket: e.qmp.socket, qmp_netdev: e.qmp.netdev } : {}) };
}

export function endpointFromPb(e: PbEndpoint): EndpointSpec {
  const kind = (Object.keys(KIND_TO_PB) as EndpointKind[]).find((k) => KIND_TO_PB[k] === e.kind);
  return {
    kind: kind ?? (String(e.kind).replace(/^ENDPOINT_KIND_/, '').toLowerCase() as EndpointKind),
    pod: e.pod || e.netns,
    netns: e.netns,
    ifname: e.ifname,
    mac: e.mac,
    mtu: e.mtu,
    ips: e.ips ?? [],
    ...(e.cable === 'CABLE_STATE_PULLED' ? { cable: 'pulled' as const } : {}),
    ...(e.qmp_socket ? { qmp: { socket: e.qmp_socket, netdev: e.qmp_netdev ?? '' } } : {}),
  };
}

export function specToPb(s: WireSpec): PbWireSpec {
  return {
    uid: s.uid,
    local: endpointToPb(s.local),
    peer: s.peer ? { node: s.peer.node, address: s.peer.address } : null,
    local_peer: s.localPeer ? endpointToPb(s.localPeer) : null,
    capture_ring_bytes: s.captureRingBytes ?? 0,
    local_impair: endImpairToPb(s.impair?.local),
    local_peer_impair: endImpairToPb(s.impair?.localPeer),
    carrier_hold_ms: s.carrierHoldMs ?? 0,
    segment: s.segment ? { more_local: s.segment.moreLocal.map(endpointToPb), peers: s.segment.peers.map((p) => ({ node: p.node, address: p.address })) } : null,
  };
}

export function specFromPb(s: PbWireSpec): WireSpec {
  const spec: WireSpec = { uid: Number(s.uid), local: s.local ? endpointFromPb(s.local) : (undefined as unknown as EndpointSpec) };
  if (s.peer && (s.peer.node || s.peer.address)) spec.peer = { node: s.peer.node, address: s.peer.address };
  if (s.local_peer && s.local_peer.ifname) spec.localPeer = endpointFromPb(s.local_peer);
  if (Number(s.capture_ring_bytes) > 0) spec.captureRingBytes = Number(s.capture_ring_bytes);
  const local = endImpairFromPb(s.local_impair);
  const localPeer = endImpairFromPb(s.local_peer_impair);
  if (local || localPeer) spec.impair = { ...(local ? { local } : {}), ...(localPeer ? { localPeer } : {}) };
  if (Number(s.carrier_hold_ms) > 0) spec.carrierHoldMs = Number(s.carrier_hold_ms);
  if (s.segment) spec.segment = { moreLocal: (s.segment.more_local ?? []).map(endpointFromPb), peers: (s.segment.peers ?? []).map((p) => ({ node: p.node, address: p.address })) };
  return spec;
}

function countersToPb(c: EndCounters): PbCounters {
  const d = c.drops;
  return {
    rx_frames: c.rxFrames,
    rx_bytes: c.rxBytes,
    tx_frames: c.txFrames,
    tx_bytes: c.txBytes,
    drops: Object.fromEntries((Object.entries(DROP_CAUSES) as Array<[DropCause, PbDropCause]>).map(([k, pb]) => [pb, d[k]])) as PbDrops,
    capture_drops: c.captureDrops,
    backpressure_pauses: c.backpressurePauses,
    impair_duplicated: c.impairDuplicated,
    impair_corrupted: c.impairCorrupted,
    impair_reordered: c.impairReordered,
    impair_held_bytes: c.impairHeldBytes,
  };
}

export function statusToPb(w: WireStatus): PbWireStatus {
  return {
    spec: specToPb(w.spec),
    state: w.state === 'up' ? 'WIRE_STATE_UP' : w.state === 'restoring' ? 'WIRE_STATE_RESTORING' : 'WIRE_STATE_DOWN',
    message: w.message ?? '',
    ends: w.ends.map((e, i) => ({
      name: e.name,
      ifindex: e.ifindex,
      vnet_hdr: e.vnetHdr,
      counters: countersToPb(e.counters),
      file_capture: e.fileCapture,
      impair: endImpairToPb(normalizeEnd(i === 0 ? w.spec.impair?.local : w.spec.impair?.localPeer)),
      carrier: {
        on: e.carrier.on,
        reason: e.carrier.reason,
        cable: e.carrier.cable === 'pulled' ? 'CABLE_STATE_PULLED' : 'CABLE_STATE_PLUGGED',
        far: e.carrier.far,
        hold_ms: e.carrier.holdMs,
        last_error: e.carrier.lastError,
        changes: e.carrier.changes,
      },
    })),
  };
}
