// No HTTP request can crash a daemon (#14, item 1): a corpus of malformed
// requests, written byte for byte over raw TCP (test/tools/rawhttp.mjs, node:net,
// run inside the node's namespace), at a real daemon's capture port and its
// health port: absolute-form and asterisk targets, bad percent-encoding, huge
// and repeated headers, a non-Latin-1 download name, thousands of query
// parameters, wrong methods, bodies, a client that sends one byte a second.
// Every answer must be an HTTP status that fits (never 5xx, never a dropped
// connection without one), and afterwards the daemon has the same pid and
// frames still cross a real wire to another daemon.
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { matrixFrames, sendAcross } from './helpers/frames.js';
import { ROOT, TestNet } from './helpers/testnet.js';

const net = new TestNet('pwha');
t.teardown(() => net.cleanup());

const TOKEN = 'pwha-token-0123456789abcdef0123456789';
const tokenFile = path.join(net.dir, 'capture.token');
writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
chmodSync(tokenFile, 0o600);

const CRLF = '\r\n';
const AUTH = `Authorization: Bearer ${TOKEN}${CRLF}`;

interface Item {
  name: string;
  /** raw bytes, as strings (latin1) */
  chunks: string[];
  gapMs?: number;
  waitMs?: number;
  /** statuses that fit, on the capture port and on the health port */
  capture: number[];
  health: number[];
  /** a check of the answer on the capture port (headers and start of body) */
  check?: (head: string, body: string) => string | null;
}

// Connection: close, so each answer ends with the connection instead of a keep-alive wait.
const get = (target: string, headers = ''): string => `GET ${target} HTTP/1.1${CRLF}Host: daemon${CRLF}Connection: close${CRLF}${headers}${CRLF}`;

