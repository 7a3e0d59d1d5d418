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

/**
 * Like serialized(), for work that redoes everything each time (writing the
 * whole state file): calls made while a run waits to start share that run,
 * which still starts after each of them. 1000 wires added at once wrote the
 * file 1000 times, each write the size of all wires so far.
 */
export function coalesced(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | null = null;
  let queued: Promise<void> | null = null;
  const start = (): Promise<void> => {
    const run = fn().finally(() => {
      if (running === run) running = null;
    });
    running = run;
    return run;
  };
  return () => {
    if (queued) return queued;
    if (!running) return start();
    const after = running.catch(() => undefined).then(() => {
      queued = null;
      return start();
    });
    queued = after;
    return after;
  };
}

/** Writes through a temporary file and a rename, so readers never see half a file. */
export async function writeAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  await writeFile(tmp, data, { mode });
  await rename(tmp, file);
}
