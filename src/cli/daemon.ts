// `patchwire daemon`: run one wire daemon in the foreground.
import { parseArgs } from 'node:util';

import { controlServiceFor } from '../control/service.js';
import { Daemon, type TlsFiles } from '../daemon/daemon.js';
import { type CaptureAuth, KubeAuth, LabTokenAuth, readTokenFile } from '../capture/auth.js';
import { parseRtPriority, UsageError } from './usage.js';
import { parseHostPort } from '../util/hostport.js';
import { parseBounded, rangeProblem } from '../limits.js';
import { DEFAULT_CNI_SOCKET } from '../cni/protocol.js';

export const DAEMON_HELP = `patchwire daemon --node NAME --listen HOST:PORT [options]
patchwire daemon --cluster [options]

Runs a wire daemon: it owns the endpoints of its node's wires, streams their
frames to the peer daemons over gRPC and serves the control API.

In cluster mode (--cluster) the wires come from Topology objects
(networkop.co.uk/v1beta1) instead of the control API: the daemon watches them
and the pods they name, learns each local pod's network namespace from the
patchwire CNI plugin, finds peer daemons at the peer pods' host IPs, and
writes each local pod's Topology status.

Options:
  --node NAME          this node's name (peers address us by it; cluster mode: default $NODE_NAME)
  --lab NAME           lab this daemon serves; peers of other labs are refused (default: default)
  --listen HOST:PORT   data-plane listener for peer daemons
  --control ADDR       control API address (default unix:///run/patchwire/NODE.sock)
  --state FILE         where desired wires are kept across restarts (default: none)
  --tls-cert FILE      certificate for mutual TLS with peers (with --tls-key, --tls-ca)
  --tls-key FILE
  --tls-ca FILE
                       the certificate must name this node (--node) as a DNS
                       subjectAltName; peers are checked against theirs. The
                       files are watched: a renewed certificate (or SIGHUP)
                       is taken for new connections without a link flap
  --identity csr       cluster mode: get this node's certificate from the
                       Kubernetes certificates API (patchwire signer), renew it
                       at two thirds of its life; instead of --tls-*
  --identity-dir DIR   where that identity is kept (default /run/patchwire/identity)
  --identity-lifetime-seconds N
                       lifetime asked for (default 86400; the signer may give less)
  --insecure           plain-text data plane, no peer identity (only for
                       isolated labs; refused with --cluster)
  --http HOST:PORT     serve packet capture over HTTP: GET /capture?wire=POD/INTF[&follow=1][&format=pcap],
                       Prometheus metrics (GET /metrics) and the live link map (GET /map,
                       /map/events), for callers with Authorization: Bearer TOKEN (see
                       --capture-token-file; cluster mode: Kubernetes tokens, checked with
                       TokenReview and SubjectAccessReview: get on pods/capture to capture,
                       get on nodes/metrics for /metrics and /map)
  --capture-token-file FILE
                       lab mode: the lab's capture token (patchwire up writes it, mode 0600)
  --health HOST:PORT   serve only /healthz (liveness) and /readyz (readiness: cluster watches listed)
  --capture-ring-bytes N
                       capture ring per wire end, bytes (default 4194304, at most 268435456);
                       0 turns the rings off
  --carrier-hold-ms N  how long a wire end keeps carrier while its far daemon cannot be reached
                       (default 3000; a daemon restarted within it flaps nothing); a link's
                       patchwire: {carrier_hold_ms: N} overrides it
  --rt-priority N      run the daemon's threads under SCHED_RR at priority N (1-99) so busy
                       pods cannot delay frames; 0 (default) keeps normal scheduling.
                       Costs CPU: a daemon woken at once wakes for every few frames.
  --capture-dir DIR    also write every wire end to pcapng files in DIR, rotated:
  --capture-file-bytes N   start a new file at N bytes (default 16777216)
  --capture-files K        keep K files per wire end (default 8)

Cluster mode:
  --cluster            wire pods from Topology objects (lab: cluster, listen: 0.0.0.0:7000)
  --kubeconfig FILE    API server credentials (default: $KUBECONFIG, ~/.kube/config or in-cluster)
  --cni-socket PATH    where the CNI plugin reaches this daemon (default /run/patchwire/cni.sock)
  --data-port N        port peer daemons listen on at their host IPs (default: the --listen port)
  --resync-seconds N   full reconcile period; retries failed plumbing (default 10)
  --orphan-grace-seconds N
                       forget a pod the CNI plugin registered once its pod object has been
                       gone this long (its CNI DEL was missed) (default 30)
  --api-timeout-seconds N
                       an API request unanswered after N seconds is abandoned and retried;
                       watches ask the server to end them after 5N and are abandoned N later
                       (a silent API server cannot stall the daemon) (default 60)
`;

