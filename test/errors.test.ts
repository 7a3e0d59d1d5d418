// Bad input gets an error that names the problem, and leaves nothing behind.
import t from 'tap';

import { CLI, TestNet, links, rejectionDetails, run } from './helpers/testnet.js';
import type { WireSpec } from '../src/dataplane/wire.js';
import type { EndpointSpec } from '../src/endpoint/endpoint.js';

const net = new TestNet('pwte');
t.teardown(() => net.cleanup());

t.test('wire errors name the problem and leave nothing half-created', async (t) => {
  const na = await net.addNode('na');
  const nb = await net.addNode('nb');
  const pod = net.addPod('p1');
  const pod2 = net.addPod('p2');
  const taken = await net.exec(pod, 'ip', ['link', 'add', 'taken0', 'type', 'veth', 'peer', 'name', 'taken1']);
  t.equal(taken.code, 0, 'an interface to collide with');
  const peer = { node: nb.name, address: nb.address };
  const ep = (o: Partial<EndpointSpec>): EndpointSpec => net.endpoint('veth', pod, 'eth1', o);
  const snapshot = (): string => JSON.stringify([links(na.ns), links(pod), links(pod2)]);

  // One good wire, so duplicates can be tried.
  await na.client.addWire({ uid: 10, local: ep({ ifname: 'good0' }), peer });
  const before = snapshot();

  const cases: Array<[string, WireSpec, RegExp]> = [
    ['namespace missing', { uid: 1, local: { ...ep({}), netns: `${net.prefix}nope` }, peer }, /network namespace 'pwtenope' does not exist/],
    ['name too long', { uid: 1, local: ep({ ifname: 'eth1234567890123' }), peer }, /16 bytes long; Linux allows at most 15/],
    ['name not valid', { uid: 1, local: ep({ ifname: 'eth/1' }), peer }, /not a valid Linux name/],
    ['veth name taken', { uid: 1, local: ep({ ifname: 'taken0' }), peer }, /interface 'taken0' already exists in network namespace 'pwtep1'/],
    ['tap name taken', { uid: 1, local: { ...ep({ ifname: 'taken0' }), kind: 'tap' }, peer }, /interface 'taken0' already exists/],
    ['MTU too small', { uid: 1, local: ep({ mtu: 20 }), peer }, /MTU 20 is out of range \(68 to 65535\)/],
    ['MTU too large', { uid: 1, local: ep({ mtu: 70000 }), peer }, /MTU 70000 is out of range/],
    ['bad MAC', { uid: 1, local: ep({ mac: '02:00:00:00:00' }), peer }, /MAC address '02:00:00:00:00' is not of the form/],
    ['bad CIDR', { uid: 1, local: ep({ ips: ['198.19.0.300/24'] }), peer }, /address '198.19.0.300\/24' has an octet over 255/],
    ['duplicate wire', { uid: 10, local: ep({ ifname: 'other0' }), peer }, /wire 10 already exists on node pwtena/],
    ['endpoint already wired', { uid: 11, local: ep({ ifname: 'good0' }), peer }, /pwtep1\/good0 is already the end of wire 10/],
    ['wire to itself', { uid: 12, local: ep({}), localPeer: ep({}) }, /joins eth1 to itself/],
    ['no far end', { uid: 13, local: ep({}) }, /needs exactly one of peer/],
    ['peer unreachable', { uid: 14, local: ep({}), peer: { node: 'ghost', address: '198.18.0.99:7000' } }, /peer daemon at 198\.18\.0\.99:7000 cannot be reached/],
    ['unknown kind', { uid: 15, local: { ...ep({}), kind: 'macvlan' as never }, peer }, /endpoint kind 'unspecified' is not one of veth, tap, host/],
    ['host interface missing', { uid: 16, local: { ...ep({ ifname: 'absent0' }), kind: 'host' }, peer }, /interface 'absent0' does not exist/],
  ];
  for (const [name, spec, re] of cases) {
    t.match(await rejectionDetails(na.client.addWire(spec)), re, `${name}: rejected with a message naming the problem`);
    t.equal(snapshot(), before, `${name}: no interface left behind`);
  }
  t.equal((await na.client.listWires()).length, 1, 'only the good wire exists');

  // Several problems at once are all reported.
  t.match(
    await rejectionDetails(na.client.addWire({ uid: 0, local: ep({ ifname: 'x'.repeat(20), mtu: 1 }), peer })),
    /uid 0 is out of range: a whole number from 1 to 281474976710655.*20 bytes long.*MTU 1 is out of range/,
    'several problems of one request are reported together',
  );

  t.match(await rejectionDetails(na.client.removeWire(99)), /wire 99 does not exist on node pwtena/);
  await na.client.removeWire(10);
  t.notOk(links(pod).includes('good0'), 'removing a wire deletes the pod interface');
  t.same(links(na.ns).filter((l) => l.startsWith('pw')), [], 'and the host end');
});

