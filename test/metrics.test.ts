// /metrics end to end: a real Prometheus (Debian's package) scrapes the
// daemons of a lab with the lab's capture token, and PromQL over its HTTP API
// shows exactly the frames of N pings on both ends of a wire across nodes;
// promtool accepts the text; a scrape without the token gets 401 (in
// Prometheus' own target state too); bad paths, methods and parameters get
// clear errors. In cluster mode, /metrics is authorized as get nodes/metrics
// (TokenReview + SubjectAccessReview against the stand-in API server).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import t from 'tap';

import { serviceAccountUser, type UserInfo } from './helpers/apiserver.js';
import { TestCluster } from './helpers/cluster.js';
import { pw, pwOk, settledStatus, type StatusJson } from './helpers/labcli.js';
import { ROOT, run, sh, waitFor } from './helpers/testnet.js';

const LAB = 'pwma';
const NODE1 = `pwn-${LAB}-node1`;
const triangle = path.join(ROOT, 'examples', 'triangle.yaml');
const dir = mkdtempSync(path.join(os.tmpdir(), 'pwma-'));
const PROM = '127.0.0.1:9471';
let prom: ChildProcess | null = null;

t.teardown(async () => {
  if (prom && prom.exitCode === null) {
    prom.kill('SIGTERM');
    await new Promise((r) => prom!.once('exit', r));
  }
  await pw('down', LAB);
  rmSync(dir, { recursive: true, force: true });
});

/** curl inside a namespace: status, headers and body. */
async function curl(ns: string, args: string[]): Promise<{ code: number; body: string; headers: string }> {
  const hdr = path.join(dir, `h-${Math.random().toString(36).slice(2)}`);
  const r = await run('ip', ['netns', 'exec', ns, 'curl', '-s', '-D', hdr, '-w', '\n%{http_code}', ...args]);
  const i = r.stdout.lastIndexOf('\n');
  let headers = '';
  try {
    headers = readFileSync(hdr, 'utf8');
    rmSync(hdr);
  } catch {
    /* no answer */
  }
  return { code: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i), headers };
}

interface PromVector {
  metric: Record<string, string>;
  value: [number, string];
}

async function promQuery(q: string): Promise<PromVector[]> {
  const r = await curl(NODE1, ['-G', `http://${PROM}/api/v1/query`, '--data-urlencode', `query=${q}`]);
  const j = JSON.parse(r.body) as { status: string; data: { result: PromVector[] }; error?: string };
  if (j.status !== 'success') throw new Error(`PromQL ${q}: ${j.error}`);
  return j.data.result;
}

/** The one value of a PromQL query (undefined: no series). */
async function promValue(q: string): Promise<number | undefined> {
  const r = await promQuery(q);
  if (r.length > 1) throw new Error(`PromQL ${q}: ${r.length} series, expected one`);
  return r[0] ? Number(r[0].value[1]) : undefined;
}

const end = (s: StatusJson, name: string): StatusJson['wires'][number]['ends'][number] => s.wires.flatMap((w) => w.ends).find((e) => e.name === name)!;

t.before(async () => {
  await pw('down', LAB);
});

