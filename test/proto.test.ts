// The contracts pass buf's STANDARD lint rules.
import t from 'tap';

import { ROOT, run } from './helpers/testnet.js';

t.test('buf lint passes on proto/', async (t) => {
  const r = await run(`${ROOT}/node_modules/.bin/buf`, ['lint'], { timeoutMs: 120000 });
  t.equal(r.stdout + r.stderr, '', 'no lint findings');
  t.equal(r.code, 0);
});
