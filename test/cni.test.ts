// The CNI plugin run exactly as a container runtime runs it: the static
// binary, CNI_* environment, JSON on stdin, real network namespaces, and a
// real daemon in cluster mode behind it (its API server is the STAND-IN of
// test/helpers/apiserver.ts). Also `patchwire cni install/uninstall`.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { PLUGIN, prevResult, runPlugin, TestCluster, type TestPod } from './helpers/cluster.js';
import { CLI, run, sh, waitFor } from './helpers/testnet.js';

const cluster = new TestCluster('pwtc');
t.teardown(() => cluster.cleanup());

const conf = (o: Record<string, unknown> = {}): string => JSON.stringify({ cniVersion: '1.0.0', name: 'net', type: 'patchwire', socket: '/nonexistent/cni.sock', ...o });
const env = (o: Record<string, string> = {}): Record<string, string> => ({
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'c0ffee',
  CNI_NETNS: '/var/run/netns/none',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=p',
  ...o,
});

t.test('the binary needs nothing from the node', async (t) => {
  t.match(sh('file', PLUGIN), /statically linked/, 'statically linked');
  const v = await runPlugin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
  t.equal(v.code, 0, 'VERSION runs with an empty environment (no PATH, no Node.js)');
  t.equal(v.json?.cniVersion, '1.0.0');
  t.same(v.json?.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'], 'VERSION lists 1.0.0 and the older versions');
  const help = await run(PLUGIN, ['--help']);
  t.match(help.stdout, /Chain it after the primary plugin/, '--help explains what it is for');
});

t.test('malformed input gets the spec error codes', async (t) => {
  const cases: Array<[string, Record<string, string>, string, number, RegExp]> = [
    ['no CNI_COMMAND', { CNI_COMMAND: '' }, conf(), 4, /CNI_COMMAND is not set/],
    ['unknown command', { CNI_COMMAND: 'ATTACH' }, conf(), 4, /CNI_COMMAND 'ATTACH' is not/],
    ['invalid JSON', {}, '{"cniVersion": "1.0.0",', 6, /not valid JSON: unexpected end of input/],
    ['not an object', {}, '[1,2]', 6, /not a JSON object/],
    ['trailing garbage', {}, `${conf()} x`, 6, /trailing data/],
    ['empty stdin', {}, '', 6, /no network configuration/],
    ['no cniVersion', {}, '{"name":"n"}', 7, /no cniVersion/],
    ['cniVersion not a string', {}, '{"cniVersion":1}', 7, /cniVersion must be a string/],
    ['unsupported version', {}, conf({ cniVersion: '2.0.0' }), 1, /CNI version 2.0.0 is not supported/],
    ['CHECK on 0.3.1', { CNI_COMMAND: 'CHECK' }, conf({ cniVersion: '0.3.1', prevResult: {} }), 1, /CHECK needs CNI version 0.4.0/],
    ['CHECK without prevResult', { CNI_COMMAND: 'CHECK' }, conf(), 7, /CHECK needs prevResult/],
    ['ADD without CNI_NETNS', { CNI_NETNS: '' }, conf(), 4, /CNI_NETNS/],
    ['ADD without CNI_CONTAINERID and CNI_IFNAME', { CNI_CONTAINERID: '', CNI_IFNAME: '' }, conf(), 4, /CNI_CONTAINERID CNI_IFNAME/],
    ['ADD without the pod name', { CNI_ARGS: 'K8S_POD_NAMESPACE=default' }, conf(), 4, /K8S_POD_NAME/],
    ['socket not a string', {}, conf({ socket: 5 }), 7, /socket must be a string/],
    ['prevResult not an object', {}, conf({ prevResult: [1] }), 7, /prevResult must be an object/],
    ['daemon not running', {}, conf(), 11, /patchwire daemon not reachable at \/nonexistent\/cni.sock/],
  ];
  for (const [what, e, stdin, code, msg] of cases) {
    const r = await runPlugin(env(e), stdin);
    t.equal(r.code, 1, `${what}: non-zero exit`);
    t.equal(r.json?.code, code, `${what}: error code ${code}`);
    t.match(String(r.json?.msg), msg, `${what}: message says why`);
    t.equal(typeof r.json?.cniVersion, 'string', `${what}: error carries a cniVersion`);
    if (what === 'CHECK on 0.3.1') t.equal(r.json?.cniVersion, '0.3.1', 'in the version of the configuration');
  }
  const del = await runPlugin(env({ CNI_COMMAND: 'DEL' }), conf());
  t.equal(del.code, 0, 'DEL succeeds when the daemon is down (it resyncs by itself)');
  t.equal(del.stdout, '', 'DEL prints nothing');
  t.match(del.stderr, /not reachable/, 'but says so on stderr');
  const gc = await runPlugin(env({ CNI_COMMAND: 'GC' }), conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [] }));
  t.equal(gc.json?.code, 11, 'GC (1.1.0) asks to be tried again while the daemon is down (nothing was collected)');
  const gcNoList = await runPlugin(env({ CNI_COMMAND: 'GC' }), conf({ cniVersion: '1.1.0' }));
  t.equal(gcNoList.json?.code, 7, 'GC without cni.dev/valid-attachments is refused (an absent list is not an empty one)');
  t.match(String(gcNoList.json?.msg), /GC needs cni.dev\/valid-attachments/);
  const gcNotArray = await runPlugin(env({ CNI_COMMAND: 'GC' }), conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': {} }));
  t.equal(gcNotArray.json?.code, 7, 'GC with a valid-attachments that is not an array is refused');
  const gcOld = await runPlugin(env({ CNI_COMMAND: 'GC' }), conf({ cniVersion: '1.0.0', 'cni.dev/valid-attachments': [] }));
  t.equal(gcOld.json?.code, 1, 'GC needs CNI 1.1.0');
  const status = await runPlugin(env({ CNI_COMMAND: 'STATUS' }), conf({ cniVersion: '1.1.0' }));
  t.equal(status.json?.code, 50, 'STATUS (1.1.0) reports the plugin unavailable while the daemon is down');
});

