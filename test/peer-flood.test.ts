// A peer controls none of a daemon's memory (hardening item 5). Hostile
// peers (test/tools/hostile-peer.mjs: real HTTP/2 and gRPC framing, in
// namespaces of their own on the underlay) answer daemon A's subscriptions
// and then send a message past the size limit, batches with one frame more
// than a batch may hold, and 7.5 MiB batches back to back for seconds. A's
// pid never changes, each abuse is refused and counted, a wire between A and
// a real daemon C keeps carrying pings, and A's resident memory stays within
// the bound docs/engine.md states, during the flood and after it.
import { readFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import type { PbCounters } from '../src/control/convert.js';
import { ROOT, TestNet, type TestNode, sleep, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwkf');
t.teardown(() => net.cleanup());

const HOSTILE = path.join(ROOT, 'test', 'tools', 'hostile-peer.mjs');
const MiB = 1 << 20;
/**
 * docs/engine.md: one message being assembled (8 MiB) with its decoded
 * frames, and the queue chunks kept for reuse (16 MiB), over the daemon at
 * rest, with room for the allocator. Measured: 9 MiB for a 990 MiB flood.
 */
const FLOOD_BOUND = 32 * MiB;

function rssOf(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

/** Starts a hostile peer in a namespace of its own and points a wire of A's at it. */
async function hostile(a: TestNode, short: string, mode: string, uid: number, pod: string, ifname: string, seconds = 0) {
  const h = await net.addNode(short, { start: false });
  const proc = net.spawnIn(h.ns, process.execPath, [HOSTILE, h.ip, '7000', h.name, mode, String(seconds), String(uid)]);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitFor(`hostile peer ${mode} to listen`, async () => err.includes('hostile peer'), 10000, 50);
  await a.client.addWire({ uid, local: net.endpoint('veth', pod, ifname), peer: { node: h.name, address: h.address } });
  const served = (): Array<{ mode: string; messages: number; bytes: number }> =>
    out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { mode: string; messages: number; bytes: number });
  return { h, proc, served, stop: () => proc.kill('SIGKILL') };
}

const peerOf = async (a: TestNode, node: string) => (await a.client.health()).peers.find((p) => p.node === node);
const endOf = async (a: TestNode, uid: number): Promise<PbCounters> => (await a.client.listWires()).find((w) => w.spec.uid === uid)!.ends[0]!.counters;

t.test('hostile peers: every limit holds, memory stays bounded, real wires keep flowing', async (t) => {
  const a = await net.addNode('na');
  const c = await net.addNode('nc');
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  const victim = net.addPod('pv');
  await net.crossWire(1, a, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.5.1/24'] }), c, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.5.2/24'] }));
  const pid = (await a.client.health()).pid;
  await net.exec(p1, 'ping', ['-c', '3', '-i', '0.2', '198.19.5.2']);
  await sleep(1000);
  const base = rssOf(pid);
  t.comment(`daemon A at rest: ${(base / MiB).toFixed(1)} MiB resident`);

  await t.test('a message announced past the size limit is refused before it is read', async (t) => {
    const x = await hostile(a, 'ho', 'oversized', 901, victim, 'eth1');
    const p = await waitFor('A to refuse the stream', async () => {
      const q = await peerOf(a, x.h.name);
      return q && /message|larger|limit/i.test(q.last_error) ? q : undefined;
    }, 15000, 100);
    t.match(p.last_error, /67108864|64 MiB|larger than/, `A says why: ${p.last_error}`);
    t.ok(rssOf(pid) < base + 16 * MiB, 'and did not make room for the 64 MiB it announced');
    t.equal((await a.client.health()).pid, pid, 'A is the same process');
    x.stop();
  });

  await t.test('a batch of 4097 frames is refused whole and counted', async (t) => {
    const before = await a.client.health();
    const x = await hostile(a, 'hf', 'frames', 902, victim, 'eth2');
    const h = await waitFor('A to count three refused batches', async () => {
      const q = await a.client.health();
      return q.malformed - before.malformed >= 3 ? q : undefined;
    }, 15000, 100);
    x.stop();
    const batches = h.malformed - before.malformed;
    t.ok(h.malformed_frames - before.malformed_frames >= batches * 4097, `${batches} batches, ${h.malformed_frames - before.malformed_frames} frames counted as malformed`);
    t.equal((await endOf(a, 902)).tx_frames, 0, 'not one of their frames reached the pod');
    t.equal(h.pid, pid, 'A is the same process');
  });

  await t.test('7.5 MiB batches back to back for 8 s: memory bounded, pings answered', async (t) => {
    const x = await hostile(a, 'hv', 'volume', 903, victim, 'eth3', 8);
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, rssOf(pid));
        await sleep(50);
      }
    })();
    const ping = await net.exec(p1, 'ping', ['-c', '30', '-i', '0.25', '-W', '1', '198.19.5.2'], { timeoutMs: 30000 });
    await waitFor('the flood to end', async () => x.served().length > 0, 20000, 200);
    sampling = false;
    await sampler;
    const served = x.served()[0]!;
    const tooBig = (await endOf(a, 903)).drops.too_big;
    t.comment(`flood: ${served.messages} messages, ${(served.bytes / MiB).toFixed(0)} MiB sent; A: peak ${(peak / MiB).toFixed(1)} MiB resident (at rest ${(base / MiB).toFixed(1)})`);
    t.ok(served.bytes > 256 * MiB, `the flood was real (${(served.bytes / MiB).toFixed(0)} MiB)`);
    t.ok(tooBig > 200, `A read it and counted its 512 KiB frames as too big for the pod's MTU (${tooBig})`);
    t.ok(peak - base <= FLOOD_BOUND, `A's resident memory grew by ${((peak - base) / MiB).toFixed(1)} MiB at most (bound ${FLOOD_BOUND / MiB} MiB)`);
    const received = Number(/(\d+) received/.exec(ping.stdout)?.[1] ?? 0);
    t.ok(received >= 27, `the real wire kept carrying pings (${received}/30)`);
    t.equal((await a.client.health()).pid, pid, 'A is the same process');
    x.stop();
  });
});
