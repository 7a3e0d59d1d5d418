// meshnet / KNE Topology objects (networkop.co.uk/v1beta1): one object per
// pod, each link declared on both pods with the same uid.
import { cidrProblem, ifnameProblem } from '../netns/ip.js';
import { rangeProblem } from '../limits.js';
import { carrierFields, parseLinkExtension, parsePodExtension, type LinkExtension } from './extension.js';
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

interface Entry {
  obj: Record<string, unknown>;
  where: string;
  namespace: string;
}

/**
 * Topology objects out of any mix of Kubernetes objects, as meshnet users
 * keep them: several documents, `kind: List` (nested too), Pods, Namespaces
 * and StatefulSets beside the Topologies. Other kinds are skipped and said so.
 */
function topologyObjects(docs: unknown[], report: (e: Omit<TopologyError, 'file'>) => void, skipped: string[]): Entry[] {
  const out: Entry[] = [];
  const visit = (v: unknown, where: string): void => {
    if (v === null || v === undefined) return;
    if (!isObject(v)) {
      report({ object: where, message: 'is not a mapping' });
      return;
    }
    if (v.kind === 'List' || (v.kind === undefined && Array.isArray(v.items))) {
      if (!Array.isArray(v.items)) report({ object: `${where} (List)`, field: 'items', message: 'must be a list' });
      else v.items.forEach((it, i) => visit(it, `${where} items[${i}]`));
      return;
    }
    const meta = isObject(v.metadata) ? v.metadata : {};
    if (typeof v.kind === 'string' && v.kind !== 'Topology') {
      skipped.push(`${where}: ${v.kind}${typeof meta.name === 'string' ? ` ${meta.name}` : ''}`);
      return;
    }
    const namespace = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
    out.push({ obj: v, where, namespace });
  };
  docs.forEach((doc, d) => visit(doc, `document ${d + 1}`));
  return out;
}

/** meshnet's peer_pod values that name no pod (see meshnet-cni's plugin). */
function specialPeer(peer: string): string | null {
  if (peer === 'localhost') {
    return "peer_pod 'localhost' asks meshnet for a macvlan interface on the node's interface named by peer_intf; patchwire does not create macvlan interfaces (pod frames would reach the node's LAN past the wire's counting and capture)";
  }
  if (peer.includes('phy')) {
    return `peer pod '${peer}' has no Topology object; meshnet takes a peer_pod containing 'phy' for a device outside the cluster reached by VXLAN at peer_ip, which patchwire does not offer`;
  }
  return null;
}

export function parseMeshnet(docs: unknown[], file: string): { model: LabModel; errors: TopologyError[] } {
  const errors: TopologyError[] = [];
  const report = (e: Omit<TopologyError, 'file'>): void => {
    errors.push({ file, ...e });
  };
  const skipped: string[] = [];
  const expanded: string[] = [];
  const entries = topologyObjects(docs, report, skipped);
  // meshnet finds a link's peer pod in the namespace of the Topology object
  // that declares it: each namespace is a topology of its own.
  const namespaces = [...new Set(entries.map((e) => e.namespace))];
  const several = namespaces.length > 1;
  const pods: PodModel[] = [];
  const links: LinkModel[] = [];
  const uidIn = new Map<number, string>();
  for (const ns of namespaces) {
    const part = parseNamespace(
      entries.filter((e) => e.namespace === ns),
      ns,
      several,
      report,
    );
    pods.push(...part.pods);
    for (const l of part.links) {
      // Lab mode makes one wire per uid: two namespaces may not share one.
      const other = uidIn.get(l.uid);
      if (other !== undefined) {
        report({ object: `namespace ${ns}`, field: `link uid ${l.uid}`, message: `uid ${l.uid} is also used in namespace ${other}; one lab gives each uid one wire: renumber the links of one namespace` });
        continue;
      }
      uidIn.set(l.uid, ns);
      links.push(l);
    }
  }
  if (several) expanded.push(`pods of ${namespaces.length} namespaces (${namespaces.join(', ')}): pod names are NAMESPACE.NAME`);
  links.sort((p, q) => p.uid - q.uid);
  return { model: { format: 'meshnet', pods, links, segments: [], skipped, expanded }, errors };
}

