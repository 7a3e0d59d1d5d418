// The engine's capture ring (wire/src/engine/capture_ring.cc): newest frames
// kept byte for byte within the limit, every frame it lets go counted, live
// readers with their own copies and counted losses. The checks are C++
// (wire/test/ring_test.cc, built with ASan and UBSan); each becomes an
// assertion here.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

import t from 'tap';

import { ROOT } from './helpers/testnet.js';

const build = spawnSync('bash', [path.join(ROOT, 'scripts', 'build-native-tests.sh')], { encoding: 'utf8' });
if (build.status !== 0) throw new Error(`build-native-tests.sh failed:\n${build.stderr}`);

t.test('native capture ring', async (t) => {
  const r = spawnSync(path.join(ROOT, 'wire', 'build-native-tests', 'ring_test'), [], { encoding: 'utf8' });
  const lines = r.stdout.split('\n').filter(Boolean);
  t.ok(lines.length >= 10, `every check ran (${lines.length})`);
  for (const line of lines) t.ok(line.startsWith('ok '), line);
  t.equal(r.status, 0, `exit code (stderr: ${r.stderr.slice(0, 2000)})`);
});
