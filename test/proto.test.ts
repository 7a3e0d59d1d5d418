// The contracts pass buf's STANDARD lint rules, and the control plane's
// list of drop causes is the control API's.
import path from 'node:path';

import * as protoLoader from '@grpc/proto-loader';
import t from 'tap';

import { DROP_CAUSES } from '../src/dataplane/wire.js';

import { ROOT, run } from './helpers/testnet.js';

t.test('buf lint passes on proto/', async (t) => {
  const r = await run(`${ROOT}/node_modules/.bin/buf`, ['lint'], { timeoutMs: 120000 });
  t.equal(r.stdout + r.stderr, '', 'no lint findings');
  t.equal(r.code, 0);
});

t.test('every drop cause of the control plane is a field of Drops, and every field a cause', async (t) => {
  const def = protoLoader.loadSync(path.join(ROOT, 'proto/patchwire/v1/control.proto'), { includeDirs: [path.join(ROOT, 'proto')], keepCase: true });
  const drops = def['patchwire.v1.Drops'] as unknown as { type: { field: Array<{ name: string }> } };
  t.same(drops.type.field.map((f) => f.name).sort(), Object.values(DROP_CAUSES).sort());
});
