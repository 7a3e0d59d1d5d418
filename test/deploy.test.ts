// deploy/ as `kubectl kustomize` renders it (with test/helpers/kustomize.ts,
// so the checks run on a stock Debian machine; where kubectl exists its
// rendering must be the same): the CRD accepts meshnet's and KNE's Topology
// objects and every status real daemons wrote (checked with Ajv against the
// CRD's openAPIV3Schema, nothing pruned), the DaemonSet runs what the
// Dockerfile builds with flags the daemon knows, probes hit the daemon's
// health endpoint, and RBAC grants exactly the requests the daemons made
// (recorded by the STAND-IN API server of test/helpers/apiserver.ts).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { Ajv, type ValidateFunction } from 'ajv';
import t from 'tap';
import { parseAllDocuments } from 'yaml';

import { DAEMON_HELP } from '../src/cli/daemon.js';
import { CNI_HELP } from '../src/cli/cni.js';
import { TAP_HOLDER_HELP } from '../src/cli/tap-holder.js';
import { parseMeshnet } from '../src/topology/meshnet.js';
import { ADMIN, mergePatch } from './helpers/apiserver.js';
import { TestCluster } from './helpers/cluster.js';
import { type Obj, renderKustomization } from './helpers/kustomize.js';
import { ROOT, waitFor } from './helpers/testnet.js';

const docs = renderKustomization(path.join(ROOT, 'deploy'));
const byKind = (k: string): Obj[] => docs.filter((d) => d.kind === k);
const crd = byKind('CustomResourceDefinition')[0]!;
const version = crd.spec.versions.find((x: Obj) => x.name === 'v1beta1');
const openApi = version.schema.openAPIV3Schema as Obj;

/**
 * The CRD's structural schema as JSON Schema for Ajv, with every object that
 * lists its properties closed (additionalProperties: false): the API server
 * would silently prune an unknown field, so here it is an error.
 */
function strict(s: Obj): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(s)) {
    if (k.startsWith('x-kubernetes-') || k === 'description') continue;
    if (k === 'properties') out.properties = Object.fromEntries(Object.entries(v as Obj).map(([p, sub]) => [p, strict(sub as Obj)]));
    else if (k === 'items') out.items = strict(v as Obj);
    else if (k === 'additionalProperties' && typeof v === 'object') out.additionalProperties = strict(v as Obj);
    else out[k] = v;
  }
  if (s.type === 'object' && s.properties && !s['x-kubernetes-preserve-unknown-fields'] && s.additionalProperties === undefined) out.additionalProperties = false;
  // nullable (OpenAPI) is Ajv's own keyword; the rest is plain JSON Schema.
  return out;
}

const ajv = new Ajv({ allErrors: true, strict: true });
const validate: ValidateFunction = ajv.compile(strict(openApi));
const problems = (v: unknown): string[] => (validate(v) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '<root>'} ${e.message}${e.params && 'additionalProperty' in e.params ? ` (${String(e.params.additionalProperty)})` : ''}`));

t.test('kustomize rendering of deploy/', async (t) => {
  t.same(docs.map((d) => d.kind).sort(), ['ClusterRole', 'ClusterRole', 'ClusterRoleBinding', 'ClusterRoleBinding', 'CustomResourceDefinition', 'DaemonSet', 'Deployment', 'Namespace', 'Role', 'Role', 'RoleBinding', 'RoleBinding', 'Service', 'ServiceAccount', 'ServiceAccount'], 'renders every part');
  const ns = byKind('Namespace')[0]!.metadata.name;
  for (const d of docs.filter((x) => ['ServiceAccount', 'DaemonSet', 'Deployment', 'Role', 'RoleBinding'].includes(x.kind))) t.equal(d.metadata.namespace, ns, `${d.kind} in the kustomization's namespace`);
  let kubectl = true;
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
  } catch {
    kubectl = false;
  }
  await t.test('same as kubectl kustomize', { skip: kubectl ? false : 'kubectl is not installed: only the cross-check of the renderer is skipped' }, async (t) => {
    const theirs = parseAllDocuments(execFileSync('kubectl', ['kustomize', path.join(ROOT, 'deploy')], { encoding: 'utf8' })).map((d) => d.toJSON() as Obj);
    const key = (d: Obj): string => `${d.kind}/${d.metadata?.namespace ?? ''}/${d.metadata?.name}`;
    const sorted = (x: Obj[]): Obj[] => [...x].sort((a, b) => (key(a) < key(b) ? -1 : 1));
    t.same(sorted(docs), sorted(theirs), 'object for object');
  });
});

