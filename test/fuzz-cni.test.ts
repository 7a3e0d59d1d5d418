// A short libFuzzer run of the CNI plugin's JSON reader and CNI_ARGS parser
// (scripts/fuzz-cni.sh, target cni/fuzz/json_fuzz.c under ASan and UBSan):
// the committed seeds load, hundreds of thousands of inputs run, and none
// crashes, reads out of bounds or breaks an invariant of the reader.
// Longer runs: `bash scripts/fuzz-cni.sh <seconds>`.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';

import { ROOT } from './helpers/testnet.js';

const SECONDS = 15;
// About 70k inputs a second here; a tenth of that still shows the target runs and is not stuck.
const MIN_RUNS = 100_000;

t.test('the CNI JSON fuzz target runs clean', async (t) => {
  const seedDir = path.join(ROOT, 'cni', 'fuzz', 'corpus', 'json');
  const seeds = readdirSync(seedDir).filter((f) => statSync(path.join(seedDir, f)).size > 0).length;
  t.ok(seeds >= 10, `${seeds} committed seeds`);

  const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'fuzz-cni.sh'), String(SECONDS)], { encoding: 'utf8', timeout: (SECONDS + 240) * 1000, maxBuffer: 64 << 20 });
  const out = `${r.stdout}\n${r.stderr}`;
  const tail = out.split('\n').slice(-40).join('\n');
  t.equal(r.status, 0, `fuzz-cni.sh exits 0\n${r.status === 0 ? '' : tail}`);
  for (const finding of ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:', 'ERROR: libFuzzer', 'invariant failed']) {
    t.notOk(out.includes(finding), `no "${finding}"`);
  }
  const found = /INFO:\s+(\d+) files found in \S*cni\/fuzz\/corpus\/json/.exec(out);
  t.equal(Number(found?.[1]), seeds, 'libFuzzer read every committed seed');
  const runs = /stat::number_of_executed_units:\s+(\d+)/.exec(out);
  const done = /Done (\d+) runs in (\d+) second/.exec(out);
  t.ok(runs && done, 'libFuzzer printed its final stats');
  t.ok(Number(runs?.[1]) > MIN_RUNS, `${runs?.[1]} inputs executed (more than ${MIN_RUNS})`);
  t.ok(Number(done?.[2]) >= SECONDS - 1, `it ran for ${done?.[2]} s`);
});
