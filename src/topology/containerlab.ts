// containerlab topology files: `name`, `topology.nodes` with `kinds`, `groups`
// and `defaults` inheritance, and `topology.links` in the brief form
// (`endpoints: ["a:e1", "b:e1"]`) and the extended form (`type:` with
// endpoint objects). Environment variables are expanded first, as
// containerlab does. Links to a bridge node become a shared segment.
import { cidrProblem, ifnameProblem, macProblem, mtuProblem } from '../netns/ip.js';
import { aliasFor } from './aliases.js';
import { expandEnv, type Env } from './envsubst.js';
import { carrierFields, parseLinkExtension, parsePodExtension } from './extension.js';
import { type LabModel, type LinkEnd, type LinkModel, POD_NAME_RE, type PodModel, type SegmentModel, type TopologyError } from './model.js';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function looksLikeContainerlab(doc: unknown): boolean {
  return isObject(doc) && isObject(doc.topology);
}

/** Node kinds that are not containers: links to them join a host bridge. */
const BRIDGE_KINDS = new Set(['bridge', 'ovs-bridge']);
/** Brief-form node names that are no node (containerlab's special endpoints). */
const SPECIAL_NODES = new Set(['host', 'mgmt-net', 'macvlan']);

const BRIEF_KEYS = ['endpoints', 'mtu', 'vars', 'labels', 'ipv4', 'ipv6', 'patchwire'];
const EXTENDED_KEYS = ['type', 'endpoints', 'endpoint', 'host-interface', 'mode', 'remote', 'vni', 'dst-port', 'src-port', 'mtu', 'vars', 'labels', 'ipv4', 'ipv6', 'patchwire'];
const ENDPOINT_KEYS = ['node', 'interface', 'mac', 'ipv4', 'ipv6', 'vars'];

/** Why a link type cannot be a patchwire wire, by containerlab link type. */
const REFUSED_TYPES: Record<string, string> = {
  'mgmt-net': "joins the node's interface to containerlab's management network; a patchwire lab has no management network (link it to another pod, or to an existing host interface with type: host)",
  macvlan: "makes a macvlan sub-interface of a host interface; patchwire does not create macvlan interfaces (frames would bypass the wire's counting and capture): use type: host to wire the node's interface to an existing host interface",
  dummy: 'makes an interface with no far end; a patchwire wire always joins two ends',
  vxlan: 'tunnels the interface to a remote VTEP outside the lab; patchwire carries links between nodes itself, so declare the far end as a node of the lab',
  'vxlan-stitch': 'tunnels the interface to a remote VTEP outside the lab; patchwire carries links between nodes itself, so declare the far end as a node of the lab',
};

/** The host's namespace, for `host` link ends: the machine's own (pid 1's). */
export const HOST_POD = 'host';

interface NodeInfo {
  kind?: string;
  exec?: string[];
  pin?: { node?: string };
}

type Report = (field: string, message: string) => void;

/** Replaces ${VAR...} in every string of the document, as containerlab expands the whole file. */
function expandAll(v: unknown, env: Env, used: string[]): unknown {
  if (typeof v === 'string') return v.includes('$') ? expandEnv(v, env, used) : v;
  if (Array.isArray(v)) return v.map((x) => expandAll(x, env, used));
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [expandAll(k, env, used) as string, expandAll(x, env, used)]));
  return v;
}

