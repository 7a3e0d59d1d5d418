// The data plane with mutual TLS: peers with certificates from the lab's CA
// carry frames; a peer without one never gets a stream.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { TestNet, rejectionDetails, sh, sleep, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwtt');
t.teardown(() => net.cleanup());

function makeCerts(dir: string): { ca: string; cert: string; key: string; otherCa: string; otherCert: string; otherKey: string } {
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
  const nc = await net.addNode('nc', { extraArgs: ['--tls-cert', c.otherCert, '--tls-key', c.otherKey, '--tls-ca', c.otherCa] });
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  await net.crossWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.1.1/24'] }), nb, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.1.2/24'] }));
  t.equal((await net.exec(p1, 'ping', ['-c', '2', '-W', '2', '198.19.1.2'])).code, 0, 'frames cross a TLS wire');

  // nc's certificate comes from another CA: na must not accept it, nor it na.
  const p3 = net.addPod('p3');
  t.match(
    await rejectionDetails(nc.client.addWire({ uid: 2, local: net.endpoint('veth', p3, 'eth1'), peer: { node: na.name, address: na.address } })),
    /cannot be reached/,
    'a daemon of another CA cannot reach the peer',
  );
  t.notOk((await net.exec(p3, 'ip', ['link', 'show', 'eth1'])).code === 0, 'and nothing was created');
  await sleep(500);
  const h = await na.client.health();
  t.notOk(h.peers.some((p) => p.node === nc.name), 'na never accepted a stream from nc');
  await waitFor('health', async () => (await nb.client.health()).peers.some((p) => p.node === na.name && p.inbound && p.outbound));
});
