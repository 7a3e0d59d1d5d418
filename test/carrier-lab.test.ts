// Cable pulls in a lab through the CLI: a link declared `state: down` comes
// up without carrier at both ends, `patchwire link up|down|flap` plug and
// pull it (the kernel's view in the pods follows), a pull survives a daemon
// killed and restarted by the supervisor, every change is an event with a
// reason in `link events` and `status`, and an edited file's state is
// applied to the running wire without re-creating it.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { pw, pwOk } from './helpers/labcli.js';
import { TestNet, sh, sleep, waitFor } from './helpers/testnet.js';

const LAB = 'pwpblab';
// TestNet only for its scratch dir and cleanup of stray namespaces.
const net = new TestNet('pwpb');
t.teardown(async () => {
  await pw('down', LAB);
  await net.cleanup();
});
t.before(async () => {
  await pw('down', LAB); // an earlier run that died
});

const ns = (pod: string): string => `pw-${LAB}-${pod}`;

function hasCarrier(pod: string, ifname: string): boolean {
  const [l] = JSON.parse(sh('ip', '-n', ns(pod), '-j', 'link', 'show', 'dev', ifname)) as Array<{ flags: string[] }>;
  return l!.flags.includes('LOWER_UP') && !l!.flags.includes('NO-CARRIER');
}

const ifindex = (pod: string, ifname: string): number => (JSON.parse(sh('ip', '-n', ns(pod), '-j', 'link', 'show', 'dev', ifname)) as Array<{ ifindex: number }>)[0]!.ifindex;

const ping = async (pod: string, ip: string, count = 2): Promise<number> => (await net.exec(ns(pod), 'ping', ['-c', String(count), '-W', '1', ip])).code;

interface Event {
  time: string;
  end: string;
  node: string;
  carrier: boolean;
  reason: string;
}
const events = async (end?: string): Promise<Event[]> => (JSON.parse(await pwOk('link', 'events', LAB, ...(end ? [end] : []), '--json')) as { events: Event[] }).events;

const topo = (state: 'up' | 'down'): string => `name: ${LAB}
topology:
  nodes:
    r1: {kind: linux, patchwire: {node: 1}}
    r2: {kind: linux, patchwire: {node: 2}}
    r3: {kind: linux, patchwire: {node: 1}}
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
      ipv4: ["192.0.2.1/30", "192.0.2.2/30"]
    - endpoints: ["r2:eth2", "r3:eth1"]
      ipv4: ["192.0.2.5/30", "192.0.2.6/30"]
      patchwire: {kind: tap, state: ${state}}
`;

