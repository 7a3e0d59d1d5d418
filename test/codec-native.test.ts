// The native engine's codec (wire/src/engine/codec.cc): its own unit checks,
// then a cross-check with the TypeScript codec both ways through a small C++
// driver (wire/test/codec_cli.cc), built with ASan and UBSan. The two sides
// must write the same bytes and read each other's batches, hellos, keepalives
// and gRPC message streams (cut at every chunk boundary) the same way.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import * as protoLoader from '@grpc/proto-loader';
import * as grpc from '@grpc/grpc-js';

import { DecodedBatch, decodeBatch, decodeSubscribeRequest, encodeBatch, encodeHelloResponse, encodeSubscribeRequest } from '../src/dataplane/codec.js';
import { decodeGrpcMessage, encodeGrpcMessage, frame, GrpcProtocolError, MessageReader } from '../src/dataplane/grpc-wire.js';
import { PROTO_ROOT } from '../src/proto/load.js';
import { ROOT } from './helpers/testnet.js';

const OUT = path.join(ROOT, 'wire', 'build-native-tests');

const build = spawnSync('bash', [path.join(ROOT, 'scripts', 'build-native-tests.sh')], { encoding: 'utf8' });
if (build.status !== 0) throw new Error(`build-native-tests.sh failed:\n${build.stderr}`);

const def = protoLoader.loadSync('patchwire/v1/dataplane.proto', { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, defaults: true });
const pkg = grpc.loadPackageDefinition(def) as unknown as { patchwire: { v1: { DataplaneService: { service: grpc.ServiceDefinition } } } };
const method = pkg.patchwire.v1.DataplaneService.service.Subscribe!;

