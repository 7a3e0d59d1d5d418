// The frame engine under the sanitizers, outside Node.js: two engines joined
// over loopback through wire add/remove cycles and restarts of one engine
// while frames cross and another thread reads counters, peers and rings, and
// shared segments added and removed while frames fan out over them
// (wire/test/engine_stress.cc). AddressSanitizer with LeakSanitizer and UBSan,
// then ThreadSanitizer; any finding or a frame that stops crossing fails.
// `npm run test:stress` runs the full 1000 cycles and 100 reconnects.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

import t from 'tap';

import { ROOT } from './helpers/testnet.js';

function stress(mode: 'asan' | 'tsan', cycles: number, reconnects: number): { code: number | null; out: string } {
  const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'engine-stress.sh'), mode, String(cycles), String(reconnects)], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

t.test('ASan + LeakSanitizer + UBSan: wire cycles and reconnects', async (t) => {
  const r = stress('asan', 300, 30);
  t.match(r.out, /300 wire add\/remove cycles done/, 'every add/remove cycle ran with frames crossing the long-lived wire');
  t.match(r.out, /31 segment add\/remove cycles done/, 'segments came and went, each checked frame reaching every other member once');
  t.match(r.out, /30 reconnects done/, 'frames crossed again after every restart of the far engine');
  t.notMatch(r.out, /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/, 'no sanitizer finding');
  t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.out.slice(-3000));
});

t.test('ThreadSanitizer: the engine thread against callers on another thread', async (t) => {
  const r = stress('tsan', 100, 10);
  t.match(r.out, /engine_stress: ok/, 'the run completed');
  t.notMatch(r.out, /WARNING: ThreadSanitizer/, 'no data race or lock-order finding');
  t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.out.slice(-3000));
});
