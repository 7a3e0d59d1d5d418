// Nothing lost silently, cause by cause: each drop cause is made to happen
// with a known number of frames, and its counter must show exactly that
// number (the other counters of the end showing where the rest went).
//   too_big      jumbo frames into an MTU 1500 pod across nodes (the daemon
//                decides), and 1522-byte untagged ones (the kernel says EMSGSIZE)
//   truncated    GSO super-frames larger than the daemon's receive buffer
//   send_error   the receiving interface is down (veth: ENETDOWN, tap: EIO)
//   unknown_wire frames a grpc-js peer sends for wires the daemon does not
//                have with it; malformed: batches that are not protobuf
// Pods have IPv6 off and no addresses, so they send nothing of their own.
// send_busy (EAGAIN/ENOBUFS) cannot be made to happen from outside with veth
// and tap ends: AF_PACKET ports send with PACKET_QDISC_BYPASS (no qdisc can
// fill), veth drops rather than refuses when its peer cannot take a frame
// (counting it in its own tx dropped), and a tap's socket has an unbounded
// send buffer. queue_full and backpressure: test/accounting.test.ts.
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import t from 'tap';

import type { PbCounters } from '../src/control/convert.js';
import { DROP_CAUSES } from '../src/dataplane/wire.js';
import { ROOT, TestNet, type TestNode, sh, sleep, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwxa');
const relays: ChildProcess[] = [];
t.teardown(async () => {
  for (const r of relays) r.kill('SIGKILL');
  await net.cleanup();
});

const RAWSEND = path.join(ROOT, 'test', 'tools', 'rawsend.py');
const RELAY = path.join(ROOT, 'test', 'tools', 'relay.mjs');

interface SendResult {
  sent: number;
  refused: Record<string, number>;
}

/** Sends `count` frames of `size` bytes out of the pod's eth1 (see test/tools/rawsend.py). */
async function rawsend(pod: string, count: number, size: number, opts: { gso?: boolean; gap?: number } = {}): Promise<number> {
  const args = [RAWSEND, 'eth1', String(count), String(size), '--gap', String(opts.gap ?? 0.001)];
  if (opts.gso) args.push('--gso');
  const r = await net.exec(pod, 'python3', args);
  if (r.code !== 0) throw new Error(`rawsend in ${pod}: ${r.stderr}`);
  const res = JSON.parse(r.stdout) as SendResult;
  if (res.sent !== count) throw new Error(`rawsend in ${pod}: the kernel took ${res.sent} of ${count} frames (${JSON.stringify(res.refused)})`);
  return res.sent;
}

function quietPod(name: string): string {
  const pod = net.addPod(name);
  sh('ip', 'netns', 'exec', pod, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  return pod;
}

async function counters(n: TestNode, uid: number): Promise<PbCounters> {
  const w = (await n.client.listWires()).find((x) => x.spec.uid === uid);
  if (!w) throw new Error(`no wire ${uid} on ${n.name}`);
  return w.ends[0]!.counters;
}

/** Reads `read` until two reads 300 ms apart agree (nothing in flight any more). */
async function atRest<T>(what: string, read: () => Promise<T>): Promise<T> {
  let last = JSON.stringify(await read());
  return waitFor(`${what} at rest`, async () => {
    await sleep(300);
    const now = await read();
    const s = JSON.stringify(now);
    if (s === last) return now;
    last = s;
    return undefined;
  });
}

type Drops = PbCounters['drops'];
const DROP_KEYS: Array<keyof Drops> = Object.values(DROP_CAUSES);

/** Counter changes of one end between two snapshots. */
function delta(a: PbCounters, b: PbCounters): { rx: number; tx: number } & Drops {
  const d = { rx: b.rx_frames - a.rx_frames, tx: b.tx_frames - a.tx_frames } as { rx: number; tx: number } & Drops;
  for (const k of DROP_KEYS) d[k] = b.drops[k] - a.drops[k];
  return d;
}

/** The name, in the node's namespace, of the veth end whose peer is the pod's eth1. */
function hostEnd(node: TestNode, pod: string): string {
  const [link] = JSON.parse(sh('ip', '-n', pod, '-j', 'link', 'show', 'dev', 'eth1')) as Array<{ link_index: number }>;
  const all = JSON.parse(sh('ip', '-n', node.ns, '-j', 'link', 'show')) as Array<{ ifindex: number; ifname: string }>;
  const found = all.find((l) => l.ifindex === link!.link_index);
  if (!found) throw new Error(`no peer of ${pod}/eth1 in ${node.ns}`);
  return found.ifname;
}

t.test('every drop cause, triggered and counted exactly', async (t) => {
  const na = await net.addNode('na');
  const nb = await net.addNode('nb');
  /** A cross-node wire from a pod on na to one on nb, both quiet. */
  type End = { kind?: 'veth' | 'tap'; mtu?: number };
  const wire = async (uid: number, a: End = {}, b: End = {}): Promise<[string, string]> => {
    const pa = quietPod(`s${uid}`);
    const pb = quietPod(`r${uid}`);
    await net.crossWire(uid, na, net.endpoint(a.kind ?? 'veth', pa, 'eth1', { mtu: a.mtu ?? 0 }), nb, net.endpoint(b.kind ?? 'veth', pb, 'eth1', { mtu: b.mtu ?? 0 }));
    return [pa, pb];
  };

  await t.test('too_big: frames larger than the receiving pod MTU', async (t) => {
    const [sender] = await wire(1, { mtu: 9000 }, { mtu: 1500 });
    const a0 = await counters(na, 1);
    const b0 = await counters(nb, 1);
    const jumbo = await rawsend(sender, 20, 9014);
    // Within what the daemon allows for two VLAN tags, but untagged: the kernel refuses it.
    const overTags = await rawsend(sender, 15, 1522);
    const fit = await rawsend(sender, 10, 1514);
    const total = jumbo + overTags + fit;
    await waitFor('the frames at nb', async () => {
      const d = delta(b0, await counters(nb, 1));
      return d.tx + d.too_big >= total;
    });
    const da = delta(a0, await atRest('na', () => counters(na, 1)));
    const db = delta(b0, await atRest('nb', () => counters(nb, 1)));
    t.equal(da.rx, total, 'na read every frame (the sending pod has MTU 9000)');
    t.equal(db.too_big, jumbo + overTags, `too_big counts the ${jumbo} jumbo and ${overTags} 1522-byte frames`);
    t.equal(db.tx, fit, 'the frames that fit were delivered');
    t.same(
      DROP_KEYS.filter((k) => k !== 'too_big' && (da[k] !== 0 || db[k] !== 0)),
      [],
      'no other cause counted anything',
    );
  });

  await t.test('truncated: GSO super-frames larger than the receive buffer', async (t) => {
    const [sender] = await wire(2);
    // veth allows super-frames up to 512 KiB once asked (BIG TCP); the daemon reads at most 64 KiB.
    sh('ip', '-n', sender, 'link', 'set', 'dev', 'eth1', 'gso_max_size', '200000');
    const a0 = await counters(na, 2);
    const b0 = await counters(nb, 2);
    const big = await rawsend(sender, 6, 100000, { gso: true });
    const fits = await rawsend(sender, 3, 60000, { gso: true });
    await waitFor('the frames counted at na', async () => {
      const d = delta(a0, await counters(na, 2));
      return d.rx + d.truncated >= big + fits;
    });
    const da = delta(a0, await atRest('na', () => counters(na, 2)));
    const db = delta(b0, await atRest('nb', () => counters(nb, 2)));
    t.equal(da.truncated, big, `truncated counts the ${big} super-frames of 100000 bytes`);
    t.equal(da.rx, fits, 'the 60000-byte super-frames were read');
    t.equal(db.tx, fits, 'and delivered whole');
    t.same(
      DROP_KEYS.filter((k) => k !== 'truncated' && (da[k] !== 0 || db[k] !== 0)),
      [],
      'no other cause counted anything',
    );
  });

  await t.test("send_error: the daemon's end of a veth is down", async (t) => {
    const [sender] = await wire(3);
    const dev = hostEnd(nb, `${net.prefix}r3`);
    // The kernel refuses to send on a down interface (ENETDOWN).
    sh('ip', '-n', nb.ns, 'link', 'set', 'dev', dev, 'down');
    let b0 = await counters(nb, 3);
    const whileDown = await rawsend(sender, 12, 200);
    await waitFor('the frames at nb', async () => delta(b0, await counters(nb, 3)).send_error >= whileDown);
    let db = delta(b0, await atRest('nb', () => counters(nb, 3)));
    t.equal(db.send_error, whileDown, `send_error counts the ${whileDown} frames sent while the interface was down`);
    t.equal(db.tx, 0, 'none was counted as sent');
    sh('ip', '-n', nb.ns, 'link', 'set', 'dev', dev, 'up');
    b0 = await counters(nb, 3);
    const after = await rawsend(sender, 5, 200);
    await waitFor('delivery again', async () => delta(b0, await counters(nb, 3)).tx >= after);
    db = delta(b0, await atRest('nb', () => counters(nb, 3)));
    t.equal(db.tx, after, 'once it is up again, frames are delivered');
    t.equal(db.send_error, 0, 'and nothing more is dropped');
  });

  await t.test('send_error: a receiving tap that is down', async (t) => {
    const [sender, receiver] = await wire(4, {}, { kind: 'tap' });
    sh('ip', '-n', receiver, 'link', 'set', 'dev', 'eth1', 'down');
    let b0 = await counters(nb, 4);
    const whileDown = await rawsend(sender, 9, 200);
    await waitFor('the frames at nb', async () => delta(b0, await counters(nb, 4)).send_error >= whileDown);
    let db = delta(b0, await atRest('nb', () => counters(nb, 4)));
    t.equal(db.send_error, whileDown, `send_error counts the ${whileDown} frames written while the pod's tap was down`);
    t.equal(db.tx, 0, 'none was counted as sent');
    sh('ip', '-n', receiver, 'link', 'set', 'dev', 'eth1', 'up');
    b0 = await counters(nb, 4);
    const after = await rawsend(sender, 4, 200);
    await waitFor('delivery again', async () => delta(b0, await counters(nb, 4)).tx >= after);
    db = delta(b0, await atRest('nb', () => counters(nb, 4)));
    t.equal(db.tx, after, 'once it is up again, frames are delivered');
    t.equal(db.send_error, 0, 'and nothing more is dropped');
  });

  await t.test('unknown_wire and malformed: a grpc-js peer sends frames for other wires and garbage', async (t) => {
    // The peer is a grpc-js server in this process, reached from na's namespace through a relay.
    const def = protoLoader.loadSync('patchwire/v1/dataplane.proto', { includeDirs: [path.join(ROOT, 'proto')], keepCase: true, longs: Number, defaults: true });
    const svc = def['patchwire.v1.DataplaneService'] as unknown as { Subscribe: grpc.MethodDefinition<unknown, unknown> };
    const encode = svc.Subscribe.responseSerialize as (r: { frames: Array<{ wire: number; vnet_hdr: Buffer; data: Buffer }>; node: string; carrier?: Array<{ wire: number; present: boolean; plugged: boolean }> }) => Buffer;
    // Responses go out as given, so a batch that is not protobuf can be sent too.
    const raw: grpc.ServiceDefinition = { Subscribe: { ...svc.Subscribe, responseSerialize: (b: Buffer) => b } };
    let call: grpc.ServerDuplexStream<{ node: string; lab: string }, Buffer> | null = null;
    const server = new grpc.Server();
    server.addService(raw, {
      Subscribe: (c: grpc.ServerDuplexStream<{ node: string; lab: string }, Buffer>) => {
        c.once('data', () => {
          // The hello, then (as a daemon does, after it) the state of its end
          // of wire 9: present and plugged, so na's end gets carrier.
          c.write(encode({ frames: [], node: 'gjs' }));
          c.write(encode({ frames: [], node: '', carrier: [{ wire: 9, present: true, plugged: true }] }));
          call = c;
        });
        c.on('error', () => undefined);
        c.on('end', () => c.end());
      },
    });
    const sock = path.join(net.dir, 'gjs.sock');
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
    t.teardown(() => server.forceShutdown());
    const relay = spawn('ip', ['netns', 'exec', na.ns, process.execPath, RELAY, '127.0.0.1:7101', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    relays.push(relay);
    await new Promise<void>((resolve, reject) => {
      relay.stdout!.once('data', () => resolve());
      relay.once('exit', (c) => reject(new Error(`relay exited with ${c}`)));
    });

    const pod = quietPod('g9');
    await na.client.addWire({ uid: 9, local: net.endpoint('veth', pod, 'eth1'), peer: { node: 'gjs', address: '127.0.0.1:7101' } });
    await waitFor('na subscribed to the grpc-js peer', async () => call !== null && (await na.client.health()).peers.some((p) => p.node === 'gjs' && p.inbound));
    // A wire end has carrier only while the path to its far daemon is whole
    // both ways: gjs also subscribes to na, as a daemon would.
    const dataSock = path.join(net.dir, 'na-data.sock');
    const back = spawn('ip', ['netns', 'exec', na.ns, process.execPath, RELAY, `unix:${dataSock}`, na.address], { stdio: ['ignore', 'pipe', 'inherit'] });
    relays.push(back);
    await new Promise<void>((resolve, reject) => {
      back.stdout!.once('data', () => resolve());
      back.once('exit', (c) => reject(new Error(`relay exited with ${c}`)));
    });
    const Client = grpc.makeGenericClientConstructor(svc as unknown as grpc.ServiceDefinition, 'DataplaneService');
    const sub = new Client(`unix://${dataSock}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & { Subscribe(): grpc.ClientDuplexStream<{ node: string; lab: string }, unknown> };
    t.teardown(() => sub.close());
    const subCall = sub.Subscribe();
    subCall.on('data', () => undefined);
    subCall.on('error', () => undefined);
    subCall.write({ node: 'gjs', lab: 'test' });
    t.teardown(() => subCall.cancel());
    await waitFor("carrier on na's end of wire 9", async () => (await na.client.listWires()).find((w) => w.spec.uid === 9)?.ends[0]?.carrier?.on === true);
    const h0 = await na.client.health();
    const c0 = await counters(na, 9);
    const w1 = await counters(na, 1);
    const frame = (i: number): Buffer => Buffer.concat([Buffer.from('0200000000090200000000fe88b5', 'hex'), Buffer.from(`PWXGJS${i}`), Buffer.alloc(40)]);
    const f = (wire: number, i: number): { wire: number; vnet_hdr: Buffer; data: Buffer } => ({ wire, vnet_hdr: Buffer.alloc(0), data: frame(i) });
    const c = call!;
    // 7 frames for a wire na does not have, 3 for a wire na has but with nb, 4 for wire 9.
    c.write(encode({ frames: [...[0, 1, 2, 3, 4, 5, 6].map((i) => f(999, i)), f(9, 100), f(1, 7), f(9, 101), f(1, 8), f(1, 9), f(9, 102), f(9, 103)], node: '' }));
    // Not protobuf ('t' is field 14 with the group-end wire type), and a frame running past its batch.
    c.write(Buffer.from('this is not a batch of frames'));
    c.write(Buffer.from([0x0a, 0x20, 0x08, 0x09, 0x1a, 0x04]));
    // The stream must survive them.
    c.write(encode({ frames: [f(9, 104), f(9, 105)], node: '' }));
    await waitFor('the frames counted at na', async () => {
      const h = await na.client.health();
      return h.unknown_wire - h0.unknown_wire >= 10 && h.malformed - h0.malformed >= 2 && (await counters(na, 9)).tx_frames - c0.tx_frames >= 6;
    });
    const h = await atRest('na health', async () => {
      const x = await na.client.health();
      return { unknown: x.unknown_wire, malformed: x.malformed, peer: x.peers.find((p) => p.node === 'gjs')! };
    });
    const d = delta(c0, await counters(na, 9));
    t.equal(h.unknown - h0.unknown_wire, 10, 'unknown_wire counts the 7 frames for wire 999 and the 3 for wire 1, which na has only with nb');
    t.equal(h.malformed - h0.malformed, 2, 'malformed counts the 2 batches that did not decode');
    t.equal(d.tx, 6, 'the 6 frames for wire 9 were delivered, before and after the garbage');
    t.equal(h.peer.frames_in - h0.peers.find((p) => p.node === 'gjs')!.frames_in, 16, 'frames_in counts the 16 frames that decoded');
    t.ok(h.peer.inbound, 'the subscription stayed up');
    t.equal(h.peer.reconnects, h0.peers.find((p) => p.node === 'gjs')!.reconnects, 'without reconnecting');
    t.equal((await counters(na, 1)).tx_frames, w1.tx_frames, 'none of them went into the pod of wire 1');
  });
});