/** Runs the driver on `lines`, one output line per input line. */
function cli(lines: string[]): string[] {
  const r = spawnSync(path.join(OUT, 'codec_cli'), [], { input: lines.join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`codec_cli exited ${r.status}: ${r.stderr}`);
  const out = r.stdout.split('\n');
  out.pop();
  if (out.length !== lines.length) throw new Error(`codec_cli answered ${out.length} of ${lines.length} lines: ${r.stderr}`);
  return out;
}

const hex = (b: Uint8Array): string => (b.length ? Buffer.from(b).toString('hex') : '-');

/** A deterministic PRNG, so any failure replays. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface NFrame {
  hdr: Buffer | null;
  data: Buffer;
}

interface CBatch {
  ok: boolean;
  node: string;
  frames: Array<{ wire: string; hdr: string | null; data: string }>;
  error?: string;
}

/** Port-style buffers for encodeBatch, as a native port fills them. */
function portBatch(frames: NFrame[], vnet: boolean): { rx: Uint8Array; meta: Int32Array } {
  const rx = new Uint8Array(frames.reduce((n, f) => n + 16 + 10 + f.data.length, 0));
  const meta = new Int32Array(frames.length * 2);
  let off = 3;
  frames.forEach((f, i) => {
    const start = off;
    if (vnet) {
      rx.set(f.hdr ?? Buffer.alloc(10), off);
      off += 10;
    }
    rx.set(f.data, off);
    off += f.data.length;
    meta[2 * i] = start;
    meta[2 * i + 1] = off - start;
    off += 13;
  });
  return { rx, meta };
}

function randomFrames(rand: () => number, count: number, vnet: boolean): NFrame[] {
  return Array.from({ length: count }, () => {
    const big = rand() < 0.1;
    const data = Buffer.alloc(1 + Math.floor(rand() * (big ? 9100 : 200)));
    for (let i = 0; i < data.length; i++) data[i] = Math.floor(rand() * 256);
    let hdr: Buffer | null = null;
    if (vnet) {
      const r = rand();
      // zero headers (left out), meaningful ones, and ones whose only set bytes come after flags/gso_type (also left out)
      hdr = r < 0.4 ? Buffer.alloc(10) : r < 0.8 ? Buffer.from([1, 1 + Math.floor(rand() * 4), 54, 0, 0xb4, 0x05, 34, 0, 16, 0]) : Buffer.from([0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
    }
    return { hdr, data };
  });
}

const UIDS = [0, 1, 127, 128, 16383, 16384, 300000, 2 ** 32 - 1, 2 ** 32, 2 ** 40, 2 ** 53 - 1];

/** What the TypeScript decoder reads from `buf`, in the driver's shape. */
function tsDecode(buf: Buffer): CBatch {
  const d = new DecodedBatch();
  try {
    decodeBatch(buf, d);
  } catch (err) {
    return { ok: false, node: '', frames: [], error: String(err) };
  }
  const frames = [];
  for (let i = 0; i < d.count; i++) {
    const h = d.hdrOff[i]!;
    frames.push({
      wire: String(d.wire[i]),
      hdr: h < 0 ? null : buf.toString('hex', h, h + 10),
      data: buf.toString('hex', d.dataOff[i]!, d.dataOff[i]! + d.dataLen[i]!),
    });
  }
  return { ok: true, node: '', frames };
}

t.test('the native unit checks pass', async (t) => {
  const r = spawnSync(path.join(OUT, 'codec_test'), [], { encoding: 'utf8' });
  const failed = r.stdout.split('\n').filter((l) => l.startsWith('not ok'));
  t.same(failed, [], 'no check failed');
  t.equal(r.stderr, '', 'no sanitizer report');
  const m = /# (\d+) checks, (\d+) failed/.exec(r.stdout);
  t.ok(m && Number(m[1]) >= 90 && m[2] === '0', `summary: ${m?.[0]}`);
  t.equal(r.status, 0);
});

t.test('batches encoded by codec.ts decode identically in C++, and C++ writes the same bytes', async (t) => {
  const rand = rng(1);
  const cases: Array<{ buf: Buffer; uid: number; frames: NFrame[]; vnet: boolean }> = [];
  for (const uid of UIDS) {
    for (const vnet of [false, true]) {
      for (const count of [1, 2, 17, 300]) {
        const frames = randomFrames(rand, count, vnet);
        const { rx, meta } = portBatch(frames, vnet);
        cases.push({ buf: encodeBatch(uid, rx, meta, count, vnet), uid, frames, vnet });
      }
    }
  }
  const decoded = cli(cases.map((c) => `batch 100000 65536 ${hex(c.buf)}`)).map((l) => JSON.parse(l) as CBatch);
  const encoded = cli(cases.map((c) => `encode ${c.frames.map((f) => `${c.uid}:${f.hdr ? hex(f.hdr) : '-'}:${hex(f.data)}`).join(',')}`));
  let bad = 0;
  cases.forEach((c, i) => {
    const want = tsDecode(c.buf);
    const got = decoded[i]!;
    if (!want.ok || !got.ok || JSON.stringify(got.frames) !== JSON.stringify(want.frames) || got.frames.length !== c.frames.length) {
      if (bad++ < 3) t.fail(`case ${i} (uid ${c.uid}, ${c.frames.length} frames, vnet ${c.vnet}): C++ ${JSON.stringify(got).slice(0, 300)}`);
    }
    if (encoded[i] !== c.buf.toString('hex')) {
      if (bad++ < 3) t.fail(`case ${i}: C++ encodes other bytes than codec.ts`);
    }
  });
  t.equal(bad, 0, `${cases.length} batches (${cases.reduce((n, c) => n + c.frames.length, 0)} frames) agree both ways, byte for byte`);
  // The data itself, not only agreement with the TS decoder.
  const c0 = cases.find((c) => c.vnet && c.frames.length === 17)!;
  const d0 = decoded[cases.indexOf(c0)]!;
  t.same(
    d0.frames.map((f) => f.data),
    c0.frames.map((f) => f.data.toString('hex')),
    'frame data is what was sent',
  );
  t.same(
    d0.frames.map((f) => f.hdr),
    c0.frames.map((f) => (f.hdr && (f.hdr[0] || f.hdr[1]) ? f.hdr.toString('hex') : null)),
    'headers travel only when flags or gso_type are set',
  );
});

t.test('batches encoded by the C++ encoder decode with codec.ts and with proto-loader', async (t) => {
  const rand = rng(2);
  const specs: Array<Array<{ uid: number; hdr: Buffer | null; data: Buffer }>> = [];
  for (let i = 0; i < 60; i++) {
    // Mixed uids in one batch: the engine batches per peer, not per wire.
    specs.push(randomFrames(rand, 1 + Math.floor(rand() * 40), rand() < 0.5).map((f) => ({ ...f, uid: UIDS[Math.floor(rand() * UIDS.length)]! })));
  }
  const out = cli(specs.map((s) => `encode ${s.map((f) => `${f.uid}:${f.hdr ? hex(f.hdr) : '-'}:${hex(f.data)}`).join(',')}`));
  let bad = 0;
  specs.forEach((s, i) => {
    const buf = Buffer.from(out[i]!, 'hex');
    const ts = tsDecode(buf);
    const want = s.map((f) => ({ wire: String(f.uid), hdr: f.hdr && (f.hdr[0] || f.hdr[1]) ? f.hdr.toString('hex') : null, data: f.data.toString('hex') }));
    if (!ts.ok || JSON.stringify(ts.frames) !== JSON.stringify(want)) {
      if (bad++ < 3) t.fail(`batch ${i}: codec.ts reads ${JSON.stringify(ts).slice(0, 300)}`);
    }
    const pl = method.responseDeserialize(buf) as { frames: Array<{ wire: string; vnet_hdr: Buffer; data: Buffer }> };
    const plFrames = pl.frames.map((f) => ({ wire: f.wire, hdr: f.vnet_hdr.length ? Buffer.from(f.vnet_hdr).toString('hex') : null, data: Buffer.from(f.data).toString('hex') }));
    if (JSON.stringify(plFrames) !== JSON.stringify(want)) {
      if (bad++ < 3) t.fail(`batch ${i}: proto-loader reads ${JSON.stringify(plFrames).slice(0, 300)}`);
    }
  });
  t.equal(bad, 0, `${specs.length} C++-encoded batches read back by codec.ts and proto-loader`);
  // Beyond 2^53 (where JavaScript numbers end) proto-loader's long strings still show the C++ uid is exact.
  const [big] = cli(['encode 18446744073709551615:-:00,9007199254740993:-:01']);
  const pl = method.responseDeserialize(Buffer.from(big!, 'hex')) as { frames: Array<{ wire: string }> };
  t.same(
    pl.frames.map((f) => f.wire),
    ['18446744073709551615', '9007199254740993'],
    '64-bit wire uids',
  );
  const [back] = cli([`batch 10 10 ${big}`]);
  t.same(
    (JSON.parse(back!) as CBatch).frames.map((f) => f.wire),
    ['18446744073709551615', '9007199254740993'],
    'and the C++ decoder reads them back exactly',
  );
});

t.test('batches from an encoder that writes defaults and the node field (proto-loader) decode as codec.ts reads them', async (t) => {
  const bufs = [
    method.responseSerialize({ node: 'peer-1', frames: [{ wire: '7', vnet_hdr: Buffer.alloc(0), data: Buffer.from('frame-bytes') }] }) as Buffer,
    method.responseSerialize({ node: '', frames: [{ wire: '0', vnet_hdr: Buffer.alloc(10, 3), data: Buffer.alloc(9014, 2) }] }) as Buffer,
    method.responseSerialize({ frames: [] }) as Buffer,
  ];
  const got = cli(bufs.map((b) => `batch 10 65536 ${hex(b)}`)).map((l) => JSON.parse(l) as CBatch);
  bufs.forEach((b, i) => t.same(got[i]!.frames, tsDecode(b).frames, `batch ${i}`));
  t.equal(Buffer.from(got[0]!.node, 'hex').toString(), 'peer-1', 'the node field is returned');
});

t.test('truncated batches: both decoders refuse the same cuts and accept the same frame boundaries', async (t) => {
  const frames = randomFrames(rng(3), 5, true);
  const { rx, meta } = portBatch(frames, true);
  const buf = encodeBatch(300000, rx, meta, 5, true);
  const cuts = Array.from({ length: buf.length + 1 }, (_, i) => i);
  const got = cli(cuts.map((c) => `batch 100 65536 ${hex(buf.subarray(0, c))}`)).map((l) => JSON.parse(l) as CBatch);
  let bad = 0;
  let accepted = 0;
  for (const c of cuts) {
    const want = tsDecode(buf.subarray(0, c));
    const g = got[c]!;
    if (g.ok !== want.ok || (g.ok && JSON.stringify(g.frames) !== JSON.stringify(want.frames))) {
      if (bad++ < 3) t.fail(`cut at ${c}: C++ ${g.ok ? 'accepts' : `refuses (${g.error})`}, codec.ts ${want.ok ? 'accepts' : 'refuses'}`);
    }
    if (g.ok) accepted++;
  }
  t.equal(bad, 0, `${cuts.length} cuts agree`);
  t.equal(accepted, 6, 'only the 6 cuts at frame boundaries (0 to 5 frames) decode');
});

t.test('hello and keepalive requests round-trip both ways, byte for byte', async (t) => {
  const reqs = [
    { node: 'node-a', lab: 'lab1' },
    { node: 'pwwa-n1', lab: '' },
    { node: '', lab: '' }, // a keepalive
    { node: 'ünïcode-nöde', lab: 'läb' },
    { node: 'x'.repeat(200), lab: 'y'.repeat(127) },
  ];
  const enc = cli(reqs.map((r) => `encode-request ${hex(Buffer.from(r.node))} ${hex(Buffer.from(r.lab))}`));
  reqs.forEach((r, i) => {
    t.equal(enc[i], encodeSubscribeRequest(r).toString('hex'), `C++ writes codec.ts's bytes for ${JSON.stringify(r).slice(0, 40)}`);
    t.same(decodeSubscribeRequest(Buffer.from(enc[i]!, 'hex')), r, 'codec.ts reads it back');
  });
  const dec = cli(reqs.map((r) => `request 256 ${hex(method.requestSerialize(r) as Buffer)}`)).map((l) => JSON.parse(l) as { ok: boolean; node: string; lab: string });
  reqs.forEach((r, i) =>
    t.same({ ok: dec[i]!.ok, node: Buffer.from(dec[i]!.node, 'hex').toString(), lab: Buffer.from(dec[i]!.lab, 'hex').toString() }, { ok: true, ...r }, `C++ reads proto-loader's request ${i}`),
  );
  const [over] = cli([`request 199 ${hex(encodeSubscribeRequest(reqs[4]!))}`]);
  t.match(JSON.parse(over!), { ok: false, error: 'node of 200 bytes exceeds the limit of 199' }, 'a hello string over the limit is refused');

  const nodes = ['node-7', '', 'ñ'];
  const hellos = cli(nodes.map((n) => `hello ${hex(Buffer.from(n))}`));
  nodes.forEach((n, i) => t.equal(hellos[i], encodeHelloResponse(n).toString('hex'), `hello response for '${n}' matches codec.ts`));
  const back = cli(nodes.map((n) => `batch 1 1 ${hex(encodeHelloResponse(n))}`)).map((l) => JSON.parse(l) as CBatch);
  nodes.forEach((n, i) => t.same({ ok: back[i]!.ok, node: Buffer.from(back[i]!.node, 'hex').toString(), frames: back[i]!.frames }, { ok: true, node: n, frames: [] }, `C++ reads hello '${n}'`));
  t.same(method.responseDeserialize(Buffer.from(hellos[0]!, 'hex')), { frames: [], node: 'node-7', carrier: [] }, 'proto-loader reads the C++ hello');
});

/** What the TypeScript MessageReader gives for `stream` cut at `cuts`. */
function tsStream(stream: Buffer, cuts: number[], max: number): { ok: boolean; idle: boolean; msgs: string[]; status?: number; error?: string } {
  const msgs: string[] = [];
  const r = new MessageReader(max, (m) => msgs.push(m.toString('hex')));
  let prev = 0;
  try {
    for (const c of [...cuts, stream.length]) {
      r.push(stream.subarray(prev, c));
      prev = c;
    }
  } catch (err) {
    const e = err as GrpcProtocolError;
    return { ok: false, idle: r.idle, msgs, status: e.code, error: e.message };
  }
  return { ok: true, idle: r.idle, msgs };
}

t.test('gRPC message streams split at every chunk boundary read the same as grpc-wire.ts', async (t) => {
  const rand = rng(4);
  const payload = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
  // A hello, a keepalive (empty), small and larger batches.
  const msgs = [encodeHelloResponse('peer'), Buffer.alloc(0), payload(1), payload(4), payload(5), payload(6), payload(300), Buffer.alloc(0), payload(1000)];
  const stream = Buffer.concat(msgs.map((m) => frame(m)));
  const cases: number[][] = [];
  for (let a = 0; a <= stream.length; a++) cases.push([a]);
  // Every pair of cuts inside and around the first three prefixes (a prefix split in three), then a sparse grid.
  for (let a = 0; a <= 24; a++) for (let b = a; b <= 24; b++) cases.push([a, b]);
  for (let a = 0; a <= stream.length; a += 7) for (let b = a; b <= stream.length; b += 97) cases.push([a, b]);
  cases.push(Array.from({ length: stream.length - 1 }, (_, i) => i + 1)); // one byte per chunk
  const got = cli(cases.map((c) => `stream 4096 ${c.length ? c.join(',') : '-'} ${hex(stream)}`)).map((l) => JSON.parse(l) as ReturnType<typeof tsStream>);
  const want = msgs.map((m) => m.toString('hex'));
  let bad = 0;
  cases.forEach((c, i) => {
    const ts = tsStream(stream, c, 4096);
    const g = got[i]!;
    if (!g.ok || !g.idle || JSON.stringify(g.msgs) !== JSON.stringify(want) || JSON.stringify(ts) !== JSON.stringify(g)) {
      if (bad++ < 3) t.fail(`cuts ${c.slice(0, 10).join(',')}: C++ ${JSON.stringify(g).slice(0, 200)}`);
    }
  });
  t.equal(bad, 0, `${cases.length} ways of cutting a ${stream.length}-byte stream of ${msgs.length} messages agree`);

  // Refusals: a compressed flag and an oversize length, whole and with the prefix split at each byte.
  const compressed = frame(payload(10));
  compressed[0] = 1;
  const big = frame(payload(101));
  const bad2: string[] = [];
  const errCases: Array<[Buffer, number[]]> = [];
  for (const s of [compressed, Buffer.concat([frame(payload(3)), big])]) for (let a = 0; a <= 10; a++) errCases.push([s, a ? [a] : []]);
  const errs = cli(errCases.map(([s, c]) => `stream 100 ${c.length ? c.join(',') : '-'} ${hex(s)}`)).map((l) => JSON.parse(l) as ReturnType<typeof tsStream>);
  errCases.forEach(([s, c], i) => {
    const ts = tsStream(s, c, 100);
    if (ts.ok || JSON.stringify(ts) !== JSON.stringify(errs[i])) bad2.push(`cut ${c}: C++ ${JSON.stringify(errs[i])} vs TS ${JSON.stringify(ts)}`);
  });
  t.same(bad2, [], `${errCases.length} refused streams: same status, message and messages before the refusal`);
  t.match(errs[0], { ok: false, status: 13, error: 'compressed message (flag 1) but no compression was negotiated' });
  t.match(errs[11], { ok: false, status: 8, error: 'message of 101 bytes exceeds the limit of 100' });
  t.equal(errs[11]!.msgs.length, 1, 'the message before the oversize one was handed on');
});

t.test('grpc-message percent-encoding agrees with grpc-wire.ts', async (t) => {
  const rand = rng(5);
  const plain = ["lab 'x' ≠ 'y': 100% wrong\n", '', 'plain', '\u0000\u007f', 'emoji 🛰 here'];
  const enc = cli(plain.map((s) => `pct-encode ${hex(Buffer.from(s))}`));
  plain.forEach((s, i) => t.equal(Buffer.from(enc[i]!, 'hex').toString(), encodeGrpcMessage(s), `encode ${JSON.stringify(s)}`));
  // Random escape sequences: valid UTF-8, overlong forms, surrogates, cut sequences, bad hex.
  const pieces = ['%E2%89%A0', '%e2%89%a0', '%C3%A9', '%F0%9F%9B%B0', '%C0%80', '%ED%A0%80', '%F4%90%80%80', '%FF', '%E2%89', '%80', '%zz', '%4', '%25', 'a', ' ', '%00', '%7F'];
  const inputs = Array.from({ length: 2000 }, () => Array.from({ length: 1 + Math.floor(rand() * 4) }, () => pieces[Math.floor(rand() * pieces.length)]!).join(''));
  const dec = cli(inputs.map((s) => `pct-decode ${hex(Buffer.from(s))}`));
  let bad = 0;
  let decoded = 0;
  inputs.forEach((s, i) => {
    const want = decodeGrpcMessage(s);
    const got = Buffer.from(dec[i]!, 'hex').toString();
    if (got !== want && bad++ < 3) t.fail(`decode ${s}: C++ ${JSON.stringify(got)} vs TS ${JSON.stringify(want)}`);
    if (want !== s) decoded++;
  });
  t.equal(bad, 0, `${inputs.length} escape sequences decode alike`);
  t.ok(decoded > 100 && decoded < inputs.length - 100, `both valid (${decoded}) and refused (${inputs.length - decoded}) inputs were among them`);
});