export function parseContainerlab(raw: Record<string, unknown>, file: string, env: Env = process.env): { model: LabModel; errors: TopologyError[] } {
  const errors: TopologyError[] = [];
  const skipped: string[] = [];
  const expanded: string[] = [];
  const usedVars: string[] = [];
  const doc = expandAll(raw, env, usedVars) as Record<string, unknown>;
  for (const u of [...new Set(usedVars)]) expanded.push(`environment: ${u}`);
  const object = typeof doc.name === 'string' ? `lab ${doc.name}` : 'lab';
  const report: Report = (field, message) => {
    errors.push({ file, object, field, message });
  };
  if (typeof doc.name !== 'string' || doc.name === '') report('name', 'is required');
  const topo = doc.topology as Record<string, unknown>;

  // Inheritance: node, then its group, then its kind, then defaults.
  const section = (key: string): Record<string, unknown> => {
    const v = topo[key];
    if (v === undefined || v === null) return {};
    if (!isObject(v)) {
      report(`topology.${key}`, 'must be a mapping');
      return {};
    }
    return v;
  };
  const kinds = section('kinds');
  const groups = section('groups');
  const defaults = section('defaults');
  const inherited = (node: Record<string, unknown>, key: string, name: string): { value: unknown; from?: string } => {
    if (node[key] !== undefined) return { value: node[key] };
    const g = typeof node.group === 'string' ? groups[node.group] : undefined;
    if (isObject(g) && g[key] !== undefined) return { value: g[key], from: `group ${node.group as string}` };
    const kind = key === 'kind' ? undefined : (inherited(node, 'kind', name).value as string | undefined);
    const k = kind !== undefined ? kinds[kind] : undefined;
    if (isObject(k) && k[key] !== undefined) return { value: k[key], from: `kind ${kind}` };
    if (defaults[key] !== undefined) return { value: defaults[key], from: 'defaults' };
    return { value: undefined };
  };

  const pods: PodModel[] = [];
  const info = new Map<string, NodeInfo>();
  const bridges = new Set<string>();
  const nodes = topo.nodes;
  if (!isObject(nodes)) report('topology.nodes', 'must be a mapping of node names');
  else {
    for (const [name, v] of Object.entries(nodes)) {
      const field = `topology.nodes.${name}`;
      const node = isObject(v) ? v : {};
      if (v !== null && v !== undefined && !isObject(v)) report(field, 'must be a mapping');
      if (typeof node.group === 'string' && !isObject(groups[node.group])) report(`${field}.group`, `group '${node.group}' is not in topology.groups`);
      const kind = inherited(node, 'kind', name);
      if (kind.value !== undefined && typeof kind.value !== 'string') report(`${field}.kind`, 'must be a string');
      const kindName = typeof kind.value === 'string' ? kind.value : undefined;
      if (kind.from) expanded.push(`node ${name}: kind ${kindName} from ${kind.from}`);
      if (kindName && BRIDGE_KINDS.has(kindName)) {
        // A bridge is no pod: the links to it make one shared segment.
        bridges.add(name);
        continue;
      }
      if (!POD_NAME_RE.test(name)) report(field, `node name '${name}' may hold only letters, digits, '-', '_' and '.'`);
      if (SPECIAL_NODES.has(name)) report(field, `'${name}' names containerlab's special endpoint, not a node`);
      const exec = inherited(node, 'exec', name);
      let cmds: string[] | undefined;
      if (exec.value !== undefined) {
        if (Array.isArray(exec.value) && exec.value.every((c) => typeof c === 'string')) cmds = exec.value as string[];
        else report(`${field}.exec`, 'must be a list of commands (strings)');
        if (exec.from && cmds) expanded.push(`node ${name}: exec from ${exec.from}`);
      }
      const pin = parsePodExtension(node.patchwire, `${field}.patchwire`, report);
      info.set(name, { kind: kindName, exec: cmds, pin });
      pods.push({ name, ...pin, ...(cmds?.length ? { exec: cmds } : {}) });
    }
  }

  const links: LinkModel[] = [];
  const segmentMembers = new Map<string, { members: LinkEnd[]; where: string }>();
  const used = new Map<string, string>();
  const rawLinks = topo.links ?? [];
  if (!Array.isArray(rawLinks)) report('topology.links', 'must be a list');
  else {
    rawLinks.forEach((l, i) => {
      const field = `topology.links[${i}]`;
      if (!isObject(l)) return report(field, 'must be a mapping');
      const type = l.type === undefined ? undefined : l.type;
      if (type !== undefined && typeof type !== 'string') return report(`${field}.type`, 'must be a string');
      const known = type === undefined ? BRIEF_KEYS : EXTENDED_KEYS;
      for (const k of Object.keys(l)) if (!known.includes(k)) report(`${field}.${k}`, `unknown key '${k}' for a ${type ?? 'brief'} link`);
      if (type !== undefined && REFUSED_TYPES[type]) return report(`${field}.type`, `link type ${type} ${REFUSED_TYPES[type]}`);
      if (type !== undefined && !['veth', 'veth-stitch', 'host'].includes(type)) return report(`${field}.type`, `unknown link type '${type}' (containerlab's are veth, host, mgmt-net, macvlan, dummy, vxlan, vxlan-stitch, veth-stitch)`);
      if (type === 'veth-stitch') expanded.push(`${field}: veth-stitch is a plain wire here (patchwire counts and captures every wire itself)`);
      const ext = parseLinkExtension(l.patchwire, `${field}.patchwire`, report);
      for (const k of ['vars', 'labels']) if (l[k] !== undefined) skipped.push(`${field}.${k} (for containerlab's config engine)`);
      let mtu: number | undefined;
      if (l.mtu !== undefined) {
        const linkField = `${field}.mtu`;
        const p = typeof l.mtu === 'number' ? mtuProblem(l.mtu) : `MTU '${String(l.mtu)}' is not a number`;
        if (p) report(linkField, p);
        else mtu = l.mtu as number;
      }
      const addrList = (k: 'ipv4' | 'ipv6'): string[] => {
        const v = l[k];
        if (v === undefined) return [];
        if (!Array.isArray(v) || v.length > 2 || v.some((x) => typeof x !== 'string')) {
          report(`${field}.${k}`, 'must list one address per endpoint, in endpoint order');
          return [];
        }
        return v as string[];
      };
      const v4 = addrList('ipv4');
      const v6 = addrList('ipv6');

      // Each end as written: node, interface and per-end attributes.
      interface RawEnd {
        node: string;
        intf: string;
        mac?: string;
        ipv4?: string;
        ipv6?: string;
        f: string;
      }
      const ends: RawEnd[] = [];
      let ok = true;
      const bad = (f: string, m: string): void => {
        report(f, m);
        ok = false;
      };
      if (type === 'host') {
        const ep = parseEndpointObject(l.endpoint, `${field}.endpoint`, bad);
        if (typeof l['host-interface'] !== 'string' || l['host-interface'] === '') bad(`${field}.host-interface`, 'is required for a host link');
        if (ep && typeof l['host-interface'] === 'string') ends.push(ep, { node: HOST_POD, intf: l['host-interface'], f: `${field}.host-interface` });
      } else if (type === undefined) {
        if (!Array.isArray(l.endpoints) || l.endpoints.length !== 2) return report(`${field}.endpoints`, 'must list exactly two "node:interface" strings');
        l.endpoints.forEach((e, j) => {
          const f = `${field}.endpoints[${j}]`;
          const m = typeof e === 'string' ? /^([^:]+):(.+)$/.exec(e) : null;
          if (!m) return bad(f, `'${String(e)}' is not "node:interface"`);
          ends.push({ node: m[1]!, intf: m[2]!, ...(v4[j] ? { ipv4: v4[j] } : {}), ...(v6[j] ? { ipv6: v6[j] } : {}), f });
        });
      } else {
        if (!Array.isArray(l.endpoints) || l.endpoints.length !== 2) return report(`${field}.endpoints`, `must list exactly two endpoint objects ({node, interface}) for a ${type} link`);
        l.endpoints.forEach((e, j) => {
          const ep = parseEndpointObject(e, `${field}.endpoints[${j}]`, bad);
          if (ep) ends.push({ ...ep, ...(v4[j] && !ep.ipv4 ? { ipv4: v4[j] } : {}), ...(v6[j] && !ep.ipv6 ? { ipv6: v6[j] } : {}) });
        });
      }
      if (!ok) return;

      const model: LinkEnd[] = [];
      const onBridge: string[] = [];
      for (const e of ends) {
        if (e.node === 'mgmt-net' || e.node === 'macvlan') return bad(e.f, `${e.node}:${e.intf}: link type ${e.node} ${REFUSED_TYPES[e.node]}`);
        const isHost = e.node === HOST_POD && !info.has(HOST_POD);
        if (bridges.has(e.node)) {
          onBridge.push(e.node);
          continue;
        }
        if (!isHost && !info.has(e.node)) {
          bad(e.f, `node '${e.node}' is not in topology.nodes`);
          continue;
        }
        let intf = e.intf;
        const alias = isHost ? null : aliasFor(info.get(e.node)!.kind, intf);
        if (alias) {
          expanded.push(`${e.node}:${intf} is ${e.node}:${alias} (${info.get(e.node)!.kind} interface alias)`);
          intf = alias;
        }
        const p = ifnameProblem(intf);
        if (p) {
          bad(e.f, p);
          continue;
        }
        for (const [k, a] of [['ipv4', e.ipv4], ['ipv6', e.ipv6]] as const) {
          const c = a ? cidrProblem(a) : null;
          if (c) bad(`${e.f}.${k}`, c);
        }
        if (e.mac) {
          const mp = macProblem(e.mac);
          if (mp) bad(`${e.f}.mac`, mp);
        }
        const key = `${e.node}:${intf}`;
        if (used.has(key)) {
          bad(e.f, `interface ${key} already carries ${used.get(key)}`);
          continue;
        }
        const end: LinkEnd = {
          pod: e.node,
          intf,
          ...(e.ipv4 ? { ip: e.ipv4 } : {}),
          ...(e.ipv6 ? { ip6: e.ipv6 } : {}),
          ...(e.mac ? { mac: e.mac } : ext.mac ? { mac: ext.mac } : {}),
          ...(ext.mtu ?? mtu ? { mtu: (ext.mtu ?? mtu)! } : {}),
          ...(ext.captureBytes !== undefined ? { captureBytes: ext.captureBytes } : {}),
          ...carrierFields(ext),
          kind: isHost ? 'host' : (ext.kind ?? 'veth'),
        };
        model.push(end);
      }
      if (!ok) return;
      if (onBridge.length === 2) return report(field, `links bridge ${onBridge[0]} to bridge ${onBridge[1]}; patchwire joins pods to a bridge, not bridges to each other`);
      if (onBridge.length === 1) {
        const seg = segmentMembers.get(onBridge[0]!) ?? { members: [], where: field };
        seg.members.push(...model);
        segmentMembers.set(onBridge[0]!, seg);
        for (const e of model) used.set(`${e.pod}:${e.intf}`, field);
        return;
      }
      const [a, b] = model as [LinkEnd, LinkEnd];
      if (a.pod === b.pod && a.intf === b.intf) return report(field, `links interface ${a.pod}:${a.intf} to itself`);
      if (a.kind === 'host' && b.kind === 'host') return report(field, 'joins two host interfaces; one end must be a node');
      used.set(`${a.pod}:${a.intf}`, field);
      used.set(`${b.pod}:${b.intf}`, field);
      for (const [x, y] of [[a, b], [b, a]] as const) {
        if (x.kind === 'host') expanded.push(`${field}: ${y.pod}:${y.intf} is wired to the machine's existing interface ${x.intf} (patchwire's host endpoint; containerlab would create it as a veth)`);
      }
      // impair: for both ends (each end's own, so each direction once), or by "pod:intf".
      let impair: LinkModel['impair'];
      if (ext.impair) {
        const per = ext.impair.perEnd;
        if (per) for (const k of per.keys()) if (k !== `${a.pod}:${a.intf}` && k !== `${b.pod}:${b.intf}`) report(`${field}.patchwire.impair.${k}`, `is not an end of this link (${a.pod}:${a.intf}, ${b.pod}:${b.intf})`);
        const ia = per ? per.get(`${a.pod}:${a.intf}`) : ext.impair.all;
        const ib = per ? per.get(`${b.pod}:${b.intf}`) : ext.impair.all;
        if (ia || ib) impair = { ...(ia ? { a: ia } : {}), ...(ib ? { b: ib } : {}) };
      }
      links.push({ uid: i + 1, a, b, ...(impair ? { impair } : {}) });
    });
  }
  const segments: SegmentModel[] = [...segmentMembers].map(([name, s]) => ({ name, members: s.members, where: s.where }));
  for (const b of bridges) if (!segmentMembers.has(b)) skipped.push(`bridge node ${b} (no links)`);
  return { model: { name: typeof doc.name === 'string' ? doc.name : undefined, format: 'containerlab', pods, links, segments, skipped, expanded }, errors };
}

