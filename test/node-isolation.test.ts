// A pod's frames never enter the IP stack of the node its host ends live on
// (SECURITY.md, hardening item 7). Linux answers ARP and ICMP for any of its
// addresses on any interface, so without the ingress guard a pod could reach
// the node through its own cable. The test sends ARP and ICMP from a pod to
// its node's address: nothing comes back, while the engine still reads every
// one of those frames; with the guard taken away the node answers (the threat
// is real); a restarted daemon puts the guard back on the host ends it finds.
import { readFileSync } from 'node:fs';

import t from 'tap';

import { vethHostName } from '../src/endpoint/veth.js';
import { pw, pwOk, statusJson, labTraces } from './helpers/labcli.js';
import { ROOT, run, waitFor } from './helpers/testnet.js';

const LAB = 'pwka1';
const labDir = `/run/patchwire/labs/${LAB}`;

t.before(async () => {
  await pw('down', LAB);
});
t.teardown(async () => {
  await pw('down', LAB);
});

interface LabFile {
  nodes: Array<{ name: string; ns: string; address: string }>;
}

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** ARP replies r1 gets from its node's address over eth1. */
async function arpReplies(podNs: string, addr: string): Promise<number> {
  const r = await run('ip', ['netns', 'exec', podNs, 'arping', '-c', '3', '-w', '3', '-i', 'eth1', addr]);
  return Number(/(\d+) packets received/.exec(r.stdout)?.[1] ?? -1);
}

/** ICMP echo replies r1 gets from its node's address, sent straight to the host end's MAC. */
async function pingReplies(podNs: string, addr: string): Promise<number> {
  const r = await run('ip', ['netns', 'exec', podNs, 'ping', '-c', '3', '-i', '0.2', '-W', '1', addr]);
  return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? -1);
}

/**
 * Echo requests the node's IP stack took in (Icmp InEchos of its namespace).
 * The node has no route back to a pod's address, so its replies go nowhere;
 * what shows that a request reached its stack is this counter.
 */
async function echosSeen(nodeNs: string): Promise<number> {
  const snmp = await sh('ip', 'netns', 'exec', nodeNs, 'cat', '/proc/net/snmp');
  const [names, values] = snmp.split('\n').filter((l) => l.startsWith('Icmp:'));
  const i = names!.split(/\s+/).indexOf('InEchos');
  return Number(values!.split(/\s+/)[i]);
}

t.test('ARP and ICMP from a pod to its node get nothing; the engine still reads them', async (t) => {
  await pwOk('up', '-f', `${ROOT}/examples/triangle.yaml`, '--name', LAB);
  const lab = JSON.parse(readFileSync(`${labDir}/lab.json`, 'utf8')) as LabFile;
  const st = await statusJson(LAB);
  const r1 = st.pods.find((p) => p.name === 'r1')!;
  const node = lab.nodes.find((n) => n.name === r1.node)!;
  const nodeAddr = node.address.split(':')[0]!;
  const host = vethHostName({ netns: r1.netns, ifname: 'eth1' } as Parameters<typeof vethHostName>[0]);

  const filters = await sh('tc', '-n', node.ns, 'filter', 'show', 'dev', host, 'ingress');
  t.match(filters, /bpf .*patchwire-ingress-guard.*direct-action/, `the host end ${host} carries the guard`);

  // ICMP goes to the host end's MAC: the pod is told the node's address is on eth1.
  const hostMac = (JSON.parse(await sh('ip', '-n', node.ns, '-j', 'link', 'show', 'dev', host)) as Array<{ address: string }>)[0]!.address;
  await sh('ip', '-n', r1.netns, 'route', 'replace', `${nodeAddr}/32`, 'dev', 'eth1');
  await sh('ip', '-n', r1.netns, 'neigh', 'replace', nodeAddr, 'lladdr', hostMac, 'dev', 'eth1', 'nud', 'permanent');

  const end = (s: typeof st) => s.wires.find((w) => w.uid === 1)!.ends.find((e) => e.name === 'r1/eth1')!;
  const before = end(await statusJson(LAB)).rx_frames;
  t.equal(await arpReplies(r1.netns, nodeAddr), 0, `no ARP reply from the node's ${nodeAddr}`);
  const echos = await echosSeen(node.ns);
  t.equal(await pingReplies(r1.netns, nodeAddr), 0, 'no ICMP echo reply either');
  t.equal(await echosSeen(node.ns), echos, "and the node's IP stack saw none of the echo requests");
  const read = await waitFor('the engine to count the 6 frames', async () => {
    const n = end(await statusJson(LAB)).rx_frames - before;
    return n >= 6 ? n : undefined;
  }, 10000, 200);
  t.ok(read >= 6, `the engine read the pod's ${read} frames all the same (they went down the cable)`);

  await t.test('without the guard the node answers: the threat is real', async (t) => {
    await sh('tc', '-n', node.ns, 'filter', 'del', 'dev', host, 'ingress');
    t.ok((await arpReplies(r1.netns, nodeAddr)) > 0, 'the node answers ARP for its address on the host end');
    const echos = await echosSeen(node.ns);
    await pingReplies(r1.netns, nodeAddr);
    t.equal((await echosSeen(node.ns)) - echos, 3, "and its IP stack takes in the pod's 3 echo requests");
  });

  await t.test('a restarted daemon puts the guard back on the host ends it finds', async (t) => {
    const sup = JSON.parse(readFileSync(`${labDir}/supervisor.json`, 'utf8')) as { daemons: Record<string, number> };
    const old = sup.daemons[node.name]!;
    process.kill(old, 'SIGKILL');
    await waitFor('the daemon to come back and hold its wires again', async () => {
      const s = await statusJson(LAB);
      const n = s.nodes.find((x) => x.name === node.name)!;
      return n.pid !== old && n.healthy && s.wires.every((w) => w.state === 'up') ? true : undefined;
    }, 60000, 300);
    t.match(await sh('tc', '-n', node.ns, 'filter', 'show', 'dev', host, 'ingress'), /patchwire-ingress-guard/, 'the guard is back');
    t.equal(await arpReplies(r1.netns, nodeAddr), 0, 'and the node is silent again');
    const echos = await echosSeen(node.ns);
    t.equal(await pingReplies(r1.netns, nodeAddr), 0, 'to ICMP too');
    t.equal(await echosSeen(node.ns), echos, 'whose requests no longer reach its IP stack');
  });

  await pwOk('down', LAB);
  t.same(labTraces(LAB), { namespaces: [], processes: [], dir: false }, 'down leaves nothing');
});
