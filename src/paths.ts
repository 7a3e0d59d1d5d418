// The package root, whether running from dist/ (built) or src/ (tests).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('patchwire: cannot find the package root');
    dir = up;
  }
  return dir;
}

export const PACKAGE_ROOT = findRoot();