t.test('lab daemons: /metrics for a real Prometheus', async (t) => {
  await pwOk('up', '-f', triangle, '--name', LAB);
  const tokenFile = `/run/patchwire/labs/${LAB}/capture.token`;
  const token = readFileSync(tokenFile, 'utf8').trim();
  const auth = ['-H', `Authorization: Bearer ${token}`];
  const n1 = 'http://198.18.0.2:8080';

  // Access control and errors first.
  const none = await curl(NODE1, [`${n1}/metrics`]);
  t.equal(none.code, 401, 'no token: 401');
  t.match(none.headers, /www-authenticate: Bearer/i, 'with a Bearer challenge');
  t.notMatch(none.body, /patchwire_wire/, 'and no metrics');
  t.equal((await curl(NODE1, ['-H', 'Authorization: Bearer not-the-lab-token-at-all', `${n1}/metrics`])).code, 401, 'a wrong token: 401');
  const post = await curl(NODE1, [...auth, '-X', 'POST', `${n1}/metrics`]);
  t.equal(post.code, 405, 'POST: 405');
  t.match(post.headers, /allow: GET, HEAD/i, 'naming the methods allowed');
  const typo = await curl(NODE1, [...auth, `${n1}/metric`]);
  t.equal(typo.code, 404, 'a wrong path: 404');
  t.match(typo.body, /no such path "\/metric"; this port serves .*\/metrics/, 'listing the paths served');
  const param = await curl(NODE1, [...auth, `${n1}/metrics?name=x`]);
  t.equal(param.code, 400, 'a query parameter: 400');
  t.match(param.body, /takes no query parameters/);

  const ok = await curl(NODE1, [...auth, `${n1}/metrics`]);
  t.equal(ok.code, 200, 'the lab token: 200');
  t.match(ok.headers, /content-type: text\/plain; version=0\.0\.4/i, 'in the Prometheus text format');
  const check = await run('promtool', ['check', 'metrics'], { input: ok.body });
  t.equal(check.code, 0, `promtool check metrics accepts it${check.stdout || check.stderr ? `: ${check.stdout}${check.stderr}` : ''}`);
  for (const cause of ['queue_full', 'peer_down', 'too_big', 'kernel_ring', 'truncated', 'send_busy', 'send_error']) {
    t.match(ok.body, new RegExp(`patchwire_wire_drops_total\\{namespace="",pod="r1",interface="eth1",cause="${cause}",lab="${LAB}",node="node1"\\} \\d+`), `drops of r1/eth1 by cause ${cause}`);
  }
  t.match(ok.body, /patchwire_peer_connected\{peer="node2",direction="inbound",lab="pwma",node="node1"\} 1/, 'peer stream state');
  t.notMatch(ok.body, /pod="r2"/, "node1's daemon shows its own wire ends only (r2 is on node2)");

  // Exact counts need a quiet wire: no ARP (permanent neighbours), no IPv6 chatter.
  const mac = (ns: string): string => (JSON.parse(sh('ip', '-n', ns, '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ address: string }>)[0]!.address;
  for (const [pod, peerIp, peerPod] of [
    ['r1', '192.0.2.2', 'r2'],
    ['r2', '192.0.2.1', 'r1'],
  ] as const) {
    sh('ip', 'netns', 'exec', `pw-${LAB}-${pod}`, 'sysctl', '-qw', 'net.ipv6.conf.eth1.disable_ipv6=1');
    sh('ip', '-n', `pw-${LAB}-${pod}`, 'neigh', 'replace', peerIp, 'lladdr', mac(`pw-${LAB}-${peerPod}`), 'dev', 'eth1', 'nud', 'permanent');
  }

  // Prometheus in node1's namespace scrapes both daemons every second.
  writeFileSync(
    path.join(dir, 'prometheus.yml'),
    [
      'global: {scrape_interval: 1s, scrape_timeout: 900ms}',
      'scrape_configs:',
      '  - job_name: patchwire',
      `    authorization: {type: Bearer, credentials_file: ${tokenFile}}`,
      "    static_configs: [{targets: ['198.18.0.2:8080', '198.18.0.3:8080']}]",
      '  - job_name: noauth',
      "    static_configs: [{targets: ['198.18.0.2:8080']}]",
      '',
    ].join('\n'),
  );
  const promLog = path.join(dir, 'prometheus.log');
  writeFileSync(promLog, '');
  prom = spawn('ip', ['netns', 'exec', NODE1, 'prometheus', `--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=${PROM}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  prom.stderr!.on('data', (d: Buffer) => writeFileSync(promLog, d, { flag: 'a' }));
  await waitFor('Prometheus ready', async () => (await curl(NODE1, [`http://${PROM}/-/ready`])).code === 200, 60000, 250).catch((err: Error) => {
    throw new Error(`${err.message}\n${readFileSync(promLog, 'utf8').slice(-2000)}`);
  });
  await waitFor('both daemons scraped', async () => (await promQuery('up{job="patchwire"} == 1')).length === 2, 30000, 250);
  const noauth = await waitFor('the unauthenticated job scraped', async () => {
    const r = await curl(NODE1, [`http://${PROM}/api/v1/targets`]);
    const targets = (JSON.parse(r.body) as { data: { activeTargets: Array<{ labels: { job: string }; health: string; lastError: string }> } }).data.activeTargets;
    const x = targets.find((a) => a.labels.job === 'noauth');
    return x && x.health !== 'unknown' ? x : undefined;
  }, 30000, 250);
  t.equal(noauth.health, 'down', 'Prometheus without the token: target down');
  t.match(noauth.lastError, /401/, `because the daemon answered 401 (${noauth.lastError})`);
  t.equal(await promValue('up{job="noauth"}'), 0);

  // Quiet counters, and Prometheus has scraped them.
  const sel = (pod: string, dirn: string): string => `patchwire_wire_frames_total{lab="${LAB}",pod="${pod}",interface="eth1",direction="${dirn}"}`;
  const before = await settledStatus(LAB);
  const base = { r1rx: end(before, 'r1/eth1').rx_frames, r1tx: end(before, 'r1/eth1').tx_frames, r2rx: end(before, 'r2/eth1').rx_frames, r2tx: end(before, 'r2/eth1').tx_frames };
  await waitFor('Prometheus holds the settled counters', async () => (await promValue(sel('r2', 'tx'))) === base.r2tx && (await promValue(sel('r1', 'rx'))) === base.r1rx, 30000, 250);

  const N = 7;
  const ping = await pw('exec', LAB, 'r1', '--', 'ping', '-c', String(N), '-i', '0.2', '-W', '2', '192.0.2.2');
  t.equal(ping.code, 0, `${N} pings from r1 to r2 across nodes`);
  const after = await settledStatus(LAB);
  t.equal(end(after, 'r1/eth1').rx_frames - base.r1rx, N, `the daemons counted ${N} requests read from r1/eth1`);
  // PromQL over Prometheus' HTTP API: the frames of the pings, on each end, and both daemons together.
  await waitFor('Prometheus scraped the pings', async () => (await promValue(sel('r2', 'rx'))) === base.r2rx + N && (await promValue(sel('r1', 'tx'))) === base.r1tx + N, 30000, 250);
  t.equal(await promValue(sel('r1', 'rx')), base.r1rx + N, `r1/eth1 (node1): exactly ${N} more frames read (the requests)`);
  t.equal(await promValue(sel('r2', 'tx')), base.r2tx + N, `r2/eth1 (node2): exactly ${N} more frames written (the requests, delivered)`);
  t.equal(await promValue(sel('r2', 'rx')), base.r2rx + N, `r2/eth1: exactly ${N} more read (the replies)`);
  t.equal(await promValue(sel('r1', 'tx')), base.r1tx + N, `r1/eth1: exactly ${N} more written (the replies)`);
  const both = await promQuery(`sum by (direction) (patchwire_wire_frames_total{lab="${LAB}",pod=~"r1|r2",interface="eth1"})`);
  const sum = Object.fromEntries(both.map((v) => [v.metric.direction, Number(v.value[1])]));
  t.same(sum, { rx: base.r1rx + base.r2rx + 2 * N, tx: base.r1tx + base.r2tx + 2 * N }, 'summed over both daemons by direction');
  const bytes = await promValue(`patchwire_wire_bytes_total{lab="${LAB}",pod="r2",interface="eth1",direction="tx"}`);
  t.equal(bytes, end(after, 'r2/eth1').tx_bytes, 'bytes as the control API counts them');
  t.equal(await promValue(`sum(patchwire_wire_drops_total{lab="${LAB}",pod=~"r1|r2",interface="eth1"})`), Object.values(end(after, 'r1/eth1').drops).concat(Object.values(end(after, 'r2/eth1').drops)).reduce((a, b) => a + b, 0), 'drops as the control API counts them');

  // Keepalive round trip to the peer daemon (a ping every 5 s, in whole
  // milliseconds: on this machine's underlay it may well read 0).
  const rtt = await promQuery(`patchwire_peer_rtt_seconds{lab="${LAB}"}`);
  t.same(rtt.map((v) => `${v.metric.node}>${v.metric.peer}`).sort(), ['node1>node2', 'node2>node1'], 'a round trip per daemon and peer');
  t.ok(rtt.every((v) => Number(v.value[1]) >= 0 && Number(v.value[1]) < 1), `round trips ${rtt.map((v) => v.value[1]).join(', ')} s`);
  t.equal(await promValue(`patchwire_peer_connected{lab="${LAB}",node="node2",peer="node1",direction="outbound"}`), 1, "node2's view of its peer");
  t.ok((await promQuery(`patchwire_process_cpu_seconds_total{lab="${LAB}"}`)).length === 4, 'CPU of both daemons, user and system');

  // The example Grafana dashboard: valid JSON, and every query of it runs on
  // this Prometheus against these daemons' metrics, with data.
  const dash = JSON.parse(readFileSync(path.join(ROOT, 'deploy', 'grafana-lab.json'), 'utf8')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }> };
  const exprs = dash.panels.flatMap((p) => p.targets.map((x) => ({ title: p.title, expr: x.expr.replaceAll('$lab', LAB).replaceAll('$node', '.*').replaceAll('$__rate_interval', '1m') })));
  t.ok(exprs.length >= 10, `the dashboard has ${exprs.length} queries`);
  const names = new Set([...ok.body.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]));
  for (const e of exprs) {
    for (const m of e.expr.matchAll(/\b(patchwire_[a-z_]+)\{/g)) t.ok(names.has(m[1]!), `${e.title}: ${m[1]} is a metric the daemons serve`);
    const r = await promQuery(e.expr).then(
      (v) => `${v.length} series`,
      (err: Error) => err.message,
    );
    t.match(r, /^\d+ series$/, `${e.title}: the query runs (${r})`);
  }
  t.ok((await promQuery(exprs.find((e) => e.title.startsWith('Frames per second'))!.expr)).length >= 4, 'the frame-rate panel has a series per end and direction');
});

t.test('cluster mode: /metrics is authorized as get nodes/metrics', async (t) => {
  const cluster = new TestCluster('pwmc');
  t.teardown(() => cluster.cleanup());
  await cluster.start();
  const n1 = await cluster.addNode('n1', ['--http', '127.0.0.1:8080']);
  await cluster.addNode('n2');
  const carol: UserInfo = { name: 'carol', groups: ['system:authenticated'] };
  const prom = serviceAccountUser('monitoring', 'prometheus');
  cluster.api.addToken('carol-token-0123456789', carol);
  cluster.api.addToken('prom-token-0123456789', prom);
  // Prometheus' usual ClusterRole grants get on nodes/metrics; carol may only capture.
  cluster.api.addRbac([
    { kind: 'ClusterRole', metadata: { name: 'scrape' }, rules: [{ apiGroups: [''], resources: ['nodes/metrics'], verbs: ['get'] }] },
    { kind: 'ClusterRoleBinding', metadata: { name: 'prom-scrape' }, roleRef: { kind: 'ClusterRole', name: 'scrape' }, subjects: [{ kind: 'ServiceAccount', name: 'prometheus', namespace: 'monitoring' }] },
    { kind: 'Role', metadata: { name: 'capture', namespace: 'mns' }, rules: [{ apiGroups: [''], resources: ['pods/capture'], verbs: ['get'] }] },
    { kind: 'RoleBinding', metadata: { name: 'carol-capture', namespace: 'mns' }, roleRef: { kind: 'Role', name: 'capture' }, subjects: [{ kind: 'User', name: 'carol' }] },
  ]);
  const l = (peer: string): Record<string, unknown> => ({ uid: 1, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1' });
  for (const [name, peer] of [
    ['m1', 'm2'],
    ['m2', 'm1'],
  ] as const) {
    t.equal((await cluster.createTopology('mns', { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name }, spec: { links: [l(peer)] } })).status, 201);
  }
  await cluster.startPod('n1', 'mns', 'm1');
  await cluster.startPod('n2', 'mns', 'm2');
  await cluster.waitReady('mns', 'm1', '1/1');

  const at = (p: string, token?: string): Promise<{ code: number; body: string; headers: string }> =>
    curl(n1.ns, [...(token ? ['-H', `Authorization: Bearer ${token}`] : []), `http://127.0.0.1:8080${p}`]);
  t.equal((await at('/metrics')).code, 401, 'no token: 401');
  const denied = await at('/metrics', 'carol-token-0123456789');
  t.equal(denied.code, 403, 'a user who may capture in mns but not get nodes/metrics: 403');
  t.match(denied.body, `user "carol" may not get nodes/metrics of node ${n1.name}`, 'saying who and what');
  const sar = cluster
    .daemonRequests()
    .filter((r) => r.resource === 'subjectaccessreviews')
    .map((r) => (r.body as { spec?: { user?: string; resourceAttributes?: unknown } }).spec)
    .find((s) => s?.user === 'carol');
  t.same(sar?.resourceAttributes, { name: n1.name, verb: 'get', group: '', resource: 'nodes', subresource: 'metrics' }, 'the SubjectAccessReview asks for get nodes/metrics of the node');
  const ok = await at('/metrics', 'prom-token-0123456789');
  t.equal(ok.code, 200, "Prometheus' service account with get nodes/metrics: 200");
  t.match(ok.body, /patchwire_wire_frames_total\{namespace="mns",pod="m1",interface="eth1",direction="rx",lab="[^"]*",node="pwmcn1"\} \d+/, 'wire ends labelled with their Kubernetes namespace, pod and interface');
  const map = await at('/map', 'prom-token-0123456789');
  t.equal(map.code, 200, 'the map takes the same permission');
  t.equal((await at('/map', 'carol-token-0123456789')).code, 403);
});
