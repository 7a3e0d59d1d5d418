// Every number from outside has one range (src/limits.ts), checked wherever it
// enters: topology files (both formats), the CRD schema, the control API, a
// daemon's state file and the command-line flags. A 5e9-byte capture ring is
// refused at each with a message naming the field, the value and the range,
// and a daemon asked for one over the control API keeps running and forwarding.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { Ajv } from 'ajv';
import t from 'tap';

import { LIMITS, rangeProblem } from '../src/limits.js';
import { type Obj, renderKustomization } from './helpers/kustomize.js';
import { pruneAndValidate, type Schema } from './helpers/schema.js';
import { CLI, ROOT, TestNet, rejectionDetails, run, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwga');
t.teardown(() => net.cleanup());

const HUGE = 5e9;
const RANGE = /out of range: a whole number from 1 to 268435456 \(256 MiB\)/;
const RANGE0 = /out of range: a whole number from 0 to 268435456 \(256 MiB\)/;

const crd = renderKustomization(path.join(ROOT, 'deploy')).find((d) => d.kind === 'CustomResourceDefinition')!;
const openApi = crd.spec.versions.find((v: Obj) => v.name === 'v1beta1').schema.openAPIV3Schema as Obj;
const linkSchema = openApi.properties.spec.properties.links.items;

const meshnet = (bytes: number): string => `apiVersion: networkop.co.uk/v1beta1
kind: Topology
metadata: {name: r1}
spec:
  links:
    - {uid: 1, peer_pod: r2, local_intf: eth1, peer_intf: eth1, patchwire: {capture_bytes: ${bytes}}}
---
apiVersion: networkop.co.uk/v1beta1
kind: Topology
metadata: {name: r2}
spec:
  links:
    - {uid: 1, peer_pod: r1, local_intf: eth1, peer_intf: eth1}
`;
const clab = (bytes: number): string => `name: pwgabounds
topology:
  nodes: {r1: {}, r2: {}}
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
      patchwire: {capture_bytes: ${bytes}}
`;

t.test('the CRD states the same ranges as src/limits.ts', async (t) => {
  const ext = linkSchema.properties.patchwire.properties;
  t.same([ext.capture_bytes.minimum, ext.capture_bytes.maximum], [LIMITS.captureBytes.min, LIMITS.captureBytes.max], 'capture_bytes');
  t.same([ext.mtu.minimum, ext.mtu.maximum], [LIMITS.mtu.min, LIMITS.mtu.max], 'mtu');
  t.same([linkSchema.properties.uid.minimum, linkSchema.properties.uid.maximum], [LIMITS.linkUid.min, LIMITS.linkUid.max], 'uid');
});

t.test('the CRD schema refuses 5e9 capture_bytes (Ajv and the stand-in API server)', async (t) => {
  const obj = (bytes: number): Obj => ({
    apiVersion: 'networkop.co.uk/v1beta1',
    kind: 'Topology',
    metadata: { name: 'r1' },
    spec: { links: [{ uid: 1, peer_pod: 'r2', local_intf: 'eth1', peer_intf: 'eth1', patchwire: { capture_bytes: bytes } }] },
  });
  const validate = new Ajv({ allErrors: true, strict: false }).compile(openApi);
  t.ok(validate(obj(1 << 20)), 'a 1 MiB ring is valid');
  t.notOk(validate(obj(HUGE)), '5e9 is not');
  t.match(JSON.stringify(validate.errors), /capture_bytes.*must be <= 268435456/, 'Ajv names the field and the maximum');
  const problems: string[] = [];
  pruneAndValidate(openApi as Schema, obj(HUGE), '', problems, true);
  t.match(problems.join('\n'), /capture_bytes.*268435456/, 'the stand-in API server refuses it as the real one would');
});

t.test('topology files of both formats refuse 5e9 capture_bytes at validation', async (t) => {
  for (const [name, text] of [
    ['meshnet.yaml', meshnet(HUGE)],
    ['pwga.clab.yml', clab(HUGE)],
  ] as const) {
    const file = path.join(net.dir, name);
    writeFileSync(file, text);
    const r = await run(process.execPath, [CLI, 'validate', '-f', file]);
    t.not(r.code, 0, `${name}: validate fails`);
    t.match(r.stderr, /capture_bytes: capture_bytes 5000000000 is out of range/, `${name}: names the field and the value`);
    t.match(r.stderr, RANGE, `${name}: and the range`);
  }
  const ok = path.join(net.dir, 'ok.yaml');
  writeFileSync(ok, meshnet(1 << 20));
  t.equal((await run(process.execPath, [CLI, 'validate', '-f', ok])).code, 0, 'a 1 MiB ring validates');
});

t.test('flags refuse numbers out of range, naming flag, value and range', async (t) => {
  const daemon = ['daemon', '--insecure', '--node', 'pwgax', '--listen', '127.0.0.1:0', '--control', `unix://${net.dir}/x.sock`];
  const cases: Array<[string, string[], RegExp]> = [
    ['daemon ring', [...daemon, '--capture-ring-bytes', String(HUGE)], /daemon: --capture-ring-bytes '5000000000' is out of range/],
    ['up ring', ['up', '-f', path.join(net.dir, 'absent.yaml'), '--capture-ring-bytes', String(HUGE)], /up: --capture-ring-bytes '5000000000' is out of range/],
    ['resync', [...daemon, '--resync-seconds', '1e9'], /--resync-seconds '1e9' is out of range: a number from 1 to 86400 seconds/],
    ['capture files', [...daemon, '--capture-dir', net.dir, '--capture-files', '0'], /--capture-files '0' is out of range: a whole number from 1 to 1000 files/],
    ['data port', [...daemon, '--cluster', '--data-port', '70000'], /--data-port '70000' is out of range: a whole number from 1 to 65535/],
    ['nodes', ['up', '-f', path.join(net.dir, 'absent.yaml'), '--nodes', '65'], /--nodes '65' is out of range: a whole number from 1 to 64/],
    ['wire uid', ['wire', 'add', '--uid', String(2 ** 53), '--kind', 'veth', '--netns', 'x', '--ifname', 'e'], /--uid '9007199254740992' is out of range/],
    ['capture count', ['capture', '--control', `unix://${net.dir}/x.sock`, 'a/b', '--count', '5e12'], /--count '5e12' is out of range: a whole number from 0 to 4294967295 frames/],
  ];
  for (const [name, args, re] of cases) {
    const r = await run(process.execPath, [CLI, ...args]);
    t.equal(r.code, 2, `${name}: a usage error`);
    t.match(r.stderr, re, `${name}: message`);
  }
  const ring = await run(process.execPath, [CLI, ...daemon, '--capture-ring-bytes', String(HUGE)]);
  t.match(ring.stderr, RANGE0, 'the daemon flag names the range (0: rings off)');
  t.notMatch(ring.stderr, /listening on/, 'the daemon never started');
});

t.test('the control API refuses 5e9 capture_ring_bytes; the daemon stays up and other wires keep forwarding', async (t) => {
  const na = await net.addNode('na');
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  const p3 = net.addPod('p3');
  await net.localWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['192.0.2.1/30'] }), net.endpoint('veth', p2, 'eth1', { ips: ['192.0.2.2/30'] }));
  const ping = async (): Promise<number> => {
    const r = await net.exec(p1, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '192.0.2.2']);
    return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0);
  };
  await waitFor('the first wire to forward', async () => (await ping()) > 0);
  const pid = (await na.client.health()).pid;
  const before = (await na.client.listWires())[0]!.ends[0]!.counters.tx_frames;

  const details = await rejectionDetails(
    na.client.addWire({ uid: 2, local: net.endpoint('veth', p3, 'eth1'), localPeer: net.endpoint('veth', p3, 'eth2'), captureRingBytes: HUGE }),
  );
  t.match(details, /capture_ring_bytes 5000000000 is out of range/, 'INVALID_ARGUMENT names the field and the value');
  t.match(details, RANGE0, 'and the range');
  t.equal((await na.client.health()).pid, pid, 'the daemon did not restart');
  t.same(
    (await na.client.listWires()).map((w) => w.spec.uid),
    [1],
    'no wire 2 was created',
  );
  t.equal(await ping(), 3, 'the other wire still forwards every ping');
  t.ok((await na.client.listWires())[0]!.ends[0]!.counters.tx_frames > before, 'and counts the frames');
  // The API path and the flag share one check: the same words.
  t.equal(rangeProblem('capture_ring_bytes', HUGE, 'captureRingBytes'), details.split('; ').find((p) => p.startsWith('capture_ring_bytes')));
});

