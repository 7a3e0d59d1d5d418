// `patchwire wire add|rm|ls` and `patchwire health`: talk to one daemon's control API.
import { parseArgs } from 'node:util';

import { ControlClient } from '../control/client.js';
import type { PbWireStatus } from '../control/convert.js';
import type { EndpointKind, EndpointSpec } from '../endpoint/index.js';
import type { WireSpec } from '../dataplane/wire.js';
import { UsageError } from './usage.js';
import { parseBounded } from '../limits.js';

export const WIRE_HELP = `patchwire wire add|rm|ls --control ADDR [options]

  wire add --uid N --kind veth|tap|host --netns NS --ifname IF [--pod NAME]
           [--mac MAC] [--mtu N] [--ip CIDR ...]
           (--peer-node NODE --peer-address HOST:PORT |
            --local-kind K --local-netns NS --local-ifname IF [--local-pod P] [--local-mac M] [--local-ip CIDR ...])
  wire rm --uid N
  wire ls [--json]
  health [--json]

--control defaults to unix:///run/patchwire/default.sock.
`;

function endpoint(kind: string | undefined, netns: string | undefined, ifname: string | undefined, pod: string | undefined, mac: string | undefined, mtu: string | undefined, ips: string[] | undefined, prefix: string): EndpointSpec {
  if (!kind || !netns || !ifname) throw new UsageError(`wire add: --${prefix}kind, --${prefix}netns and --${prefix}ifname are required`);
  const m = mtu === undefined || mtu === '0' ? 0 : parseBounded(`--${prefix}mtu`, mtu, 'mtu', (msg) => new UsageError(`wire add: ${msg}`));
  return { kind: kind as EndpointKind, netns, ifname, pod: pod ?? netns, mac: mac ?? '', mtu: m, ips: ips ?? [] };
}

export function formatWires(wires: PbWireStatus[]): string {
  const rows = [['UID', 'END', 'STATE', 'RX FRAMES', 'TX FRAMES', 'DROPS']];
  for (const w of wires) {
    for (const e of w.ends) {
      const drops = Object.entries(e.counters.drops)
        .filter(([, v]) => Number(v) > 0)
        .map(([k, v]) => `${k}=${v}`)
        .join(',');
      rows.push([String(w.spec.uid), e.name, w.state.replace('WIRE_STATE_', '').toLowerCase(), String(e.counters.rx_frames), String(e.counters.tx_frames), drops || '0']);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export async function wireMain(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      control: { type: 'string', default: 'unix:///run/patchwire/default.sock' },
      uid: { type: 'string' },
      kind: { type: 'string' },
      netns: { type: 'string' },
      ifname: { type: 'string' },
      pod: { type: 'string' },
      mac: { type: 'string' },
      mtu: { type: 'string' },
      ip: { type: 'string', multiple: true },
      'peer-node': { type: 'string' },
      'peer-address': { type: 'string' },
      'local-kind': { type: 'string' },
      'local-netns': { type: 'string' },
      'local-ifname': { type: 'string' },
      'local-pod': { type: 'string' },
      'local-mac': { type: 'string' },
      'local-ip': { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || !verb) {
    process.stdout.write(WIRE_HELP);
    return;
  }
  const client = new ControlClient(values.control!);
  try {
    if (verb === 'add') {
      const uid = parseBounded('--uid', values.uid ?? '', 'wireUid', (m) => new UsageError(`wire add: ${m}`));
      const spec: WireSpec = { uid, local: endpoint(values.kind, values.netns, values.ifname, values.pod, values.mac, values.mtu, values.ip, '') };
      if (values['peer-node'] || values['peer-address']) spec.peer = { node: values['peer-node'] ?? '', address: values['peer-address'] ?? '' };
      if (values['local-kind'] || values['local-netns']) {
        spec.localPeer = endpoint(values['local-kind'], values['local-netns'], values['local-ifname'], values['local-pod'], values['local-mac'], values.mtu, values['local-ip'], 'local-');
      }
      const st = await client.addWire(spec);
      process.stdout.write(values.json ? JSON.stringify(st) + '\n' : formatWires([st]));
    } else if (verb === 'rm') {
      await client.removeWire(parseBounded('--uid', values.uid ?? '', 'wireUid', (m) => new UsageError(`wire rm: ${m}`)));
    } else if (verb === 'ls') {
      const wires = await client.listWires();
      process.stdout.write(values.json ? JSON.stringify({ wires }, null, 1) + '\n' : formatWires(wires));
    } else if (verb === 'health') {
      const h = await client.health();
      process.stdout.write(JSON.stringify(h, null, 1) + '\n');
    } else {
      throw new UsageError(`wire: unknown verb '${verb}'\n${WIRE_HELP}`);
    }
  } finally {
    client.close();
  }
}
