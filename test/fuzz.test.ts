// A short libFuzzer run of the engine's wire codec (scripts/fuzz.sh, target
// wire/fuzz/codec_fuzz.cc under ASan and UBSan): the committed seed corpus
// loads, hundreds of thousands of inputs run, and none crashes, leaks or
// breaks an invariant. Longer runs: `npm run fuzz -- <seconds>`.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';

import { ROOT } from './helpers/testnet.js';

const SECONDS = 20;
// About 20k inputs a second here; a tenth of that still shows the target runs and is not stuck.
const MIN_RUNS = 40_000;

t.test('the codec fuzz target runs clean', async (t) => {
  const seedDir = path.join(ROOT, 'wire', 'fuzz', 'corpus', 'codec');
  // libFuzzer skips empty files when it counts the corpus.
  const seeds = readdirSync(seedDir).filter((f) => statSync(path.join(seedDir, f)).size > 0).length;
  t.ok(seeds >= 20, `${seeds} committed seeds`);

  const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'fuzz.sh'), String(SECONDS)], { encoding: 'utf8', timeout: (SECONDS + 240) * 1000, maxBuffer: 64 << 20 });
  const out = `${r.stdout}\n${r.stderr}`;
  const tail = out.split('\n').slice(-40).join('\n');
  t.equal(r.status, 0, `fuzz.sh exits 0\n${r.status === 0 ? '' : tail}`);
  for (const finding of ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:', 'ERROR: libFuzzer', 'invariant failed']) {
    t.notOk(out.includes(finding), `no "${finding}"`);
  }
  const found = /INFO:\s+(\d+) files found in \S*wire\/fuzz\/corpus\/codec/.exec(out);
  t.equal(Number(found?.[1]), seeds, 'libFuzzer read every committed seed');
  const runs = /stat::number_of_executed_units:\s+(\d+)/.exec(out);
  const done = /Done (\d+) runs in (\d+) second/.exec(out);
  t.ok(runs && done, 'libFuzzer printed its final stats');
  t.equal(runs?.[1], done?.[1], 'the two run counts agree');
  t.ok(Number(runs?.[1]) > MIN_RUNS, `${runs?.[1]} inputs executed (more than ${MIN_RUNS})`);
  t.ok(Number(done?.[2]) >= SECONDS - 1, `it ran for ${done?.[2]} s`);
});