function corpus(): Item[] {
  const items: Item[] = [
    // The request that crashed every daemon: new URL() threw on it.
    { name: 'absolute-form with bad host', chunks: [get('http://%zz/')], capture: [404], health: [404] },
    { name: 'absolute-form capture, no token', chunks: [get('http://daemon/capture?wire=pa/eth1')], capture: [401], health: [404] },
    { name: 'absolute-form healthz', chunks: [get('http://[::1/healthz')], capture: [200], health: [200] },
    { name: 'asterisk-form', chunks: [`OPTIONS * HTTP/1.1${CRLF}Host: daemon${CRLF}${CRLF}`], capture: [400], health: [400] },
    { name: 'protocol-relative target', chunks: [get('//evil/capture')], capture: [404], health: [404] },
    { name: 'no leading slash', chunks: [get('capture?wire=pa/eth1')], capture: [400], health: [400] },
    { name: 'bad percent-encoding in the path', chunks: [get('/%zz%e0%a4%')], capture: [404], health: [404] },
    { name: 'bad percent-encoding in a wire name', chunks: [get('/capture?wire=%zz%E0%A4%A', AUTH)], capture: [404], health: [404] },
    { name: 'encoded lone surrogate in a wire name', chunks: [get('/capture?wire=%ED%A0%80/eth1', AUTH)], capture: [404], health: [404] },
    { name: 'NUL in the target', chunks: [`GET /capture?wire=a\x00b HTTP/1.1${CRLF}${CRLF}`], capture: [400], health: [400] },
    { name: 'garbage request line', chunks: [`\x00\x01\x02\xff${CRLF}${CRLF}`], capture: [400], health: [400] },
    { name: 'one 20 KB header', chunks: [get('/healthz', `X-Big: ${'a'.repeat(20000)}${CRLF}`)], capture: [431], health: [431] },
    // Node's parser keeps the first 64 (maxHeadersCount) and may let the rest pass unparsed.
    { name: '2000 headers', chunks: [get('/healthz', Array.from({ length: 2000 }, (_, i) => `X-H${i}: v${CRLF}`).join(''))], capture: [200, 431], health: [200, 431] },
    { name: '100 repeated Authorization headers', chunks: [get('/capture?wire=pa/eth1&count=1', AUTH.repeat(100))], capture: [200], health: [404] },
    { name: 'repeated Authorization, wrong one first', chunks: [get('/capture?wire=pa/eth1', `Authorization: Bearer wrong${CRLF}${AUTH}`)], capture: [401], health: [404] },
    { name: 'control characters in a header', chunks: [get('/healthz', `X-Bad: a\x01b${CRLF}`)], capture: [400], health: [400] },
    { name: '2000 query parameters', chunks: [get(`/capture?wire=pa/eth1${'&a'.repeat(2000)}`, AUTH)], capture: [400], health: [400, 404] },
    { name: '20000 query parameters (past the header limit)', chunks: [get(`/capture?${'a&'.repeat(10000)}`, AUTH)], capture: [431, 414], health: [431, 414] },
    { name: '40 repeats of one wire end, folded', chunks: [get(`/capture?count=1${'&wire=pa/eth1'.repeat(40)}`, AUTH)], capture: [200], health: [404] },
    { name: '17 distinct wire ends', chunks: [get(`/capture?${Array.from({ length: 17 }, (_, i) => `wire=p${i}/eth1`).join('&')}`, AUTH)], capture: [400], health: [404] },
    { name: 'negative count', chunks: [get('/capture?wire=pa/eth1&count=-1', AUTH)], capture: [400], health: [404] },
    { name: 'infinite duration', chunks: [get('/capture?wire=pa/eth1&duration=1e400', AUTH)], capture: [400], health: [404] },
    { name: 'unknown format', chunks: [get('/capture?wire=pa/eth1&format=%FF%FE', AUTH)], capture: [400], health: [404] },
    { name: 'POST', chunks: [`POST /capture HTTP/1.1${CRLF}Host: d${CRLF}Content-Length: 3${CRLF}${CRLF}abc`], capture: [405], health: [404] },
    { name: 'DELETE /healthz', chunks: [`DELETE /healthz HTTP/1.1${CRLF}Host: d${CRLF}${CRLF}`], capture: [405], health: [405] },
    { name: 'made-up method', chunks: [`BREW /healthz HTTP/1.1${CRLF}Host: d${CRLF}${CRLF}`], capture: [400, 405], health: [400, 405] },
    { name: 'GET with a 1 GB body announced', chunks: [get('/healthz', `Content-Length: 1000000000${CRLF}`)], capture: [413], health: [413] },
    { name: 'bad chunked body', chunks: [get('/healthz', `Transfer-Encoding: chunked${CRLF}`) + `zz${CRLF}`], capture: [400, 413], health: [400, 413] },
    { name: 'Content-Length and chunked together', chunks: [get('/healthz', `Content-Length: 5${CRLF}Transfer-Encoding: chunked${CRLF}`)], capture: [400], health: [400] },
    { name: 'HTTP/2 preface on HTTP/1', chunks: [`PRI * HTTP/2.0${CRLF}${CRLF}SM${CRLF}${CRLF}`], capture: [400, 505], health: [400, 505] },
    { name: 'HTTP/9.9', chunks: [`GET /healthz HTTP/9.9${CRLF}${CRLF}`], capture: [400, 505], health: [400, 505] },
    {
      name: 'non-Latin-1 download name',
      chunks: [get(`/capture?wire=${encodeURIComponent('pc/e→1')}&count=1`, AUTH)],
      capture: [200],
      health: [404],
      check: (head) => {
        const cd = /content-disposition: (.*)/i.exec(head)?.[1] ?? '';
        if (!cd.includes("filename*=UTF-8''test-pwhan1-pc_e%E2%86%921-")) return `no RFC 5987 name in '${cd}'`;
        if (!/filename="test-pwhan1-pc_e_1-\d{8}T\d{6}\.pcapng"/.test(cd)) return `no ASCII fallback in '${cd}'`;
        return null;
      },
    },
    {
      name: 'healthz gives no details without the token',
      chunks: [get('/healthz')],
      capture: [200],
      health: [200],
      check: (_head, body) => (body.trim() === 'ok' ? null : `body '${body.slice(0, 80)}'`),
    },
    {
      name: 'healthz details with the token',
      chunks: [get('/healthz', AUTH)],
      capture: [200],
      health: [200],
      check: (_head, body) => (/"pid":\d+/.test(body) ? null : `no details: '${body.slice(0, 80)}'`),
    },
    // Slowloris: the header section never ends, one byte a second. Without a
    // header deadline the daemon would hold it (and any number like it) for good.
    { name: 'one byte a second', chunks: [`GET /healthz HTTP/1.1${CRLF}Host: d${CRLF}X-Slow: `, ...'abcdefghijklmnopqrstuvwxyz0123456789'.split('')], gapMs: 1000, waitMs: 45000, capture: [408, 0], health: [408, 0] },
  ];
  return items;
}

