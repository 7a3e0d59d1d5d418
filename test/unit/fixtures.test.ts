// The fixture corpus: every topology file under test/fixtures/FORMAT/ parses
// to the model in its .model.json, or fails with exactly the errors in its
// .errors.txt (one per line, file paths relative to the repository).
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { loadTopology } from '../../src/topology/load.js';
import { TopologyErrors } from '../../src/topology/model.js';

const ROOT = 'test/fixtures';
const EXPECTED = /\.(model\.json|errors\.txt)$/;

function topologyFiles(): string[] {
  const out: string[] = [];
  for (const format of readdirSync(ROOT).sort()) {
    const dir = path.join(ROOT, format);
    for (const f of readdirSync(dir).sort()) if (!EXPECTED.test(f) && !f.startsWith('.')) out.push(path.join(dir, f));
  }
  return out;
}

const base = (f: string): string => f.replace(/\.(ya?ml|pb\.txt|textproto)$/, '');

for (const file of topologyFiles()) {
  t.test(file, async (t) => {
    const modelFile = `${base(file)}.model.json`;
    const errorsFile = `${base(file)}.errors.txt`;
    t.ok(existsSync(modelFile) !== existsSync(errorsFile), 'has exactly one of .model.json and .errors.txt');
    let got: unknown;
    let errors: string[] = [];
    try {
      // No environment: containerlab files expand ${VAR:=default} to their defaults.
      got = await loadTopology(file, { env: {} });
    } catch (err) {
      if (!(err instanceof TopologyErrors)) throw err;
      errors = err.message.split('\n');
    }
    if (existsSync(modelFile)) {
      t.same(errors, [], 'no errors');
      t.same(got, JSON.parse(readFileSync(modelFile, 'utf8')), 'the expected model');
    } else {
      t.same(errors, readFileSync(errorsFile, 'utf8').trimEnd().split('\n'), 'the expected errors');
    }
  });
}
