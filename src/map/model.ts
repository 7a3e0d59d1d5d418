// The live link map's data model (docs/map.md): what one daemon reports of
// its part of a lab (its node, its peers, the pods and wire ends it holds,
// their state, counters and rates), the events a watcher receives, and the
// pure functions every client shares: applying events to a map and merging
// the maps of a lab's daemons into one. Field names are the control API's
// (proto/patchwire/v1/control.proto, MapSnapshot), so the JSON of /map and
// /map/events and the gRPC messages read the same.

import type { PbEndImpairments } from '../dataplane/impair.js';

/** Bumped when a field changes meaning or goes away (adding fields does not). */
export const MAP_VERSION = 1;

export interface MapNode {
  name: string;
  /** data-plane address, host:port */
  address: string;
  /** this node's daemon reported the map (false: known only as some daemon's peer) */
  reporting: boolean;
}

/** The streams between a daemon (`node`) and one peer daemon. */
export interface MapPeer {
  node: string;
  peer: string;
  address: string;
  /** our subscription to the peer is up (we receive) */
  inbound: boolean;
  /** the peer's subscription to us is up (we send) */
  outbound: boolean;
  up: boolean;
  /** round trip of the stream's last keepalive ping, ms (0: none answered yet) */
  rtt_ms: number;
  reconnects: number;
  queued_bytes: number;
  frames_in: number;
  frames_out: number;
  last_error: string;
}

export interface MapPod {
  /** Kubernetes namespace ('' in lab mode) */
  namespace: string;
  name: string;
  node: string;
}

export interface MapWireEnd {
  /** "pod/intf" (lab mode) or "namespace/pod/intf" (cluster mode) */
  name: string;
  namespace: string;
  pod: string;
  interface: string;
  node: string;
  /** veth, tap or host */
  kind: string;
  ifindex: number;
  /** rx: read from the pod's interface into the wire; tx: written out to the pod's interface */
  rx_frames: number;
  rx_bytes: number;
  tx_frames: number;
  tx_bytes: number;
  /** frames dropped at this end, by cause (the causes of the README's table) */
  drops: Record<string, number>;
  drops_total: number;
  capture_drops: number;
  backpressure_pauses: number;
  /** per second over MapSnapshot.rate_window_ms; bits, not bytes, for the _bps */
  rx_fps: number;
  rx_bps: number;
  tx_fps: number;
  tx_bps: number;
  drop_rate: number;
  /** the pod's interface has carrier */
  carrier: boolean;
  /** why carrier is as it is (the reason of its last change) */
  carrier_reason: string;
  /** the cable at this end: plugged or pulled */
  cable: string;
  /** the far end's cable as its daemon last said: plugged, pulled, gone or unknown */
  far_cable: string;
  carrier_changes: number;
  /** the end's impairments by direction, in the control API's shape (null: none) */
  impair: PbEndImpairments | null;
}

export interface MapWire {
  uid: number;
  /** up, down (the peer daemon is unreachable), restoring, or partial (merged: one end's daemon did not report) */
  state: string;
  /** the far end's node for a wire across nodes ('' when both ends are on this node) */
  peer_node: string;
  message: string;
  ends: MapWireEnd[];
}

export interface MapSnapshot {
  version: number;
  lab: string;
  /** the reporting daemon's node ('' for a map merged from several daemons) */
  node: string;
  /** increases with every sample the daemon takes */
  seq: number;
  time_ms: number;
  /** the window the rates are averaged over (0: no earlier sample, rates are 0) */
  rate_window_ms: number;
  nodes: MapNode[];
  peers: MapPeer[];
  pods: MapPod[];
  wires: MapWire[];
}

/**
 * One message of a map stream. `full`: `map` is the whole map (the first
 * event, and again after a client fell behind); otherwise it holds only the
 * entries added or changed since the previous event, and `removed_*` the keys
 * of those gone.
 */
export interface MapEvent {
  full: boolean;
  map: MapSnapshot;
  removed_nodes: string[];
  /** peer keys: "node>peer" */
  removed_peers: string[];
  /** pod keys: "namespace/name" */
  removed_pods: string[];
  removed_wires: number[];
}

export const peerKey = (p: Pick<MapPeer, 'node' | 'peer'>): string => `${p.node}>${p.peer}`;
export const podKey = (p: Pick<MapPod, 'namespace' | 'name'>): string => `${p.namespace}/${p.name}`;

/** Namespace, pod and interface of an end name ("pod/intf" or "namespace/pod/intf"). */
export function splitEndName(name: string): { namespace: string; pod: string; interface: string } {
  const parts = name.split('/');
  const intf = parts.pop() ?? '';
  const pod = parts.pop() ?? '';
  return { namespace: parts.join('/'), pod, interface: intf };
}

type Keyed<T> = { key: (v: T) => string; list: (m: MapSnapshot) => T[] };
const SECTIONS = {
  nodes: { key: (n: MapNode) => n.name, list: (m: MapSnapshot) => m.nodes } as Keyed<MapNode>,
  peers: { key: peerKey, list: (m: MapSnapshot) => m.peers } as Keyed<MapPeer>,
  pods: { key: podKey, list: (m: MapSnapshot) => m.pods } as Keyed<MapPod>,
  wires: { key: (w: MapWire) => String(w.uid), list: (m: MapSnapshot) => m.wires } as Keyed<MapWire>,
};

