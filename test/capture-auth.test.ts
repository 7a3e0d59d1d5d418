// Capture is scoped and authenticated (#14, item 4).
// Lab mode: two real labs (`patchwire up`); each lab's token (mode 0600 in the
// lab's directory) opens its own daemons' capture port and no other's; errors
// never list another lab's wires; a wire end named many times is captured
// once; a caller's fifth session at once is refused; `patchwire capture`
// sends the token over the control socket and a wrong one is refused.
// Cluster mode: real daemons against the STAND-IN API server
// (test/helpers/apiserver.ts), which answers TokenReview and
// SubjectAccessReview over their real HTTP protocol from its tokens and RBAC:
// an unknown token gets 401, a user without `get pods/capture` in the
// namespace 403, a user with it the frames; answers are cached.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { serviceAccountUser, type UserInfo } from './helpers/apiserver.js';
import { TestCluster } from './helpers/cluster.js';
import { sendFrames, waitUntil } from './helpers/frames.js';
import { pw, pwOk } from './helpers/labcli.js';
import { parsePcapng, type PcapngFile } from './helpers/pcap.js';
import { TestNet } from './helpers/testnet.js';

const LAB1 = 'pwhl1';
const LAB2 = 'pwhl2';
const net = new TestNet('pwhb');

function marked(tag: string, n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const f = Buffer.alloc(100, 0x5a);
    Buffer.from('02ee0000000202ee0000000188b5', 'hex').copy(f);
    f.write(`${tag}${String(i).padStart(5, '0')}`, 14, 'ascii');
    return f;
  });
}
const count = (f: PcapngFile, tag: string): number => f.packets.filter((p) => p.data.includes(Buffer.from(tag))).length;

