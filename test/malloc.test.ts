// keepFreedMemory: the daemon's allocator must keep freed heap memory instead
// of trimming it and faulting it back in on the next allocation (node:http2
// allocates and frees a 64 KiB buffer per socket read). Measured as page
// faults of the same allocation pattern in two real node processes.
import './helpers/product-env.js';
import { spawnSync } from 'node:child_process';
import t from 'tap';

import { KEEP_FREED_BYTES } from '../src/daemon/daemon.js';
import { ADDON_PATH } from '../src/native/wire.js';

// The daemon's receive path in miniature: 300 MiB over a node:http2 stream on
// loopback, faults counted after the first 20 MiB (warm-up).
const CHILD = `
const http2 = require('node:http2');
const wire = require(${JSON.stringify(ADDON_PATH)});
const keep = wire.keepFreedMemory(Number(process.argv[1]));
const chunk = Buffer.alloc(1 << 20, 7);
const server = http2.createServer();
server.on('stream', (s) => {
  let n = 0;
  const go = () => { while (n < 300) { n++; if (!s.write(chunk)) return s.once('drain', go); } s.end(); };
  s.respond({ ':status': 200 });
  go();
});
server.listen(0, '127.0.0.1', () => {
  const c = http2.connect('http://127.0.0.1:' + server.address().port);
  const req = c.request({ ':path': '/' });
  let got = 0, before = 0;
  req.on('data', (d) => { got += d.length; if (!before && got > (20 << 20)) before = process.resourceUsage().minorPageFault; });
  req.on('end', () => { console.log(JSON.stringify({ keep, got, faults: process.resourceUsage().minorPageFault - before })); c.close(); server.close(); });
});
`;

function faults(keepBytes: number): { keep: boolean; got: number; faults: number } {
  const r = spawnSync(process.execPath, ['--single-threaded-gc', '-e', CHILD, String(keepBytes)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { keep: boolean; got: number; faults: number };
}

// glibc starts at a 128 KiB trim threshold but raises it by itself whenever a
// large mapped chunk is freed, which some runs happen to do (then nothing is
// trimmed): the baseline holds the starting default fixed. The daemon's own
// setting is the other side; 16 MiB, for one, was not enough (41k faults).
const GLIBC_DEFAULT_TRIM = 128 << 10;

// Even held fixed, the default is bimodal: in most runs the heap is trimmed
// and faulted in again all along (29k-64k faults here), but in some runs
// (probably when a long-lived allocation lands at the top of the heap) little
// or nothing is trimmed and the run looks kept (6k-18k; once in CI, 13k). So
// the default gets up to five runs to show the trimming, and every kept run
// must stay far below it.
t.test('freed heap memory is kept and reused, not faulted in again', async (t) => {
  const kept = [0, 1, 2].map(() => faults(KEEP_FREED_BYTES));
  const keptMax = Math.max(...kept.map((r) => r.faults));
  const dflt: Array<ReturnType<typeof faults>> = [];
  while (dflt.length < 5 && !dflt.some((r) => r.faults > keptMax * 3)) dflt.push(faults(GLIBC_DEFAULT_TRIM));
  t.ok([...dflt, ...kept].every((r) => r.keep), 'glibc took both trim thresholds');
  t.ok([...dflt, ...kept].every((r) => r.got === 300 << 20), 'every byte arrived in every run');
  const dfltMax = Math.max(...dflt.map((r) => r.faults));
  const seen = `default ${dflt.map((r) => r.faults).join('/')}, kept ${kept.map((r) => r.faults).join('/')}`;
  t.ok(dfltMax > keptMax * 3, `at glibc's default threshold the heap is trimmed and faulted in again; never with the daemon's (${seen})`);
});

t.test('keepFreedMemory refuses a bad size', async (t) => {
  const { wire } = await import('../src/native/wire.js');
  t.throws(() => wire.keepFreedMemory(-1), /0 to 1 GiB/);
  t.throws(() => wire.keepFreedMemory(2 ** 31), /0 to 1 GiB/);
});
