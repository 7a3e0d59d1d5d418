// netlab topology files (topology.yml): `nodes` (a list or a mapping),
// `groups` with members, `defaults.device`, and `links` in netlab's four
// forms ("a-b" strings, lists of nodes, mappings of nodes and attributes,
// mappings with an `interfaces` list), optionally grouped in a mapping.
// Interfaces are named as netlab names them for each device (eth1, eth2, ...
// in link order for Linux-like devices); addresses come from the link, the
// attachment, or netlab's documented default pools (p2p 10.1.0.0/16 in /30s
// between two routers, lan 172.16.0.0/16 in /24s with the node id as host part).
import { cidrProblem, ifnameProblem, mtuProblem } from '../netns/ip.js';
import { carrierFields, parseLinkExtension, parsePodExtension } from './extension.js';
import { type Impairment, impairmentProblem, normalizeImpairment } from '../dataplane/impair.js';
import { type Impairments, type LabModel, type LinkEnd, type LinkModel, POD_NAME_RE, type PodModel, type SegmentModel, type TopologyError } from './model.js';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** netlab devices whose container interface names patchwire knows, and whether netlab counts them as hosts. */
const DEVICES: Record<string, { ifname: (i: number) => string; host: boolean }> = {
  linux: { ifname: (i) => `eth${i}`, host: true },
  frr: { ifname: (i) => `eth${i}`, host: false },
  bird: { ifname: (i) => `eth${i}`, host: false },
  dnsmasq: { ifname: (i) => `eth${i}`, host: false },
  vyos: { ifname: (i) => `eth${i}`, host: false },
  cumulus: { ifname: (i) => `swp${i}`, host: false },
  cumulus_nvue: { ifname: (i) => `swp${i}`, host: false },
  // Devices netlab runs in containerlab: the container's names (netlab's clab.interface.name), not the NOS's.
  srlinux: { ifname: (i) => `e1-${i}`, host: false },
  eos: { ifname: (i) => `et${i}`, host: false },
  arubacx: { ifname: (i) => `eth${i}`, host: false },
  dellos10: { ifname: (i) => `eth${i}`, host: false },
  sros: { ifname: (i) => `eth${i}`, host: false },
  iosxr: { ifname: (i) => `Gi0-0-0-${i}`, host: false },
  crpd: { ifname: (i) => `eth${i + 1}`, host: false },
  vmx: { ifname: (i) => `eth${i + 1}`, host: false },
  vsrx: { ifname: (i) => `eth${i + 1}`, host: false },
  vptx: { ifname: (i) => `eth${i + 1}`, host: false },
  'vjunos-router': { ifname: (i) => `eth${i + 1}`, host: false },
  'vjunos-switch': { ifname: (i) => `eth${i + 1}`, host: false },
  routeros7: { ifname: (i) => `eth${i - 1}`, host: false },
  none: { ifname: (i) => `eth${i}`, host: false },
};

/** Link attributes netlab defines; any other key of a link mapping is a node attachment. */
const LINK_ATTRS = new Set(['bandwidth', 'bridge', 'disable', 'gateway', 'group', 'linkindex', 'members', 'mtu', 'name', 'pool', 'prefix', 'ra', 'role', 'shutdown', 'type', 'interfaces', 'tc', 'vlan', 'vrf', 'ospf', 'isis', 'bgp', 'lag', 'patchwire']);

/** netlab's documented default pools (docs/addressing.md). */
const DEFAULT_POOLS: Record<string, { ipv4: string; prefix: number }> = {
  p2p: { ipv4: '10.1.0.0/16', prefix: 30 },
  lan: { ipv4: '172.16.0.0/16', prefix: 24 },
};

export function looksLikeNetlab(doc: unknown): boolean {
  return isObject(doc) && doc.nodes !== undefined && doc.topology === undefined && doc.apiVersion === undefined && doc.kind === undefined;
}

const ipToInt = (ip: string): number => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
const intToIp = (n: number): string => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');

interface Attachment {
  node: string;
  attrs: Record<string, unknown>;
}

/** A link in netlab's normal form: its attachments and attributes. */
interface NormalLink {
  attachments: Attachment[];
  attrs: Record<string, unknown>;
  where: string;
}

