// The data plane speaks gRPC on node:http2 itself (src/dataplane/grpc-wire.ts).
// These tests hold it to grpc-js and proto-loader: a grpc-js client subscribes
// to a daemon and decodes a wire's frames with proto-loader, and a daemon
// subscribes to a grpc-js server and puts the frames it sends into a pod.
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import t from 'tap';

import { ROOT, TestNet, sleep, spawnSyncQuiet, waitFor } from './helpers/testnet.js';

const RELAY = path.join(ROOT, 'test', 'tools', 'relay.mjs');
const net = new TestNet('pwti');
const relays: ChildProcess[] = [];
t.teardown(async () => {
  for (const r of relays) r.kill('SIGKILL');
  spawnSyncQuiet('pkill', ['-9', '-f', `relay.mjs .*${net.dir}`]);
  await net.cleanup();
});

interface Frame {
  wire: number;
  vnet_hdr: Buffer;
  data: Buffer;
}
interface Response {
  frames: Frame[];
  node: string;
  carrier?: Array<{ wire: number; present: boolean; plugged: boolean }>;
}
const def = protoLoader.loadSync('patchwire/v1/dataplane.proto', { includeDirs: [path.join(ROOT, 'proto')], keepCase: true, longs: Number, defaults: true });
const pkg = grpc.loadPackageDefinition(def) as unknown as {
  patchwire: { v1: { DataplaneService: grpc.ServiceClientConstructor & { service: grpc.ServiceDefinition } } };
};
const Dataplane = pkg.patchwire.v1.DataplaneService;

async function relay(ns: string, from: string, to: string): Promise<void> {
  const r = spawn('ip', ['netns', 'exec', ns, process.execPath, RELAY, from, to], { stdio: ['ignore', 'pipe', 'inherit'] });
  relays.push(r);
  await new Promise<void>((resolve, reject) => {
    r.stdout!.once('data', () => resolve());
    r.once('exit', (c) => reject(new Error(`relay exited with ${c}`)));
  });
}

const WIRE = 77;
const GJS_NODE = 'grpcjs';
const GJS_PORT = 7100;
// A frame with an experimental EtherType, so nothing in the pod sends one.
const MARK = Buffer.from('patchwire interop frame');
const FRAME = Buffer.concat([Buffer.from('ffffffffffff02000000770188b5', 'hex'), MARK, Buffer.alloc(20)]);

