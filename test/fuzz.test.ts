// Short libFuzzer runs (scripts/fuzz.sh, under ASan and UBSan) of everything
// that parses what others send: the engine's wire codec (frames from peer
// daemons), the CNI plugin's JSON reader and CNI_ARGS parser, and the
// certificate-request reader of `patchwire signer`. For each: the committed
// seeds load, many inputs run, and none crashes, leaks or breaks an invariant
// of its target. Longer runs: `npm run fuzz -- [codec|cni|csr] <seconds>`.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';

import { ROOT } from './helpers/testnet.js';

interface Target {
  name: string;
  seedDir: string;
  minSeeds: number;
  seconds: number;
  /** a tenth or so of what runs here in that time: enough to show the target runs and is not stuck */
  minRuns: number;
}

const TARGETS: Target[] = [
  // about 20k inputs a second here
  { name: 'codec', seedDir: 'wire/fuzz/corpus/codec', minSeeds: 20, seconds: 20, minRuns: 40_000 },
  // about 70k inputs a second
  { name: 'cni', seedDir: 'cni/fuzz/corpus/json', minSeeds: 10, seconds: 15, minRuns: 100_000 },
  // OpenSSL's ASN.1 reader and signature checks: about 4k inputs a second
  { name: 'csr', seedDir: 'wire/fuzz/corpus/csr', minSeeds: 7, seconds: 10, minRuns: 4_000 },
];

for (const target of TARGETS) {
  t.test(`the ${target.name} fuzz target runs clean`, async (t) => {
    const seedDir = path.join(ROOT, target.seedDir);
    // libFuzzer skips empty files when it counts the corpus.
    const seeds = readdirSync(seedDir).filter((f) => statSync(path.join(seedDir, f)).size > 0).length;
    t.ok(seeds >= target.minSeeds, `${seeds} committed seeds`);

    const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'fuzz.sh'), target.name, String(target.seconds)], {
      encoding: 'utf8',
      timeout: (target.seconds + 240) * 1000,
      maxBuffer: 64 << 20,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    const tail = out.split('\n').slice(-40).join('\n');
    t.equal(r.status, 0, `fuzz.sh ${target.name} exits 0\n${r.status === 0 ? '' : tail}`);
    for (const finding of ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:', 'ERROR: libFuzzer', 'invariant failed']) {
      t.notOk(out.includes(finding), `no "${finding}"`);
    }
    const found = new RegExp(`INFO:\\s+(\\d+) files found in \\S*${target.seedDir.replace(/\//g, '\\/')}`).exec(out);
    t.equal(Number(found?.[1]), seeds, 'libFuzzer read every committed seed');
    const runs = /stat::number_of_executed_units:\s+(\d+)/.exec(out);
    const done = /Done (\d+) runs in (\d+) second/.exec(out);
    t.ok(runs && done, 'libFuzzer printed its final stats');
    t.equal(runs?.[1], done?.[1], 'the two run counts agree');
    t.ok(Number(runs?.[1]) > target.minRuns, `${runs?.[1]} inputs executed (more than ${target.minRuns})`);
    t.ok(Number(done?.[2]) >= target.seconds - 1, `it ran for ${done?.[2]} s`);
  });
}