/** netlab's dotted keys (`defaults.device: frr`) are shorthand for nested mappings. */
function undot(doc: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(doc)) {
    if (!k.includes('.')) {
      out[k] = isObject(out[k]) && isObject(v) ? { ...(out[k] as Record<string, unknown>), ...v } : v;
      continue;
    }
    const [head, ...rest] = k.split('.');
    const inner = isObject(out[head!]) ? (out[head!] as Record<string, unknown>) : {};
    out[head!] = undot({ ...inner, [rest.join('.')]: v });
  }
  return out;
}

export function parseNetlab(raw: Record<string, unknown>, file: string): { model: LabModel; errors: TopologyError[] } {
  const doc = undot(raw);
  const errors: TopologyError[] = [];
  const skipped: string[] = [];
  const expanded: string[] = [];
  const object = typeof doc.name === 'string' ? `lab ${doc.name}` : 'lab';
  const report = (field: string, message: string): void => {
    errors.push({ file, object, field, message });
  };

  // Nodes, in file order (their position gives netlab's node id).
  const nodeAttrs = new Map<string, Record<string, unknown>>();
  if (Array.isArray(doc.nodes)) {
    doc.nodes.forEach((n, i) => {
      if (typeof n === 'string') nodeAttrs.set(n, {});
      else if (isObject(n) && typeof n.name === 'string') nodeAttrs.set(n.name, n);
      else report(`nodes[${i}]`, 'must be a node name or a mapping with a name');
    });
  } else if (isObject(doc.nodes)) {
    for (const [n, v] of Object.entries(doc.nodes)) {
      if (v !== null && !isObject(v)) report(`nodes.${n}`, 'must be a mapping of node attributes');
      nodeAttrs.set(n, isObject(v) ? v : {});
    }
  } else report('nodes', 'must be a list of node names or a mapping');

  const groupOf = new Map<string, string>();
  const groups = doc.groups ?? {};
  // A group with _auto_create makes nodes of its members that `nodes` does not list.
  if (isObject(groups)) {
    for (const [g, v] of Object.entries(groups)) {
      if (!isObject(v) || v._auto_create !== true || !Array.isArray(v.members)) continue;
      for (const m of v.members) {
        if (typeof m === 'string' && !nodeAttrs.has(m) && !(m in groups)) {
          nodeAttrs.set(m, {});
          expanded.push(`node ${m} created by group ${g} (_auto_create)`);
        }
      }
    }
  }
  if (!isObject(groups)) report('groups', 'must be a mapping of group names');
  else {
    for (const [g, v] of Object.entries(groups)) {
      const members = Array.isArray(v) ? v : isObject(v) ? v.members : undefined;
      if (!Array.isArray(members)) {
        report(`groups.${g}.members`, 'must list the group members');
        continue;
      }
      for (const m of members) {
        if (typeof m !== 'string') continue;
        if (!nodeAttrs.has(m) && !(isObject(groups) && m in groups)) report(`groups.${g}.members`, `'${m}' is neither a node nor a group`);
        if (!groupOf.has(m)) groupOf.set(m, g);
      }
    }
  }
  const defaults = isObject(doc.defaults) ? doc.defaults : {};
  const deviceOf = (n: string): { device?: string; from?: string } => {
    const own = nodeAttrs.get(n)!.device;
    if (typeof own === 'string') return { device: own };
    for (let g = groupOf.get(n), depth = 0; g && depth < 16; g = groupOf.get(g), depth++) {
      const gv = (groups as Record<string, unknown>)[g];
      if (isObject(gv) && typeof gv.device === 'string') return { device: gv.device, from: `group ${g}` };
    }
    if (typeof defaults.device === 'string') return { device: defaults.device, from: 'defaults.device' };
    return {};
  };

  const pods: PodModel[] = [];
  const ids = new Map<string, number>();
  const staticIds = new Set([...nodeAttrs.values()].map((a) => a.id).filter((x): x is number => typeof x === 'number'));
  let nextId = 1;
  const devices = new Map<string, (typeof DEVICES)[string]>();
  for (const [n, a] of nodeAttrs) {
    if (!POD_NAME_RE.test(n)) report(`nodes.${n}`, `node name '${n}' may hold only letters, digits, '-', '_' and '.'`);
    const { device, from } = deviceOf(n);
    if (!device) report(`nodes.${n}.device`, 'no device (set it on the node, its group or defaults.device): patchwire needs it to name the interfaces as netlab does');
    else if (!DEVICES[device]) report(`nodes.${n}.device`, `device '${device}': patchwire knows netlab's interface names for ${Object.keys(DEVICES).join(', ')}`);
    else {
      devices.set(n, DEVICES[device]!);
      if (from) expanded.push(`node ${n}: device ${device} from ${from}`);
    }
    let id = typeof a.id === 'number' ? a.id : 0;
    if (!id) {
      while (staticIds.has(nextId)) nextId++;
      id = nextId++;
    }
    ids.set(n, id);
    pods.push({ name: n, ...parsePodExtension(a.patchwire, `nodes.${n}.patchwire`, report) });
  }

  // Links into the normal form, in file order.
  const normal: NormalLink[] = [];
  const addLink = (l: unknown, where: string): void => {
    if (typeof l === 'string') {
      const names = l.split('-');
      normal.push({ attachments: names.map((node) => ({ node, attrs: {} })), attrs: {}, where });
    } else if (Array.isArray(l)) {
      normal.push({ attachments: l.map((node) => ({ node: String(node), attrs: {} })), attrs: {}, where });
    } else if (isObject(l)) {
      const attrs: Record<string, unknown> = {};
      const attachments: Attachment[] = [];
      for (const [k, v] of Object.entries(l)) {
        if (k === 'interfaces') continue;
        if (nodeAttrs.has(k)) attachments.push({ node: k, attrs: isObject(v) ? v : {} });
        else if (LINK_ATTRS.has(k) || k.includes('.')) attrs[k] = v;
        // Module and custom attributes (bfd, ospf.cost, ...) configure devices, not wires.
        else skipped.push(`${where}.${k} (a link attribute for netlab's configuration modules)`);
      }
      if (l.interfaces !== undefined) {
        if (!Array.isArray(l.interfaces)) report(`${where}.interfaces`, 'must be a list of {node: ...} attachments');
        else
          l.interfaces.forEach((it, j) => {
            if (isObject(it) && typeof it.node === 'string') attachments.push({ node: it.node, attrs: it });
            else if (typeof it === 'string') attachments.push({ node: it, attrs: {} });
            else report(`${where}.interfaces[${j}]`, 'must be a node name or a mapping with node');
          });
      }
      normal.push({ attachments, attrs, where });
    } else report(where, 'must be a "a-b" string, a list of nodes or a mapping');
  };
  if (Array.isArray(doc.links)) doc.links.forEach((l, i) => addLink(l, `links[${i}]`));
  else if (isObject(doc.links)) {
    // Links grouped under names: the grouping only structures the file.
    for (const [g, list] of Object.entries(doc.links)) {
      if (Array.isArray(list)) list.forEach((l, i) => addLink(l, `links.${g}[${i}]`));
      else report(`links.${g}`, 'must be a list of links');
    }
  } else if (doc.links !== undefined && doc.links !== null) report('links', 'must be a list');

  const counters = new Map<string, number>();
  const poolNext = new Map<string, number>();
  const allocate = (pool: string): { net: number; prefix: number } => {
    const p = DEFAULT_POOLS[pool]!;
    const base = ipToInt(p.ipv4.split('/')[0]!);
    const i = poolNext.get(pool) ?? 0;
    poolNext.set(pool, i + 1);
    return { net: base + i * 2 ** (32 - p.prefix), prefix: p.prefix };
  };
  const links: LinkModel[] = [];
  const segments: SegmentModel[] = [];
  normal.forEach((l, index) => {
    const attrs = { ...l.attrs };
    // Dotted keys (tc.delay: 10ms) are netlab's shorthand for nested ones.
    for (const k of Object.keys(attrs)) {
      if (!k.includes('.')) continue;
      const [head, ...rest] = k.split('.');
      const inner = isObject(attrs[head!]) ? (attrs[head!] as Record<string, unknown>) : {};
      attrs[head!] = { ...inner, [rest.join('.')]: attrs[k] };
      delete attrs[k];
    }
    if (attrs.disable === true) {
      skipped.push(`${l.where}: disabled`);
      return;
    }
    let ok = true;
    for (const a of l.attachments) {
      if (!nodeAttrs.has(a.node)) {
        report(l.where, `node '${a.node}' is not in nodes`);
        ok = false;
      }
    }
    if (!ok) return;
    // Each attachment takes the node's next interface, as netlab numbers them.
    const ends = l.attachments.map((a) => {
      const n = typeof a.attrs.ifindex === 'number' ? a.attrs.ifindex : (counters.get(a.node) ?? 0) + 1;
      counters.set(a.node, Math.max(counters.get(a.node) ?? 0, n));
      const dev = devices.get(a.node);
      return { a, intf: dev ? dev.ifname(n) : `eth${n}` };
    });
    if (l.attachments.length < 2) {
      skipped.push(`${l.where}: stub link of ${l.attachments.map((a) => a.node).join('') || 'no node'} (one end: no wire to make)`);
      return;
    }
    const ext = parseLinkExtension(attrs.patchwire, `${l.where}.patchwire`, report);
    let mtu: number | undefined;
    if (attrs.mtu !== undefined) {
      const p = typeof attrs.mtu === 'number' ? mtuProblem(attrs.mtu) : `MTU '${String(attrs.mtu)}' is not a number`;
      if (p) report(`${l.where}.mtu`, p);
      else mtu = attrs.mtu as number;
    }
    const impairments = parseTc(attrs.tc, `${l.where}.tc`, report);

    // Addresses: the attachment's own, else from the link prefix or a default pool.
    const routers = l.attachments.every((a) => devices.get(a.node)?.host === false);
    const p2p = l.attachments.length === 2 && routers && attrs.type !== 'lan';
    let prefix: { net: number; prefix: number } | null = null;
    if (attrs.prefix === false || attrs.pool === 'l2only') prefix = null;
    else if (attrs.prefix !== undefined) {
      const text = typeof attrs.prefix === 'string' ? attrs.prefix : isObject(attrs.prefix) && typeof attrs.prefix.ipv4 === 'string' ? attrs.prefix.ipv4 : undefined;
      if (isObject(attrs.prefix) && attrs.prefix.ipv4 === undefined) {
        // An IPv6-only (or allocation-only) prefix: no IPv4 addresses to derive.
        skipped.push(`${l.where}.prefix (no ipv4 in it; patchwire derives IPv4 addresses only)`);
      } else {
        const problem = text ? cidrProblem(text) : 'must be an IPv4 prefix or a mapping with ipv4';
        if (problem || !text?.includes('.')) report(`${l.where}.prefix`, problem ? `${problem} (named prefixes are not supported)` : 'patchwire reads IPv4 link prefixes only');
        else prefix = { net: ipToInt(text.split('/')[0]!), prefix: Number(text.split('/')[1]) };
      }
    } else if (attrs.pool !== undefined && attrs.pool !== 'p2p' && attrs.pool !== 'lan') {
      report(`${l.where}.pool`, `pool '${String(attrs.pool)}' is not one of netlab's default pools patchwire knows (p2p, lan, l2only)`);
    } else {
      const pool = typeof attrs.pool === 'string' ? attrs.pool : p2p ? 'p2p' : 'lan';
      prefix = allocate(pool);
      expanded.push(`${l.where}: ${intToIp(prefix.net)}/${prefix.prefix} from netlab's default ${pool} pool`);
    }
    const modelEnds: LinkEnd[] = ends.map(({ a, intf }, j) => {
      const ip = attachmentAddress(a, j, p2p, prefix, ids.get(a.node)!, `${l.where}.${a.node}.ipv4`, report);
      const em = typeof a.attrs.mtu === 'number' ? a.attrs.mtu : undefined;
      const p = ifnameProblem(intf);
      if (p) report(`${l.where}.${a.node}`, p);
      return {
        pod: a.node,
        intf,
        ...(ip ? { ip } : {}),
        ...(ext.mac ? { mac: ext.mac } : {}),
        ...(ext.mtu ?? em ?? mtu ? { mtu: (ext.mtu ?? em ?? mtu)! } : {}),
        ...(ext.captureBytes !== undefined ? { captureBytes: ext.captureBytes } : {}),
        ...carrierFields(ext),
        kind: ext.kind ?? 'veth',
      };
    });
    if (modelEnds.length === 2) {
      const [a, b] = modelEnds as [LinkEnd, LinkEnd];
      const fromTc = impairments ? tcImpairment(impairments) : undefined;
      const tcBad = fromTc ? impairmentProblem(fromTc) : null;
      if (tcBad) report(`${l.where}.tc`, tcBad);
      links.push({ uid: index + 1, a, b, ...(impairments ? { impairments } : {}), ...(fromTc ? { impair: { a: { out: fromTc }, b: { out: fromTc } } } : {}) });
    } else {
      const name = typeof attrs.name === 'string' ? attrs.name : `link ${index + 1}`;
      if (impairments) report(`${l.where}.tc`, 'impairments on a multi-access link are not supported');
      segments.push({ name, members: modelEnds, where: l.where });
    }
  });
  return { model: { ...(typeof doc.name === 'string' ? { name: doc.name } : {}), format: 'netlab', pods, links, segments, skipped, expanded }, errors };
}