t.test('the CRD accepts meshnet and KNE Topology objects', async (t) => {
  t.equal(crd.metadata.name, 'topologies.networkop.co.uk');
  t.equal(crd.spec.group, 'networkop.co.uk', "meshnet's group");
  t.equal(crd.spec.names.kind, 'Topology');
  t.equal(crd.spec.scope, 'Namespaced');
  t.ok(version?.served && version?.storage, 'v1beta1 served and stored');
  t.same(version.subresources, { status: {} }, 'status subresource on');

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
    t.same(problems(ex), [], `Topology ${ex.metadata.name} valid, nothing that would be pruned`);
    t.ok(ex.apiVersion && ex.kind, 'has apiVersion and kind');
  }
  t.match(problems({ spec: { links: [{ uid: 1, peer_pod: 'x', local_intf: 'eth1', peer_intf: 'eth1', patchwire: { kind: 'macvlan' } }] } }).join(), /\/spec\/links\/0\/patchwire\/kind must be equal to one of the allowed values/, 'a bad patchwire option is rejected');
  t.match(problems({ status: { surprise: 1 } }).join(), /\/status must NOT have additional properties \(surprise\)/, 'a status field the CRD does not declare is caught');
});

t.test('the DaemonSet, the image and the probes', async (t) => {
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
  t.equal(daemon.securityContext.privileged, false, 'not privileged: the capabilities it plumbs interfaces with (test/capabilities.test.ts)');
  t.equal(hostPathOf(mountOf(daemon, '/dev/net/tun')!.name), '/dev/net/tun', 'and /dev/net/tun for tap endpoints');
  t.same(daemon.env.find((e: Obj) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } }, 'node name from the downward API');
  const healthPort = Number(arg(daemon.command, '--health').split(':')[1]);
  t.same([daemon.livenessProbe.httpGet.path, daemon.livenessProbe.httpGet.port], ['/healthz', healthPort], 'liveness probe on the health endpoint');
  t.same([daemon.readinessProbe.httpGet.path, daemon.readinessProbe.httpGet.port], ['/readyz', healthPort], 'readiness probe on /readyz');
  // On the host network 0.0.0.0 would open the port to every pod; the kubelet probes loopback.
  const healthHost = arg(daemon.command, '--health').split(':')[0];
  t.equal(healthHost, '127.0.0.1', 'the health port binds loopback only');
  for (const p of [daemon.livenessProbe, daemon.readinessProbe]) t.equal(p.httpGet.host, healthHost, 'and the probes go there');
  const cniSocketDir = path.dirname(arg(daemon.command, '--cni-socket'));
  t.equal(hostPathOf(mountOf(daemon, cniSocketDir)!.name), cniSocketDir, 'the CNI socket is on the host where the plugin looks');
  t.equal(path.dirname(arg(daemon.command, '--state')), cniSocketDir, 'the state file outlives the container');
  // The tap holder: its own container (a daemon's container restart kills all of its processes), reading the daemon's state file.
  const holder = pod.containers.find((c: Obj) => c.name === 'tap-holder');
  t.ok(holder, 'a tap-holder container beside the daemon');
  t.same(holder.command.slice(0, 2), ['patchwire', 'tap-holder'], 'running patchwire tap-holder');
  for (const flag of holder.command.filter((x: string) => x.startsWith('--'))) t.match(TAP_HOLDER_HELP, `  ${flag}`, `tap-holder knows ${flag}`);
  t.equal(arg(holder.command, '--state'), arg(daemon.command, '--state'), "it follows the daemon's state file");
  t.equal(mountOf(holder, cniSocketDir)?.name, mountOf(daemon, cniSocketDir)!.name, 'from the same host directory');
  t.equal(mountOf(holder, '/var/run/netns')?.mountPropagation, 'HostToContainer', "it sees the pods' namespaces");
  t.equal(hostPathOf(mountOf(holder, '/dev/net/tun')!.name), '/dev/net/tun', 'and /dev/net/tun');
  t.equal(holder.securityContext.privileged, false, 'not privileged');
  t.same([...holder.securityContext.capabilities.add].sort(), ['NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE'], 'attach taps, enter pod namespaces (hostPID paths): nothing else');
  t.ok(pod.hostNetwork && pod.hostPID, 'host network and PID, shared by both containers');
  t.equal(mountOf(daemon, '/var/run/netns')?.mountPropagation, 'HostToContainer', 'pod namespaces made after start are visible');
  t.equal(arg(daemon.command, '--identity'), 'csr', "each daemon asks for its own node's identity");
  const idDir = arg(daemon.command, '--identity-dir');
  t.same(pod.volumes.find((v: Obj) => v.name === mountOf(daemon, idDir)?.name)?.emptyDir?.medium, 'Memory', 'its key stays in memory, in the pod');
  t.notOk(daemon.command.includes('--insecure'), 'never a plain-text data plane');
  // Metrics (#18): the --http port, named, behind the Service Prometheus finds by its annotations.
  const httpPort = Number(arg(daemon.command, '--http').split(':')[1]);
  const httpPortName = daemon.ports.find((p: Obj) => p.containerPort === httpPort)?.name;
  t.ok(httpPortName, `the --http port ${httpPort} is a named container port`);
  const svc = byKind('Service').find((s) => s.metadata.name === 'patchwire-metrics')!;
  t.same(svc.spec.selector, ds.spec.selector.matchLabels, "the metrics Service selects the DaemonSet's pods");
  t.equal(svc.spec.ports[0].targetPort, httpPortName, 'and targets the --http port by name');
  for (const a of [svc.metadata.annotations, ds.spec.template.metadata.annotations]) {
    t.same([a['prometheus.io/scrape'], Number(a['prometheus.io/port']), a['prometheus.io/path']], ['true', httpPort, '/metrics'], 'prometheus.io annotations name the port and path');
  }
  const signer = byKind('Deployment').find((d) => d.metadata.name === 'patchwire-signer')!;
  const sc = signer.spec.template.spec.containers[0];
  t.same(sc.command.slice(0, 2), ['patchwire', 'signer'], 'the signer runs patchwire signer');
  t.not(signer.spec.template.spec.serviceAccountName, pod.serviceAccountName, 'under an account of its own, not the daemons\'');
  t.ok(signer.spec.template.spec.volumes.find((v: Obj) => v.name === sc.volumeMounts[0].name)?.secret, 'its CA key from a Secret only it mounts');

  t.equal(ds.metadata.namespace, byKind('ServiceAccount')[0]!.metadata.namespace);
  t.equal(pod.serviceAccountName, byKind('ServiceAccount')[0]!.metadata.name, 'the DaemonSet runs as the ServiceAccount');
});