interface Answer {
  name: string;
  status: number;
  closedByServer: boolean;
  sentAll: boolean;
  head: string;
  body: string;
}

async function throwCorpus(ns: string, addr: string, items: Item[]): Promise<Answer[]> {
  const input = JSON.stringify(items.map((i) => ({ name: i.name, chunks: i.chunks.map((c) => Buffer.from(c, 'latin1').toString('base64')), gapMs: i.gapMs, waitMs: i.waitMs })));
  const r = await net.exec(ns, process.execPath, [path.join(ROOT, 'test', 'tools', 'rawhttp.mjs'), addr], { input, timeoutMs: 180000 });
  if (r.code !== 0) throw new Error(`rawhttp: ${r.stderr}`);
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Answer);
}

t.test('malformed requests at both ports: fitting statuses, same pid, frames still cross', async (t) => {
  const n1 = await net.addNode('n1', { extraArgs: ['--insecure', '--http', '198.18.0.1:8080', '--health', '198.18.0.1:7081', '--capture-token-file', tokenFile] });
  const n2 = await net.addNode('n2');
  const pa = net.addPod('pa');
  const pb = net.addPod('pb');
  const pc = net.addPod('pc');
  await net.crossWire(1, n1, net.endpoint('veth', pa, 'eth1', { pod: 'pa' }), n2, net.endpoint('veth', pb, 'eth1', { pod: 'pb' }));
  // An interface name Linux allows and Latin-1 cannot write: it once made writeHead throw.
  await net.localWire(2, n1, net.endpoint('veth', pc, 'e→1', { pod: 'pc' }), net.endpoint('veth', pc, 'eth2', { pod: 'pc' }));
  const pid = (await n1.client.health()).pid;

  const items = corpus();
  for (const [port, which] of [
    ['8080', 'capture'],
    ['7081', 'health'],
  ] as const) {
    const answers = await throwCorpus(n1.ns, `198.18.0.1:${port}`, items);
    t.equal(answers.length, items.length, `${which} port: an outcome for every request`);
    for (const [i, a] of answers.entries()) {
      const item = items[i]!;
      const want = item[which];
      t.ok(want.includes(a.status), `${which} port, ${item.name}: ${a.status} (fits: ${want.join('/')})${want.includes(a.status) ? '' : `\n${a.head.slice(0, 300)}\n${a.body.slice(0, 300)}`}`);
      if (a.status === 0) t.ok(a.closedByServer && !a.sentAll, `${which} port, ${item.name}: closed by the daemon before the client had sent it all`);
      if (item.check && which === 'capture') {
        const problem = item.check(a.head, a.body);
        t.equal(problem, null, `${item.name}: ${problem ?? 'as it should be'}`);
      }
    }
    t.equal(n1.proc?.exitCode, null, `the daemon is still running after the ${which} port's corpus`);
  }
  t.equal((await n1.client.health()).pid, pid, 'same daemon pid after both corpora');

  // And the data plane never noticed: the transparency frames cross the wire.
  const r = await sendAcross(net, [pa, 'eth1'], [pb, 'eth1'], matrixFrames('HH', { jumbo: false }), 'PWTHH');
  t.equal(r.received.length, r.sent.length, `all ${r.sent.length} frames crossed from pa to pb after the corpus`);
  t.same(
    r.received.map((b) => b.toString('hex')).sort(),
    r.sent.map((f) => f.bytes.toString('hex')).sort(),
    'byte for byte',
  );
});