t.test('declared down, plugged, pulled, flapped, kept across a restart, edited', async (t) => {
  const file = path.join(net.dir, 'carrier.clab.yml');
  writeFileSync(file, topo('down'));
  await pwOk('up', '-f', file, '--name', LAB);

  await t.test('a link declared state: down comes up down at both ends', async (t) => {
    t.ok(hasCarrier('r1', 'eth1') && hasCarrier('r2', 'eth1'), 'the other link has carrier at both ends');
    t.ok(!hasCarrier('r2', 'eth2') && !hasCarrier('r3', 'eth1'), 'the declared-down link has none at either end');
    t.not(await ping('r2', '192.0.2.6'), 0, 'and carries no ping');
    const s = JSON.parse(await pwOk('status', LAB, '--json')) as { wires: Array<{ uid: number; state: string; ends: Array<{ name: string; carrier: { on: boolean; reason: string; cable: string } }> }> };
    const w = s.wires.find((x) => x.ends.some((e) => e.name === 'r3/eth1'))!;
    t.equal(w.state, 'down', 'status: the wire is down');
    t.match(w.ends, [{ carrier: { on: false, cable: 'pulled' } }, { carrier: { on: false, cable: 'pulled' } }], 'status --json: both ends pulled (a containerlab link block applies to both)');
    t.match(await pwOk('status', LAB), /r3\/eth1: no carrier: cable pulled/, 'the status table says why');
  });

  await t.test('link up plugs it, link down pulls it', async (t) => {
    await pwOk('link', 'up', LAB, 'r3/eth1');
    await waitFor('carrier at both ends', () => hasCarrier('r2', 'eth2') && hasCarrier('r3', 'eth1'));
    t.equal(await ping('r2', '192.0.2.6', 3), 0, 'ping crosses once plugged');
    await pwOk('link', 'down', LAB, 'r1/eth1');
    await waitFor('NO-CARRIER at both ends of r1/eth1', () => !hasCarrier('r1', 'eth1') && !hasCarrier('r2', 'eth1'));
    t.not(await ping('r1', '192.0.2.2'), 0, 'ping fails with the cable pulled');
    const ev = await events('r2/eth1');
    t.match(ev.at(-1), { end: 'r2/eth1', carrier: false, reason: /cable pulled at the far end/ }, 'link events: the far end, with its reason');
    t.ok(!Number.isNaN(Date.parse(ev.at(-1)!.time)), 'and its time');
    const bad = await pw('link', 'down', LAB, 'r9/eth1');
    t.equal(bad.code, 2, 'an unknown end is a usage error');
    t.match(bad.stderr, /has no link end r9\/eth1/);
  });

  await t.test('a pulled cable stays pulled when its daemon is killed and restarted', async (t) => {
    const s0 = JSON.parse(await pwOk('status', LAB, '--json')) as { nodes: Array<{ name: string; pid: number }> };
    const n1 = s0.nodes.find((n) => n.name === 'node1')!;
    const before = ifindex('r1', 'eth1');
    // r3/eth1 is a tap on node1 whose link is plugged: the supervisor holds a
    // detached queue of it, so its carrier does not blink while node1's
    // daemon is gone (the kernel would take it when the last queue closed).
    t.ok(hasCarrier('r3', 'eth1'), 'the tap r3/eth1 has carrier before the kill');
    const mon = spawn('ip', ['-n', ns('r3'), 'monitor', 'link', 'dev', 'eth1'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let monOut = '';
    mon.stdout.on('data', (c: Buffer) => (monOut += c.toString()));
    t.teardown(() => mon.kill('SIGKILL'));
    await sleep(200);
    process.kill(n1.pid, 'SIGKILL');
    await waitFor('the supervisor to restart node1', async () => {
      const s = JSON.parse((await pw('status', LAB, '--json')).stdout || '{"nodes":[]}') as { nodes: Array<{ name: string; pid: number; healthy: boolean }> };
      const n = s.nodes.find((x) => x.name === 'node1');
      return n !== undefined && n.healthy && n.pid !== n1.pid;
    }, 30000);
    await waitFor('the tap link back up', async () => hasCarrier('r2', 'eth2') && hasCarrier('r3', 'eth1'));
    await waitFor('the restarted daemon to forward on the tap link', async () => (await ping('r2', '192.0.2.6', 1)) === 0, 20000);
    mon.kill('SIGKILL');
    t.notMatch(monOut, /NO-CARRIER/, `the tap r3/eth1 never lost carrier while its daemon was killed and restarted (ip monitor: ${JSON.stringify(monOut.slice(0, 300))})`);
    t.equal(ifindex('r1', 'eth1'), before, 'r1/eth1 was re-attached, not re-created');
    t.ok(!hasCarrier('r1', 'eth1') && !hasCarrier('r2', 'eth1'), 'r1/eth1 is still pulled: no carrier at either end');
    const s = JSON.parse(await pwOk('status', LAB, '--json')) as { wires: Array<{ ends: Array<{ name: string; carrier: { cable: string } }> }> };
    t.equal(s.wires.flatMap((w) => w.ends).find((e) => e.name === 'r1/eth1')?.carrier.cable, 'pulled', 'status still says pulled (from the state file)');
    await pwOk('link', 'up', LAB, 'r2/eth1');
    await waitFor('carrier back on r1/eth1', () => hasCarrier('r1', 'eth1') && hasCarrier('r2', 'eth1'));
    t.equal(await ping('r1', '192.0.2.2', 3), 0, 'ping crosses again');
  });

  await t.test('link flap pulls and plugs it N times', async (t) => {
    const n0 = (await events('r1/eth1')).length;
    await pwOk('link', 'flap', LAB, 'r1/eth1', '--down', '300ms', '--up', '300ms', '--count', '2');
    await waitFor('carrier back after the flaps', () => hasCarrier('r1', 'eth1') && hasCarrier('r2', 'eth1'));
    const ev = (await events('r1/eth1')).slice(n0);
    for (const end of ['r1/eth1', 'r2/eth1']) {
      t.same(ev.filter((e) => e.end === end).map((e) => e.carrier), [false, true, false, true], `${end}: off, on, off, on`);
    }
    const bad = await pw('link', 'flap', LAB, 'r1/eth1', '--down', 'soon');
    t.equal(bad.code, 2, 'a bad duration is a usage error');
  });

  await t.test('an edited file changes the state of the running wire', async (t) => {
    const before = { r2: ifindex('r2', 'eth2'), r3: ifindex('r3', 'eth1') };
    await pwOk('link', 'down', LAB, 'r2/eth2');
    await waitFor('pulled by hand', () => !hasCarrier('r3', 'eth1'));
    // The file still says down, as when the lab came up: up changes nothing.
    t.match(await pwOk('up', '-f', file, '--name', LAB), /0 links added, 0 removed, 2 untouched/);
    t.ok(!hasCarrier('r3', 'eth1'), 'a pull by hand stays while the file does not change the state');
    writeFileSync(file, topo('up'));
    t.match(await pwOk('up', '-f', file, '--name', LAB), /0 links added, 0 removed, 2 untouched/, 'the state change re-creates nothing');
    await waitFor('carrier at both ends', () => hasCarrier('r2', 'eth2') && hasCarrier('r3', 'eth1'));
    t.same({ r2: ifindex('r2', 'eth2'), r3: ifindex('r3', 'eth1') }, before, 'the same interfaces');
    writeFileSync(file, topo('down'));
    await pwOk('up', '-f', file, '--name', LAB);
    await waitFor('NO-CARRIER at both ends again', () => !hasCarrier('r2', 'eth2') && !hasCarrier('r3', 'eth1'));
    t.match(readFileSync(file, 'utf8'), /state: down/);
  });
});
