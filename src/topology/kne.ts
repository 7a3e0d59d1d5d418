// KNE topologies in protobuf text format (*.pb.txt): nodes, their
// interfaces and links (a_node, a_int, z_node, z_int). The text format is
// read by buf (`buf convert`, a maintained protobuf implementation) against
// proto/patchwire/kne/ (our copy of KNE's field names and the names of its
// vendor_data messages, so an Any in a file resolves), and
// comes back as JSON; nothing here parses the text format itself.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { ifnameProblem, cidrProblem, mtuProblem } from '../netns/ip.js';
import { PACKAGE_ROOT } from '../paths.js';
import { type LabModel, type LinkEnd, type LinkModel, POD_NAME_RE, type PodModel, type TopologyError } from './model.js';

/** The proto module: KNE's topology and its vendor_data types (proto/patchwire/kne/). */
const PROTO = 'proto';
const TYPE = 'patchwire.kne.v1.Topology';

/** Whether a file name says KNE text format. */
export function looksLikeKne(file: string): boolean {
  return /\.(pb\.txt|textproto|txtpb)$/i.test(file);
}

interface KneInterface {
  name?: string;
  mtu?: number;
  ipAddress?: string;
}
interface KneNode {
  name?: string;
  vendor?: string;
  model?: string;
  interfaces?: Record<string, KneInterface>;
}
interface KneLink {
  aNode?: string;
  aInt?: string;
  zNode?: string;
  zInt?: string;
}
interface KneTopology {
  name?: string;
  nodes?: KneNode[];
  links?: KneLink[];
}

function bufBinary(): string {
  return path.join(PACKAGE_ROOT, 'node_modules', '@bufbuild', 'buf', 'bin', 'buf');
}

/** The text-format file as JSON, by `buf convert`; a syntax error comes back located. */
function convert(text: string, file: string): Promise<KneTopology | TopologyError> {
  const buf = bufBinary();
  if (!existsSync(buf)) return Promise.resolve({ file, message: `reading KNE text format needs buf (${buf} is missing; it is a devDependency: npm install)` });
  return new Promise((resolve) => {
    const child = execFile(
      buf,
      ['convert', PROTO, '--type', TYPE, '--from', '-#format=txtpb', '--to', '-#format=json'],
      { cwd: PACKAGE_ROOT, maxBuffer: 64 << 20, timeout: 60000 },
      (err, stdout, stderr) => {
        if (!err) {
          try {
            resolve(JSON.parse(stdout) as KneTopology);
          } catch (e) {
            resolve({ file, message: `buf convert gave no JSON: ${(e as Error).message}` });
          }
          return;
        }
        // "Failure: --from: txtpb unmarshal: proto: (line 3:29): invalid value for string type: eth1"
        const msg = (stderr || err.message).trim().split('\n').pop()!.replace(/^Failure: --from: txtpb unmarshal: (proto:\s)?/, '');
        const m = /^\(line (\d+):(\d+)\): (.*)$/.exec(msg);
        resolve(m ? { file, line: Number(m[1]), col: Number(m[2]), message: `not KNE text format: ${m[3]}` } : { file, message: `not KNE text format: ${msg}` });
      },
    );
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(text);
  });
}

export async function parseKne(text: string, file: string): Promise<{ model: LabModel; errors: TopologyError[] }> {
  const empty: LabModel = { format: 'kne', pods: [], links: [], segments: [], skipped: [], expanded: [] };
  const topo = await convert(text, file);
  if ('message' in topo) return { model: empty, errors: [topo as TopologyError] };
  const errors: TopologyError[] = [];
  const object = topo.name ? `topology ${topo.name}` : 'topology';
  const report = (field: string, message: string): void => {
    errors.push({ file, object, field, message });
  };
  const expanded: string[] = [];
  const pods: PodModel[] = [];
  const nodes = new Map<string, KneNode>();
  (topo.nodes ?? []).forEach((n, i) => {
    const f = `nodes[${i}]`;
    if (!n.name) return report(`${f}.name`, 'is required');
    if (!POD_NAME_RE.test(n.name)) report(`${f}.name`, `node name '${n.name}' may hold only letters, digits, '-', '_' and '.'`);
    if (nodes.has(n.name)) return report(`${f}.name`, `node '${n.name}' is declared twice`);
    nodes.set(n.name, n);
    pods.push({ name: n.name });
    for (const [intf, it] of Object.entries(n.interfaces ?? {})) {
      if (it.name) expanded.push(`${n.name}:${intf} is ${it.name} on the ${n.vendor ?? 'node'}${n.model ? ` ${n.model}` : ''}`);
    }
  });
  const links: LinkModel[] = [];
  const used = new Map<string, string>();
  (topo.links ?? []).forEach((l, i) => {
    const f = `links[${i}]`;
    let ok = true;
    const end = (nodeKey: 'aNode' | 'zNode', intKey: 'aInt' | 'zInt', nodeField: string, intField: string): LinkEnd | null => {
      const node = l[nodeKey];
      const intf = l[intKey];
      if (!node) report(`${f}.${nodeField}`, 'is required');
      else if (!nodes.has(node)) report(`${f}.${nodeField}`, `node '${node}' is not in nodes`);
      if (!intf) report(`${f}.${intField}`, 'is required');
      const p = intf ? ifnameProblem(intf) : null;
      if (p) report(`${f}.${intField}`, p);
      if (!node || !intf || !nodes.has(node) || p) {
        ok = false;
        return null;
      }
      const key = `${node}:${intf}`;
      if (used.has(key)) {
        report(f, `interface ${key} already carries ${used.get(key)}`);
        ok = false;
      }
      used.set(key, f);
      const it = nodes.get(node)!.interfaces?.[intf];
      const out: LinkEnd = { pod: node, intf, kind: 'veth' };
      if (it?.mtu) {
        const mp = mtuProblem(it.mtu);
        if (mp) report(`nodes ${node}.interfaces[${intf}].mtu`, mp);
        else out.mtu = it.mtu;
      }
      if (it?.ipAddress) {
        const cp = cidrProblem(it.ipAddress);
        if (cp) report(`nodes ${node}.interfaces[${intf}].ip_address`, cp);
        else out.ip = it.ipAddress;
      }
      return out;
    };
    const a = end('aNode', 'aInt', 'a_node', 'a_int');
    const b = end('zNode', 'zInt', 'z_node', 'z_int');
    if (!ok || !a || !b) return;
    if (a.pod === b.pod && a.intf === b.intf) return report(f, `links interface ${a.pod}:${a.intf} to itself`);
    // KNE gives links uids from 0 in file order; lab wire ids start at 1.
    links.push({ uid: i + 1, a, b });
  });
  if (links.length) expanded.push('links numbered from 1 in file order (KNE numbers the same links from 0)');
  return { model: { ...(topo.name ? { name: topo.name } : {}), format: 'kne', pods, links, segments: [], skipped: [], expanded }, errors };
}
