// The live link map end to end on a lab: the snapshot (HTTP GET /map, the
// control API's GetMap, `patchwire map`), and its three streams (SSE from
// curl, WatchMap from a gRPC client, `patchwire map --watch --json`) seeing
// counters and rates move while a ping crosses a wire, a wire removed and
// added back by `up` on an edited file, a cable pulled and plugged and an
// impairment set and reset (link state in the map), and each stream ending cleanly when
// its client goes (the daemon's watcher count falls back to zero).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import t from 'tap';

import { ControlClient } from '../src/control/client.js';
import { applyMapEvent, type MapEvent, type MapSnapshot } from '../src/map/model.js';
import { pw, pwOk } from './helpers/labcli.js';
import { ROOT, run, waitFor } from './helpers/testnet.js';

const LAB = 'pwmb';
const NODE1 = `pwn-${LAB}-node1`;
const dir = mkdtempSync(path.join(os.tmpdir(), 'pwmb-'));
const children: ChildProcess[] = [];
const triangle = readFileSync(path.join(ROOT, 'examples', 'triangle.yaml'), 'utf8');
const file = path.join(dir, 'lab.yaml');
const N1 = 'http://198.18.0.2:8080';

t.teardown(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await pw('down', LAB);
  rmSync(dir, { recursive: true, force: true });
});

t.before(async () => {
  await pw('down', LAB);
});

