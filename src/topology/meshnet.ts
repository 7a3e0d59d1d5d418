// meshnet / KNE Topology objects (networkop.co.uk/v1beta1): one object per
// pod, each link declared on both pods with the same uid.
import { cidrProblem, ifnameProblem } from '../netns/ip.js';
import { parseLinkExtension, parsePodExtension, type LinkExtension } from './extension.js';
import { type LabModel, type LinkModel, POD_NAME_RE, type PodModel, type TopologyError } from './model.js';

export const MESHNET_API_VERSION = 'networkop.co.uk/v1beta1';
const LINK_KEYS = ['uid', 'peer_pod', 'local_intf', 'peer_intf', 'local_ip', 'peer_ip', 'patchwire'];

interface Declared {
  pod: string;
  index: number;
  uid: number;
  peerPod: string;
  localIntf: string;
  peerIntf: string;
  localIp?: string;
  ext: LinkExtension;
  object: string;
  field: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Flattens documents and `kind: List` objects into Topology objects. */
function topologyObjects(docs: unknown[], report: (e: Omit<TopologyError, 'file'>) => void): Array<{ obj: Record<string, unknown>; where: string }> {
  const out: Array<{ obj: Record<string, unknown>; where: string }> = [];
  docs.forEach((doc, d) => {
    if (doc === null || doc === undefined) return;
    if (!isObject(doc)) {
      report({ object: `document ${d + 1}`, message: 'is not a mapping' });
      return;
    }
    if (doc.kind === 'List') {
      if (!Array.isArray(doc.items)) report({ object: `document ${d + 1} (List)`, field: 'items', message: 'must be a list' });
      else doc.items.forEach((it, i) => (isObject(it) ? out.push({ obj: it, where: `document ${d + 1} items[${i}]` }) : report({ object: `document ${d + 1} items[${i}]`, message: 'is not a mapping' })));
      return;
    }
    out.push({ obj: doc, where: `document ${d + 1}` });
  });
  return out;
}

export function parseMeshnet(docs: unknown[], file: string): { model: LabModel; errors: TopologyError[] } {
  const errors: TopologyError[] = [];
  const report = (e: Omit<TopologyError, 'file'>): void => {
    errors.push({ file, ...e });
  };
  const pods: PodModel[] = [];
  const podSeen = new Map<string, string>();
  const declared: Declared[] = [];

  for (const { obj, where } of topologyObjects(docs, report)) {
    const meta = isObject(obj.metadata) ? obj.metadata : {};
    const name = typeof meta.name === 'string' ? meta.name : '';
    const object = name ? `Topology ${name}` : `Topology (${where})`;
    if (obj.apiVersion !== MESHNET_API_VERSION) report({ object, field: 'apiVersion', message: `must be ${MESHNET_API_VERSION}, not '${String(obj.apiVersion)}'` });
    if (obj.kind !== 'Topology') report({ object, field: 'kind', message: `must be Topology, not '${String(obj.kind)}'` });
    if (!name) {
      report({ object, field: 'metadata.name', message: 'is required (it names the pod)' });
      continue;
    }
    if (!POD_NAME_RE.test(name)) report({ object, field: 'metadata.name', message: `pod name '${name}' may hold only letters, digits, '-', '_' and '.' (at most 63)` });
    if (podSeen.has(name)) {
      report({ object, field: 'metadata.name', message: `pod '${name}' is declared twice (also in ${podSeen.get(name)})` });
      continue;
    }
    podSeen.set(name, where);
    const spec = isObject(obj.spec) ? obj.spec : {};
    const pod: PodModel = { name, ...parsePodExtension(spec.patchwire, 'spec.patchwire', (field, message) => report({ object, field, message })) };
    pods.push(pod);
    const links = spec.links ?? [];
    if (!Array.isArray(links)) {
      report({ object, field: 'spec.links', message: 'must be a list' });
      continue;
    }
    links.forEach((l, i) => {
      const field = `spec.links[${i}]`;
      const r = (f: string, message: string): void => report({ object, field: `${field}${f ? '.' + f : ''}`, message });
      if (!isObject(l)) {
        r('', 'must be a mapping');
        return;
      }
      for (const k of Object.keys(l)) if (!LINK_KEYS.includes(k)) r(k, `unknown key '${k}'`);
      let ok = true;
      const uid = l.uid;
      if (typeof uid !== 'number' || !Number.isSafeInteger(uid) || uid <= 0) {
        r('uid', uid === undefined ? 'is required' : `'${String(uid)}' must be a positive integer`);
        ok = false;
      }
      for (const k of ['peer_pod', 'local_intf', 'peer_intf'] as const) {
        if (typeof l[k] !== 'string' || l[k] === '') {
          r(k, 'is required');
          ok = false;
        }
      }
      for (const k of ['local_intf', 'peer_intf'] as const) {
        if (typeof l[k] === 'string' && l[k] !== '') {
          const p = ifnameProblem(l[k] as string);
          if (p) {
            r(k, p);
            ok = false;
          }
        }
      }
      for (const k of ['local_ip', 'peer_ip'] as const) {
        if (l[k] === undefined || l[k] === '') continue;
        const p = typeof l[k] === 'string' ? cidrProblem(l[k] as string) : 'must be a string in CIDR form';
        if (p) r(k, p);
      }
      const ext = parseLinkExtension(l.patchwire, 'patchwire', (f, m) => r(f, m));
      if (!ok) return;
      if (l.peer_pod === name && l.peer_intf === l.local_intf) {
        r('', `links interface ${name}:${l.local_intf as string} to itself`);
        return;
      }
      declared.push({
        pod: name,
        index: i,
        uid: uid as number,
        peerPod: l.peer_pod as string,
        localIntf: l.local_intf as string,
        peerIntf: l.peer_intf as string,
        localIp: typeof l.local_ip === 'string' && l.local_ip !== '' ? l.local_ip : undefined,
        ext,
        object,
        field,
      });
    });
  }

  // Cross-checks between objects.
  const byIntf = new Map<string, Declared>();
  for (const d of declared) {
    const key = `${d.pod}\0${d.localIntf}`;
    const other = byIntf.get(key);
    if (other) report({ object: d.object, field: `${d.field}.local_intf`, message: `interface ${d.localIntf} already carries link uid ${other.uid} (${other.field})` });
    else byIntf.set(key, d);
  }
  const byUid = new Map<number, Declared[]>();
  for (const d of declared) byUid.set(d.uid, [...(byUid.get(d.uid) ?? []), d]);
  const links: LinkModel[] = [];
  for (const [uid, ds] of byUid) {
    const first = ds[0]!;
    const mirror = (x: Declared, y: Declared): boolean =>
      x.peerPod === y.pod && y.peerPod === x.pod && x.peerIntf === y.localIntf && y.peerIntf === x.localIntf;
    if (ds.length > 2 || (ds.length === 2 && !mirror(ds[0]!, ds[1]!))) {
      for (const d of ds) {
        report({ object: d.object, field: `${d.field}.uid`, message: `uid ${uid} is used by different links (${ds.map((x) => `${x.pod}:${x.localIntf}->${x.peerPod}:${x.peerIntf}`).join(', ')})` });
      }
      continue;
    }
    if (ds.length === 1) {
      if (!podSeen.has(first.peerPod)) {
        report({ object: first.object, field: `${first.field}.peer_pod`, message: `peer pod '${first.peerPod}' has no Topology object` });
        continue;
      }
      const back = declared.find((d) => d.pod === first.peerPod && d.peerPod === first.pod && d.localIntf === first.peerIntf);
      const msg = back
        ? `pod ${first.peerPod} declares ${first.peerPod}:${first.peerIntf} with uid ${back.uid}, not ${uid}`
        : `pod ${first.peerPod} does not declare this link back (no link with uid ${uid} from ${first.peerIntf} to ${first.pod}:${first.localIntf})`;
      report({ object: first.object, field: first.field, message: msg });
      continue;
    }
    const [x, y] = ds as [Declared, Declared];
    const end = (d: Declared): LinkModel['a'] => ({
      pod: d.pod,
      intf: d.localIntf,
      ...(d.localIp ? { ip: d.localIp } : {}),
      ...(d.ext.mac ? { mac: d.ext.mac } : {}),
      ...(d.ext.mtu ? { mtu: d.ext.mtu } : {}),
      ...(d.ext.captureBytes !== undefined ? { captureBytes: d.ext.captureBytes } : {}),
      kind: d.ext.kind ?? 'veth',
    });
    links.push({ uid, a: end(x), b: end(y) });
  }
  links.sort((p, q) => p.uid - q.uid);
  return { model: { format: 'meshnet', pods, links }, errors };
}