t.test('ADD, CHECK, DEL against a daemon', async (t) => {
  await cluster.start();
  const node = await cluster.addNode('n1');
  const topo = (name: string, peer: string): Record<string, unknown> => ({
    apiVersion: 'networkop.co.uk/v1beta1',
    kind: 'Topology',
    metadata: { name },
    spec: { links: [{ uid: 7, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1' }] },
  });
  await cluster.createTopology('cni', topo('a', 'b'));
  await cluster.createTopology('cni', topo('b', 'a'));
  const { pod: a, add } = await cluster.startPod('n1', 'cni', 'a');
  t.equal(add.code, 0, 'ADD succeeds');
  t.same(add.json, prevResult(`/var/run/netns/${a.netns}`), 'ADD returns prevResult unchanged');
  const again = await cluster.cni('ADD', a);
  t.equal(again.code, 0, 'ADD again succeeds (idempotent)');
  t.same(again.json, add.json, 'with the same result');

  const noPrev = await runPlugin(cluster.cniEnv('ADD', a), JSON.stringify({ cniVersion: '0.4.0', name: 'n', type: 'patchwire', socket: node.cniSocket }));
  t.same(noPrev.json, { cniVersion: '0.4.0' }, 'ADD without prevResult returns an empty result of the config version');

  const { pod: b } = await cluster.startPod('n1', 'cni', 'b');
  await cluster.waitReady('cni', 'a', '1/1');
  t.ok(sh('ip', '-n', b.netns, '-o', 'link').includes('eth1'), 'the wire plumbed eth1 into pod b');
  const check = await cluster.cni('CHECK', a);
  t.equal(check.code, 0, `CHECK passes (${check.stdout.trim()})`);
  t.equal(check.stdout, '', 'CHECK prints nothing on success');

  // Break the pod behind the daemon's back: CHECK notices.
  sh('ip', '-n', a.netns, 'link', 'del', 'eth1');
  const broken = await cluster.cni('CHECK', a);
  t.equal(broken.json?.code, 100, 'CHECK fails when a wired interface is gone');
  t.match(String(broken.json?.msg), /interface eth1 of pod cni\/a .* is missing/);

  const badNs = await runPlugin({ ...cluster.cniEnv('ADD', a), CNI_NETNS: '/var/run/netns/pwtc-missing' }, cluster.cniConfig(a));
  t.equal(badNs.json?.code, 4, 'ADD with a namespace that does not exist is refused');
  t.match(String(badNs.json?.msg), /pwtc-missing does not exist/);

  // The API server goes away: DEL still removes the pod's wires, right away.
  cluster.api.failNext(() => true, 503, 1e9);
  cluster.api.closeWatches();
  const del = await cluster.cni('DEL', a);
  t.equal(del.code, 0, 'DEL succeeds');
  t.equal(del.stdout, '', 'DEL prints nothing');
  t.equal((await node.client.listWires()).length, 0, 'the wire is gone when DEL returns, with the API server unreachable');
  cluster.api.clearFaults();
  t.notOk(sh('ip', '-n', b.netns, '-o', 'link').includes('eth1'), 'the peer end is gone with the wire');
  const del2 = await cluster.cni('DEL', a);
  t.equal(del2.code, 0, 'DEL again succeeds (idempotent)');
  const checkGone = await cluster.cni('CHECK', a);
  t.equal(checkGone.json?.code, 3, 'CHECK after DEL: container unknown');
  const st = await waitFor('status pending after DEL', () => {
    const l = (cluster.topologyStatus('cni', 'b')?.links as Array<{ state: string; message: string }> | undefined)?.[0];
    return l?.state === 'pending' ? l : undefined;
  });
  t.match(st.message, /waiting for pod a to start on node .* \(no CNI ADD yet\)/, 'status says the pod has no CNI ADD');
  const stat = await runPlugin({ ...cluster.cniEnv('STATUS', a) }, JSON.stringify({ cniVersion: '1.1.0', name: 'n', socket: node.cniSocket }));
  t.equal(stat.code, 0, 'STATUS succeeds with the daemon up');
});

t.test('GC (CNI 1.1.0) drops the pods whose attachments the runtime no longer has', async (t) => {
  const node = cluster.nodes.get('n1')!;
  const link = (name: string, peer: string, uid: number): Record<string, unknown> => ({
    apiVersion: 'networkop.co.uk/v1beta1',
    kind: 'Topology',
    metadata: { name },
    spec: { links: [{ uid, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1' }] },
  });
  for (const [n, p, uid] of [['g1', 'g2', 1], ['g2', 'g1', 1], ['g3', 'g4', 2], ['g4', 'g3', 2]] as const) t.equal((await cluster.createTopology('gc', link(n, p, uid))).status, 201);
  const pods = new Map<string, TestPod>();
  for (const n of ['g1', 'g2', 'g3', 'g4']) pods.set(n, (await cluster.startPod('n1', 'gc', n)).pod);
  await cluster.waitReady('gc', 'g1', '1/1');
  await cluster.waitReady('gc', 'g3', '1/1');
  const ends = async (): Promise<string[]> => (await node.client.listWires()).flatMap((w) => w.ends.map((e) => e.name)).filter((e) => e.startsWith('gc/')).sort();
  t.same(await ends(), ['gc/g1/eth1', 'gc/g2/eth1', 'gc/g3/eth1', 'gc/g4/eth1'], 'two wires before GC');
  const gc = (network: string, valid: Array<{ containerID: string; ifname: string }>): ReturnType<typeof runPlugin> =>
    // The runtime passes only CNI_COMMAND and CNI_PATH for GC; the attachments come in the configuration.
    runPlugin({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, JSON.stringify({ cniVersion: '1.1.0', name: network, type: 'patchwire', socket: node.cniSocket, 'cni.dev/valid-attachments': valid }));
  const att = (n: string, ifname = 'eth0'): { containerID: string; ifname: string } => ({ containerID: pods.get(n)!.containerId, ifname });
  const b = cluster.pods.get('cni/b')!;

  // g4 is missing from the list, and g3's attachment is another interface: both go.
  const first = await gc('k8s-pod-network', [att('g1'), att('g2'), att('g3', 'net1'), { containerID: b.containerId, ifname: 'eth0' }]);
  t.equal(first.code, 0, `GC succeeds (${first.stdout.trim()})`);
  t.equal(first.stdout, '', 'GC prints nothing on success');
  t.same(await ends(), ['gc/g1/eth1', 'gc/g2/eth1'], 'the wire of the collected pods is gone when GC returns; the kept one stays');
  t.notOk(sh('ip', '-n', pods.get('g4')!.netns, '-o', 'link').includes('eth1'), "g4's interface went with its wire");
  t.equal((await cluster.cni('CHECK', pods.get('g3')!)).json?.code, 3, 'g3 is no longer known (CHECK: unknown container)');
  t.equal((await cluster.cni('CHECK', pods.get('g1')!)).code, 0, 'g1 still is');
  const st = await waitFor('g3 status says it waits for CNI ADD', () => {
    const l = (cluster.topologyStatus('gc', 'g3')?.links as Array<{ state: string; message: string }> | undefined)?.[0];
    return l?.state === 'pending' && /no CNI ADD yet/.test(l.message) ? l : undefined;
  });
  t.match(st.message, /waiting for pod g3 to start/, 'and the status says why the link is pending');
  t.match(readFileSync(node.log, 'utf8'), /CNI GC gc\/g4 \(container [0-9a-f]+\)/, 'the daemon logs what GC collected');

  // GC of another network judges only that network's attachments.
  t.equal((await gc('other-network', [])).code, 0, 'GC for another network succeeds');
  t.same(await ends(), ['gc/g1/eth1', 'gc/g2/eth1'], 'and collects nothing of ours');

  const garbage = await gc('k8s-pod-network', [{ ifname: 'eth0' } as unknown as { containerID: string; ifname: string }]);
  t.equal(garbage.json?.code, 7, 'an attachment without containerID is refused');
  t.same(await ends(), ['gc/g1/eth1', 'gc/g2/eth1'], 'and nothing is collected');

  // ADD again brings a collected pod back.
  t.equal((await cluster.cni('ADD', pods.get('g3')!)).code, 0);
  t.equal((await cluster.cni('ADD', pods.get('g4')!)).code, 0);
  await cluster.waitReady('gc', 'g3', '1/1');

  t.equal((await gc('k8s-pod-network', [])).code, 0, 'GC with an empty list');
  t.same(await ends(), [], 'collects every pod of the network');
  for (const n of ['g1', 'g2', 'g3', 'g4']) await cluster.deletePod('gc', n);
});

t.test('the daemon made no request that deploy/rbac.yaml forbids', async (t) => {
  const made = cluster.daemonRequests();
  t.ok(made.length > 0, `the daemon made ${made.length} requests`);
  t.same(cluster.api.forbidden.map((r) => `${r.verb} ${r.resource} ${r.path}`), [], 'none refused');
});

t.test('cni install and uninstall', async (t) => {
  const dir = path.join(cluster.net.dir, 'host');
  const bin = path.join(dir, 'opt-cni-bin');
  const netd = path.join(dir, 'net.d');
  mkdirSync(bin, { recursive: true });
  mkdirSync(netd, { recursive: true });
  const cli = (...args: string[]): ReturnType<typeof run> => run(process.execPath, [CLI, 'cni', ...args, '--bin-dir', bin, '--conf-dir', netd]);

  const none = await cli('install');
  t.equal(none.code, 1, 'install fails without a primary configuration');
  t.match(none.stderr, /no CNI network configuration .* to chain patchwire into/, 'and says what is missing');
  t.equal(readdirSync(bin).length, 1, 'the binary is there (it does not depend on the chain)');

  const primary = { cniVersion: '1.0.0', name: 'k8s-pod-network', plugins: [{ type: 'bridge', bridge: 'cni0' }, { type: 'portmap', capabilities: { portMappings: true } }] };
  writeFileSync(path.join(netd, '10-bridge.conflist'), JSON.stringify(primary));
  writeFileSync(path.join(netd, '99-other.conflist'), JSON.stringify({ ...primary, name: 'other' }));
  const first = await cli('install', '--json');
  t.equal(first.code, 0, first.stderr);
  t.same(JSON.parse(first.stdout), { binary: path.join(bin, 'patchwire'), config: path.join(netd, '10-bridge.conflist'), action: 'appended' });
  const chained = JSON.parse(readFileSync(path.join(netd, '10-bridge.conflist'), 'utf8')) as typeof primary;
  t.same(chained.plugins.map((p) => p.type), ['bridge', 'portmap', 'patchwire'], 'patchwire chained last in the first configuration');
  t.same(JSON.parse(readFileSync(path.join(netd, '99-other.conflist'), 'utf8')), { ...primary, name: 'other' }, 'other configurations untouched');
  t.same(readFileSync(path.join(bin, 'patchwire')), readFileSync(PLUGIN), 'binary copied');
  const second = await cli('install', '--json');
  t.equal(JSON.parse(second.stdout).action, 'unchanged', 'installing again changes nothing');
  const sock = await cli('install', '--json', '--socket', '/run/other.sock');
  t.equal(JSON.parse(sock.stdout).action, 'updated', 'a different socket updates the entry');
  t.same((JSON.parse(readFileSync(path.join(netd, '10-bridge.conflist'), 'utf8')) as typeof primary).plugins.at(-1), { type: 'patchwire', socket: '/run/other.sock' });

  const un = await cli('uninstall', '--json');
  t.equal(un.code, 0);
  t.same(JSON.parse(readFileSync(path.join(netd, '10-bridge.conflist'), 'utf8')), primary, 'uninstall restores the configuration');
  t.same(readdirSync(bin), [], 'and removes the binary');

  // A single-plugin .conf is folded into a .conflist, and restored on uninstall.
  for (const f of readdirSync(netd)) sh('rm', path.join(netd, f));
  const single = { cniVersion: '0.4.0', name: 'flannel', type: 'flannel', delegate: { isDefaultGateway: true } };
  writeFileSync(path.join(netd, '10-flannel.conf'), JSON.stringify(single));
  const folded = await cli('install', '--json');
  t.equal(JSON.parse(folded.stdout).action, 'converted');
  t.same(readdirSync(netd).sort(), ['10-flannel.conf.patchwire-folded', '10-flannel.conflist'], 'the .conf moved out of the way of the .conflist');
  t.same(JSON.parse(readFileSync(path.join(netd, '10-flannel.conflist'), 'utf8')), { cniVersion: '0.4.0', name: 'flannel', plugins: [{ type: 'flannel', delegate: { isDefaultGateway: true } }, { type: 'patchwire' }] });
  await cli('uninstall');
  t.same(readdirSync(netd), ['10-flannel.conf'], 'uninstall brings the .conf back');
  t.same(JSON.parse(readFileSync(path.join(netd, '10-flannel.conf'), 'utf8')), single);

  writeFileSync(path.join(netd, '10-flannel.conf'), '{not json');
  const bad = await cli('install');
  t.equal(bad.code, 1);
  t.match(bad.stderr, /10-flannel.conf is not JSON/, 'a broken configuration is named');
  const unknown = await run(process.execPath, [CLI, 'cni', 'frobnicate']);
  t.equal(unknown.code, 2, 'unknown subcommand is a usage error');
});