async function curl(args: string[]): Promise<{ code: number; body: string }> {
  const r = await run('ip', ['netns', 'exec', NODE1, 'curl', '-s', '-w', '\n%{http_code}', ...args]);
  const i = r.stdout.lastIndexOf('\n');
  return { code: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
}

/** A stream's events as they come, and the map they add up to. */
class Follower {
  events: MapEvent[] = [];
  map: MapSnapshot | null = null;
  /** wires a change event carried although they had not changed */
  unchanged = 0;
  add(ev: MapEvent): void {
    this.events.push(ev);
    if (!ev.full && this.map) {
      for (const w of ev.map.wires) if (JSON.stringify(w) === JSON.stringify(this.map.wires.find((x) => x.uid === w.uid))) this.unchanged++;
    }
    this.map = applyMapEvent(this.map, ev);
  }
  wait<T>(what: string, fn: (m: MapSnapshot, evs: MapEvent[]) => T | undefined | false, timeoutMs = 20000): Promise<T> {
    return waitFor(what, () => (this.map ? fn(this.map, this.events) : undefined), timeoutMs, 50);
  }
}

const endOf = (m: MapSnapshot, uid: number, name: string): MapSnapshot['wires'][number]['ends'][number] | undefined => m.wires.find((w) => w.uid === uid)?.ends.find((e) => e.name === name);

t.test('snapshot and streams of a lab', async (t) => {
  writeFileSync(file, triangle);
  await pwOk('up', '-f', file, '--name', LAB);
  const token = readFileSync(`/run/patchwire/labs/${LAB}/capture.token`, 'utf8').trim();
  const auth = ['-H', `Authorization: Bearer ${token}`];
  const lab = JSON.parse(readFileSync(`/run/patchwire/labs/${LAB}/lab.json`, 'utf8')) as { nodes: Array<{ name: string; control: string }> };
  const control1 = lab.nodes.find((n) => n.name === 'node1')!.control;

  // Errors and access.
  t.equal((await curl([`${N1}/map`])).code, 401, 'GET /map without the token: 401');
  t.equal((await curl([`${N1}/map/events`])).code, 401, 'GET /map/events without the token: 401');
  t.equal((await curl([...auth, '-X', 'POST', `${N1}/map`])).code, 405, 'POST /map: 405');
  const bad = await curl([...auth, `${N1}/map/events?interval=1`]);
  t.equal(bad.code, 400, 'an unknown parameter: 400');
  t.match(bad.body, /takes no query parameters/);

  // One daemon's snapshot over HTTP.
  const snap = await curl([...auth, `${N1}/map`]);
  t.equal(snap.code, 200);
  const m1 = JSON.parse(snap.body) as MapSnapshot;
  t.equal(m1.version, 1, 'versioned');
  t.equal(m1.node, 'node1');
  t.same(m1.pods.map((p) => p.name), ['r1', 'r3'], 'the pods with ends on node1');
  t.same(m1.wires.map((w) => [w.uid, w.peer_node, w.ends.map((e) => e.name)]), [
    [1, 'node2', ['r1/eth1']],
    [2, 'node2', ['r3/eth1']],
    [3, '', ['r1/eth2', 'r3/eth2']],
  ], 'its wire ends, with the far node of wires across nodes');
  t.same(m1.peers.map((p) => [p.peer, p.up]), [['node2', true]], 'its peer stream, up');

  // The lab's merged map through the CLI.
  const merged = JSON.parse(await pwOk('map', LAB, '--json')) as MapSnapshot;
  t.same(merged.nodes.map((n) => [n.name, n.reporting]), [['node1', true], ['node2', true]]);
  t.same(merged.wires.map((w) => [w.uid, w.state, w.ends.map((e) => `${e.node}:${e.name}`)]), [
    [1, 'up', ['node1:r1/eth1', 'node2:r2/eth1']],
    [2, 'up', ['node2:r2/eth2', 'node1:r3/eth1']],
    [3, 'up', ['node1:r1/eth2', 'node1:r3/eth2']],
  ], 'every wire with both ends, from both daemons');
  t.same(merged.peers.map((p) => `${p.node}>${p.peer}`), ['node1>node2', 'node2>node1']);
  const text = await pwOk('map', LAB);
  t.match(text, /r1\/eth1 <-> r2\/eth1/, 'the text form lists each wire with its ends');

  // Three watchers of node1: SSE (curl), WatchMap (gRPC), and the CLI (one stream per daemon).
  const sse = new Follower();
  const curlProc = spawn('ip', ['netns', 'exec', NODE1, 'curl', '-sN', ...auth, `${N1}/map/events`], { stdio: ['ignore', 'pipe', 'ignore'] });
  children.push(curlProc);
  let buf = '';
  curlProc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split('\n').find((l) => l.startsWith('data: '));
      if (data && /^event: map$/m.test(block)) sse.add(JSON.parse(data.slice(6)) as MapEvent);
    }
  });
  const grpcF = new Follower();
  const client = new ControlClient(control1);
  t.teardown(() => client.close());
  const call = client.watchMap();
  let grpcEnded = '';
  call.on('data', (ev: MapEvent) => grpcF.add(ev));
  call.on('error', (err: Error & { code?: number }) => (grpcEnded = `error ${err.code}`));
  const cliMaps: MapSnapshot[] = [];
  const cli = spawn(process.execPath, [path.join(ROOT, 'bin', 'patchwire.js'), 'map', LAB, '--watch', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(cli);
  let cliBuf = '';
  cli.stdout!.on('data', (d: Buffer) => {
    cliBuf += d.toString();
    for (let i = cliBuf.indexOf('\n'); i >= 0; i = cliBuf.indexOf('\n')) {
      cliMaps.push(JSON.parse(cliBuf.slice(0, i)) as MapSnapshot);
      cliBuf = cliBuf.slice(i + 1);
    }
  });

  await sse.wait('the SSE stream starts with the full map', (m, evs) => evs[0]?.full && m.wires.length === 3);
  await grpcF.wait('the gRPC stream starts with the full map', (m, evs) => evs[0]?.full && m.wires.length === 3);
  await waitFor('the CLI prints the merged map', () => cliMaps.length > 0 && cliMaps.at(-1)!.wires.every((w) => w.ends.length === 2), 20000);
  const watchers = async (): Promise<number> => {
    const r = await curl([...auth, `${N1}/metrics`]);
    return Number(/^patchwire_map_watchers\{[^}]*\} (\d+)/m.exec(r.body)?.[1] ?? -1);
  };
  t.equal(await watchers(), 3, 'node1 has three map watchers');

  // Counters and rates move while pinging across wire 1.
  const rx0 = endOf(sse.map!, 1, 'r1/eth1')!.rx_frames;
  const ping = await pw('exec', LAB, 'r1', '--', 'ping', '-c', '15', '-i', '0.2', '-W', '2', '192.0.2.2');
  t.equal(ping.code, 0, 'r1 pings r2 across wire 1');
  for (const [name, f] of [
    ['SSE', sse],
    ['gRPC', grpcF],
  ] as const) {
    const rx = await f.wait(`${name}: r1/eth1 counted the pings`, (m) => {
      const e = endOf(m, 1, 'r1/eth1');
      return e && e.rx_frames >= rx0 + 15 ? e.rx_frames : undefined;
    });
    t.ok(rx >= rx0 + 15, `${name}: r1/eth1 rx_frames ${rx0} -> ${rx}`);
    const moving = f.events.filter((ev) => !ev.full && ev.map.wires.some((w) => w.uid === 1));
    t.ok(moving.length >= 2, `${name}: ${moving.length} change events carried wire 1 while it moved`);
    t.ok(moving.some((ev) => ev.map.wires.find((w) => w.uid === 1)!.ends[0]!.rx_fps > 0), `${name}: with a frame rate above 0`);
    t.ok(f.events.some((ev) => !ev.full && ev.map.wires.length < 3), `${name}: change events carry only the wires that changed`);
    t.equal(f.unchanged, 0, `${name}: never a wire that had not changed`);
  }
  const cliRx = await waitFor('CLI: the merged map counted the pings on both ends', () => {
    const w = cliMaps.at(-1)?.wires.find((x) => x.uid === 1);
    const a = w?.ends.find((e) => e.name === 'r1/eth1');
    const b = w?.ends.find((e) => e.name === 'r2/eth1');
    return a && b && a.rx_frames >= rx0 + 15 && b.tx_frames >= 15 ? [a.rx_frames, b.tx_frames] : undefined;
  });
  t.ok(cliRx[0]! >= rx0 + 15, `CLI: r1/eth1 read ${cliRx[0]}, r2/eth1 wrote ${cliRx[1]}`);

  // A wire removed and added back by reconciling an edited file.
  const without3 = triangle.replace(/    - uid: 3\n(      .*\n)+/g, '');
  t.notMatch(without3, /uid: 3/, 'the edited file has no link 3');
  writeFileSync(file, without3);
  await pwOk('up', '-f', file, '--name', LAB);
  for (const [name, f] of [
    ['SSE', sse],
    ['gRPC', grpcF],
  ] as const) {
    await f.wait(`${name}: wire 3 removed`, (m, evs) => !m.wires.some((w) => w.uid === 3) && evs.some((ev) => ev.removed_wires.includes(3)));
    t.pass(`${name}: an event removed wire 3`);
    t.same(f.map!.wires.map((w) => w.uid), [1, 2], `${name}: wires 1 and 2 stay`);
  }
  await waitFor('CLI: wire 3 gone', () => cliMaps.at(-1) && !cliMaps.at(-1)!.wires.some((w) => w.uid === 3));
  writeFileSync(file, triangle);
  await pwOk('up', '-f', file, '--name', LAB);
  for (const [name, f] of [
    ['SSE', sse],
    ['gRPC', grpcF],
  ] as const) {
    const w3 = await f.wait(`${name}: wire 3 back`, (m) => m.wires.find((w) => w.uid === 3));
    t.same(w3.ends.map((e) => e.name), ['r1/eth2', 'r3/eth2'], `${name}: wire 3 added back with both ends`);
    t.ok(f.events.every((ev, i) => i === 0 || !ev.full), `${name}: only the first event was a full map (${f.events.length} events)`);
  }
  await waitFor('CLI: wire 3 back', () => cliMaps.at(-1)?.wires.some((w) => w.uid === 3 && w.ends.length === 2));

  // Link state in the map: a cable pulled and plugged, an impairment set and reset.
  const e1 = endOf(sse.map!, 1, 'r1/eth1')!;
  t.same([e1.carrier, e1.cable, e1.far_cable, e1.impair], [true, 'plugged', 'plugged', null], 'r1/eth1 starts with carrier, its cable and the far one plugged, no impairments');
  const evCount = { sse: sse.events.length, grpc: grpcF.events.length };
  await pwOk('link', 'down', LAB, 'r1/eth1');
  for (const [name, f] of [
    ['SSE', sse],
    ['gRPC', grpcF],
  ] as const) {
    const e = await f.wait(`${name}: r1/eth1 pulled and without carrier`, (m) => {
      const x = endOf(m, 1, 'r1/eth1');
      return x && x.cable === 'pulled' && !x.carrier ? x : undefined;
    });
    t.match(e.carrier_reason, /cable/, `${name}: the reason names the cable (${e.carrier_reason})`);
    t.ok(e.carrier_changes >= 1, `${name}: a carrier change counted`);
    t.ok(f.events.slice(name === 'SSE' ? evCount.sse : evCount.grpc).some((ev) => !ev.full && ev.map.wires.some((w) => w.uid === 1 && w.ends[0]!.cable === 'pulled')), `${name}: a change event carried the pull`);
  }
  const pulledFar = await waitFor('CLI: r2/eth1 (node2) without carrier, far cable pulled', () => {
    const b = cliMaps.at(-1)?.wires.find((x) => x.uid === 1)?.ends.find((e) => e.name === 'r2/eth1');
    return b && !b.carrier && b.cable === 'plugged' && b.far_cable === 'pulled' ? b : undefined;
  });
  t.equal(pulledFar.node, 'node2', "the far end's daemon reports its carrier gone and the far cable pulled");
  t.match((await run('ip', ['-n', `pw-${LAB}-r1`, '-o', 'link', 'show', 'dev', 'eth1'])).stdout, /NO-CARRIER/, "r1's eth1 has no carrier, as the map says");
  await pwOk('link', 'up', LAB, 'r1/eth1');
  await sse.wait('SSE: r1/eth1 plugged with carrier', (m) => {
    const x = endOf(m, 1, 'r1/eth1');
    return x && x.cable === 'plugged' && x.carrier;
  });
  await waitFor('CLI: r2/eth1 carrier back', () => cliMaps.at(-1)?.wires.find((x) => x.uid === 1)?.ends.find((e) => e.name === 'r2/eth1' && e.carrier && e.far_cable === 'plugged'));
  t.pass('plugged back: carrier at both ends in the map');
  await pwOk('link', 'set', LAB, 'r3/eth2', '--delay', '20ms', '--loss', '1%');
  for (const [name, f] of [
    ['SSE', sse],
    ['gRPC', grpcF],
  ] as const) {
    const imp = await f.wait(`${name}: r3/eth2 impaired`, (m) => endOf(m, 3, 'r3/eth2')?.impair ?? undefined);
    t.match(imp, { inbound: { delay_us: 20000, loss_percent: 1 }, outbound: { delay_us: 20000, loss_percent: 1 } }, `${name}: r3/eth2's impairments in both directions`);
    t.equal(endOf(f.map!, 3, 'r1/eth2')!.impair, null, `${name}: the other end of wire 3 stays unimpaired`);
  }
  await pwOk('link', 'reset', LAB, 'r3/eth2');
  await grpcF.wait('gRPC: r3/eth2 impairments gone', (m) => endOf(m, 3, 'r3/eth2')?.impair === null);
  await sse.wait('SSE: r3/eth2 impairments gone', (m) => endOf(m, 3, 'r3/eth2')?.impair === null);
  t.pass('reset: the map shows no impairments on r3/eth2');

  // Each client leaving ends its stream on the daemon.
  curlProc.kill('SIGTERM');
  await waitFor('the SSE watcher gone', async () => (await watchers()) === 2);
  t.pass('curl gone: 2 watchers left');
  call.cancel();
  await waitFor('the gRPC watcher gone', async () => (await watchers()) === 1);
  t.pass('gRPC call cancelled: 1 watcher left');
  t.match(grpcEnded, /error 1/, 'the client saw its own cancel (CANCELLED), nothing else');
  cli.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => (cli.exitCode !== null ? r(cli.exitCode) : cli.once('exit', (c) => r(c))));
  t.equal(code, 0, 'patchwire map --watch exits 0 on SIGTERM');
  await waitFor('no watchers', async () => (await watchers()) === 0);
  t.pass('no map watchers left on node1');
});
