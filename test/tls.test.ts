// The data plane with mutual TLS and per-node identities: each daemon holds
// a certificate naming its own node, and both sides check that the node they
// reach, or that reaches them, is the node its certificate names. A peer
// without a certificate of our CA never gets a stream; a certificate of node
// X used to claim node Y is refused both ways and counted; a daemon refuses
// to start with a certificate for another node; a renewed certificate is
// taken for new connections without a flap of the streams already up; and a
// flood of connections that never say which node they are is bounded. Each
// refusal is visible in health.
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import t from 'tap';

import { makeCa, makeNodeIdentity, type NodeIdentityFiles } from '../src/tls/identity.js';
import { ROOT, TestNet, rejectionDetails, run, spawnSyncQuiet, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwtt');
const RELAY = path.join(ROOT, 'test', 'tools', 'relay.mjs');
t.teardown(async () => {
  spawnSyncQuiet('pkill', ['-9', '-f', `relay.mjs .*${net.dir}`]);
  await net.cleanup();
});

const caDir = path.join(net.dir, 'ca');
const otherCaDir = path.join(net.dir, 'other-ca');
/** node name of a short name, as TestNet names nodes */
const nodeName = (short: string): string => `${net.prefix}${short}`;
const tlsArgs = (id: NodeIdentityFiles): string[] => ['--tls-cert', id.cert, '--tls-key', id.key, '--tls-ca', id.ca];

t.test('mutual TLS between daemons', async (t) => {
  await makeCa(caDir, 'test CA');
  await makeCa(otherCaDir, 'another CA');
  const idA = await makeNodeIdentity(caDir, path.join(net.dir, 'na'), nodeName('na'));
  const idB = await makeNodeIdentity(caDir, path.join(net.dir, 'nb'), nodeName('nb'));
  const na = await net.addNode('na', { extraArgs: tlsArgs(idA) });
  const nb = await net.addNode('nb', { extraArgs: tlsArgs(idB) });
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  await net.crossWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.1.1/24'] }), nb, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.1.2/24'] }));
  t.equal((await net.exec(p1, 'ping', ['-c', '2', '-W', '2', '198.19.1.2'])).code, 0, 'frames cross a TLS wire');
  const h0 = await na.client.health();
  t.equal(h0.tls_refused, 0, 'a peer with the right certificate is never counted as refused');
  t.same(h0.tls?.names, [na.name], 'na presents a certificate naming its own node');
  t.ok((h0.tls?.not_after ?? 0) > Date.now() / 1000, 'and says when it expires');

  /** na's refusal count after `step`, which must add exactly one refusal from `ip`. */
  const refusedOnce = async (what: string, ip: string, reason: RegExp, step: () => Promise<void>): Promise<void> => {
    const before = (await na.client.health()).tls_refused;
    await step();
    const h = await waitFor(`na to count ${what}`, async () => {
      const x = await na.client.health();
      return x.tls_refused > before ? x : undefined;
    });
    t.equal(h.tls_refused, before + 1, `${what}: na counts exactly one refused connection`);
    t.match(h.last_tls_refusal, new RegExp(`^(::ffff:)?${ip.replace(/\./g, '\\.')}: `), `${what}: the refusal names the client's address`);
    t.match(h.last_tls_refusal, reason, `${what}: and says why (${h.last_tls_refusal})`);
    t.same(
      h.peers.map((p) => p.node),
      [nb.name],
      `${what}: no stream for it`,
    );
  };

  await t.test('a daemon of another CA is refused both ways', async (t) => {
    const nc = await net.addNode('nc', { extraArgs: tlsArgs(await makeNodeIdentity(otherCaDir, path.join(net.dir, 'nc'), nodeName('nc'))) });
    const p3 = net.addPod('p3');
    // Which side gives up first is a race: nc refusing na's certificate shows as a hang-up.
    await refusedOnce('a client of another CA', nc.ip, /certificate|unknown ca|hang up/i, async () => {
      t.match(
        await rejectionDetails(nc.client.addWire({ uid: 2, local: net.endpoint('veth', p3, 'eth1'), peer: { node: na.name, address: na.address } })),
        /cannot be reached/,
        'a daemon of another CA cannot reach the peer',
      );
    });
    t.notOk((await net.exec(p3, 'ip', ['link', 'show', 'eth1'])).code === 0, 'and nothing was created');
  });

  await t.test('a client that trusts our CA but presents a foreign certificate is refused by the server', async (t) => {
    // nd checks na's certificate against the right CA, so only na can refuse.
    const foreign = await makeNodeIdentity(otherCaDir, path.join(net.dir, 'nd'), nodeName('nd'));
    const nd = await net.addNode('nd', { extraArgs: tlsArgs({ ...foreign, ca: idA.ca }) });
    const p4 = net.addPod('p4');
    await refusedOnce('a foreign client certificate', nd.ip, /certificate|issuer/i, async () => {
      t.match(
        await rejectionDetails(nd.client.addWire({ uid: 3, local: net.endpoint('veth', p4, 'eth1'), peer: { node: na.name, address: na.address } })),
        /cannot be reached/,
        'the client is refused',
      );
    });
  });

  await t.test('a client without a certificate is refused by the server', async (t) => {
    // openssl as an independent client, on a node of the underlay without a daemon.
    const nx = await net.addNode('nx', { start: false });
    let out = '';
    await refusedOnce('a client without a certificate', nx.ip, /certificate/i, async () => {
      const r = await net.exec(nx.ns, 'openssl', ['s_client', '-connect', na.address, '-CAfile', idA.ca, '-verify_hostname', na.name, '-verify_return_error', '-alpn', 'h2'], {
        input: '',
        timeoutMs: 10000,
      });
      out = r.stdout + r.stderr;
    });
    t.match(out, /Verify return code: 0 \(ok\)/, 'the client itself accepted the server certificate');
    // openssl offers AES-256-GCM first; the daemon's own order (cheaper per frame) wins.
    t.match(out, /Cipher is TLS_AES_128_GCM_SHA256/, 'the daemon picks AES-128-GCM');
  });

  await t.test('a daemon holding another node\'s certificate is refused as that node', async (t) => {
    // nf holds a certificate for itself; ne is told that node na lives at
    // nf's address. ne must refuse it: the certificate does not name na.
    const ne = await net.addNode('ne', { extraArgs: tlsArgs(await makeNodeIdentity(caDir, path.join(net.dir, 'ne'), nodeName('ne'))) });
    const nf = await net.addNode('nf', { extraArgs: tlsArgs(await makeNodeIdentity(caDir, path.join(net.dir, 'nf'), nodeName('nf'))) });
    const p5 = net.addPod('p5');
    t.match(
      await rejectionDetails(ne.client.addWire({ uid: 4, local: net.endpoint('veth', p5, 'eth1'), peer: { node: na.name, address: nf.address } })),
      /cannot be reached.*(altnames|does not match|hostname mismatch)/i,
      'a wire to "na" at nf\'s address is refused',
    );
    // The engine's own check: a wire restored from the state file is not
    // probed first, so the engine's subscription itself must refuse nf.
    await ne.client.addWire({ uid: 6, local: net.endpoint('veth', p5, 'eth2'), peer: { node: na.name, address: na.address } });
    await net.killDaemon(ne);
    writeFileSync(ne.state, readFileSync(ne.state, 'utf8').split(na.address).join(nf.address));
    await net.startDaemon(ne, tlsArgs(await makeNodeIdentity(caDir, path.join(net.dir, 'ne'), nodeName('ne'))));
    const peer = await waitFor('the refusal in ne health', async () => (await ne.client.health()).peers.find((p) => p.node === na.name && p.last_error));
    t.equal(peer.inbound, false, 'the subscription is not up');
    t.equal(peer.address, nf.address, 'it was made to nf');
    t.match(peer.last_error, new RegExp(`does not hold a certificate for node '${na.name}'`), `last_error names the node it expected (${peer.last_error})`);
    t.equal((await ne.client.listWires())[0]?.state, 'WIRE_STATE_DOWN', 'the wire is down');
    t.equal((await nf.client.health()).peers.length, 0, 'nf never got a stream');
  });

  await t.test('a subscriber whose certificate names another node than its hello is refused and counted', async (t) => {
    // A grpc-js client with a valid certificate for node "ni" says it is nb.
    // If na believed the hello, it would send this client what it sends nb
    // and cut nb's real stream.
    const ni = await makeNodeIdentity(caDir, path.join(net.dir, 'ni'), nodeName('ni'));
    const sock = path.join(net.dir, 'na-data.sock');
    const relay = spawn('ip', ['netns', 'exec', na.ns, process.execPath, RELAY, `unix:${sock}`, na.address], { stdio: ['ignore', 'pipe', 'inherit'] });
    t.teardown(() => relay.kill('SIGKILL'));
    await new Promise<void>((resolve, reject) => {
      relay.stdout!.once('data', () => resolve());
      relay.once('exit', (c) => reject(new Error(`relay exited with ${c}`)));
    });
    const def = protoLoader.loadSync('patchwire/v1/dataplane.proto', { includeDirs: [path.join(ROOT, 'proto')], keepCase: true, longs: Number, defaults: true });
    const Dataplane = (grpc.loadPackageDefinition(def) as unknown as { patchwire: { v1: { DataplaneService: grpc.ServiceClientConstructor } } }).patchwire.v1.DataplaneService;
    const creds = grpc.credentials.createSsl(readFileSync(ni.ca), readFileSync(ni.key), readFileSync(ni.cert));
    const client = new Dataplane(`unix://${sock}`, creds, { 'grpc.ssl_target_name_override': na.name, 'grpc.default_authority': na.name }) as unknown as grpc.Client & {
      subscribe(): grpc.ClientDuplexStream<{ node: string; lab: string }, unknown>;
    };
    t.teardown(() => client.close());
    const before = await na.client.health();
    const nbBefore = before.peers.find((p) => p.node === nb.name)!;
    const call = client.subscribe();
    const got: unknown[] = [];
    const err = await new Promise<grpc.ServiceError | null>((resolve) => {
      call.on('error', resolve);
      call.on('data', (d) => got.push(d));
      call.write({ node: nb.name, lab: 'test' });
      setTimeout(() => resolve(null), 8000);
    });
    call.cancel();
    t.equal(got.length, 0, 'the impostor gets no hello and no frames');
    t.equal(err?.code, grpc.status.PERMISSION_DENIED, 'the stream is refused with PERMISSION_DENIED');
    t.match(err?.details, `names '${nodeName('ni')}', not node '${nb.name}'`, `saying whose certificate it is (${err?.details})`);
    const after = await na.client.health();
    t.equal(after.identity_refused, before.identity_refused + 1, 'na counts one identity refusal');
    t.equal(after.tls_refused, before.tls_refused + 1, 'also among the TLS refusals');
    t.match(after.last_tls_refusal, `not node '${nb.name}'`, 'and says why');
    const nbAfter = after.peers.find((p) => p.node === nb.name)!;
    t.ok(nbAfter.inbound && nbAfter.outbound, "nb's own streams stay up");
    t.equal(nbAfter.reconnects, nbBefore.reconnects, 'and were not cut');
    t.equal((await net.exec(p1, 'ping', ['-c', '2', '-W', '2', '198.19.1.2'])).code, 0, 'frames still cross to the real nb');
  });

  await t.test('a daemon refuses to start with a certificate that does not name its node', async (t) => {
    const r = await run(process.execPath, [path.join(ROOT, 'bin', 'patchwire.js'), 'daemon', '--node', 'someone-else', '--listen', '127.0.0.1:0', '--control', `unix://${net.dir}/x.sock`, ...tlsArgs(idA)], { timeoutMs: 20000 });
    t.not(r.code, 0, 'it exits non-zero');
    t.match(r.stderr, `TLS certificate names '${na.name}', not this node 'someone-else'`, 'naming both');
  });

  await t.test('a renewed certificate is taken for new connections without a flap', async (t) => {
    const before = await na.client.health();
    const nbBefore = before.peers.find((p) => p.node === nb.name)!;
    const renewed = await makeNodeIdentity(caDir, path.join(net.dir, 'na-renewed'), na.name);
    // A certificate that does not fit the key beside it (a writer halfway) is refused and the old identity stays.
    copyFileSync(renewed.cert, idA.cert);
    const half = await waitFor('the half-written rotation to be refused', async () => {
      const h = await na.client.health();
      return h.tls?.last_rotation_error ? h : undefined;
    });
    t.match(half.tls?.last_rotation_error, /key does not match/, `a mismatched key is refused (${half.tls?.last_rotation_error})`);
    t.equal(half.tls?.serial, before.tls?.serial, 'and the identity stays as it was');
    copyFileSync(renewed.key, idA.key);
    const after = await waitFor('the renewed identity in health', async () => {
      const h = await na.client.health();
      return h.tls && h.tls.serial !== before.tls?.serial && h.tls.rotations === (before.tls?.rotations ?? 0) + 1 ? h : undefined;
    });
    t.equal(after.tls?.last_rotation_error, '', 'the complete pair is taken');
    const nbAfter = after.peers.find((p) => p.node === nb.name)!;
    t.equal(nbAfter.reconnects, nbBefore.reconnects, 'the stream to nb was not reconnected');
    t.ok(nbAfter.inbound && nbAfter.outbound, 'and is up');
    t.equal((await net.exec(p1, 'ping', ['-c', '2', '-W', '2', '198.19.1.2'])).code, 0, 'frames cross');
    // A new connection sees the new certificate (its serial, from openssl as the client).
    const nx = net.nodes.get('nx')!;
    const r = await net.exec(nx.ns, 'sh', ['-c', `openssl s_client -connect ${na.address} -CAfile ${idA.ca} -cert ${renewed.cert} -key ${renewed.key} -alpn h2 </dev/null 2>/dev/null | openssl x509 -noout -serial`], { timeoutMs: 10000 });
    t.equal(r.stdout.trim().replace(/^serial=/, '').replace(/^0+/, ''), (after.tls?.serial ?? '').replace(/^0+/, ''), 'a new connection is served the renewed certificate');
  });

  await t.test('connections that never say which node they are are bounded', async (t) => {
    const nx = net.nodes.get('nx')!;
    const before = await na.client.health();
    // 40 TCP connections from one address that send nothing: 32 may wait in the handshake, the rest are closed at once.
    const py = `import socket,time\nss=[]\nfor i in range(40):\n s=socket.create_connection(('${na.ip}',${na.address.split(':')[1]}),timeout=3); ss.append(s)\ntime.sleep(1.5)\nprint('ok')`;
    const r = await net.exec(nx.ns, 'python3', ['-c', py], { timeoutMs: 20000 });
    t.match(r.stdout, 'ok', 'the client opened its connections');
    const after = await waitFor('refusals in health', async () => {
      const h = await na.client.health();
      return h.refused_connections >= before.refused_connections + 8 ? h : undefined;
    });
    t.equal(after.refused_connections - before.refused_connections, 8, '8 of 40 are refused (32 may wait in the handshake)');
    t.match(after.last_connection_refusal, `${nx.ip}: 32 connections from this address have not proved which node they are`, 'saying from where and why');
    t.equal((await net.exec(p1, 'ping', ['-c', '2', '-W', '2', '198.19.1.2'])).code, 0, 'frames still cross');
  });

  await waitFor('health', async () => (await nb.client.health()).peers.some((p) => p.node === na.name && p.inbound && p.outbound));
});