t.test('gRPC interop of the Subscribe stream', async (t) => {
  const a = await net.addNode('a');
  const p1 = net.addPod('p1');
  const dataSock = path.join(net.dir, 'a-data.sock');
  const gjsSock = path.join(net.dir, 'gjs.sock');
  // The test reaches the daemon's data port, and the daemon the grpc-js server, through relays.
  await relay(a.ns, `unix:${dataSock}`, a.address);

  // A grpc-js server that feeds FRAME to whoever subscribes, every 100 ms.
  const seen: Array<{ node: string; lab: string }> = [];
  const server = new grpc.Server();
  server.addService(Dataplane.service, {
    subscribe: (call: grpc.ServerDuplexStream<{ node: string; lab: string }, Response>) => {
      let timer: NodeJS.Timeout | null = null;
      call.once('data', (hello: { node: string; lab: string }) => {
        seen.push(hello);
        // The hello, then (as a daemon does, after it) the state of its end
        // of the wire, so the daemon's end gets carrier.
        call.write({ frames: [], node: GJS_NODE });
        call.write({ frames: [], node: '', carrier: [{ wire: WIRE, present: true, plugged: true }] });
        timer = setInterval(() => call.write({ frames: [{ wire: WIRE, vnet_hdr: Buffer.alloc(0), data: FRAME }], node: '' }), 100);
      });
      const stop = (): void => {
        if (timer) clearInterval(timer);
      };
      call.on('cancelled', stop);
      call.on('error', stop);
      call.on('end', () => {
        stop();
        call.end();
      });
    },
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${gjsSock}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  t.teardown(() => server.forceShutdown());
  await relay(a.ns, `127.0.0.1:${GJS_PORT}`, gjsSock);

  const client = new Dataplane(`unix://${dataSock}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    subscribe(): grpc.ClientDuplexStream<{ node: string; lab: string }, Response>;
  };
  t.teardown(() => client.close());

  await t.test('a grpc-js client of another lab is refused with PERMISSION_DENIED', async (t) => {
    const call = client.subscribe();
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      call.on('error', resolve);
      call.on('data', () => undefined);
      call.write({ node: 'intruder', lab: 'other' });
    });
    t.equal(err.code, grpc.status.PERMISSION_DENIED);
    t.match(err.details, `serves lab 'test', not 'other'`);
  });

  await t.test('an unknown method is UNIMPLEMENTED', async (t) => {
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      client.makeUnaryRequest('/patchwire.v1.DataplaneService/Nope', (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), (e) => resolve(e)),
    );
    t.equal(err?.code, grpc.status.UNIMPLEMENTED);
    t.match(err?.details, 'unknown method /patchwire.v1.DataplaneService/Nope');
  });

  await t.test('frames a pod sends reach a grpc-js subscriber, decoded by proto-loader', async (t) => {
    await a.client.addWire({ uid: WIRE, local: net.endpoint('veth', p1, 'eth1', { mac: '02:00:00:00:00:01' }), peer: { node: GJS_NODE, address: `127.0.0.1:${GJS_PORT}` } });
    const call = client.subscribe();
    const got: Response[] = [];
    call.on('data', (r: Response) => got.push(r));
    call.on('error', () => undefined);
    call.write({ node: GJS_NODE, lab: 'test' });
    await waitFor('hello from the daemon', () => got.length > 0);
    t.equal(got[0]!.node, a.name, 'the first message is the hello with the daemon node name');
    t.same(got[0]!.frames, [], 'and no frames');
    // IPv6 router solicitations and ARP: whatever the pod sends, the wire carries.
    await net.exec(p1, 'ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'eth1']);
    const ping = net.spawnIn(p1, 'ping', ['-c', '30', '-i', '0.2', '10.77.0.2']);
    t.teardown(() => ping.kill());
    const arp = await waitFor('an ARP request on the stream', () =>
      got.flatMap((r) => r.frames).find((f) => f.data.length >= 42 && f.data.readUInt16BE(12) === 0x0806 && f.data.readUInt16BE(20) === 1),
    );
    t.equal(arp.wire, WIRE, 'addressed to the wire');
    t.equal(arp.data.subarray(6, 12).toString('hex'), '020000000001', 'from the pod interface');
    t.equal(arp.data.subarray(38, 42).join('.'), '10.77.0.2', 'asking for the pinged address');
    call.cancel();
  });

  await t.test('a daemon subscribes to a grpc-js server and delivers its frames', async (t) => {
    await waitFor('the daemon subscribed to the grpc-js server', () => seen.some((h) => h.node === a.name));
    t.same(seen.find((h) => h.node === a.name), { node: a.name, lab: 'test' }, 'its hello names node and lab');
    const dump = await net.exec(p1, 'timeout', ['10', 'tcpdump', '-i', 'eth1', '-c', '1', '-x', '-n', 'ether proto 0x88b5']);
    const hex = dump.stdout.replace(/^.*?0x[0-9a-f]+:\s*/gm, '').replace(/\s+/g, '');
    t.ok(hex.includes(MARK.toString('hex')), 'the frame from the grpc-js server left eth1 in the pod');
    const health = await a.client.health();
    if (!hex.includes(MARK.toString('hex'))) t.comment(JSON.stringify(health), dump.stdout, dump.stderr);
    const peer = health.peers.find((p) => p.node === GJS_NODE);
    t.ok(peer?.inbound, 'the daemon reports its subscription up');
    t.ok((peer?.frames_in ?? 0) > 0, 'and counts the frames in');
  });

  await t.test('a daemon says why a peer refuses its subscription', async (t) => {
    const b = await net.addNode('b', { extraArgs: ['--insecure', '--lab', 'other', '--rt-priority', '2'] });
    const hb = await b.client.health();
    t.equal(hb.rt_priority, 2, 'health reports the real-time priority asked for');
    t.equal(hb.keeps_freed_memory, true, 'and that the allocator keeps freed memory (glibc here)');
    const p2 = net.addPod('p2');
    await a.client.addWire({ uid: WIRE + 1, local: net.endpoint('veth', p2, 'eth1'), peer: { node: b.name, address: b.address } });
    const peer = await waitFor('the refusal in health', async () => (await a.client.health()).peers.find((p) => p.node === b.name && p.last_error));
    t.equal(peer.inbound, false, 'the subscription is down');
    t.equal(peer.last_error, `peer refused the stream: daemon ${b.name} serves lab 'other', not 'test' (gRPC status 7)`);
    t.ok(peer.reconnects > 0, 'and retried with backoff');
  });
});
