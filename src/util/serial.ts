// Small shared helpers for control-plane work (never on the frame path).
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Wraps `fn` so calls run one after another, never interleaved; each call's
 * promise settles with its own run, and a failed run does not stop the next.
 */
export function serialized(fn: () => Promise<void>): () => Promise<void> {
  let tail: Promise<void> = Promise.resolve();
  return () => {
    const next = tail.then(fn);
    tail = next.catch(() => undefined);
    return next;
  };
}

/** Writes through a temporary file and a rename, so readers never see half a file. */
export async function writeAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  await writeFile(tmp, data, { mode });
  await rename(tmp, file);
}
