// The DaemonSet asks for capabilities, not `privileged` (hardening item 10).
// Daemons here run as a container would: in a mount namespace of their own
// with /proc/sys read-only, and with exactly the capabilities
// deploy/daemonset.yaml adds (read from the file) as their bounding set. They
// carry pings over a veth wire and a tap wire between two nodes, guard their
// host ends, and count frames. Without NET_ADMIN, NET_RAW or SYS_ADMIN a wire
// cannot be made, and the daemon says which operation the kernel refused.
import { readFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';
import { parse } from 'yaml';

import { ROOT, TestNet, sh } from './helpers/testnet.js';

const net = new TestNet('pwkc');
t.teardown(() => net.cleanup());

interface Manifest {
  spec: { template: { spec: { containers: Array<{ name: string; securityContext: { privileged?: boolean; capabilities: { drop: string[]; add: string[] } } }> } } };
}
const ds = parse(readFileSync(path.join(ROOT, 'deploy', 'daemonset.yaml'), 'utf8')) as Manifest;
const daemon = ds.spec.template.spec.containers.find((c) => c.name === 'daemon')!;
const CAPS = daemon.securityContext.capabilities.add.map((c) => c.toLowerCase());

/**
 * Runs the daemon like a container: a mount namespace of its own that still
 * sees new pod namespaces appear under /var/run/netns (the DaemonSet's
 * mountPropagation: HostToContainer), /proc/sys read-only, only `caps` in its
 * bounding set.
 */
function containerLike(caps: string[]): string[] {
  return [
    'unshare', '--mount', '--propagation', 'slave', '--',
    'sh', '-c', 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"', 'sh',
    'setpriv', '--bounding-set', ['-all', ...caps.map((c) => `+${c}`)].join(','), '--inh-caps', '-all', '--',
  ];
}

/** The daemon's effective capabilities, as the kernel reports them. */
function capEff(pid: number): bigint {
  return BigInt(`0x${/CapEff:\s+([0-9a-f]+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]}`);
}

t.test('the manifest: not privileged, everything dropped but a short list', async (t) => {
  t.equal(daemon.securityContext.privileged, false, 'privileged: false');
  t.same(daemon.securityContext.capabilities.drop, ['ALL'], 'drop: ALL');
  t.same(CAPS.slice().sort(), ['net_admin', 'net_raw', 'sys_admin', 'sys_nice', 'sys_ptrace'], 'add: the five the daemon uses');
});

t.test("daemons with only the manifest's capabilities carry veth and tap wires", async (t) => {
  const a = await net.addNode('na', { wrap: containerLike(CAPS) });
  const b = await net.addNode('nb', { wrap: containerLike(CAPS) });
  const pid = (await a.client.health()).pid;
  // CAP_NET_ADMIN 12, NET_RAW 13, SYS_ADMIN 21, SYS_PTRACE 19, SYS_NICE 23
  t.equal(capEff(pid), (1n << 12n) | (1n << 13n) | (1n << 21n) | (1n << 19n) | (1n << 23n), 'the daemon runs with those five and no other');
  const ro = await net.exec(a.ns, 'nsenter', ['-t', String(pid), '-m', 'sh', '-c', 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6']);
  t.not(ro.code, 0, `its /proc/sys is read-only (${ro.stderr.trim()})`);

  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  await net.crossWire(1, a, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.7.1/24'] }), b, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.7.2/24'] }));
  await net.crossWire(2, a, net.endpoint('tap', p1, 'tap1', { ips: ['198.19.8.1/24'] }), b, net.endpoint('tap', p2, 'tap1', { ips: ['198.19.8.2/24'] }));
  for (const [addr, what] of [['198.19.7.2', 'veth'], ['198.19.8.2', 'tap']]) {
    const r = await net.exec(p1, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', addr!]);
    t.match(r.stdout, /3 received/, `the ${what} wire carries pings`);
  }
  const [w] = await a.client.listWires();
  t.ok(w!.ends[0]!.counters.rx_frames >= 3, `and the daemon counts them (${w!.ends[0]!.counters.rx_frames} read)`);
  const [link] = JSON.parse(sh('ip', '-n', p1, '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ link_index: number }>;
  const host = (JSON.parse(sh('ip', '-n', a.ns, '-j', 'link', 'show')) as Array<{ ifindex: number; ifname: string }>).find((l) => l.ifindex === link!.link_index)!.ifname;
  t.match(sh('tc', '-n', a.ns, 'filter', 'show', 'dev', host, 'ingress'), /patchwire-ingress-guard/, 'the host end carries its ingress guard');
});

for (const [missing, refused] of [
  ['net_admin', /create veth .*: Operation not permitted/],
  ['net_raw', /socket\(AF_PACKET\): Operation not permitted/],
  ['sys_admin', /network namespace '[^']+': Operation not permitted/],
] as const) {
  t.test(`without ${missing.toUpperCase()} a wire cannot be made, and the daemon says why`, async (t) => {
    const n = await net.addNode(`x${missing.replace('_', '')}`, { wrap: containerLike(CAPS.filter((c) => c !== missing)) });
    const pod = net.addPod(`q${missing.replace('_', '')}`);
    const err = await n.client.addWire({ uid: 9, local: net.endpoint('veth', pod, 'eth1'), localPeer: net.endpoint('veth', pod, 'eth2') }).then(
      () => null,
      (e: Error) => e,
    );
    t.ok(err, 'addWire is refused');
    t.match(err?.message ?? '', refused, `with the kernel's reason: ${err?.message}`);
    t.same(JSON.parse(sh('ip', '-n', pod, '-j', 'link', 'show')).map((l: { ifname: string }) => l.ifname), ['lo'], 'and nothing is left in the pod');
    t.ok((await n.client.health()).pid > 0, 'the daemon is still up');
  });
}
