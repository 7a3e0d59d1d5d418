// The addon's rtnetlink plumbing (wire/src/netlink.cc) against the real
// kernel, checked with iproute2's own view (`ip -j`): namespaces made and
// removed in batches, veth pairs with the pod end made straight in a pod
// namespace (name, MAC, MTU, IPv4 and IPv6 addresses, up), taps configured,
// links deleted; and errors that name the object, carry the kernel's words
// and leave nothing half-made.
import { closeSync, readFileSync } from 'node:fs';

import t from 'tap';

import { wire } from '../src/native/wire.js';
import { netnsPath } from '../src/netns/ip.js';
import { links, listNetns, sh, spawnSyncQuiet } from './helpers/testnet.js';

const P = 'pwna';
const nl = wire.netlink;

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  flags: string[];
  address: string;
  master?: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope: string }>;
}

function ipLink(ns: string, dev: string): IpLink {
  const args = ns ? ['-n', ns] : [];
  return (JSON.parse(sh('ip', ...args, '-j', 'addr', 'show', 'dev', dev)) as IpLink[])[0]!;
}

/** Interfaces of ours in the test's own namespace (host ends are made there, as in a daemon). */
function ourHostLinks(): string[] {
  return links('').filter((l) => l.startsWith(P));
}

function removeAll(): void {
  for (const l of ourHostLinks()) spawnSyncQuiet('ip', ['link', 'del', 'dev', l]);
  for (const ns of listNetns()) if (ns.startsWith(P)) spawnSyncQuiet('ip', ['netns', 'del', ns]);
}
removeAll();
t.teardown(removeAll);

async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('the call succeeded but was expected to fail');
}

t.test('namespaces are made and removed in batches, with lo up', async (t) => {
  const names = [`${P}n1`, `${P}n2`, `${P}n3`];
  t.same(await nl.netnsAdd(names, { loUp: true }), ['', '', '']);
  for (const n of names) {
    t.ok(listNetns().includes(n), `${n} listed by ip netns`);
    t.ok(ipLink(n, 'lo').flags.includes('UP'), `lo is up in ${n}`);
  }
  // A name that exists fails alone and says so; the others of the batch are made.
  const again = await nl.netnsAdd([`${P}n1`, `${P}n4`], { loUp: true });
  t.equal(again[0], `network namespace '${P}n1' already exists`);
  t.equal(again[1], '');
  t.ok(listNetns().includes(`${P}n4`));
  // Two namespaces are two: an interface made in one is not in the other.
  sh('ip', '-n', `${P}n1`, 'link', 'add', 'dummyx', 'type', 'veth', 'peer', 'name', 'dummyy');
  t.same(links(`${P}n2`), ['lo']);
  const del = await nl.netnsDel([...names, `${P}n4`, `${P}n5`]);
  t.same(del.slice(0, 4), ['', '', '', '']);
  t.equal(del[4], `network namespace '${P}n5' does not exist`);
  t.same(listNetns().filter((n) => n.startsWith(`${P}n`)), [], 'none left');
});

