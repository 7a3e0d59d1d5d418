// An emulated Kubernetes cluster for cluster-mode tests: the STAND-IN API
// server (test/helpers/apiserver.ts), nodes that are network namespaces with
// a real patchwire daemon each in --cluster mode, and a tiny "kubelet" that
// makes pod namespaces, pod objects, and runs the real CNI plugin binary
// exactly as a runtime does. The daemons authenticate as the ServiceAccount
// the DaemonSet in deploy/ runs as, and the stand-in authorizes each of their
// requests with deploy/'s RBAC (rendered as `kubectl kustomize` would).
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { parse as parseYaml } from 'yaml';

import { makeCa, makeNodeIdentity, type NodeIdentityFiles } from '../../src/tls/identity.js';

import { ADMIN, type RequestRecord, serviceAccountUser, StandInApiServer, type KubeObject, type UserInfo } from './apiserver.js';
import { renderKustomization } from './kustomize.js';
import type { Schema } from './schema.js';
import { ROOT, run, type RunResult, spawnSyncQuiet, TestNet, type TestNode, waitFor } from './testnet.js';

export const PLUGIN = path.join(ROOT, 'cni', 'bin', 'patchwire');
const RELAY = path.join(ROOT, 'test', 'tools', 'relay.mjs');
const API_PORT = 6443;

export interface ClusterNode extends TestNode {
  short: string;
  cniSocket: string;
  kubeconfig: string;
  /** this node's daemon's bearer token (its ServiceAccount's, one per pod as projected tokens are) */
  token: string;
  relay: ChildProcess | null;
  /** where the node's own TLS identity is (its certificate names the node) */
  tls: NodeIdentityFiles;
  /** 'csr': the daemon asks the signer for it, as deployed; 'files': made by the test beforehand */
  identity: 'csr' | 'files';
}

/** The test's own requests (as a cluster admin, never silenced). */
const ADMIN_TOKEN = randomBytes(12).toString('hex');

export interface TestPod {
  namespace: string;
  name: string;
  /** network namespace name (under /var/run/netns) */
  netns: string;
  containerId: string;
  uid: string;
  node: ClusterNode;
}

export function crdSchema(): Schema {
  const crd = parseYaml(readFileSync(path.join(ROOT, 'deploy', 'crd.yaml'), 'utf8')) as {
    spec: { versions: Array<{ name: string; schema: { openAPIV3Schema: Schema } }> };
  };
  return crd.spec.versions.find((v) => v.name === 'v1beta1')!.schema.openAPIV3Schema;
}