function changed<T>(sec: Keyed<T>, prev: MapSnapshot, next: MapSnapshot): { upserts: T[]; removed: string[] } {
  const before = new Map(sec.list(prev).map((v) => [sec.key(v), JSON.stringify(v)]));
  const upserts = sec.list(next).filter((v) => before.get(sec.key(v)) !== JSON.stringify(v));
  const now = new Set(sec.list(next).map(sec.key));
  return { upserts, removed: [...before.keys()].filter((k) => !now.has(k)) };
}

/** The event that takes a watcher from `prev` to `next`; null when nothing but the sample's time changed. */
export function diffMaps(prev: MapSnapshot, next: MapSnapshot): MapEvent | null {
  const n = changed(SECTIONS.nodes, prev, next);
  const p = changed(SECTIONS.peers, prev, next);
  const d = changed(SECTIONS.pods, prev, next);
  const w = changed(SECTIONS.wires, prev, next);
  const empty = [n, p, d, w].every((c) => c.upserts.length === 0 && c.removed.length === 0);
  if (empty) return null;
  return {
    full: false,
    map: { ...next, nodes: n.upserts, peers: p.upserts, pods: d.upserts, wires: w.upserts },
    removed_nodes: n.removed,
    removed_peers: p.removed,
    removed_pods: d.removed,
    removed_wires: w.removed.map(Number),
  };
}

export function fullEvent(map: MapSnapshot): MapEvent {
  return { full: true, map, removed_nodes: [], removed_peers: [], removed_pods: [], removed_wires: [] };
}

function upsert<T>(sec: Keyed<T>, have: T[], add: T[], removed: string[]): T[] {
  const m = new Map(have.map((v) => [sec.key(v), v]));
  for (const k of removed) m.delete(k);
  for (const v of add) m.set(sec.key(v), v);
  return [...m.values()];
}

/** The map after `ev` (a full event replaces it; `prev` null: nothing yet). */
export function applyMapEvent(prev: MapSnapshot | null, ev: MapEvent): MapSnapshot {
  if (ev.full || !prev) return sortMap(ev.map);
  return sortMap({
    ...ev.map,
    nodes: upsert(SECTIONS.nodes, prev.nodes, ev.map.nodes, ev.removed_nodes),
    peers: upsert(SECTIONS.peers, prev.peers, ev.map.peers, ev.removed_peers),
    pods: upsert(SECTIONS.pods, prev.pods, ev.map.pods, ev.removed_pods),
    wires: upsert(SECTIONS.wires, prev.wires, ev.map.wires, ev.removed_wires.map(String)),
  });
}

const byName = (a: { name: string }, b: { name: string }): number => a.name.localeCompare(b.name, undefined, { numeric: true });

/** Entries in a stable order: nodes, pods and ends by name, peers by key, wires by uid. */
export function sortMap(m: MapSnapshot): MapSnapshot {
  return {
    ...m,
    nodes: [...m.nodes].sort(byName),
    peers: [...m.peers].sort((a, b) => peerKey(a).localeCompare(peerKey(b), undefined, { numeric: true })),
    pods: [...m.pods].sort((a, b) => podKey(a).localeCompare(podKey(b), undefined, { numeric: true })),
    wires: [...m.wires].sort((a, b) => a.uid - b.uid).map((w) => ({ ...w, ends: [...w.ends].sort(byName) })),
  };
}

/**
 * One map of a lab from its daemons' maps: nodes and pods joined, each wire
 * with the ends every daemon holds of it. A wire across nodes whose other
 * daemon did not report is `partial`; one that any daemon sees down is down.
 */
export function mergeMaps(lab: string, maps: MapSnapshot[]): MapSnapshot {
  const nodes = new Map<string, MapNode>();
  const peers = new Map<string, MapPeer>();
  const pods = new Map<string, MapPod>();
  const wires = new Map<number, MapWire>();
  const reporting = new Set(maps.map((m) => m.node));
  for (const m of maps) {
    for (const n of m.nodes) {
      const had = nodes.get(n.name);
      if (!had || n.reporting) nodes.set(n.name, { ...n, reporting: reporting.has(n.name) });
    }
    for (const p of m.peers) peers.set(peerKey(p), p);
    for (const p of m.pods) pods.set(podKey(p), p);
    for (const w of m.wires) {
      const had = wires.get(w.uid);
      if (!had) {
        wires.set(w.uid, { ...w, ends: [...w.ends] });
        continue;
      }
      const names = new Set(had.ends.map((e) => e.name));
      had.ends.push(...w.ends.filter((e) => !names.has(e.name)));
      const rank = (s: string): number => ['restoring', 'down', 'partial', 'up'].indexOf(s);
      if (rank(w.state) < rank(had.state)) had.state = w.state;
      had.message ||= w.message;
    }
  }
  for (const w of wires.values()) {
    if (w.peer_node && w.state === 'up' && !reporting.has(w.peer_node)) w.state = 'partial';
  }
  const times = maps.map((m) => m.time_ms);
  return sortMap({
    version: MAP_VERSION,
    lab,
    node: '',
    seq: maps.reduce((a, m) => a + m.seq, 0),
    time_ms: times.length ? Math.max(...times) : Date.now(),
    rate_window_ms: maps.length ? Math.max(...maps.map((m) => m.rate_window_ms)) : 0,
    nodes: [...nodes.values()],
    peers: [...peers.values()],
    pods: [...pods.values()],
    wires: [...wires.values()],
  });
}