/** An attachment's IPv4 address: its own (mask from the link prefix when it has none), or derived as netlab derives it. */
function attachmentAddress(
  a: Attachment,
  position: number,
  p2p: boolean,
  prefix: { net: number; prefix: number } | null,
  id: number,
  field: string,
  report: (f: string, m: string) => void,
): string | undefined {
  const own = a.attrs.ipv4;
  if (own === false) return undefined;
  if (typeof own === 'string') {
    const text = own.includes('/') ? own : prefix ? `${own}/${prefix.prefix}` : `${own}/32`;
    const p = cidrProblem(text);
    if (p) report(field, p);
    return p ? undefined : text;
  }
  if (typeof own === 'number' && prefix) return `${intToIp(prefix.net + own)}/${prefix.prefix}`;
  if (!prefix) return undefined;
  const host = p2p ? position + 1 : id;
  if (host >= 2 ** (32 - prefix.prefix) - 1) {
    report(field, `node id ${id} does not fit the /${prefix.prefix} link prefix (netlab then numbers hosts in order; give the address explicitly)`);
    return undefined;
  }
  return `${intToIp(prefix.net + host)}/${prefix.prefix}`;
}

/**
 * netlab's tc.* as patchwire applies it: like netlab's netem on both ends'
 * egress, each end's `out`, so each direction is impaired once.
 */
