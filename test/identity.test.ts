// Node identities in a cluster, against the STAND-IN API server (no real API
// server runs here; see test/helpers/apiserver.ts): the real `patchwire
// signer` issues each daemon a certificate naming its node through the
// certificates API, and only for the node the requester's bound token says it
// runs on. Requests that ask for another node, come from another account or
// carry no node are denied with the reason. Certificates renew before they
// expire, and the renewal changes the identity of new connections without a
// flap of the streams already up.
import { X509Certificate, generateKeyPairSync } from 'node:crypto';

import t from 'tap';

import { wire } from '../src/native/wire.js';
import { serviceAccountUser } from './helpers/apiserver.js';
import { TestCluster } from './helpers/cluster.js';
import { sleep, waitFor } from './helpers/testnet.js';

const cluster = new TestCluster('pwea');
t.teardown(() => cluster.cleanup());

const CSR = '/apis/certificates.k8s.io/v1/certificatesigningrequests';
const NODE_EXTRA = 'authentication.kubernetes.io/node-name';

function topology(name: string, peer: string, ip: string, peerIp: string): Record<string, unknown> {
  return { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name }, spec: { links: [{ uid: 1, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1', local_ip: ip, peer_ip: peerIp }] } };
}

/** A CSR posted with `token` asking for `name`; resolves to its conditions once the signer decided. */
async function askAs(token: string, name: string, o: { dnsNames?: string[] } = {}): Promise<{ type: string; reason: string; message: string; certificate: string }> {
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const csr = wire.makeCsr({ key, name });
  let pem = csr;
  if (o.dnsNames) {
    // A request for more names than the node: made with openssl's own request builder.
    const { execFileSync } = await import('node:child_process');
    const { writeFileSync } = await import('node:fs');
    const keyFile = `${cluster.net.dir}/extra.key`;
    writeFileSync(keyFile, key);
    pem = execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', `/CN=${name}`, '-addext', `subjectAltName=${o.dnsNames.map((n) => `DNS:${n}`).join(',')}`], { encoding: 'utf8' });
  }
  const objName = `probe-${Math.random().toString(16).slice(2, 10)}`;
  const res = await fetch(`${cluster.api.url}${CSR}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ apiVersion: 'certificates.k8s.io/v1', kind: 'CertificateSigningRequest', metadata: { name: objName }, spec: { request: Buffer.from(pem).toString('base64'), signerName: 'patchwire.dev/node-identity', usages: ['digital signature', 'client auth', 'server auth'] } }),
  });
  if (res.status !== 201) throw new Error(`CSR POST: ${res.status} ${await res.text()}`);
  return waitFor(`the signer to decide ${objName}`, async () => {
    const r = await cluster.request('GET', `${CSR}/${objName}`);
    const st = r.body.status as { conditions?: Array<{ type: string; reason: string; message: string }>; certificate?: string } | undefined;
    const c = st?.conditions?.[0];
    if (!c) return undefined;
    if (c.type === 'Approved' && !st?.certificate) return undefined;
    return { ...c, certificate: st?.certificate ?? '' };
  });
}

t.test('node identities from the certificates API', async (t) => {
  await cluster.start();
  const n1 = await cluster.addNode('n1');
  const n2 = await cluster.addNode('n2');
  await waitFor('both daemons ready', async () => (await cluster.ready(n1)).code === 200 && (await cluster.ready(n2)).code === 200);

  await t.test('each daemon holds a certificate for its own node, signed by the signer', async (t) => {
    for (const n of [n1, n2]) {
      const h = await n.client.health();
      t.same(h.tls?.names, [n.name], `${n.short} presents a certificate naming ${n.name} alone`);
    }
    const cm = await cluster.request('GET', '/api/v1/namespaces/patchwire-system/configmaps/patchwire-peer-ca');
    t.equal(cm.status, 200, 'the signer published its CA certificate');
    const ca = new X509Certificate((cm.body.data as Record<string, string>)['ca.crt']!);
    t.match(ca.subject, /CN=patchwire test cluster/, 'the cluster CA');
    const list = await cluster.request('GET', CSR);
    t.same((list.body.items as unknown[]).length, 0, 'the daemons removed their requests once served');
    const made = cluster.api.requests.filter((r) => r.resource === 'certificatesigningrequests' && r.verb === 'create' && r.status === 201);
    t.same(new Set(made.map((r) => r.user)), new Set([cluster.daemonUser.name]), 'the requests were made as the daemons\' account');
  });

  await t.test('frames cross between the two identities', async (t) => {
    await cluster.createTopology('lab1', topology('r1', 'r2', '192.0.2.1/30', '192.0.2.2/30'));
    await cluster.createTopology('lab1', topology('r2', 'r1', '192.0.2.2/30', '192.0.2.1/30'));
    const r1 = await cluster.startPod('n1', 'lab1', 'r1');
    await cluster.startPod('n2', 'lab1', 'r2');
    await cluster.waitReady('lab1', 'r1', '1/1');
    await cluster.waitReady('lab1', 'r2', '1/1');
    t.equal((await cluster.exec(r1.pod, 'ping', ['-c', '2', '-W', '2', '192.0.2.2'])).code, 0, 'r1 -> r2 across nodes over mutual TLS');
    const p = (await n1.client.health()).peers.find((x) => x.node === n2.name);
    t.ok(p?.inbound && p.outbound, 'n1 and n2 stream to each other');
    t.equal((await n1.client.health()).identity_refused, 0, 'no identity was refused');
  });

  await t.test('the signer issues a certificate only for the node the requester runs on', async (t) => {
    // A token of the daemons' account, bound to a pod on n1.
    const onN1 = 'pwea-on-n1';
    cluster.api.addToken(onN1, { ...cluster.daemonUser, extra: { [NODE_EXTRA]: [n1.name] } });
    const own = await askAs(onN1, n1.name);
    t.equal(own.type, 'Approved', `its own node: approved (${own.message})`);
    const cert = new X509Certificate(Buffer.from(own.certificate, 'base64').toString());
    t.ok(cert.checkHost(n1.name, { wildcards: false }), 'for that node');
    t.equal(cert.subjectAltName, `DNS:${n1.name}`, 'and no other name');
    const other = await askAs(onN1, n2.name);
    t.equal(other.type, 'Denied', 'another node: denied');
    t.equal(other.reason, 'WrongNode');
    t.match(other.message, `asks for '${n2.name}', but its requester runs on node '${n1.name}'`, 'saying why');
    const more = await askAs(onN1, n1.name, { dnsNames: [n1.name, n2.name] });
    t.equal(more.type, 'Denied', 'more names than its node: denied');
    t.match(more.message, `beyond node '${n1.name}': ${n2.name}`);
    const stranger = 'pwea-stranger';
    cluster.api.addToken(stranger, { ...serviceAccountUser('patchwire-system', 'default'), extra: { [NODE_EXTRA]: [n1.name] } });
    // Another account of the namespace: RBAC from deploy/ refuses its request, or the signer denies it.
    const strangerAsk = await askAs(stranger, n1.name).catch((e: Error) => ({ type: 'Refused', reason: '', message: e.message, certificate: '' }));
    t.not(strangerAsk.type, 'Approved', `another account cannot get a node identity (${strangerAsk.type}: ${strangerAsk.message.slice(0, 120)})`);
    const unbound = 'pwea-unbound';
    cluster.api.addToken(unbound, cluster.daemonUser);
    const noNode = await askAs(unbound, n1.name);
    t.equal(noNode.type, 'Denied', 'a token bound to no node: denied');
    t.equal(noNode.reason, 'NoBoundNode');
  });

  await t.test('a restarted daemon keeps its identity without asking again', async (t) => {
    const before = (await n1.client.health()).tls!;
    const asked = cluster.api.requests.filter((r) => r.token === n1.token && r.verb === 'create').length;
    await cluster.net.killDaemon(n1);
    await cluster.startDaemon(n1);
    const after = (await n1.client.health()).tls!;
    t.equal(after.serial, before.serial, 'the same certificate');
    t.equal(cluster.api.requests.filter((r) => r.token === n1.token && r.verb === 'create').length, asked, 'and no new request');
  });
});

t.test('renewal before expiry, without a flap', async (t) => {
  // The signer now issues 60-second certificates: a daemon renews at two
  // thirds of the validity (it starts a minute in the past, against clock skew).
  cluster.stopSigner();
  await cluster.startSigner(['--max-lifetime-seconds', '60']);
  const n3 = await cluster.addNode('n3');
  const n4 = await cluster.addNode('n4');
  await waitFor('both daemons ready', async () => (await cluster.ready(n3)).code === 200 && (await cluster.ready(n4)).code === 200);
  await cluster.createTopology('lab2', topology('r3', 'r4', '192.0.2.5/30', '192.0.2.6/30'));
  await cluster.createTopology('lab2', topology('r4', 'r3', '192.0.2.6/30', '192.0.2.5/30'));
  const r3 = await cluster.startPod('n3', 'lab2', 'r3');
  await cluster.startPod('n4', 'lab2', 'r4');
  await cluster.waitReady('lab2', 'r3', '1/1');
  await cluster.waitReady('lab2', 'r4', '1/1');
  const h0 = await n3.client.health();
  const peer0 = h0.peers.find((p) => p.node === n4.name)!;
  t.ok(peer0.inbound && peer0.outbound, 'n3 and n4 stream to each other');
  const first = h0.tls!;
  t.ok(first.not_after - Date.now() / 1000 <= 61, `the first certificate lasts a minute (until ${new Date(first.not_after * 1000).toISOString()})`);
  // A ping every 200 ms across the renewal: none may be lost.
  const ping = cluster.net.spawnIn(r3.pod.netns, 'ping', ['-i', '0.2', '-c', '200', '-W', '1', '192.0.2.6']);
  let out = '';
  ping.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  const renewed = await waitFor(
    'n3 to take a renewed certificate',
    async () => {
      const h = await n3.client.health();
      return h.tls && h.tls.serial !== first.serial ? h : undefined;
    },
    60000,
  );
  t.equal(renewed.tls?.rotations, 1, 'one rotation');
  t.ok((renewed.tls?.not_after ?? 0) > first.not_after, 'the new certificate lasts longer');
  t.equal(renewed.tls?.last_rotation_error, '', 'taken without error');
  const peer1 = renewed.peers.find((p) => p.node === n4.name)!;
  t.equal(peer1.reconnects, peer0.reconnects, 'the stream to n4 was not reconnected');
  t.ok(peer1.inbound && peer1.outbound, 'and is up');
  await sleep(1000);
  ping.kill('SIGINT');
  await new Promise((r) => ping.once('exit', r));
  const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
  t.ok(m, `ping summary (${out.trim().split('\n').pop()})`);
  t.equal(m?.[2], m?.[1], 'no ping lost across the renewal');
});
