// Puts the browser view's files into dist/ui: the page's own (ui/) and
// cytoscape.js from node_modules, so `patchwire ui` serves everything itself
// (no CDN at run time). Run by `npm run build` and `npm install` (prepare).
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist', 'ui');
mkdirSync(out, { recursive: true });
for (const f of readdirSync(path.join(root, 'ui'))) copyFileSync(path.join(root, 'ui', f), path.join(out, f));
// The package exports its minified ES module build under this subpath (for import only).
copyFileSync(fileURLToPath(import.meta.resolve('cytoscape/dist/cytoscape.esm.min.mjs')), path.join(out, 'cytoscape.esm.min.mjs'));
