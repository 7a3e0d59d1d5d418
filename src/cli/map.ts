// patchwire map LAB [--json] [--watch]: the lab's live link map, merged from
// its daemons' maps (ControlService GetMap / WatchMap, docs/map.md).
import { parseArgs } from 'node:util';

import { ControlClient } from '../control/client.js';
import { table } from '../lab/progress.js';
import { readLab } from '../lab/state.js';
import { applyMapEvent, type MapEvent, type MapSnapshot, mergeMaps } from '../map/model.js';
import { UsageError } from './usage.js';

export const MAP_HELP = `Live link map:
  patchwire map LAB [--json] [--watch]
      The lab's nodes, peer streams (with keepalive round trip), pods and wires
      with their state, counters, rates and drops, merged from every daemon.
      --json prints the map as JSON (docs/map.md); --watch keeps printing it as
      it changes (with --json: one map per line) until interrupted.
`;

function rate(bps: number, fps: number): string {
  const units: Array<[number, string]> = [
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  const u = units.find(([n]) => bps >= n);
  return `${fps.toFixed(fps < 10 ? 1 : 0)} fps ${u ? (bps / u[0]).toFixed(1) + u[1] : bps.toFixed(0)}bit/s`;
}

export function formatMap(m: MapSnapshot): string {
  let out = `lab ${m.lab}: ${m.nodes.length} nodes, ${m.pods.length} pods, ${m.wires.length} wires (map v${m.version}, ${new Date(m.time_ms).toISOString()})\n\n`;
  out += table([['NODE', 'ADDRESS', 'REPORTING'], ...m.nodes.map((n) => [n.name, n.address, n.reporting ? 'yes' : 'no'])]);
  if (m.peers.length) {
    out += '\n';
    out += table([
      ['NODE', 'PEER', 'STREAMS', 'RTT', 'RECONNECTS', 'QUEUED', 'LAST ERROR'],
      ...m.peers.map((p) => [p.node, p.peer, p.up ? 'up' : `${p.inbound ? 'in' : '-'}/${p.outbound ? 'out' : '-'}`, p.rtt_ms ? `${p.rtt_ms} ms` : '-', String(p.reconnects), String(p.queued_bytes), p.last_error || '-']),
    ]);
  }
  out += '\n';
  out += table([
    ['UID', 'ENDS', 'NODES', 'STATE', 'END', 'RX FRAMES', 'TX FRAMES', 'RX RATE', 'TX RATE', 'DROPS'],
    ...m.wires.flatMap((w) =>
      w.ends.map((e, i) => [
        i === 0 ? String(w.uid) : '',
        i === 0 ? w.ends.map((x) => x.name).join(' <-> ') + (w.ends.length < 2 && w.peer_node ? ` <-> (${w.peer_node})` : '') : '',
        i === 0 ? [...new Set([...w.ends.map((x) => x.node), ...(w.peer_node ? [w.peer_node] : [])])].join('-') : '',
        i === 0 ? w.state : '',
        e.name,
        String(e.rx_frames),
        String(e.tx_frames),
        rate(e.rx_bps, e.rx_fps),
        rate(e.tx_bps, e.tx_fps),
        e.drops_total ? `${e.drops_total} (${Object.entries(e.drops).filter(([, n]) => n > 0).map(([c, n]) => `${c} ${n}`).join(', ')})` : '0',
      ]),
    ),
  ]);
  return out;
}

export async function mapMain(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, watch: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(MAP_HELP);
    return 0;
  }
  const name = positionals[0];
  if (!name || positionals.length > 1) throw new UsageError('usage: patchwire map LAB [--json] [--watch]');
  const state = readLab(name);
  if (!state) throw new UsageError(`no lab named '${name}' (see 'patchwire ls')`);
  const clients = state.nodes.map((n) => ({ node: n.name, client: new ControlClient(n.control) }));
  const print = (m: MapSnapshot): void => {
    process.stdout.write(values.json ? `${JSON.stringify(m)}\n` : `${formatMap(m)}\n`);
  };
  try {
    if (!values.watch) {
      // A daemon that does not answer is left out (its wires show as partial).
      const maps = await Promise.all(clients.map((c) => c.client.getMap().catch(() => null)));
      print(mergeMaps(name, maps.filter((m): m is MapSnapshot => m !== null)));
      return 0;
    }
    return await watch(name, clients, print);
  } finally {
    for (const c of clients) c.client.close();
  }
}

/** Follows every daemon's stream, printing the merged map after each change; a stream that fails is opened again. */
function watch(lab: string, clients: Array<{ node: string; client: ControlClient }>, print: (m: MapSnapshot) => void): Promise<number> {
  const maps = new Map<string, MapSnapshot>();
  const streams = new Set<{ cancel(): void }>();
  let stopping = false;
  let pending: NodeJS.Timeout | null = null;
  const show = (): void => {
    // Events of several daemons within a moment make one print.
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      print(mergeMaps(lab, [...maps.values()]));
    }, 100);
  };
  return new Promise((resolve) => {
    const open = (c: { node: string; client: ControlClient }): void => {
      const s = c.client.watchMap();
      streams.add(s);
      s.on('data', (ev: MapEvent) => {
        maps.set(c.node, applyMapEvent(maps.get(c.node) ?? null, ev));
        show();
      });
      s.on('error', () => undefined);
      s.on('close', () => {
        streams.delete(s);
        if (stopping) return;
        // Its daemon restarted or went away: its part of the map goes until it is back.
        maps.delete(c.node);
        show();
        setTimeout(() => !stopping && open(c), 1000);
      });
    };
    for (const c of clients) open(c);
    const stop = (): void => {
      stopping = true;
      for (const s of streams) s.cancel();
      if (pending) clearTimeout(pending);
      resolve(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