function parseEndpointObject(v: unknown, f: string, bad: Report): { node: string; intf: string; mac?: string; ipv4?: string; ipv6?: string; f: string } | null {
  if (!isObject(v)) {
    bad(f, 'must be an endpoint object with node and interface');
    return null;
  }
  for (const k of Object.keys(v)) if (!ENDPOINT_KEYS.includes(k)) bad(`${f}.${k}`, `unknown key '${k}' (endpoint keys: ${ENDPOINT_KEYS.join(', ')})`);
  if (typeof v.node !== 'string' || v.node === '') bad(`${f}.node`, 'is required');
  if (typeof v.interface !== 'string' || v.interface === '') bad(`${f}.interface`, 'is required');
  for (const k of ['mac', 'ipv4', 'ipv6'] as const) if (v[k] !== undefined && typeof v[k] !== 'string') bad(`${f}.${k}`, 'must be a string');
  if (typeof v.node !== 'string' || typeof v.interface !== 'string' || !v.node || !v.interface) return null;
  return {
    node: v.node,
    intf: v.interface,
    ...(typeof v.mac === 'string' ? { mac: v.mac } : {}),
    ...(typeof v.ipv4 === 'string' ? { ipv4: v.ipv4 } : {}),
    ...(typeof v.ipv6 === 'string' ? { ipv6: v.ipv6 } : {}),
    f,
  };
}