t.test('the CLI reports errors with a non-zero exit', async (t) => {
  const na = net.nodes.get('na')!;
  const bad = await run(process.execPath, [CLI, 'wire', 'add', '--control', na.control, '--uid', '5', '--kind', 'veth', '--netns', `${net.prefix}p1`, '--ifname', 'eth9', '--mtu', '9', '--peer-node', 'x', '--peer-address', '198.18.0.2:7000']);
  t.equal(bad.code, 2, 'an MTU out of range is refused before the daemon is asked');
  t.match(bad.stderr, /--mtu '9' is out of range: a whole number from 68 to 65535/);
  const usage = await run(process.execPath, [CLI, 'daemon', '--node', 'x', '--listen', '127.0.0.1:0']);
  t.equal(usage.code, 2, 'a daemon without TLS or --insecure refuses to start');
  t.match(usage.stderr, /--insecure/);
  const unknown = await run(process.execPath, [CLI, 'frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /unknown command 'frobnicate'/);
  const help = await run(process.execPath, [CLI, 'help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /patchwire daemon --node NAME --listen HOST:PORT/);
  const clusterArgs = ['daemon', '--cluster', '--insecure', '--node', 'x', '--listen', '127.0.0.1:17999', '--control', `unix://${net.dir}/cl.sock`, '--cni-socket', `${net.dir}/cl.cni.sock`];
  const noKubeconfig = await run(process.execPath, [CLI, ...clusterArgs, '--kubeconfig', `${net.dir}/absent.kubeconfig`]);
  t.equal(noKubeconfig.code, 1, 'cluster mode without a readable kubeconfig does not start');
  t.match(noKubeconfig.stderr, /kubeconfig .*absent.kubeconfig: ENOENT/, 'naming the file');
  t.notMatch(noKubeconfig.stderr, /listening on/, 'before it opens any socket');
  const noNode = await run(process.execPath, [CLI, 'daemon', '--cluster', '--insecure'], {});
  t.equal(noNode.code, 2);
  t.match(noNode.stderr, /--node \(or \$NODE_NAME\) is required/);
  const notCluster = await run(process.execPath, [CLI, 'daemon', '--insecure', '--node', 'x', '--listen', '127.0.0.1:0', '--kubeconfig', 'k']);
  t.equal(notCluster.code, 2);
  t.match(notCluster.stderr, /--kubeconfig needs --cluster/);
  const badRt = await run(process.execPath, [CLI, 'daemon', '--insecure', '--node', 'x', '--listen', '127.0.0.1:0', '--rt-priority', '100']);
  t.equal(badRt.code, 2);
  t.match(badRt.stderr, /--rt-priority '100' is out of range: a whole number from 0 to 99/);
  const badUpRt = await run(process.execPath, [CLI, 'up', '-f', 'absent.yaml', '--rt-priority', 'high']);
  t.equal(badUpRt.code, 2);
  t.match(badUpRt.stderr, /up: --rt-priority 'high' is out of range: a whole number from 0 to 99/);
  const noDaemon = await run(process.execPath, [CLI, 'wire', 'ls', '--control', `unix://${net.dir}/absent.sock`]);
  t.not(noDaemon.code, 0, 'no daemon: non-zero exit');
  t.match(noDaemon.stderr, /patchwire: .*(No connection|UNAVAILABLE|connect)/i);
});