function tcImpairment(t: Impairments): Impairment | undefined {
  return normalizeImpairment({
    ...(t.delayMs !== undefined ? { delayUs: Math.round(t.delayMs * 1000) } : {}),
    ...(t.jitterMs !== undefined ? { jitterUs: Math.round(t.jitterMs * 1000) } : {}),
    ...(t.lossPercent !== undefined ? { lossPercent: t.lossPercent } : {}),
    ...(t.corruptPercent !== undefined ? { corruptPercent: t.corruptPercent } : {}),
    ...(t.duplicatePercent !== undefined ? { duplicatePercent: t.duplicatePercent } : {}),
    ...(t.reorderPercent !== undefined ? { reorderPercent: t.reorderPercent } : {}),
    ...(t.rateKbps !== undefined ? { rateBps: Math.round(t.rateKbps * 1000) } : {}),
  });
}

/** netlab's tc.* link impairments: delay and jitter in ms or s, percentages, rate in kbps. */
function parseTc(v: unknown, field: string, report: (f: string, m: string) => void): Impairments | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) {
    report(field, 'must be a mapping of delay, jitter, loss, corrupt, duplicate, reorder, rate');
    return undefined;
  }
  const out: Impairments = {};
  const time = (k: string, x: unknown): number | undefined => {
    const m = typeof x === 'number' ? [String(x), String(x), 'ms'] : typeof x === 'string' ? /^\s*([0-9.]+)\s*(ms|s)?\s*$/.exec(x) : null;
    if (!m || !Number.isFinite(Number(m[1]))) {
      report(`${field}.${k}`, `'${String(x)}' is not a time (milliseconds, or a number with ms or s)`);
      return undefined;
    }
    return Number(m[1]) * (m[2] === 's' ? 1000 : 1);
  };
  const percent = (k: string, x: unknown): number | undefined => {
    if (typeof x === 'number' && x >= 0 && x <= 100) return x;
    report(`${field}.${k}`, `'${String(x)}' is not a percentage from 0 to 100`);
    return undefined;
  };
  for (const [k, x] of Object.entries(v)) {
    if (k === 'delay') out.delayMs = time(k, x);
    else if (k === 'jitter') out.jitterMs = time(k, x);
    else if (k === 'loss') out.lossPercent = percent(k, x);
    else if (k === 'corrupt') out.corruptPercent = percent(k, x);
    else if (k === 'duplicate') out.duplicatePercent = percent(k, x);
    else if (k === 'reorder') out.reorderPercent = percent(k, x);
    else if (k === 'rate') {
      if (typeof x === 'number' && x > 0) out.rateKbps = x;
      else report(`${field}.rate`, `'${String(x)}' is not a rate in kbps`);
    } else report(`${field}.${k}`, `unknown tc parameter '${k}' (netlab's are delay, jitter, loss, corrupt, duplicate, reorder, rate)`);
  }
  for (const k of Object.keys(out) as Array<keyof Impairments>) if (out[k] === undefined) delete out[k];
  return Object.keys(out).length ? out : undefined;
}