t.test('a state file holding a 5e9 ring (written by an older daemon) is refused at restore, not repeated, and shown', async (t) => {
  const nb = await net.addNode('nb', { start: false });
  const p4 = net.addPod('p4');
  writeFileSync(
    nb.state,
    JSON.stringify({
      version: 1,
      node: nb.name,
      wires: [{ uid: 7, local: net.endpoint('veth', p4, 'eth1'), localPeer: net.endpoint('veth', p4, 'eth2'), captureRingBytes: HUGE }],
    }),
  );
  await net.startDaemon(nb);
  const w = await waitFor('the first attempt to fail', async () => {
    const [x] = await nb.client.listWires();
    return /attempt/.test(x?.message ?? '') ? x : undefined;
  });
  t.equal(w?.state, 'WIRE_STATE_RESTORING', 'the wire is not created, only listed as not restored');
  t.match(w?.message, /capture_ring_bytes 5000000000 is out of range/, 'with the reason');
  t.same(w?.ends, [], 'it has no ends');
  const log = await waitFor('the refusal in the log', async () => {
    const text = (await run('cat', [nb.log])).stdout;
    return /wire 7.*capture_ring_bytes 5000000000 is out of range/.test(text) ? text : undefined;
  });
  t.match(log, RANGE0, 'the log names the range');
  t.ok((await nb.client.health()).pid > 0, 'the daemon runs');
});