/** Runs the CNI plugin as a runtime does: CNI_* environment, config on stdin, nothing else. */
export function runPlugin(env: Record<string, string>, stdin: string): Promise<RunResult & { json: Record<string, unknown> | null }> {
  return new Promise((resolve) => {
    // env -i: no PATH, no NODE_*: the plugin must not need Node.js or anything else.
    const child = spawn('env', ['-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), PLUGIN], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (code) => {
      let json: Record<string, unknown> | null = null;
      try {
        json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : null;
      } catch {
        json = null;
      }
      resolve({ code: code ?? -1, stdout, stderr, json });
    });
    // The plugin may answer (an error) before reading its input.
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}

export function prevResult(netns: string): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', sandbox: netns }],
    ips: [{ address: '10.244.1.7/24', gateway: '10.244.1.1', interface: 0 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
}

/** A kubeconfig for the stand-in at `server` with a bearer token. */
function kubeconfigFor(server: string, token: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Config',
    // Plain HTTP to the stand-in; client-node insists on skip-tls-verify for http URLs.
    clusters: [{ name: 'stand-in', cluster: { server, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'test', user: { token } }],
    contexts: [{ name: 'stand-in', context: { cluster: 'stand-in', user: 'test' } }],
    'current-context': 'stand-in',
  };
}

export class TestCluster {
  readonly net: TestNet;
  readonly api: StandInApiServer;
  readonly nodes = new Map<string, ClusterNode>();
  readonly pods = new Map<string, TestPod>();
  /** who the daemons are: the DaemonSet's ServiceAccount in deploy/ */
  readonly daemonUser: UserInfo;

  constructor(readonly prefix: string) {
    this.net = new TestNet(prefix, 'cluster');
    spawnSyncQuiet('pkill', ['-9', '-f', `relay.mjs .*${prefix}`]);
    this.api = new StandInApiServer(path.join(this.net.dir, 'api.sock'));
    // Pods may be replaced without a resourceVersion and are deleted gracefully; custom resources neither.
    this.api.addResource({ prefix: '/api/v1', plural: 'pods', kind: 'Pod', apiVersion: 'v1', unconditionalUpdate: true, graceful: true });
    this.api.addResource({ prefix: '/apis/networkop.co.uk/v1beta1', plural: 'topologies', kind: 'Topology', apiVersion: 'networkop.co.uk/v1beta1', schema: crdSchema() });
    // KubeVirt's VMs (test/kubevirt.test.ts creates them; other tests have none, as a cluster with KubeVirt and no VMs).
    this.api.addResource({ prefix: '/apis/kubevirt.io/v1', plural: 'virtualmachineinstances', kind: 'VirtualMachineInstance', apiVersion: 'kubevirt.io/v1' });
    const deploy = renderKustomization(path.join(ROOT, 'deploy'));
    this.api.setRbac(deploy);
    const ds = deploy.find((d) => d.kind === 'DaemonSet')!;
    this.daemonUser = serviceAccountUser(ds.metadata.namespace as string, (ds.spec.template.spec.serviceAccountName as string | undefined) ?? 'default');
    this.api.addToken(ADMIN_TOKEN, ADMIN);
    // Node identities: the certificates API (cluster-scoped CSRs, with the
    // approval subresource) and the ConfigMap the signer publishes its CA in.
    this.api.addResource({ prefix: '/apis/certificates.k8s.io/v1', plural: 'certificatesigningrequests', kind: 'CertificateSigningRequest', apiVersion: 'certificates.k8s.io/v1', clusterScoped: true, statusLike: ['approval'], stampRequester: true });
    this.api.addResource({ prefix: '/api/v1', plural: 'configmaps', kind: 'ConfigMap', apiVersion: 'v1' });
    const signer = deploy.find((d) => d.kind === 'Deployment' && d.metadata.name === 'patchwire-signer')!;
    this.signerUser = serviceAccountUser(signer.metadata.namespace as string, signer.spec.template.spec.serviceAccountName as string);
  }

  /** who the signer is: its ServiceAccount in deploy/signer.yaml */
  readonly signerUser: UserInfo;
  signer: ChildProcess | null = null;
  signerLog = '';

  /** Requests the daemons made as the DaemonSet's account (not the test's own). */
  daemonRequests(): RequestRecord[] {
    const tokens = new Set([...this.nodes.values()].map((n) => n.token));
    return this.api.requests.filter((r) => r.user === this.daemonUser.name && tokens.has(r.token));
  }

  async start(): Promise<void> {
    await this.api.listen();
    await makeCa(this.tlsDir, 'patchwire test cluster');
    await this.startSigner();
  }

  /** The real `patchwire signer`, as its Deployment runs it, against the stand-in. */
  async startSigner(extra: string[] = []): Promise<void> {
    const token = `signer-${randomBytes(12).toString('hex')}`;
    this.api.addToken(token, this.signerUser);
    const kubeconfig = path.join(this.net.dir, 'signer.kubeconfig');
    writeFileSync(kubeconfig, JSON.stringify(kubeconfigFor(this.api.url, token)));
    const ns = this.signerUser.name.split(':')[2]!;
    this.signer = spawn(process.execPath, [path.join(ROOT, 'bin', 'patchwire.js'), 'signer', '--ca-cert', path.join(this.tlsDir, 'ca.crt'), '--ca-key', path.join(this.tlsDir, 'ca.key'), '--kubeconfig', kubeconfig, '--namespace', ns, '--poll-seconds', '0.5', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.signer.stderr!.on('data', (c: Buffer) => (this.signerLog += c.toString()));
    await waitFor('the signer to start', () => /issuing node identities/.test(this.signerLog) || this.signer?.exitCode !== null);
    if (this.signer.exitCode !== null) throw new Error(`signer exited: ${this.signerLog}`);
  }

  stopSigner(): void {
    this.signer?.kill('SIGKILL');
    this.signer = null;
  }

  /** the cluster's data-plane CA and the nodes' identities */
  get tlsDir(): string {
    return path.join(this.net.dir, 'tls');
  }

  /** A node namespace with a relay to the API and a daemon in cluster mode (as `user`: default the DaemonSet's). */
  async addNode(short: string, extra: string[] = [], user: UserInfo = this.daemonUser, identity: 'csr' | 'files' = 'csr'): Promise<ClusterNode> {
    const base = await this.net.addNode(short, { start: false });
    const node: ClusterNode = Object.assign(base, {
      short,
      cniSocket: path.join(this.net.dir, `${short}.cni.sock`),
      kubeconfig: path.join(this.net.dir, `${short}.kubeconfig`),
      token: `${short}-${randomBytes(12).toString('hex')}`,
      relay: null,
      tls: { cert: path.join(this.net.dir, `${short}-identity`, 'tls.crt'), key: path.join(this.net.dir, `${short}-identity`, 'tls.key'), ca: path.join(this.net.dir, `${short}-identity`, 'ca.crt') },
      identity,
    });
    if (identity === 'files') await makeNodeIdentity(this.tlsDir, path.join(this.net.dir, `${short}-identity`), base.name, { fileBase: 'tls' }).then((f) => (node.tls = f));
    // Bound service-account tokens carry the node their pod runs on.
    this.api.addToken(node.token, { ...user, extra: { 'authentication.kubernetes.io/node-name': [base.name] } });
    writeFileSync(
      node.kubeconfig,
      JSON.stringify(kubeconfigFor(`http://127.0.0.1:${API_PORT}`, node.token)),
    );
    node.relay = spawn('ip', ['netns', 'exec', node.ns, process.execPath, RELAY, `127.0.0.1:${API_PORT}`, this.api.socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      node.relay!.stdout!.once('data', () => resolve());
      node.relay!.once('exit', (c) => reject(new Error(`relay for ${short} exited with ${c}`)));
    });
    this.nodes.set(short, node);
    await this.startDaemon(node, extra);
    return node;
  }

  daemonExtra(node: ClusterNode, extra: string[] = []): string[] {
    const id = node.identity === 'csr' ? ['--identity', 'csr', '--identity-dir', path.dirname(node.tls.cert)] : ['--tls-cert', node.tls.cert, '--tls-key', node.tls.key, '--tls-ca', node.tls.ca];
    return [...id, '--cluster', '--kubeconfig', node.kubeconfig, '--cni-socket', node.cniSocket, '--health', `${node.ip}:7081`, '--resync-seconds', '2', ...extra];
  }

  async startDaemon(node: ClusterNode, extra: string[] = []): Promise<void> {
    await this.net.startDaemon(node, this.daemonExtra(node, extra));
  }

  /** /readyz of a node's daemon, fetched from inside the node's namespace. */
  async ready(node: ClusterNode): Promise<{ code: number; body: string }> {
    const py = `import urllib.request,sys\ntry:\n r=urllib.request.urlopen('http://${node.ip}:7081/readyz',timeout=2); print(r.status); print(r.read().decode())\nexcept urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())`;
    const r = await run('ip', ['netns', 'exec', node.ns, 'python3', '-c', py]);
    const [code, ...rest] = r.stdout.split('\n');
    return { code: Number(code), body: rest.join('\n').trim() };
  }

  async request(method: string, urlPath: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: KubeObject & Record<string, unknown> }> {
    const res = await fetch(`${this.api.url}${urlPath}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body === undefined ? {} : { 'content-type': contentType }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as KubeObject & Record<string, unknown> };
  }

  async createTopology(namespace: string, obj: Record<string, unknown>): Promise<{ status: number; body: KubeObject & Record<string, unknown> }> {
    return this.request('POST', `/apis/networkop.co.uk/v1beta1/namespaces/${namespace}/topologies`, obj);
  }

  topologyStatus(namespace: string, name: string): Record<string, unknown> | undefined {
    return this.api.get('topologies', namespace, name)?.status as Record<string, unknown> | undefined;
  }

  /** Waits until a Topology's status says `ready` (e.g. "2/2"). */
  waitReady(namespace: string, name: string, ready: string, timeoutMs = 30000): Promise<Record<string, unknown>> {
    return waitFor(`Topology ${namespace}/${name} ready ${ready}`, () => {
      const s = this.topologyStatus(namespace, name);
      return s?.ready === ready ? s : undefined;
    }, timeoutMs);
  }

  /** What a kubelet does: schedule, make the sandbox namespace, run CNI ADD. */
  async startPod(nodeShort: string, namespace: string, name: string, o: { cni?: boolean; labels?: Record<string, string> } = {}): Promise<{ pod: TestPod; add: RunResult & { json: Record<string, unknown> | null } }> {
    const node = this.nodes.get(nodeShort)!;
    const netns = this.net.addPod(`${namespace.slice(-2)}${name}`);
    const created = await this.request('POST', `/api/v1/namespaces/${namespace}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, ...(o.labels ? { labels: o.labels } : {}) },
      spec: { nodeName: node.name, terminationGracePeriodSeconds: 30, containers: [{ name: 'router', image: 'router:latest' }] },
    });
    if (created.status !== 201) throw new Error(`creating pod ${namespace}/${name}: ${JSON.stringify(created.body)}`);
    const uid = created.body.metadata.uid!;
    await this.request('PATCH', `/api/v1/namespaces/${namespace}/pods/${name}/status`, { status: { phase: 'Running', hostIP: node.ip } }, 'application/merge-patch+json');
    const containerId = randomBytes(16).toString('hex');
    const pod: TestPod = { namespace, name, netns, containerId, uid, node };
    this.pods.set(`${namespace}/${name}`, pod);
    // cni: false stops before the runtime calls the plugin (a sandbox still starting).
    const add = o.cni === false ? { code: -1, stdout: '', stderr: '', json: null } : await this.cni('ADD', pod);
    return { pod, add };
  }

  cniEnv(command: string, pod: TestPod): Record<string, string> {
    return {
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: `/var/run/netns/${pod.netns}`,
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/opt/cni/bin',
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.containerId};K8S_POD_UID=${pod.uid}`,
    };
  }

  cniConfig(pod: TestPod, version = '1.0.0'): string {
    return JSON.stringify({ cniVersion: version, name: 'k8s-pod-network', type: 'patchwire', socket: pod.node.cniSocket, prevResult: prevResult(`/var/run/netns/${pod.netns}`) });
  }

  cni(command: string, pod: TestPod): Promise<RunResult & { json: Record<string, unknown> | null }> {
    return runPlugin(this.cniEnv(command, pod), this.cniConfig(pod));
  }

  /**
   * What `kubectl delete pod` and the kubelet do: the graceful DELETE marks
   * the pod (deletionTimestamp), the kubelet stops it, runs CNI DEL (unless
   * `cni: false`: a DEL that was missed) and removes the sandbox, then
   * deletes the object for good (grace 0).
   */
  async deletePod(namespace: string, name: string, o: { cni?: boolean } = {}): Promise<RunResult> {
    const pod = this.pods.get(`${namespace}/${name}`)!;
    const marked = await this.request('DELETE', `/api/v1/namespaces/${namespace}/pods/${name}`);
    if (marked.status !== 200 || !marked.body.metadata.deletionTimestamp) throw new Error(`graceful delete of pod ${namespace}/${name}: ${JSON.stringify(marked.body)}`);
    const del = o.cni === false ? { code: 0, stdout: '', stderr: '' } : await this.cni('DEL', pod);
    await run('ip', ['netns', 'del', pod.netns]);
    await this.request('DELETE', `/api/v1/namespaces/${namespace}/pods/${name}?gracePeriodSeconds=0`);
    this.pods.delete(`${namespace}/${name}`);
    return del;
  }

  exec(pod: TestPod, cmd: string, args: string[]): Promise<RunResult> {
    return this.net.exec(pod.netns, cmd, args);
  }

  async cleanup(): Promise<void> {
    this.stopSigner();
    for (const n of this.nodes.values()) n.relay?.kill('SIGKILL');
    await this.net.cleanup();
    spawnSyncQuiet('pkill', ['-9', '-f', `relay.mjs .*${this.prefix}`]);
    await this.api.close().catch(() => undefined);
  }
}
