// Cluster mode against the STAND-IN API server (test/helpers/apiserver.ts):
// a pod's `kind: tap` link end keeps its carrier while its node's daemon is
// killed (-9) and restarted, when `patchwire tap-holder` runs beside the
// daemon as deploy/daemonset.yaml runs it (its own process, the container's
// capabilities read from the manifest, the daemon's state file). Without the
// holder the same kill takes the tap's carrier (the kernel does when the
// daemon's queue closes), so the first case can fail.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import t from 'tap';
import { parse } from 'yaml';

import { type ClusterNode, TestCluster, type TestPod } from './helpers/cluster.js';
import { ROOT, sh, waitFor } from './helpers/testnet.js';

const CLI = path.join(ROOT, 'bin', 'patchwire.js');
// The far end keeps carrier this long while the killed daemon is away; a
// restart (a new process asking the signer for its identity) on a busy
// 2-core machine can take more than the default 3 s.
const HOLD_MS = 15000;
const cluster = new TestCluster('pwhd');
t.teardown(() => cluster.cleanup());

type Container = { name: string; command: string[]; securityContext: { capabilities: { add: string[] } } };
const ds = parse(readFileSync(path.join(ROOT, 'deploy', 'daemonset.yaml'), 'utf8')) as { spec: { template: { spec: { containers: Container[] } } } };
const sidecar = ds.spec.template.spec.containers.find((c) => c.name === 'tap-holder')!;

