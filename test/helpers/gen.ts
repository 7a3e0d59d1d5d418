// Generated meshnet topologies for scale tests and benches.
export interface GeneratedLink {
  uid: number;
  a: string;
  b: string;
  ipA: string;
  ipB: string;
}

/** `pods` pods in a ring with chords to the pod two ahead: 2 links per pod. */
export function ringWithChords(pods: number): { yaml: string; links: GeneratedLink[] } {
  const intfs = new Map<string, number>();
  const nextIntf = (pod: string): string => {
    const n = (intfs.get(pod) ?? 0) + 1;
    intfs.set(pod, n);
    return `eth${n}`;
  };
  const name = (i: number): string => `p${String(i % pods).padStart(3, '0')}`;
  const decl = new Map<string, string[]>();
  const links: GeneratedLink[] = [];
  let uid = 0;
  for (const step of [1, 2]) {
    for (let i = 0; i < pods; i++) {
      uid++;
      const a = name(i);
      const b = name(i + step);
      const ia = nextIntf(a);
      const ib = nextIntf(b);
      // 198.19.0.0/16 cut into /30s, one per link.
      const base = uid * 4;
      const ipA = `198.19.${base >> 8}.${(base & 255) + 1}`;
      const ipB = `198.19.${base >> 8}.${(base & 255) + 2}`;
      links.push({ uid, a: `${a}:${ia}`, b: `${b}:${ib}`, ipA, ipB });
      decl.set(a, [...(decl.get(a) ?? []), `    - {uid: ${uid}, peer_pod: ${b}, local_intf: ${ia}, peer_intf: ${ib}, local_ip: ${ipA}/30}`]);
      decl.set(b, [...(decl.get(b) ?? []), `    - {uid: ${uid}, peer_pod: ${a}, local_intf: ${ib}, peer_intf: ${ia}, local_ip: ${ipB}/30}`]);
    }
  }
  const docs = [...decl.keys()].sort().map((p) => `apiVersion: networkop.co.uk/v1beta1\nkind: Topology\nmetadata:\n  name: ${p}\nspec:\n  links:\n${decl.get(p)!.join('\n')}\n`);
  return { yaml: docs.join('---\n'), links };
}