// Real daemons on two emulated nodes against the stand-in API server, which
// authorizes them with deploy/'s RBAC and records what they send.
const cluster = new TestCluster('pwzc');
t.teardown(() => cluster.cleanup());

t.test('what real daemons write and request fits deploy/', async (t) => {
  await cluster.start();
  // n1 serves capture too, so its TokenReview and SubjectAccessReview count.
  const n1 = await cluster.addNode('n1', ['--http', '127.0.0.1:8080']);
  const n2 = await cluster.addNode('n2');
  await waitFor('daemons ready', async () => (await cluster.ready(n1)).code === 200 && (await cluster.ready(n2)).code === 200);
  const topo = (name: string, links: Obj[]): Obj => ({ apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name }, spec: { links } });
  const l = (uid: number, peer: string, intf = 'eth1', peerIntf = 'eth1'): Obj => ({ uid, peer_pod: peer, local_intf: intf, peer_intf: peerIntf });
  // Links up across nodes, one waiting for a pod that never comes, one declared on one side only.
  for (const o of [topo('x1', [l(1, 'x2'), l(2, 'ghost', 'eth2')]), topo('x2', [l(1, 'x1')]), topo('z1', [l(3, 'x2', 'eth1', 'eth9')])]) {
    t.equal((await cluster.createTopology('dep', o)).status, 201);
  }
  await cluster.startPod('n1', 'dep', 'x1');
  await cluster.startPod('n2', 'dep', 'x2');
  await cluster.startPod('n1', 'dep', 'z1');
  await cluster.waitReady('dep', 'x1', '1/2');
  await cluster.waitReady('dep', 'x2', '1/1');
  await waitFor('z1 status with its error', () => (cluster.topologyStatus('dep', 'z1')?.links as Obj[] | undefined)?.[0]?.state === 'error');

  const captureToken = 'pwzc-capture-admin';
  cluster.api.addToken(captureToken, ADMIN);
  const cap = await cluster.net.exec(n1.ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${captureToken}`, 'http://127.0.0.1:8080/capture?wire=dep/x1/eth1&count=1']);
  t.equal(cap.stdout, '200', 'a cluster admin captures a wire end through the capture port');

  const writes = cluster.daemonRequests().filter((r) => r.verb === 'patch' && r.resource === 'topologies/status');
  t.ok(writes.length >= 3, `the daemons wrote ${writes.length} statuses`);
  // A merge patch: a null removes the key (cleared errors), so the body is
  // checked as the API server applies it to an object without a status.
  for (const w of writes) t.same(problems(mergePatch({}, w.body)), [], `status of Topology ${w.namespace}/${w.name} as the daemon sent it fits the CRD, nothing pruned`);
  const nulls = writes.flatMap((w) => Object.entries(((w.body as Obj).status ?? {}) as Obj).filter(([, v]) => v === null).map(([k]) => k));
  t.same([...new Set(nulls)].filter((k) => k !== 'errors'), [], 'the only key a status patch removes is errors');
  const sent = writes.map((w) => (w.body as Obj).status as Obj);
  const linkFields = new Set(sent.flatMap((s) => (s.links as Obj[]).flatMap((x) => Object.keys(x))));
  const states = new Set(sent.flatMap((s) => (s.links as Obj[]).map((x) => x.state as string)));
  for (const f of ['message', 'wire', 'peer_node', 'plumbed']) t.ok(linkFields.has(f), `some status carried ${f}`);
  for (const s of ['up', 'pending', 'error']) t.ok(states.has(s), `some link was ${s}`);
  t.ok(sent.some((s) => s.observedGeneration === 1 && s.src_ip && s.net_ns && s.container_id && s.node), "meshnet's fields and observedGeneration were written");

  // RBAC: the requests the daemons made, against the ClusterRole bound to the DaemonSet's account.
  const made = cluster.daemonRequests();
  const used = new Set(made.map((r) => `${r.apiGroup}|${r.resource}|${r.verb}`));
  t.same(made.filter((r) => !r.allowed).map((r) => `${r.verb} ${r.path}`), [], 'every request the daemons made was allowed');
  const role = byKind('ClusterRole')[0]!;
  // Everything bound to the daemons' account: its ClusterRole and the Role that reads the signer's CA.
  const daemonSa = byKind('ServiceAccount')[0]!;
  const boundRoles = [...byKind('ClusterRoleBinding'), ...byKind('RoleBinding')]
    .filter((b) => (b.subjects as Obj[]).some((s) => s.kind === 'ServiceAccount' && s.name === daemonSa.metadata.name))
    .map((b) => docs.find((d) => d.kind === b.roleRef.kind && d.metadata.name === b.roleRef.name)!);
  t.same(boundRoles.map((r) => `${r.kind}/${r.metadata.name}`).sort(), ['ClusterRole/patchwire', 'Role/patchwire-read-peer-ca'], "the daemons' account is bound to its ClusterRole and the CA reader only");
  const granted = new Set<string>();
  for (const r of boundRoles) for (const rule of r.rules as Obj[]) for (const g of rule.apiGroups) for (const res of rule.resources) for (const v of rule.verbs) granted.add(`${g}|${res}|${v}`);
  t.same([...granted].filter((g) => !used.has(g)).sort(), [], 'the roles grant nothing the daemons did not use');
  t.same(
    [...used].sort(),
    [
      'networkop.co.uk|topologies/status|patch',
      'networkop.co.uk|topologies|list',
      'networkop.co.uk|topologies|watch',
      '|pods|list',
      '|pods|watch',
      'kubevirt.io|virtualmachineinstances|list',
      'kubevirt.io|virtualmachineinstances|watch',
      'authentication.k8s.io|tokenreviews|create',
      'authorization.k8s.io|subjectaccessreviews|create',
      'certificates.k8s.io|certificatesigningrequests|create',
      'certificates.k8s.io|certificatesigningrequests|get',
      'certificates.k8s.io|certificatesigningrequests|delete',
      '|configmaps|get',
    ].sort(),
    'the daemons list and watch pods, Topology objects and KubeVirt VMs, patch Topology status, review capture callers, ask for their identity and read the CA',
  );
  const binding = byKind('ClusterRoleBinding')[0]!;
  const sa = byKind('ServiceAccount')[0]!;
  t.same(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name }, 'the binding names the role');
  t.same(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }], 'and only the service account');
  t.equal(cluster.daemonUser.name, `system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}`, 'the daemons ran as that account');
});