/** The holder as its container runs it: the node's host network, only the manifest's capabilities. */
function startHolder(node: ClusterNode, state: string, extra: string[] = []): { proc: ChildProcess; log: () => string } {
  const caps = sidecar.securityContext.capabilities.add.map((c) => `+${c.toLowerCase()}`);
  const args = sidecar.command.slice(1);
  args[args.indexOf('--state') + 1] = state;
  const proc = spawn('ip', ['netns', 'exec', node.ns, 'setpriv', '--bounding-set', ['-all', ...caps].join(','), '--inh-caps', '-all', '--', process.execPath, CLI, ...args, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  t.teardown(() => void proc.kill('SIGKILL'));
  return { proc, log: () => log };
}

function carrier(pod: TestPod): string {
  return sh('ip', 'netns', 'exec', pod.netns, 'cat', '/sys/class/net/eth1/carrier').trim();
}

/** `ip monitor link` on a pod's eth1, collecting what it prints. */
async function monitor(pod: TestPod): Promise<{ out: () => string; stop: () => void }> {
  const mon = spawn('ip', ['-n', pod.netns, 'monitor', 'link', 'dev', 'eth1'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  mon.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  t.teardown(() => void mon.kill('SIGKILL'));
  await sleep(200);
  return { out: () => out, stop: () => void mon.kill('SIGKILL') };
}

function topology(name: string, peer: string, ip: string, peerIp: string): Record<string, unknown> {
  return {
    apiVersion: 'networkop.co.uk/v1beta1',
    kind: 'Topology',
    metadata: { name },
    spec: { links: [{ uid: 1, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1', local_ip: ip, peer_ip: peerIp, patchwire: { kind: 'tap', carrier_hold_ms: HOLD_MS } }] },
  };
}

const ping = async (pod: TestPod, ip: string): Promise<boolean> => (await cluster.exec(pod, 'ping', ['-c', '1', '-W', '1', ip])).code === 0;

t.test('tap-holder: help and a missing state file', async (t) => {
  const help = sh(process.execPath, CLI, 'tap-holder', '--help');
  t.match(help, /patchwire tap-holder --state FILE/, '--help says how to run it');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pwhd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const state = path.join(dir, 'state.json');
  const proc = spawn(process.execPath, [CLI, 'tap-holder', '--state', state, '--resync-seconds', '0.1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => void proc.kill('SIGKILL'));
  let log = '';
  proc.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  await waitFor('the holder to say the file is missing', () => /is missing/.test(log));
  await sleep(600);
  t.equal(log.match(/is missing/g)?.length, 1, `said once, though looked at again every 0.1 s (${JSON.stringify(log)})`);
  t.equal(proc.exitCode, null, 'and keeps going');
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  t.equal(proc.exitCode, 0, 'SIGTERM ends it cleanly');
});

t.test('a killed daemon: its tap blinks without the holder, not with it', async (t) => {
  await cluster.start();
  await cluster.addNode('n1');
  const n2 = await cluster.addNode('n2');
  t.equal((await cluster.createTopology('lab1', topology('r1', 'r2', '192.0.2.1/30', '192.0.2.2/30'))).status, 201, 'Topology r1 created');
  t.equal((await cluster.createTopology('lab1', topology('r2', 'r1', '192.0.2.2/30', '192.0.2.1/30'))).status, 201, 'Topology r2 created');
  const { pod: r1 } = await cluster.startPod('n1', 'lab1', 'r1');
  const { pod: r2 } = await cluster.startPod('n2', 'lab1', 'r2');
  await cluster.waitReady('lab1', 'r1', '1/1');
  await cluster.waitReady('lab1', 'r2', '1/1');
  await waitFor('ping r1 -> r2 over the tap link', () => ping(r1, '192.0.2.2'), 20000);
  t.ok(sh('ip', 'netns', 'exec', r2.netns, 'cat', '/sys/class/net/eth1/tun_flags').trim() !== '', "r2's eth1 is a tap");
  const state = JSON.parse(readFileSync(n2.state, 'utf8')) as { wires: Array<{ local: { kind: string } }> };
  t.same(state.wires.map((w) => w.local.kind), ['tap'], "the daemon's state file lists the tap end");

  await t.test('without the holder, kill -9 takes the tap carrier', async (t) => {
    const mon = await monitor(r2);
    await cluster.net.killDaemon(n2);
    await waitFor('r2 eth1 to lose carrier', () => /NO-CARRIER/.test(mon.out()), 10000);
    t.pass(`r2/eth1 lost carrier when its daemon was killed (ip monitor: ${JSON.stringify(mon.out().slice(0, 200))})`);
    await cluster.startDaemon(n2);
    await waitFor('ping r1 -> r2 again', () => ping(r1, '192.0.2.2'), 20000);
    mon.stop();
  });

  await t.test('with the holder, kill -9 and restart change no carrier at either end', async (t) => {
    const holder = startHolder(n2, n2.state);
    await waitFor('the holder to hold r2/eth1', () => new RegExp(`holding \\S*${r2.netns}/eth1 `).test(holder.log()), 10000);
    t.equal(carrier(r2), '1', 'r2/eth1 has carrier');
    const mon2 = await monitor(r2);
    const mon1 = await monitor(r1);
    await cluster.net.killDaemon(n2);
    const killed = Date.now();
    // Gone for a while (within the carrier hold time), as a restarting container is.
    await sleep(1500);
    t.equal(carrier(r2), '1', 'r2/eth1 keeps carrier while its daemon is dead');
    t.equal(holder.proc.exitCode, null, 'the holder outlived the daemon');
    await cluster.startDaemon(n2);
    await waitFor('ping r1 -> r2 over the restarted daemon', () => ping(r1, '192.0.2.2'), 20000);
    const away = Date.now() - killed;
    mon1.stop();
    mon2.stop();
    t.ok(away < HOLD_MS, `restarted and forwarding again within the hold time (${away} ms)`);
    t.notMatch(mon2.out(), /NO-CARRIER/, `r2/eth1 (the tap) never lost carrier (ip monitor: ${JSON.stringify(mon2.out().slice(0, 300))})`);
    t.notMatch(mon1.out(), /NO-CARRIER/, `r1/eth1, the far end, neither (ip monitor: ${JSON.stringify(mon1.out().slice(0, 300))})`);
    t.notMatch(holder.log(), /cannot|blink|missing/, `the holder reported no problem (${JSON.stringify(holder.log())})`);
    holder.proc.kill('SIGTERM');
    await new Promise((r) => holder.proc.once('exit', r));
  });
});
