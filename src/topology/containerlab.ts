// containerlab topology files: `name`, `topology.nodes`, `topology.links[].endpoints`.
import { ifnameProblem } from '../netns/ip.js';
import { parseLinkExtension, parsePodExtension } from './extension.js';
import { type LabModel, type LinkModel, POD_NAME_RE, type PodModel, type TopologyError } from './model.js';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function looksLikeContainerlab(doc: unknown): boolean {
  return isObject(doc) && isObject(doc.topology);
}

export function parseContainerlab(doc: Record<string, unknown>, file: string): { model: LabModel; errors: TopologyError[] } {
  const errors: TopologyError[] = [];
  const object = typeof doc.name === 'string' ? `lab ${doc.name}` : 'lab';
  const report = (field: string, message: string): void => {
    errors.push({ file, object, field, message });
  };
  if (typeof doc.name !== 'string' || doc.name === '') report('name', 'is required');
  const topo = doc.topology as Record<string, unknown>;
  const pods: PodModel[] = [];
  const nodes = topo.nodes;
  if (!isObject(nodes)) report('topology.nodes', 'must be a mapping of node names');
  else {
    for (const [name, v] of Object.entries(nodes)) {
      if (!POD_NAME_RE.test(name)) report(`topology.nodes.${name}`, `node name '${name}' may hold only letters, digits, '-', '_' and '.'`);
      const ext = isObject(v) ? parsePodExtension(v.patchwire, `topology.nodes.${name}.patchwire`, report) : {};
      pods.push({ name, ...ext });
    }
  }
  const known = new Set(pods.map((p) => p.name));
  const links: LinkModel[] = [];
  const used = new Map<string, string>();
  const raw = topo.links ?? [];
  if (!Array.isArray(raw)) report('topology.links', 'must be a list');
  else {
    raw.forEach((l, i) => {
      const field = `topology.links[${i}]`;
      if (!isObject(l)) return report(field, 'must be a mapping');
      for (const k of Object.keys(l)) if (!['endpoints', 'patchwire'].includes(k)) report(`${field}.${k}`, `unknown key '${k}' (patchwire supports endpoints and patchwire)`);
      const ext = parseLinkExtension(l.patchwire, `${field}.patchwire`, report);
      if (!Array.isArray(l.endpoints) || l.endpoints.length !== 2) return report(`${field}.endpoints`, 'must list exactly two "node:interface" strings');
      const ends: Array<{ pod: string; intf: string }> = [];
      let ok = true;
      l.endpoints.forEach((e, j) => {
        const f = `${field}.endpoints[${j}]`;
        const m = typeof e === 'string' ? /^([^:]+):(.+)$/.exec(e) : null;
        if (!m) {
          report(f, `'${String(e)}' is not "node:interface"`);
          ok = false;
          return;
        }
        const [, pod, intf] = m as unknown as [string, string, string];
        if (!known.has(pod)) {
          report(f, `node '${pod}' is not in topology.nodes`);
          ok = false;
        }
        const p = ifnameProblem(intf);
        if (p) {
          report(f, p);
          ok = false;
        }
        const key = `${pod}:${intf}`;
        if (used.has(key)) {
          report(f, `interface ${key} already carries ${used.get(key)}`);
          ok = false;
        }
        ends.push({ pod, intf });
      });
      if (!ok) return;
      const [a, b] = ends as [{ pod: string; intf: string }, { pod: string; intf: string }];
      if (a.pod === b.pod && a.intf === b.intf) return report(field, `links interface ${a.pod}:${a.intf} to itself`);
      used.set(`${a.pod}:${a.intf}`, field);
      used.set(`${b.pod}:${b.intf}`, field);
      const end = (x: { pod: string; intf: string }): LinkModel['a'] => ({
        ...x,
        kind: ext.kind ?? 'veth',
        ...(ext.mtu ? { mtu: ext.mtu } : {}),
        ...(ext.captureBytes !== undefined ? { captureBytes: ext.captureBytes } : {}),
      });
      links.push({ uid: i + 1, a: end(a), b: end(b) });
    });
  }
  return { model: { name: typeof doc.name === 'string' ? doc.name : undefined, format: 'containerlab', pods, links }, errors };
}
