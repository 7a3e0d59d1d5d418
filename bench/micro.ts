// npm run bench:micro: benchmark.js micro-benchmarks of the JavaScript that
// still runs per batch: parsing what the engine's capture ring hands out and
// the pcapng writer; and the TypeScript reference codec the tests use. The
// frame path itself is native (wire/src/engine/), measured by npm run bench.
import { createRequire } from 'node:module';

import { CaptureWriter } from '../src/capture/format.js';
import { DecodedBatch, decodeBatch, encodeBatch } from '../src/dataplane/codec.js';
import { frame, MessageReader } from '../src/dataplane/grpc-wire.js';
import { parseSegments } from '../src/dataplane/engine-ring.js';

interface BenchmarkTarget {
  name: string;
  hz: number;
  stats: { rme: number };
}
interface Suite {
  add(name: string, fn: () => void): Suite;
  on(ev: string, fn: (e: { target: BenchmarkTarget }) => void): Suite;
  run(opts: { async: boolean }): void;
}
const require = createRequire(import.meta.url);
const Benchmark = require('benchmark') as { Suite: new () => Suite };

const FRAMES = 64;
function portBatch(size: number, vnet: boolean): { rx: Uint8Array; meta: Int32Array } {
  const slot = 65536 + 256;
  const rx = new Uint8Array(slot * FRAMES);
  const meta = new Int32Array(FRAMES * 2);
  for (let i = 0; i < FRAMES; i++) {
    meta[2 * i] = i * slot + 4;
    meta[2 * i + 1] = size + (vnet ? 10 : 0);
    rx.fill(i, i * slot + 4, i * slot + 4 + size + 10);
  }
  return { rx, meta };
}

const small = portBatch(64, true);
const mtu = portBatch(1514, true);
const gso = portBatch(65000, true);
for (const b of [small, mtu, gso]) b.rx[(b.meta[0] ?? 0) + 1] = 0; // plain frames: zero header
const encoded1514 = encodeBatch(7, mtu.rx, mtu.meta, FRAMES, true);
const decoded = new DecodedBatch();
// What the engine's ring hands out for one batch of 64 x 1514 B frames.
const segment = Buffer.alloc(13 + FRAMES * (4 + 1514));
segment.writeBigUInt64LE(1_700_000_000_000_000n, 0);
segment.writeUInt32LE(FRAMES, 9);
for (let i = 0; i < FRAMES; i++) segment.writeUInt32LE(1514, 13 + 4 * i);
const writer = new CaptureWriter('pcapng', [{ id: 0, name: 'a/eth1', description: 'bench' }]);
writer.header();
const recs = Array.from({ length: FRAMES }, (_, i) => ({ iface: 0, tsUs: 1_700_000_000_000_000 + i, outbound: true, origLen: 1514, data: Buffer.alloc(1514, i) }));

// A 4 MB message (64 GSO frames) arriving in 64 KiB socket reads, and a small
// one whole in one read (the zero-copy path).
const bigMessage = frame(encodeBatch(7, gso.rx, gso.meta, FRAMES, true));
const reads: Buffer[] = [];
for (let o = 0; o < bigMessage.length; o += 65536) reads.push(bigMessage.subarray(o, o + 65536));
const smallMessage = frame(encodeBatch(7, small.rx, small.meta, FRAMES, true));
let got = 0;
const reader = new MessageReader(64 << 20, (m) => (got += m.length));

const suite = new Benchmark.Suite();
suite
  .add(`encodeBatch ${FRAMES} x 64 B`, () => void encodeBatch(7, small.rx, small.meta, FRAMES, true))
  .add(`encodeBatch ${FRAMES} x 1514 B`, () => void encodeBatch(7, mtu.rx, mtu.meta, FRAMES, true))
  .add(`encodeBatch ${FRAMES} x 64 KB GSO`, () => void encodeBatch(7, gso.rx, gso.meta, FRAMES, true))
  .add(`decodeBatch ${FRAMES} x 1514 B`, () => decodeBatch(encoded1514, decoded))
  .add(`MessageReader ${FRAMES} x 64 KB in 64 KiB reads`, () => {
    for (const r of reads) reader.push(r);
  })
  .add(`MessageReader ${FRAMES} x 64 B in one read`, () => reader.push(smallMessage))
  .add(`parseSegments ${FRAMES} x 1514 B`, () => void parseSegments(segment))
  .add(`pcapng writer ${FRAMES} x 1514 B`, () => void writer.records(recs))
  .on('cycle', (e) => {
    const t = e.target;
    const framesPerSec = t.hz * FRAMES;
    process.stdout.write(`${t.name.padEnd(44)} ${Math.round(t.hz).toLocaleString('en').padStart(10)} batches/s  ${(framesPerSec / 1e6).toFixed(2).padStart(7)} M frames/s  ±${t.stats.rme.toFixed(1)}%\n`);
  })
  .run({ async: false });