t.test('a veth pair with its pod end made in the pod namespace, configured and up', async (t) => {
  const [err] = await nl.netnsAdd([`${P}pod`], { loUp: true });
  t.equal(err, '');
  const made = await nl.vethCreate({
    host: `${P}h1`,
    peer: 'eth1',
    peerNetns: netnsPath(`${P}pod`),
    mtu: 9000,
    peerMac: '02:aa:bb:cc:dd:01',
    peerAddrs: ['192.0.2.1/24', '2001:db8::1/64'],
  });
  const pod = ipLink(`${P}pod`, 'eth1');
  t.equal(pod.ifindex, made.peerIndex, 'the index it returned is the pod end');
  t.equal(pod.mtu, 9000);
  t.equal(pod.address, '02:aa:bb:cc:dd:01');
  t.ok(pod.flags.includes('UP'), 'pod end up');
  const addrs = (pod.addr_info ?? []).filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`);
  t.same(addrs.sort(), ['192.0.2.1/24', '2001:db8::1/64']);
  t.same(links(`${P}pod`), ['eth1', 'lo'], 'nothing else in the pod');

  const host = ipLink('', `${P}h1`);
  t.equal(host.ifindex, made.hostIndex);
  t.equal(host.mtu, 9000);
  t.ok(host.flags.includes('UP'), 'host end up');
  t.equal(readFileSync(`/proc/sys/net/ipv6/conf/${P}h1/disable_ipv6`, 'utf8').trim(), '1', 'IPv6 off on the host end');
  t.same(host.addr_info ?? [], [], 'no address at all on the host end (no IPv6 link-local)');

  t.same(await nl.linkGet(netnsPath(`${P}pod`), 'eth1'), { ifindex: made.peerIndex, mtu: 9000, up: true });
  t.equal(await nl.linkGet(netnsPath(`${P}pod`), 'eth9'), null);

  // Deleting the host end takes the pod end with it; a second delete finds nothing.
  t.equal(await nl.linkDel('', `${P}h1`), true);
  t.same(ourHostLinks(), []);
  t.same(links(`${P}pod`), ['lo']);
  t.equal(await nl.linkDel('', `${P}h1`), false);
  await nl.netnsDel([`${P}pod`]);
});

t.test('errors name the object and leave nothing half-made', async (t) => {
  t.same(await nl.netnsAdd([`${P}e1`], { loUp: true }), ['']);
  const ns = netnsPath(`${P}e1`);
  const before = (): { host: string[]; pod: string[] } => ({ host: ourHostLinks(), pod: links(`${P}e1`) });
  const empty = { host: [], pod: ['lo'] };

  t.equal(await rejection(nl.vethCreate({ host: `${P}h2`, peer: 'eth-sixteen-byte', peerNetns: ns })), "interface name 'eth-sixteen-byte' is 16 bytes long; Linux allows at most 15");
  t.same(before(), empty, 'name too long: nothing made');

  t.equal(await rejection(nl.vethCreate({ host: `${P}h2`, peer: 'eth1', peerNetns: netnsPath(`${P}nope`) })), `network namespace '${P}nope' does not exist`);
  t.same(before(), empty, 'missing namespace: nothing made');

  await nl.vethCreate({ host: `${P}h2`, peer: 'eth1', peerNetns: ns });
  t.equal(await rejection(nl.vethCreate({ host: `${P}h3`, peer: 'eth1', peerNetns: ns })), `interface 'eth1' already exists in network namespace '${P}e1'`);
  t.same(ourHostLinks(), [`${P}h2`], 'existing pod name: the second host end was not made');
  t.equal(await rejection(nl.vethCreate({ host: `${P}h2`, peer: 'eth2', peerNetns: ns })), `interface '${P}h2' already exists in network namespace '(daemon)'`);
  t.same(links(`${P}e1`), ['eth1', 'lo'], 'existing host name: no second pod end');
  await nl.linkDel('', `${P}h2`);

  // The kernel refuses: its errno text and its own message, with the object named.
  const mtu = await rejection(nl.vethCreate({ host: `${P}h4`, peer: 'eth1', peerNetns: ns, mtu: 70000 }));
  t.match(mtu, new RegExp(`^create veth '${P}h4' with peer 'eth1' in network namespace '${P}e1': Invalid argument`));
  t.same(before(), empty, 'MTU refused: nothing made');

  // A refusal after the pair exists (IPv6 off for new interfaces in the pod):
  // the pair is deleted again.
  sh('ip', 'netns', 'exec', `${P}e1`, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
  const v6 = await rejection(nl.vethCreate({ host: `${P}h5`, peer: 'eth1', peerNetns: ns, peerAddrs: ['192.0.2.9/24', '2001:db8::9/64'] }));
  t.match(v6, new RegExp(`^add address 2001:db8::9/64 to 'eth1' in network namespace '${P}e1': Permission denied \\((ipv6: )?IPv6 is disabled on this device\\)`));
  t.same(before(), empty, 'address refused after the pair was made: the pair is gone again');

  t.equal(await rejection(nl.vethCreate({ host: `${P}h6`, peer: 'eth1', peerNetns: ns, peerAddrs: ['192.0.2.1/33'] })), "address '192.0.2.1/33' has a bad prefix length");
  t.equal(await rejection(nl.vethCreate({ host: `${P}h6`, peer: 'eth1', peerNetns: ns, peerMac: '02:00:00:00:00' })), "MAC address '02:00:00:00:00' is not of the form 02:00:00:00:00:01");
  t.same(before(), empty, 'bad address or MAC: nothing made');

  t.equal(await rejection(nl.linkConfigure({ netns: ns, name: 'tap9', up: true })), `interface 'tap9' does not exist in network namespace '${P}e1'`);
  await nl.netnsDel([`${P}e1`]);
});

t.test('a tap made in a pod is configured through netlink; bridges and masters', async (t) => {
  t.same(await nl.netnsAdd([`${P}tap`], { loUp: true }), ['']);
  const ns = netnsPath(`${P}tap`);
  const opened = wire.openTap('tap1', ns, { vnetHdr: true, persist: true });
  const { ifindex } = await nl.linkConfigure({ netns: ns, name: 'tap1', mac: '02:aa:bb:cc:dd:02', mtu: 4000, addrs: ['198.51.100.7/30'], up: true });
  const tap = ipLink(`${P}tap`, 'tap1');
  t.equal(tap.ifindex, ifindex);
  t.equal(tap.address, '02:aa:bb:cc:dd:02');
  t.equal(tap.mtu, 4000);
  t.ok(tap.flags.includes('UP'));
  t.same((tap.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['198.51.100.7/30']);
  // Addresses are replaced, not piled up, when the same one is set again.
  await nl.linkConfigure({ netns: ns, name: 'tap1', addrs: ['198.51.100.7/30'] });
  t.equal((ipLink(`${P}tap`, 'tap1').addr_info ?? []).filter((a) => a.family === 'inet').length, 1);
  wire.unpersistTap(opened.fd);
  closeSync(opened.fd);
  t.same(links(`${P}tap`), ['lo'], 'the tap is gone with its last fd once unpersisted');

  await nl.bridgeAdd(ns, 'br0');
  await nl.vethCreate({ host: 'port1', hostNetns: ns, peer: 'eth1', peerNetns: ns });
  await nl.linkConfigure({ netns: ns, name: 'port1', master: 'br0', up: true });
  t.equal(ipLink(`${P}tap`, 'port1').master, 'br0');
  t.equal(await rejection(nl.linkConfigure({ netns: ns, name: 'port1', master: 'br9' })), `bridge 'br9' does not exist in network namespace '${P}tap'`);
  await nl.netnsDel([`${P}tap`]);
  t.same(listNetns().filter((n) => n.startsWith(P)), [], 'no namespace left');
});
