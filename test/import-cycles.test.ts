// No import cycles in src/ (#14: errors in one module; the capture HTTP
// server once imported the daemon that imported it). Every relative import
// counts, type-only and dynamic ones too: a module that needs a little of
// another declares a small interface instead (capture/http.ts's HttpDaemon).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

import t from 'tap';

import { ROOT } from './helpers/testnet.js';

export function importCycles(root: string): string[] {
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const f of readdirSync(d)) {
      const p = path.join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) files.push(p);
    }
  };
  walk(root);
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const deps = [...readFileSync(f, 'utf8').matchAll(/(?:\bfrom|\bimport\()\s*'(\.[^']+)'/g)].map((m) => path.resolve(path.dirname(f), m[1]!.replace(/\.js$/, '.ts')));
    graph.set(f, deps);
  }
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (n: string): void => {
    state.set(n, 1);
    stack.push(n);
    for (const d of graph.get(n) ?? []) {
      if (state.get(d) === 1) cycles.push([...stack.slice(stack.indexOf(d)), d].map((x) => path.relative(root, x)).join(' -> '));
      else if (!state.get(d)) visit(d);
    }
    stack.pop();
    state.set(n, 2);
  };
  for (const f of files) if (!state.get(f)) visit(f);
  return cycles;
}

t.test('src/ has no import cycles', async (t) => {
  t.same(importCycles(path.join(ROOT, 'src')), [], 'no module imports itself through others');
});
