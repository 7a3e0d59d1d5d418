// The data plane with mutual TLS: peers with certificates from the lab's CA
// carry frames; a peer without one never gets a stream. The server side is
// tested with clients that trust the right CA themselves (so only the server
// can be the one refusing): one with a certificate of another CA, one with no
// certificate; and a client that checks the server against a name the
// server's certificate does not carry must refuse it. Each refusal is visible
// in health.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { TestNet, rejectionDetails, sh, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwtt');
t.teardown(() => net.cleanup());

interface Certs {
  ca: string;
  cert: string;
  key: string;
  otherCa: string;
  otherCert: string;
  otherKey: string;
}

function makeCerts(dir: string): Certs {
  const f = (n: string): string => path.join(dir, n);
  writeFileSync(f('san.cnf'), 'subjectAltName=DNS:patchwire\n');
  for (const who of ['ca', 'other-ca']) {
    sh('openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f(`${who}.key`), '-out', f(`${who}.crt`), '-days', '1', '-subj', `/CN=${who}`);
  }
  for (const [who, ca] of [
    ['node', 'ca'],
    ['other', 'other-ca'],
  ]) {
    sh('openssl', 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`), '-subj', '/CN=patchwire');
    sh('openssl', 'x509', '-req', '-in', f(`${who}.csr`), '-CA', f(`${ca}.crt`), '-CAkey', f(`${ca}.key`), '-CAcreateserial', '-out', f(`${who}.crt`), '-days', '1', '-extfile', f('san.cnf'));
  }
  return { ca: f('ca.crt'), cert: f('node.crt'), key: f('node.key'), otherCa: f('other-ca.crt'), otherCert: f('other.crt'), otherKey: f('other.key') };
}

t.test('mutual TLS between daemons', async (t) => {
  const c = makeCerts(net.dir);
  const tls = ['--tls-cert', c.cert, '--tls-key', c.key, '--tls-ca', c.ca];
  const na = await net.addNode('na', { extraArgs: tls });
  const nb = await net.addNode('nb', { extraArgs: tls });
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  await net.crossWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.1.1/24'] }), nb, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.1.2/24'] }));
  t.equal((await net.exec(p1, 'ping', ['-c', '2', '-W', '2', '198.19.1.2'])).code, 0, 'frames cross a TLS wire');
  t.equal((await na.client.health()).tls_refused, 0, 'a peer with the right certificate is never counted as refused');

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
    const nc = await net.addNode('nc', { extraArgs: ['--tls-cert', c.otherCert, '--tls-key', c.otherKey, '--tls-ca', c.otherCa] });
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
    const nd = await net.addNode('nd', { extraArgs: ['--tls-cert', c.otherCert, '--tls-key', c.otherKey, '--tls-ca', c.ca] });
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
      const r = await net.exec(nx.ns, 'openssl', ['s_client', '-connect', na.address, '-CAfile', c.ca, '-verify_hostname', 'patchwire', '-verify_return_error', '-alpn', 'h2'], {
        input: '',
        timeoutMs: 10000,
      });
      out = r.stdout + r.stderr;
    });
    t.match(out, /Verify return code: 0 \(ok\)/, 'the client itself accepted the server certificate');
  });

  await t.test('a client that expects another server name refuses the server', async (t) => {
    // Started with the right name, ne gets a wire to na; restarted expecting a
    // name na's certificate does not carry, its subscription must fail.
    const ne = await net.addNode('ne', { extraArgs: tls });
    const p5 = net.addPod('p5');
    await ne.client.addWire({ uid: 4, local: net.endpoint('veth', p5, 'eth1'), peer: { node: na.name, address: na.address } });
    await waitFor('ne subscribed to na', async () => (await ne.client.health()).peers.some((p) => p.node === na.name && p.inbound));
    await net.killDaemon(ne);
    await net.startDaemon(ne, [...tls, '--tls-server-name', 'wrong.example']);
    const peer = await waitFor('the refusal in ne health', async () => (await ne.client.health()).peers.find((p) => p.node === na.name && p.last_error));
    t.equal(peer.inbound, false, 'the subscription is not up');
    t.match(peer.last_error, /altnames|does not match|hostname mismatch/i, `last_error says the certificate does not match the name (${peer.last_error})`);
    t.equal((await ne.client.listWires())[0]?.state, 'WIRE_STATE_DOWN', 'the wire is down');
    const p6 = net.addPod('p6');
    t.match(
      await rejectionDetails(ne.client.addWire({ uid: 5, local: net.endpoint('veth', p6, 'eth1'), peer: { node: na.name, address: na.address } })),
      /cannot be reached.*(altnames|does not match|hostname mismatch)/i,
      'a new wire to na is refused for the same reason',
    );
  });

  await waitFor('health', async () => (await nb.client.health()).peers.some((p) => p.node === na.name && p.inbound && p.outbound));
});