function parseNamespace(
  entries: Entry[],
  namespace: string,
  qualify: boolean,
  report: (e: Omit<TopologyError, 'file'>) => void,
): { pods: PodModel[]; links: LinkModel[] } {
  const pods: PodModel[] = [];
  const podSeen = new Map<string, string>();
  const declared: Declared[] = [];
  const podName = (n: string): string => (qualify ? `${namespace}.${n}` : n);

  for (const { obj, where } of entries) {
    const meta = isObject(obj.metadata) ? obj.metadata : {};
    const name = typeof meta.name === 'string' ? meta.name : '';
    const shown = qualify ? `${namespace}/${name}` : name;
    const object = name ? `Topology ${shown}` : `Topology (${where})`;
    if (obj.apiVersion !== MESHNET_API_VERSION) report({ object, field: 'apiVersion', message: `must be ${MESHNET_API_VERSION}, not '${String(obj.apiVersion)}'` });
    if (obj.kind !== 'Topology') report({ object, field: 'kind', message: `must be Topology, not '${String(obj.kind)}'` });
    if (!name) {
      report({ object, field: 'metadata.name', message: 'is required (it names the pod)' });
      continue;
    }
    if (!POD_NAME_RE.test(podName(name))) report({ object, field: 'metadata.name', message: `pod name '${podName(name)}' may hold only letters, digits, '-', '_' and '.' (at most 63)` });
    if (podSeen.has(name)) {
      report({ object, field: 'metadata.name', message: `pod '${shown}' is declared twice (also in ${podSeen.get(name)})` });
      continue;
    }
    podSeen.set(name, where);
    const spec = isObject(obj.spec) ? obj.spec : {};
    const pod: PodModel = {
      name: podName(name),
      ...(namespace !== 'default' || qualify ? { namespace } : {}),
      ...parsePodExtension(spec.patchwire, 'spec.patchwire', (field, message) => report({ object, field, message })),
    };
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
      // KNE numbers links from 0: uid 0 is a uid like any other.
      const uidProblem = uid === undefined ? 'is required' : uid === 0 ? null : rangeProblem('uid', uid, 'linkUid');
      if (uidProblem) {
        r('uid', uidProblem);
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
        const special = specialPeer(first.peerPod);
        report({ object: first.object, field: `${first.field}.peer_pod`, message: special ?? `peer pod '${first.peerPod}' has no Topology object${qualify ? ` in namespace ${namespace}` : ''}` });
        continue;
      }
      const back = declared.find((d) => d.pod === first.peerPod && d.peerPod === first.pod && d.localIntf === first.peerIntf);
      const msg = back
        ? `pod ${first.peerPod} declares ${first.peerPod}:${first.peerIntf} with uid ${back.uid}, not ${uid}`
        : `pod ${first.peerPod} does not declare this link back (no link with uid ${uid} from ${first.peerIntf} to ${first.pod}:${first.localIntf}); ` +
          'patchwire needs both ends declared: meshnet wires a one-sided link only when the declaring pod happens to plumb it, depending on which pod starts first';
      report({ object: first.object, field: first.field, message: msg });
      continue;
    }
    const [x, y] = ds as [Declared, Declared];
    const end = (d: Declared): LinkModel['a'] => ({
      pod: podName(d.pod),
      intf: d.localIntf,
      ...(d.localIp ? { ip: d.localIp } : {}),
      ...(d.ext.mac ? { mac: d.ext.mac } : {}),
      ...(d.ext.mtu ? { mtu: d.ext.mtu } : {}),
      ...(d.ext.captureBytes !== undefined ? { captureBytes: d.ext.captureBytes } : {}),
      ...carrierFields(d.ext),
      kind: d.ext.kind ?? 'veth',
    });
    const ia = x.ext.impair?.all;
    const ib = y.ext.impair?.all;
    links.push({ uid, a: end(x), b: end(y), ...(ia || ib ? { impair: { ...(ia ? { a: ia } : {}), ...(ib ? { b: ib } : {}) } } : {}) });
  }
  return { pods, links };
}
