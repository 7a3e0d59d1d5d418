// Host ends and wires the lab file does not list: a containerlab `type:
// host` link to an existing interface of the machine shows in status and
// can be captured; when that interface vanishes the wire says so in status
// (restoring, why) and re-attaches by itself when the interface is back (a
// new ifindex); a wire added by hand to a lab daemon (`patchwire wire add`)
// shows in status, marked, and can be captured too.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { readPcap } from './helpers/pcap.js';
import { pw, pwOk } from './helpers/labcli.js';
import { TestNet, sh, spawnSyncQuiet, waitFor } from './helpers/testnet.js';

const LAB = 'pwvb';
const net = new TestNet('pwvb');
const HOST_IF = 'pwvbh0';
const FAR_NS = 'pwvbx';
t.teardown(async () => {
  await pw('down', LAB);
  spawnSyncQuiet('ip', ['link', 'del', HOST_IF]);
  for (const ns of [FAR_NS, 'pwvbp', 'pwvbq']) spawnSyncQuiet('ip', ['netns', 'del', ns]);
  await net.cleanup();
});

interface Status {
  wires: Array<{ uid: number; state: string; message?: string; added_by?: string; endpoints: string[]; nodes: string[]; ends: Array<{ name: string; ifindex: number; tx_frames: number }> }>;
}
const status = async (): Promise<Status> => JSON.parse(await pwOk('status', LAB, '--json')) as Status;

/** The machine's interface the lab wires to: one end of a veth pair whose other end (with 10.62.0.2) is in FAR_NS. */
function makeHostInterface(): void {
  // The same far MAC each time: the pod's ARP entry stays right across a re-creation.
  sh('ip', 'link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'address', '02:62:00:00:00:02', 'netns', FAR_NS);
  sh('ip', 'link', 'set', HOST_IF, 'up');
  sh('ip', '-n', FAR_NS, 'addr', 'add', '10.62.0.2/24', 'dev', 'eth0');
  sh('ip', '-n', FAR_NS, 'link', 'set', 'eth0', 'up');
}

const ping = async (): Promise<number> => (await net.exec(`pw-${LAB}-r1`, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '10.62.0.2'])).code;

t.before(async () => {
  await pw('down', LAB);
  spawnSyncQuiet('ip', ['link', 'del', HOST_IF]);
  sh('ip', 'netns', 'add', FAR_NS);
  makeHostInterface();
});

t.test('a host link of a topology file shows in status and is captured', async (t) => {
  const file = path.join(net.dir, 'host.clab.yml');
  writeFileSync(
    file,
    `name: ${LAB}
topology:
  nodes:
    r1: {kind: linux, patchwire: {node: 2}}
  links:
    - type: host
      endpoint: {node: r1, interface: eth1, ipv4: 10.62.0.1/24}
      host-interface: ${HOST_IF}
`,
  );
  await pwOk('up', '-f', file);
  const s = await status();
  t.same(s.wires.map((w) => [w.endpoints, w.state]), [[['r1/eth1', `host/${HOST_IF}`], 'up']], 'status shows the host wire up');
  t.equal(await ping(), 0, 'the pod reaches the far side through the host interface');
  const pcap = path.join(net.dir, 'host.pcap');
  await pwOk('capture', LAB, `host/${HOST_IF}`, '--format', 'pcap', '--count', '2', '-w', pcap);
  t.equal(readPcap(pcap).length, 2, 'patchwire capture reads the host end');
});

t.test('a host interface that vanishes is shown and re-attached when it is back', async (t) => {
  const before = (await status()).wires[0]!.ends[1]!.ifindex;
  sh('ip', 'link', 'del', HOST_IF);
  const gone = await waitFor('wire restoring', async () => {
    const w = (await status()).wires[0]!;
    return w.state === 'restoring' ? w : undefined;
  }, 10000, 200);
  t.match(gone.message ?? '', new RegExp(`${HOST_IF} vanished`), `status says why: ${gone.message}`);
  t.not(await ping(), 0, 'nothing crosses meanwhile');
  makeHostInterface();
  const back = await waitFor('wire up again', async () => {
    const w = (await status()).wires[0]!;
    return w.state === 'up' ? w : undefined;
  }, 15000, 200);
  t.not(back.ends[1]!.ifindex, before, `re-attached to the new interface (ifindex ${before} -> ${back.ends[1]!.ifindex})`);
  t.equal(await ping(), 0, 'traffic crosses again');
});

t.test('a wire added by hand to a lab daemon shows in status and is captured', async (t) => {
  for (const ns of ['pwvbp', 'pwvbq']) sh('ip', 'netns', 'add', ns);
  const control = `unix:///run/patchwire/labs/${LAB}/node1.sock`;
  await pwOk('wire', 'add', '--control', control, '--uid', '900', '--kind', 'veth', '--netns', 'pwvbp', '--ifname', 'e0', '--ip', '10.63.0.1/24', '--local-kind', 'veth', '--local-netns', 'pwvbq', '--local-ifname', 'e0', '--local-ip', '10.63.0.2/24');
  const w = await waitFor('hand wire listed up', async () => (await status()).wires.find((x) => x.uid === 900 && x.state === 'up'), 10000, 200);
  t.equal(w.added_by, 'api', 'marked as not from the lab file');
  t.same(w.endpoints, ['pwvbp/e0', 'pwvbq/e0']);
  t.equal((await net.exec('pwvbp', 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '10.63.0.2'])).code, 0, 'it carries');
  const pcap = path.join(net.dir, 'hand.pcap');
  await pwOk('capture', LAB, 'pwvbp/e0', '--format', 'pcap', '--count', '2', '-w', pcap);
  t.equal(readPcap(pcap).length, 2, 'patchwire capture reads it');
  const human = await pwOk('status', LAB);
  t.match(human, /900 .*pwvbp\/e0 .*up \(by hand\)/, 'the table marks it');
  await pwOk('wire', 'rm', '--control', control, '--uid', '900');
});