export async function daemonMain(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      node: { type: 'string' },
      lab: { type: 'string', default: 'default' },
      listen: { type: 'string' },
      control: { type: 'string' },
      state: { type: 'string', default: '' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      insecure: { type: 'boolean', default: false },
      identity: { type: 'string' },
      'identity-dir': { type: 'string', default: '/run/patchwire/identity' },
      'identity-lifetime-seconds': { type: 'string', default: '86400' },
      http: { type: 'string', default: '' },
      health: { type: 'string', default: '' },
      'capture-token-file': { type: 'string' },
      'capture-ring-bytes': { type: 'string' },
      'carrier-hold-ms': { type: 'string' },
      'capture-dir': { type: 'string' },
      'rt-priority': { type: 'string', default: '0' },
      'capture-file-bytes': { type: 'string', default: String(16 << 20) },
      'capture-files': { type: 'string', default: '8' },
      cluster: { type: 'boolean', default: false },
      kubeconfig: { type: 'string' },
      'cni-socket': { type: 'string', default: DEFAULT_CNI_SOCKET },
      'data-port': { type: 'string' },
      'resync-seconds': { type: 'string', default: '10' },
      'orphan-grace-seconds': { type: 'string', default: '30' },
      'api-timeout-seconds': { type: 'string', default: '60' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(DAEMON_HELP);
    return;
  }
  const cluster = values.cluster!;
  if (cluster) {
    values.node ??= process.env.NODE_NAME;
    values.listen ??= '0.0.0.0:7000';
    if (values.lab === 'default') values.lab = 'cluster';
  } else {
    for (const f of ['kubeconfig', 'data-port'] as const) if (values[f] !== undefined) throw new UsageError(`daemon: --${f} needs --cluster`);
  }
  if (!values.node) throw new UsageError(cluster ? 'daemon: --node (or $NODE_NAME) is required' : 'daemon: --node is required');
  if (!values.listen) throw new UsageError('daemon: --listen HOST:PORT is required');
  const listenPort = parseHostPort(values.listen)?.port ?? NaN;
  const usage = (m: string): UsageError => new UsageError(`daemon: ${m}`);
  // Peers find this daemon at its host IP and this port, so it must be a fixed one.
  const dataPort = values['data-port'] !== undefined ? parseBounded('--data-port', values['data-port'], 'port', usage) : listenPort;
  if (cluster && rangeProblem('data port', dataPort, 'port')) throw usage(rangeProblem(`data port of --listen '${values.listen}'`, dataPort, 'port')!);
  const resyncSeconds = parseBounded('--resync-seconds', values['resync-seconds']!, 'resyncSeconds', usage, { fractions: true });
  const orphanGraceSeconds = parseBounded('--orphan-grace-seconds', values['orphan-grace-seconds']!, 'orphanGraceSeconds', usage, { fractions: true });
  const apiTimeoutSeconds = parseBounded('--api-timeout-seconds', values['api-timeout-seconds']!, 'apiTimeoutSeconds', usage, { fractions: true });
  const tlsParts = [values['tls-cert'], values['tls-key'], values['tls-ca']];
  let tls: TlsFiles | null = null;
  let identity: { dir: string; lifetimeSeconds: number } | null = null;
  if (values.identity !== undefined) {
    if (values.identity !== 'csr') throw new UsageError(`daemon: --identity '${values.identity}' is not known (csr)`);
    if (!cluster) throw new UsageError('daemon: --identity csr needs --cluster');
    if (tlsParts.some(Boolean) || values.insecure) throw new UsageError('daemon: --identity csr replaces --tls-* and --insecure');
    const lifetimeSeconds = Number(values['identity-lifetime-seconds']);
    if (!Number.isInteger(lifetimeSeconds) || lifetimeSeconds < 600 || lifetimeSeconds > 31536000) throw new UsageError(`daemon: --identity-lifetime-seconds '${values['identity-lifetime-seconds']}' must be an integer from 600 to 31536000`);
    identity = { dir: values['identity-dir']!, lifetimeSeconds };
  } else if (tlsParts.some(Boolean)) {
    if (!tlsParts.every(Boolean)) throw new UsageError('daemon: --tls-cert, --tls-key and --tls-ca go together');
    tls = { cert: values['tls-cert']!, key: values['tls-key']!, ca: values['tls-ca']! };
    if (values.insecure) throw new UsageError('daemon: --insecure and --tls-* contradict each other');
  } else if (cluster && values.insecure) {
    // On a shared cluster a plain-text data plane lets anyone on the node
    // network claim to be any node and take its frames.
    throw new UsageError('daemon: --insecure is refused with --cluster: peers must prove which node they are (give --tls-cert/--tls-key/--tls-ca)');
  } else if (!values.insecure) {
    throw new UsageError('daemon: give --tls-cert/--tls-key/--tls-ca, or --insecure for a plain-text data plane');
  }
  let ringBytes: number | undefined;
  if (values['capture-ring-bytes'] !== undefined) {
    ringBytes = parseBounded('--capture-ring-bytes', values['capture-ring-bytes'], 'captureRingBytes', usage);
  }
  const rtPriority = parseRtPriority('daemon', values['rt-priority']!);
  let carrierHoldMs: number | undefined;
  if (values['carrier-hold-ms'] !== undefined) {
    carrierHoldMs = parseBounded('--carrier-hold-ms', values['carrier-hold-ms'], 'carrierHoldMs', usage);
  }
  let captureFiles;
  if (values['capture-dir']) {
    const maxBytes = parseBounded('--capture-file-bytes', values['capture-file-bytes']!, 'captureFileBytes', usage);
    const maxFiles = parseBounded('--capture-files', values['capture-files']!, 'captureFiles', usage);
    captureFiles = { dir: values['capture-dir'], maxBytes, maxFiles };
  }
  let keeper: import('../tls/csr.js').IdentityKeeper | null = null;
  if (identity) {
    // The identity comes before the data port opens: the engine starts with it.
    const { IdentityKeeper } = await import('../tls/csr.js');
    const { apiClientFrom } = await import('../cluster/api.js');
    keeper = new IdentityKeeper(apiClientFrom(values.kubeconfig, apiTimeoutSeconds * 1000), {
      node: values.node,
      dir: identity.dir,
      namespace: process.env.POD_NAMESPACE ?? 'patchwire-system',
      lifetimeSeconds: identity.lifetimeSeconds,
      waitMs: 120_000,
      log: (m) => process.stderr.write(`[${values.node}] ${m}\n`),
    });
    tls = await keeper.start();
  }
  // The capture port is reachable from the network: never without credentials.
  let captureAuth: CaptureAuth | null = null;
  if (values['capture-token-file'] !== undefined) {
    if (cluster) throw new UsageError('daemon: --capture-token-file is for lab mode; in a cluster the API server checks tokens');
    try {
      captureAuth = new LabTokenAuth(readTokenFile(values['capture-token-file']));
    } catch (err) {
      throw new UsageError(`daemon: --capture-token-file: ${(err as Error).message}`);
    }
  } else if (values.http && !cluster) {
    throw new UsageError('daemon: --http needs --capture-token-file (or --cluster): capture is never served without credentials');
  }
  const daemon = new Daemon({
    captureFiles,
    http: values.http,
    health: values.health,
    captureRingBytes: ringBytes,
    ...(carrierHoldMs !== undefined ? { carrierHoldMs } : {}),
    node: values.node,
    lab: values.lab!,
    listen: values.listen,
    control: values.control ?? `unix:///run/patchwire/${values.node}.sock`,
    state: values.state!,
    tls,
    wiresFrom: cluster ? 'cluster' : 'api',
  });
  // Loaded only in cluster mode: lab mode needs neither a cluster nor the Kubernetes client.
  const controller = cluster
    ? new (await import('../cluster/controller.js')).ClusterController(daemon, {
        kubeconfig: values.kubeconfig,
        dataPort,
        cniSocket: values['cni-socket']!,
        resyncMs: resyncSeconds * 1000,
        orphanGraceMs: orphanGraceSeconds * 1000,
        apiTimeoutMs: apiTimeoutSeconds * 1000,
      })
    : null;
  if (cluster && values.http) {
    // Reviews go to the API server with the daemon's own credentials.
    const k8s = await import('@kubernetes/client-node');
    const { ApiClient } = await import('../cluster/api.js');
    const kc = new k8s.KubeConfig();
    if (values.kubeconfig) kc.loadFromFile(values.kubeconfig);
    else kc.loadFromDefault();
    const api = new ApiClient(kc, { requestMs: apiTimeoutSeconds * 1000, watchSeconds: 1 });
    captureAuth = new KubeAuth((p, body) => api.request('POST', p, body));
    // The browser view under /ui/, for `kubectl port-forward` (lab mode has `patchwire ui LAB`).
    const { DaemonPage } = await import('../ui/daemon-page.js');
    const page = new DaemonPage(
      {
        node: values.node,
        lab: values.lab!,
        captureAuth: () => daemon.captureAuth,
        captureSources: (names, listAll) => daemon.captureSources(names, listAll),
        captureGate: daemon.captureGate,
        mapSnapshot: () => daemon.map.snapshot(),
        mapWatch: (w) => daemon.map.watch(w),
        setCable: (end, plugged) => daemon.setCable(end, plugged),
        setImpair: (end, dir, imp) => daemon.setImpair(end, dir, imp),
        log: (m) => process.stderr.write(`[${values.node}] ${m}\n`),
      },
      () => controller!.listed(),
    );
    daemon.pageHandler = page.handler;
  }
  daemon.captureAuth = captureAuth;
  daemon.setRealtime(rtPriority);
  await daemon.start(controlServiceFor);
  try {
    await controller?.start();
  } catch (err) {
    await daemon.shutdown();
    throw err;
  }
  const stop = (): void => {
    keeper?.stop();
    void (controller?.stop() ?? Promise.resolve())
      .then(() => daemon.shutdown())
      .then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
