// deploy/ as kubectl renders it: the CRD accepts meshnet's and KNE's
// Topology objects, the DaemonSet runs what the Dockerfile builds with flags
// the daemon knows, probes hit the daemon's health endpoint, and RBAC grants
// exactly what cluster mode uses.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';
import { parseAllDocuments } from 'yaml';

import { DAEMON_HELP } from '../src/cli/daemon.js';
import { CNI_HELP } from '../src/cli/cni.js';
import { parseMeshnet } from '../src/topology/meshnet.js';
import { pruneAndValidate, type Schema } from './helpers/schema.js';
import { ROOT } from './helpers/testnet.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function kubectl(): string | null {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return 'kubectl';
  } catch {
    return null;
  }
}

const haveKubectl = kubectl();

t.test('kubectl kustomize deploy/', { skip: haveKubectl ? false : 'kubectl is not installed (Debian has no package for it)' }, async (t) => {
  const rendered = execFileSync('kubectl', ['kustomize', path.join(ROOT, 'deploy')], { encoding: 'utf8' });
  const docs = parseAllDocuments(rendered).map((d) => d.toJSON() as Obj);
  const byKind = (k: string): Obj[] => docs.filter((d) => d.kind === k);
  t.same(docs.map((d) => d.kind).sort(), ['ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'DaemonSet', 'Namespace', 'ServiceAccount'], 'renders every part');

  const crd = byKind('CustomResourceDefinition')[0]!;
  t.equal(crd.metadata.name, 'topologies.networkop.co.uk');
  t.equal(crd.spec.group, 'networkop.co.uk', "meshnet's group");
  t.equal(crd.spec.names.kind, 'Topology');
  t.equal(crd.spec.scope, 'Namespaced');
  const v = crd.spec.versions.find((x: Obj) => x.name === 'v1beta1');
  t.ok(v?.served && v?.storage, 'v1beta1 served and stored');
  t.same(v.subresources, { status: {} }, 'status subresource on');
  const schema = v.schema.openAPIV3Schema as Schema;

  // meshnet's examples (examples/triangle.yaml follows them) and a KNE-generated object.
  const examples = parseAllDocuments(readFileSync(path.join(ROOT, 'examples', 'triangle.yaml'), 'utf8')).map((d) => d.toJSON() as Obj);
  const k8sExample = parseAllDocuments(readFileSync(path.join(ROOT, 'examples', 'k8s', 'triangle.yaml'), 'utf8')).map((d) => d.toJSON() as Obj);
  const k8sTopologies = k8sExample.filter((o) => o.kind === 'Topology');
  t.equal(k8sTopologies.length, 3, 'examples/k8s/triangle.yaml has three Topology objects');
  t.same(parseMeshnet(k8sTopologies, 'examples/k8s/triangle.yaml').errors, [], 'and they form consistent links');
  t.same(k8sExample.filter((o) => o.kind === 'Pod').map((o) => o.metadata.name).sort(), ['r1', 'r2', 'r3'], 'with a pod for each');
  examples.push(...k8sTopologies);
  examples.push({
    apiVersion: 'networkop.co.uk/v1beta1',
    kind: 'Topology',
    metadata: { name: 'r1', namespace: 'kne-lab', labels: { topo: 'kne-lab' } },
    spec: { links: [{ uid: 0, peer_pod: 'r2', local_intf: 'eth1', peer_intf: 'eth2', local_ip: '', peer_ip: '' }] },
  });
  for (const ex of examples) {
    const { apiVersion, kind, metadata, ...rest } = ex;
    const problems: string[] = [];
    const kept = pruneAndValidate(schema, rest, '', problems, true);
    t.same(problems, [], `Topology ${metadata.name} accepted`);
    t.same(kept, rest, `Topology ${metadata.name} kept whole (nothing pruned)`);
    t.ok(apiVersion && kind, 'has apiVersion and kind');
  }
  const problems: string[] = [];
  pruneAndValidate(schema, { spec: { links: [{ uid: 1, peer_pod: 'x', local_intf: 'eth1', peer_intf: 'eth1', patchwire: { kind: 'macvlan' } }] } }, '', problems, true);
  t.match(problems.join(), /spec.links\[0\].patchwire.kind: Unsupported value: "macvlan"/, 'a bad patchwire option is rejected');
  const statusProblems: string[] = [];
  const status = { node: 'n1', ready: '1/1', src_ip: '10.0.0.1', net_ns: '/var/run/netns/x', container_id: 'c', observedGeneration: 1, links: [{ uid: 1, local_intf: 'eth1', peer_pod: 'r2', peer_intf: 'eth1', state: 'up', wire: 123, peer_node: 'n2' }] };
  t.same(pruneAndValidate(schema, { status }, '', statusProblems, true), { status }, 'the status the daemon writes fits the schema');
  t.same(statusProblems, []);

  // The DaemonSet runs the image the Dockerfile builds, with the plugin where the Dockerfile puts it.
  const ds = byKind('DaemonSet')[0]!;
  const pod = ds.spec.template.spec;
  const kustomization = parseAllDocuments(readFileSync(path.join(ROOT, 'deploy', 'kustomization.yaml'), 'utf8'))[0]!.toJSON() as Obj;
  const image = `${kustomization.images[0].newName}:${kustomization.images[0].newTag}`;
  const dockerfile = readFileSync(path.join(ROOT, 'deploy', 'Dockerfile'), 'utf8');
  t.match(dockerfile, `-t ${image} `, 'the Dockerfile documents the image tag the kustomization uses');
  for (const c of [...pod.initContainers, ...pod.containers]) t.equal(c.image, image, `${c.name} runs ${image}`);
  const pluginCopy = /^COPY --from=build \/src\/cni\/bin\/patchwire (\S+)$/m.exec(dockerfile);
  t.ok(pluginCopy, 'the Dockerfile copies the static plugin into the image');
  t.match(dockerfile, /ln -s \/opt\/patchwire\/bin\/patchwire.js \/usr\/local\/bin\/patchwire/, 'and puts patchwire on PATH');
  const init = pod.initContainers[0];
  t.same(init.command.slice(0, 3), ['patchwire', 'cni', 'install'], 'init step installs the CNI plugin');
  const arg = (cmd: string[], flag: string): string => cmd[cmd.indexOf(flag) + 1]!;
  t.equal(arg(init.command, '--plugin'), pluginCopy![1], 'init step installs the plugin from where the Dockerfile put it');
  const mountOf = (c: Obj, dir: string): Obj | undefined => c.volumeMounts.find((m: Obj) => m.mountPath === dir);
  const hostPathOf = (name: string): string => pod.volumes.find((v: Obj) => v.name === name).hostPath.path;
  t.equal(hostPathOf(mountOf(init, arg(init.command, '--bin-dir'))!.name), '/opt/cni/bin', 'plugin lands in the host CNI bin dir');
  t.equal(hostPathOf(mountOf(init, arg(init.command, '--conf-dir'))!.name), '/etc/cni/net.d', 'and chains into the host CNI conf dir');
  for (const flag of init.command.filter((x: string) => x.startsWith('--'))) t.match(CNI_HELP, flag, `cni install knows ${flag}`);

  const daemon = pod.containers[0];
  t.same(daemon.command.slice(0, 3), ['patchwire', 'daemon', '--cluster'], 'daemon runs in cluster mode');
  t.match(readFileSync(path.join(ROOT, 'bin', 'patchwire.js'), 'utf8').split('\n')[0], /^#!\/usr\/bin\/env -S node --single-threaded-gc$/, 'through bin/patchwire.js, whose shebang keeps V8 GC on the daemon thread');
  for (const flag of daemon.command.filter((x: string) => x.startsWith('--'))) t.match(DAEMON_HELP, `  ${flag}`, `daemon knows ${flag}`);
  t.equal(pod.hostNetwork, true, 'host network: peers meet at host IPs');
  t.equal(daemon.securityContext.privileged, true, 'privileged: it plumbs interfaces');
  t.same(daemon.env.find((e: Obj) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } }, 'node name from the downward API');
  const healthPort = Number(arg(daemon.command, '--health').split(':')[1]);
  t.same([daemon.livenessProbe.httpGet.path, daemon.livenessProbe.httpGet.port], ['/healthz', healthPort], 'liveness probe on the health endpoint');
  t.same([daemon.readinessProbe.httpGet.path, daemon.readinessProbe.httpGet.port], ['/readyz', healthPort], 'readiness probe on /readyz');
  const cniSocketDir = path.dirname(arg(daemon.command, '--cni-socket'));
  t.equal(hostPathOf(mountOf(daemon, cniSocketDir)!.name), cniSocketDir, 'the CNI socket is on the host where the plugin looks');
  t.equal(path.dirname(arg(daemon.command, '--state')), cniSocketDir, 'the state file outlives the container');
  t.equal(mountOf(daemon, '/var/run/netns')?.mountPropagation, 'HostToContainer', 'pod namespaces made after start are visible');
  const tlsDir = path.dirname(arg(daemon.command, '--tls-cert'));
  t.ok(pod.volumes.find((v: Obj) => v.name === mountOf(daemon, tlsDir)?.name)?.secret, 'peer TLS from a Secret');

  // RBAC: what the controller reads and writes.
  const role = byKind('ClusterRole')[0]!;
  const can = (group: string, resource: string, verb: string): boolean => role.rules.some((r: Obj) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
  for (const verb of ['list', 'watch']) {
    t.ok(can('networkop.co.uk', 'topologies', verb), `may ${verb} topologies`);
    t.ok(can('', 'pods', verb), `may ${verb} pods`);
  }
  t.ok(can('networkop.co.uk', 'topologies/status', 'patch'), 'may patch topology status');
  t.notOk(can('networkop.co.uk', 'topologies', 'patch'), 'may not change topology specs');
  const binding = byKind('ClusterRoleBinding')[0]!;
  const sa = byKind('ServiceAccount')[0]!;
  t.same(binding.subjects[0], { kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }, 'binding names the service account');
  t.equal(pod.serviceAccountName, sa.metadata.name, 'the DaemonSet runs as it');
  t.equal(ds.metadata.namespace, sa.metadata.namespace);
});
