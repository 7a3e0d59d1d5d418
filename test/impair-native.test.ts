// The engine's impairment pipeline (wire/src/engine/impair.cc) on its own:
// delay, loss (random and Gilbert-Elliott), duplication, reordering,
// corruption, the rate limit and the byte limit, with simulated time, so the
// checks are exact rather than timed; then random configurations and frames
// (any virtio-net header) where every frame must be released or counted. The
// checks are C++ (wire/test/impair_test.cc, built with ASan and UBSan); each
// becomes an assertion here.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

import t from 'tap';

import { ROOT } from './helpers/testnet.js';

const build = spawnSync('bash', [path.join(ROOT, 'scripts', 'build-native-tests.sh')], { encoding: 'utf8' });
if (build.status !== 0) throw new Error(`build-native-tests.sh failed:\n${build.stderr}`);

t.test('native impairment pipeline', async (t) => {
  const r = spawnSync(path.join(ROOT, 'wire', 'build-native-tests', 'impair_test'), [], { encoding: 'utf8' });
  const lines = r.stdout.split('\n').filter(Boolean);
  t.ok(lines.length >= 17, `every check ran (${lines.length})`);
  for (const line of lines) t.ok(line.startsWith('ok '), line);
  t.equal(r.status, 0, `exit code (stderr: ${r.stderr.slice(0, 2000)})`);
});