/** curl inside a namespace: status code, body as bytes. */
async function curl(ns: string, url: string, token?: string): Promise<{ code: number; body: Buffer }> {
  const out = path.join(net.dir, `curl-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  const r = await net.exec(ns, 'curl', ['-s', '-o', out, '-w', '%{http_code}', ...(token === undefined ? [] : ['-H', `Authorization: Bearer ${token}`]), url]);
  let body = Buffer.alloc(0);
  try {
    body = readFileSync(out);
  } catch {
    /* no body */
  }
  return { code: Number(r.stdout), body };
}

t.test('lab mode: the lab token opens its own lab only', async (t) => {
  t.teardown(async () => {
    await pw('down', LAB1);
    await pw('down', LAB2);
  });
  await pw('down', LAB1);
  await pw('down', LAB2);
  const topo = (pods: [string, string]): string => {
    const f = path.join(net.dir, `${pods[0]}.clab.yml`);
    writeFileSync(f, `name: x\ntopology:\n  nodes:\n    ${pods[0]}: {}\n    ${pods[1]}: {}\n  links:\n    - endpoints: ["${pods[0]}:eth1", "${pods[1]}:eth1"]\n`);
    return f;
  };
  await pwOk('up', '-f', topo(['a1', 'a2']), '--name', LAB1);
  await pwOk('up', '-f', topo(['b1', 'b2']), '--name', LAB2);
  const tokenFile = (lab: string): string => `/run/patchwire/labs/${lab}/capture.token`;
  const st = statSync(tokenFile(LAB1));
  t.equal(st.mode & 0o777, 0o600, 'the token file is mode 0600');
  t.equal(st.uid, 0, 'owned by the user who ran up (root here)');
  const token1 = readFileSync(tokenFile(LAB1), 'utf8').trim();
  const token2 = readFileSync(tokenFile(LAB2), 'utf8').trim();
  t.not(token1, token2, 'each lab has its own token');

  // a1 is on node1 (198.18.0.2) in both labs' own underlays.
  const node1 = `pwn-${LAB1}-node1`;
  const url = (q: string): string => `http://198.18.0.2:8080${q}`;
  const frames = marked('PWHAUTH', 30);
  await sendFrames(net, `pw-${LAB1}-a1`, 'eth1', frames);

  const none = await curl(node1, url('/capture?wire=a1/eth1'));
  t.equal(none.code, 401, 'no token: 401');
  t.notMatch(none.body.toString(), /eth1/, 'and the answer names no wire end');
  const other = await curl(node1, url('/capture?wire=a1/eth1'), token2);
  t.equal(other.code, 401, "the other lab's token: 401");
  t.notMatch(other.body.toString(), /eth1/, 'naming no wire end either');
  const probe = await curl(node1, url('/capture?wire=zz/eth9'), token2);
  t.equal(probe.code, 401, "the other lab's token cannot even learn that a wire end is missing");

  let f: PcapngFile | null = null;
  const ok = await waitUntil(async () => {
    const r = await curl(node1, url('/capture?wire=a1/eth1'), token1);
    if (r.code !== 200) return false;
    f = parsePcapng(r.body);
    return count(f, 'PWHAUTH') === frames.length;
  });
  t.ok(ok, `the lab's token: 200 and a pcapng with all ${frames.length} frames sent (${f ? count(f, 'PWHAUTH') : 'none'})`);

  const missing = await curl(node1, url('/capture?wire=zz/eth9'), token1);
  t.equal(missing.code, 404, 'unknown wire end: 404');
  t.match(missing.body.toString(), /a1\/eth1/, "the lab's owner is told the lab's own wire ends");
  t.notMatch(missing.body.toString(), /b1|b2/, "and never another lab's");
  const cross = await curl(node1, url('/capture?wire=b1/eth1'), token1);
  t.equal(cross.code, 404, "another lab's wire end is not on this lab's daemon");
  t.notMatch(cross.body.toString(), /b2/, 'and its peer is not named');

  // Repeats fold: the answer is one copy, whatever the count. Frames may
  // arrive between requests (a pod's own chatter), so a pair of single
  // captures around the repeated one must agree before sizes are compared.
  let sizes: number[] = [];
  let folded: PcapngFile | null = null;
  for (let i = 0; i < 5; i++) {
    const one = await curl(node1, url('/capture?wire=a1/eth1'), token1);
    const many = await curl(node1, url(`/capture?${'wire=a1/eth1&'.repeat(50)}`), token1);
    const again = await curl(node1, url('/capture?wire=a1/eth1'), token1);
    sizes = [one.body.length, many.body.length, again.body.length];
    folded = parsePcapng(many.body);
    if (one.body.length === again.body.length) break;
  }
  t.equal(sizes[1], sizes[0], `wire=a1/eth1 50 times: the same size as once (${sizes.join(' / ')} bytes)`);
  t.equal(folded!.interfaces.length, 1, 'one interface in the capture');
  t.equal(count(folded!, 'PWHAUTH'), frames.length, 'each frame once');

  // Per caller at most 4 sessions at once: four live (follow) captures are
  // held open, a fifth request is refused with 429 and the reason, and once
  // one of the four ends the next is served again.
  const live = Array.from({ length: 4 }, () => net.spawnIn(node1, 'curl', ['-s', '-N', '-o', '/dev/null', '-H', `Authorization: Bearer ${token1}`, url('/capture?wire=a1/eth1&follow=1')]));
  try {
    let fifth: { code: number; body: Buffer } = { code: 0, body: Buffer.alloc(0) };
    const refused = await waitUntil(async () => {
      fifth = await curl(node1, url('/capture?wire=a1/eth1'), token1);
      return fifth.code === 429;
    });
    t.ok(refused, `with 4 live captures open, a fifth request gets 429 (got ${fifth.code})`);
    t.match(fifth.body.toString(), /at most 4 capture sessions per caller/, 'saying why');
    live[0]!.kill('SIGKILL');
    const servedAgain = await waitUntil(async () => (await curl(node1, url('/capture?wire=a1/eth1'), token1)).code === 200);
    t.ok(servedAgain, 'one live capture ended: the next request is served');
  } finally {
    for (const c of live) c.kill('SIGKILL');
  }

  // The CLI reads the token and sends it over the control socket.
  const out = path.join(net.dir, 'cli.pcapng');
  await pwOk('capture', LAB1, 'a1/eth1', 'a1/eth1', '-w', out);
  t.equal(count(parsePcapng(readFileSync(out)), 'PWHAUTH'), frames.length, 'patchwire capture with the token: every frame, once');
  writeFileSync(tokenFile(LAB1), `${token2}\n`);
  try {
    const bad = await pw('capture', LAB1, 'a1/eth1', '-w', out);
    t.equal(bad.code, 1, 'patchwire capture with a wrong token fails');
    t.match(bad.stderr, /wrong capture token/, 'saying why');
  } finally {
    writeFileSync(tokenFile(LAB1), `${token1}\n`);
  }
});

