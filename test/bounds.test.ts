// Every number from outside has one range (src/limits.ts), checked wherever it
// enters: topology files (both formats), the CRD schema, the control API, a
// daemon's state file and the command-line flags. A 5e9-byte capture ring is
// refused at each with a message naming the field, the value and the range,
// and a daemon asked for one over the control API keeps running and forwarding.
import { writeFileSync } from 'node:fs';
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
  const [w] = await nb.client.listWires();
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
