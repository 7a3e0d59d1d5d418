// A routing daemon sees a pulled cable as on hardware: FRR (Debian's
// package) runs OSPF with BFD in two pods on different emulated nodes. When
// the cable is pulled, both routers drop the adjacency at once (their
// interfaces lose carrier), long before the 40 s dead interval; when it is
// plugged, the adjacency and the BFD session come back and routes cross.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { pw, pwOk } from './helpers/labcli.js';
import { TestNet, run, waitFor } from './helpers/testnet.js';

const LAB = 'pwqblab';
const net = new TestNet('pwqb');
const ns = (pod: string): string => `pw-${LAB}-${pod}`;
const DAEMONS = ['zebra', 'bfdd', 'ospfd'] as const;

/** One FRR instance per pod: its own pathspace, config, pid files and vty sockets. */
class Frr {
  constructor(readonly pod: string) {}
  get space(): string {
    return `pwqb${this.pod}`;
  }
  /** FRR's own run directory for the pathspace, owned by its user: config, pid files, sockets. */
  get dir(): string {
    return `/var/run/frr/${this.space}`;
  }
  async start(conf: string): Promise<void> {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    writeFileSync(path.join(this.dir, 'frr.conf'), conf);
    await run('chown', ['-R', 'frr:frr', this.dir]);
    for (const d of DAEMONS) {
      const r = await run('ip', ['netns', 'exec', ns(this.pod), `/usr/lib/frr/${d}`, '-d', '-N', this.space, '-f', path.join(this.dir, 'frr.conf'), '-u', 'frr', '-g', 'frr', '-i', path.join(this.dir, `${d}.pid`), '--vty_socket', this.dir]);
      if (r.code !== 0) throw new Error(`${d} in ${this.pod}: ${r.stderr}`);
    }
  }
  async show(cmd: string): Promise<Record<string, unknown>> {
    const r = await run('vtysh', ['--vty_socket', this.dir, '-c', `${cmd} json`]);
    if (r.code !== 0) throw new Error(`vtysh ${cmd} in ${this.pod}: ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  }
  /** OSPF neighbors in Full state, by router id. */
  async fullNeighbors(): Promise<string[]> {
    const j = (await this.show('show ip ospf neighbor')) as { neighbors?: Record<string, Array<{ nbrState?: string }>> };
    return Object.entries(j.neighbors ?? {})
      .filter(([, v]) => v.some((n) => /^Full/.test(n.nbrState ?? '')))
      .map(([k]) => k);
  }
  async bfdPeers(): Promise<Array<{ peer: string; status: string }>> {
    const r = await run('vtysh', ['--vty_socket', this.dir, '-c', 'show bfd peers json']);
    return r.code === 0 ? (JSON.parse(r.stdout) as Array<{ peer: string; status: string }>) : [];
  }
  stop(): void {
    for (const d of DAEMONS) {
      try {
        process.kill(Number(readFileSync(path.join(this.dir, `${d}.pid`), 'utf8')), 'SIGKILL');
      } catch {
        // not running
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const routers = [new Frr('r1'), new Frr('r2')];
// ospfd keeps its graceful-restart state in FRR's run directory whatever the
// pathspace: removed after the test unless it was there before.
const GR_STATE = '/var/run/frr/ospfd-gr.json';
const grStateBefore = existsSync(GR_STATE);
t.teardown(async () => {
  for (const r of routers) r.stop();
  if (!grStateBefore) rmSync(GR_STATE, { force: true });
  await pw('down', LAB);
  await net.cleanup();
});

const conf = (n: number): string => `frr defaults traditional
hostname r${n}
log file /var/run/frr/pwqbr${n}/frr.log informational
interface eth1
 ip ospf area 0
 ip ospf network point-to-point
 ip ospf hello-interval 1
 ip ospf dead-interval 40
 ip ospf bfd
!
interface lo
 ip address 10.255.0.${n}/32
 ip ospf area 0
!
router ospf
 ospf router-id 10.255.0.${n}
 log-adjacency-changes detail
!
`;

/** Both routers have a kernel route (from zebra) to the other's loopback. */
async function routesIn(): Promise<boolean> {
  const a = await net.exec(ns('r1'), 'ip', ['route', 'show', '10.255.0.2']);
  const b = await net.exec(ns('r2'), 'ip', ['route', 'show', '10.255.0.1']);
  return /via 10\.9\.0\.2/.test(a.stdout) && /via 10\.9\.0\.1/.test(b.stdout);
}

t.test('OSPF with BFD across nodes follows the cable', async (t) => {
  await pw('down', LAB);
  const file = path.join(net.dir, 'frr.clab.yml');
  writeFileSync(
    file,
    `name: ${LAB}
topology:
  nodes:
    r1: {kind: linux, patchwire: {node: 1}}
    r2: {kind: linux, patchwire: {node: 2}}
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
      ipv4: ["10.9.0.1/30", "10.9.0.2/30"]
`,
  );
  await pwOk('up', '-f', file, '--name', LAB);
  for (const [i, r] of routers.entries()) {
    await run('ip', ['-n', ns(r.pod), 'link', 'set', 'lo', 'up']);
    await r.start(conf(i + 1));
  }
  const [r1, r2] = routers as [Frr, Frr];
  await waitFor('OSPF Full both ways', async () => (await r1.fullNeighbors()).includes('10.255.0.2') && (await r2.fullNeighbors()).includes('10.255.0.1'), 60000);
  await waitFor('BFD up', async () => (await r1.bfdPeers()).some((p) => p.peer === '10.9.0.2' && p.status === 'up'), 30000);
  t.pass('adjacency Full and BFD session up across the wire');
  await waitFor('OSPF routes to the loopbacks installed', routesIn, 30000);
  const ping = await net.exec(ns('r1'), 'ping', ['-c', '2', '-W', '2', '-I', '10.255.0.1', '10.255.0.2']);
  t.equal(ping.code, 0, 'loopback to loopback through the OSPF route');

  // Pull: both sides lose the neighbor well before the dead interval (40 s).
  const pulledAt = Date.now();
  await pwOk('link', 'down', LAB, 'r1/eth1');
  await waitFor('both adjacencies gone', async () => (await r1.fullNeighbors()).length === 0 && (await r2.fullNeighbors()).length === 0, 20000);
  t.comment(`adjacency dropped ${Date.now() - pulledAt} ms after the pull (dead interval 40 s)`);
  // Why each router dropped it, in its own words: its interface went down
  // (KillNbr) or BFD said so, not the dead timer (InactivityTimer).
  for (const r of routers) {
    const adj = readFileSync(path.join(r.dir, 'frr.log'), 'utf8').split('\n').filter((l) => /AdjChg.*Full -> (Deleted|Down)/.test(l));
    t.ok(adj.length > 0 && adj.every((l) => !/InactivityTimer/.test(l)) && adj.some((l) => /KillNbr|InterfaceDown|BFD/i.test(l)), `${r.pod}: adjacency dropped by ${JSON.stringify(adj.map((l) => l.replace(/^.*AdjChg/, 'AdjChg')))}`);
  }
  t.notOk((await r2.bfdPeers()).some((p) => p.status === 'up'), 'the far router has no BFD session up');
  const route = await net.exec(ns('r2'), 'ip', ['route', 'show', '10.255.0.1']);
  t.equal(route.stdout.trim(), '', 'r2 withdrew the route to r1 loopback');

  // Plug: the adjacency, BFD and the route come back.
  await pwOk('link', 'up', LAB, 'r1/eth1');
  await waitFor('OSPF Full again', async () => (await r1.fullNeighbors()).includes('10.255.0.2') && (await r2.fullNeighbors()).includes('10.255.0.1'), 60000);
  await waitFor('BFD up again', async () => (await r2.bfdPeers()).some((p) => p.peer === '10.9.0.1' && p.status === 'up'), 30000);
  await waitFor('OSPF routes installed again', routesIn, 30000);
  t.equal((await net.exec(ns('r1'), 'ping', ['-c', '2', '-W', '2', '-I', '10.255.0.1', '10.255.0.2'])).code, 0, 'routes cross again');
});