t.test('cluster mode: TokenReview and SubjectAccessReview decide', async (t) => {
  const cluster = new TestCluster('pwhc');
  t.teardown(() => cluster.cleanup());
  await cluster.start();
  const n1 = await cluster.addNode('n1', ['--http', '127.0.0.1:8080']).catch((err: Error) => {
    // Say why a daemon did not come up: its log goes with the test's scratch dir.
    const log = cluster.net.nodes.get('n1')?.log;
    throw new Error(`${err.message}\n${log ? readFileSync(log, 'utf8').slice(-3000) : ''}`);
  });
  await cluster.addNode('n2');
  const alice: UserInfo = { name: 'alice', groups: ['system:authenticated'] };
  const bob = serviceAccountUser('capns', 'bob');
  cluster.api.addToken('alice-token-0123456789', alice);
  cluster.api.addToken('bob-token-0123456789', bob);
  // What an admin grants a namespace's capture users (SECURITY.md).
  cluster.api.addRbac([
    { kind: 'Role', metadata: { name: 'capture', namespace: 'capns' }, rules: [{ apiGroups: [''], resources: ['pods/capture'], verbs: ['get'] }] },
    { kind: 'RoleBinding', metadata: { name: 'alice-capture', namespace: 'capns' }, roleRef: { kind: 'Role', name: 'capture' }, subjects: [{ kind: 'User', name: 'alice' }] },
  ]);
  const l = (peer: string): Record<string, unknown> => ({ uid: 1, peer_pod: peer, local_intf: 'eth1', peer_intf: 'eth1' });
  for (const [name, peer] of [
    ['r1', 'r2'],
    ['r2', 'r1'],
  ]) {
    t.equal((await cluster.createTopology('capns', { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name }, spec: { links: [l(peer!)] } })).status, 201);
  }
  const { pod: r1 } = await cluster.startPod('n1', 'capns', 'r1');
  await cluster.startPod('n2', 'capns', 'r2');
  await cluster.waitReady('capns', 'r1', '1/1');
  await cluster.waitReady('capns', 'r2', '1/1');
  const frames = marked('PWHKUBE', 20);
  await sendFrames(net, r1.netns, 'eth1', frames);

  const url = (q: string): string => `http://127.0.0.1:8080${q}`;
  const at = (q: string, token?: string): Promise<{ code: number; body: Buffer }> => curl(n1.ns, url(q), token);
  const reviews = (): Array<{ resource: string; body?: unknown }> => cluster.daemonRequests().filter((r) => r.resource === 'tokenreviews' || r.resource === 'subjectaccessreviews');

  t.equal((await at('/capture?wire=capns/r1/eth1')).code, 401, 'no token: 401');
  const stranger = await at('/capture?wire=capns/r1/eth1', 'mallory-token-0123456789');
  t.equal(stranger.code, 401, 'a token the API server does not know (TokenReview: not authenticated): 401');
  t.ok(
    reviews().some((r) => r.resource === 'tokenreviews' && (r.body as { spec?: { token?: string } })?.spec?.token === 'mallory-token-0123456789'),
    'the daemon asked the API server with a TokenReview',
  );
  const denied = await at('/capture?wire=capns/r1/eth1', 'bob-token-0123456789');
  t.equal(denied.code, 403, 'a known user without get pods/capture in the namespace (SubjectAccessReview: not allowed): 403');
  t.match(denied.body.toString(), /system:serviceaccount:capns:bob" may not get pods\/capture of pod capns\/r1/, 'saying who and what');
  const sar = reviews().find((r) => r.resource === 'subjectaccessreviews')?.body as { spec?: Record<string, unknown> } | undefined;
  t.same(
    sar?.spec?.resourceAttributes,
    { namespace: 'capns', name: 'r1', verb: 'get', group: '', resource: 'pods', subresource: 'capture' },
    'the SubjectAccessReview asks for get on pods/capture of that pod',
  );
  t.same(sar?.spec?.groups, bob.groups, "with the user's groups from the TokenReview");

  let got = 0;
  const ok = await waitUntil(async () => {
    const r = await at('/capture?wire=capns/r1/eth1', 'alice-token-0123456789');
    got = r.code === 200 ? count(parsePcapng(r.body), 'PWHKUBE') : -r.code;
    return got === frames.length;
  });
  t.ok(ok, `a user allowed by RBAC (a Role with get pods/capture in capns): 200 and all ${frames.length} frames (${got})`);

  const before = reviews().length;
  t.equal((await at('/capture?wire=capns/r1/eth1', 'alice-token-0123456789')).code, 200, 'asked again');
  t.equal(reviews().length, before, 'answered from the review cache: no new TokenReview or SubjectAccessReview');

  const elsewhere = await at('/capture?wire=otherns/r9/eth1', 'alice-token-0123456789');
  t.equal(elsewhere.code, 403, "a namespace she may not capture: 403, whether or not the wire end exists");
  const missing = await at('/capture?wire=capns/r9/eth1', 'alice-token-0123456789');
  t.equal(missing.code, 404, 'a missing wire end in her namespace: 404');
  t.notMatch(missing.body.toString(), /r1\/eth1/, 'which lists no other wire ends (they may be other tenants)');
  const bare = await at('/capture?wire=r1/eth1', 'alice-token-0123456789');
  t.equal(bare.code, 400, 'a name without its namespace: 400');
});

t.teardown(() => net.cleanup());