// Smaller input checks of #14 item 10.
t.test('the control socket is mode 0600 even under umask 000', async (t) => {
  const nu = await net.addNode('nu', { start: false });
  nu.proc = spawn('ip', ['netns', 'exec', nu.ns, 'sh', '-c', `umask 000; exec "$0" "$@"`, process.execPath, CLI, ...net.daemonArgs(nu)], { stdio: 'ignore' });
  await waitFor('the daemon to answer', async () => (await nu.client.health(500)).pid > 0);
  const sock = nu.control.replace('unix://', '');
  t.equal(statSync(sock).mode & 0o777, 0o600, 'owner read/write only');
});

t.test("'%' in interface names, multicast MACs and malformed IPv6 are refused", async (t) => {
  const na = net.nodes.get('na')!;
  const p5 = net.addPod('p5');
  const ep = (o: Record<string, unknown>): ReturnType<typeof net.endpoint> => net.endpoint('veth', p5, 'eth1', o);
  const peer = { node: 'x', address: '198.18.0.99:7000' };
  for (const [what, spec, re] of [
    ["'%' in a name", ep({ ifname: 'eth%d' }), /interface name 'eth%d' is not a valid Linux name \(no '\/', ':', '%'/],
    ['a multicast MAC', ep({ mac: '01:00:5e:00:00:01' }), /MAC address '01:00:5e:00:00:01' is a multicast \(group\) address/],
    ['a malformed IPv6 address', ep({ ips: ['2001:db8::1::2/64'] }), /address '2001:db8::1::2\/64' is not a valid IPv6 address/],
    ['an IPv6 address of bare colons', ep({ ips: [':::/64'] }), /is not a valid IPv6 address/],
  ] as const) {
    t.match(await rejectionDetails(na.client.addWire({ uid: 20, local: spec, peer })), re, `control API: ${what}`);
  }
  const file = path.join(net.dir, 'bad-values.yaml');
  writeFileSync(
    file,
    meshnet(1 << 20)
      .replace('local_intf: eth1, peer_intf: eth1, patchwire: {capture_bytes: 1048576}', "local_intf: eth1, peer_intf: eth1, local_ip: '2001:db8:::1/64', patchwire: {mac: '03:00:00:00:00:01'}"),
  );
  const r = await run(process.execPath, [CLI, 'validate', '-f', file]);
  t.not(r.code, 0, 'a topology file with both is refused');
  t.match(r.stderr, /2001:db8:::1\/64' is not a valid IPv6 address/, 'naming the address');
  t.match(r.stderr, /03:00:00:00:00:01' is a multicast/, 'and the MAC');
  t.ok(new Ajv({ strict: false }).compile(linkSchema.properties.patchwire.properties.mac)('02:00:00:00:00:01'), 'the CRD takes a unicast MAC');
  t.notOk(new Ajv({ strict: false }).compile(linkSchema.properties.patchwire.properties.mac)('03:00:00:00:00:01'), 'and refuses a multicast one');
});

t.test('capture file names never collide and carry lab and node', async (t) => {
  const dir = path.join(net.dir, 'files');
  const nf = await net.addNode('nf', { extraArgs: ['--insecure', '--capture-dir', dir, '--capture-files', '2'] });
  const p6 = net.addPod('p6');
  const p7 = net.addPod('p7');
  // Ends whose old names (pod/intf with '/' made '_') were the same file, or a prefix of another.
  await net.localWire(31, nf, { ...net.endpoint('veth', p6, 'c'), pod: 'a_b' }, { ...net.endpoint('veth', p7, 'b_c'), pod: 'a' });
  await net.localWire(32, nf, net.endpoint('veth', p6, 'eth1'), net.endpoint('veth', p6, 'eth1.10'));
  const stems = await waitFor('four capture files', () => {
    const f = readdirSync(dir).filter((x) => x.endsWith('.pcapng'));
    return f.length === 4 ? f.map((x) => x.replace(/\.\d+\.pcapng$/, '')).sort() : undefined;
  });
  t.same(stems, [`test.${nf.name}.a_2fb_5fc`, `test.${nf.name}.a_5fb_2fc`, `test.${nf.name}.${p6}_2feth1`, `test.${nf.name}.${p6}_2feth1_2e10`], 'one file per end, named LAB.NODE.POD/INTF with every other byte escaped');
  const w = await nf.client.listWires();
  const writing = w.flatMap((x) => x.ends.map((e) => e.file_capture));
  t.equal(new Set(writing).size, 4, 'each end writes its own file');
});

t.test('the CNI plugin and the daemon agree on one timeout', async (t) => {
  const { CNI_DAEMON_TIMEOUT_MS } = await import('../src/cni/protocol.js');
  const c = readFileSync(path.join(ROOT, 'cni', 'patchwire-cni.c'), 'utf8');
  const plugin = Number(/#define DAEMON_TIMEOUT_MS (\d+)/.exec(c)?.[1]);
  t.equal(plugin, CNI_DAEMON_TIMEOUT_MS, `the plugin waits ${plugin} ms for the daemon, as the daemon assumes`);
});
