// The daemon's state file (desired wires and the sections other modules keep
// there), written so a crash or a full disk never leaves it half-written and
// read so a damaged one never stops the daemon: a copy of the last write is
// kept beside it as FILE.bak, and a damaged file is moved aside as FILE.damaged.
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';

export interface StateContent extends Record<string, unknown> {
  version: 1;
  wires: unknown[];
}

export interface StateRead {
  /** null: nothing usable (start with no wires) */
  content: StateContent | null;
  /** which file it came from */
  from: 'file' | 'bak' | 'none';
  /** '' when the file was fine (or absent); otherwise what was wrong and what was done */
  damage: string;
}

/** Why `v` is not a state file this daemon can read, or null. */
export function stateShapeProblem(v: unknown): string | null {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'is not a JSON object';
  const o = v as Record<string, unknown>;
  if (o.version !== 1) return `has version ${JSON.stringify(o.version)}, not 1`;
  if (!Array.isArray(o.wires)) return 'has no wires list';
  const bad = o.wires.findIndex((w) => typeof w !== 'object' || w === null || typeof (w as { uid?: unknown }).uid !== 'number' || typeof (w as { local?: unknown }).local !== 'object');
  if (bad >= 0) return `wires[${bad}] is not a wire spec (uid and local endpoint)`;
  return null;
}

/** A state file's text as its content, or what is wrong with it. */
export function parseState(text: string): { content: StateContent } | { problem: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return { problem: `is not JSON (${(err as Error).message})` };
  }
  const p = stateShapeProblem(parsed);
  return p ? { problem: p } : { content: parsed as StateContent };
}

async function readOne(file: string): Promise<{ content: StateContent } | { missing: true } | { problem: string }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { missing: true };
    return { problem: (err as Error).message };
  }
  return parseState(text);
}

/**
 * Reads the state file, falling back to FILE.bak when it is damaged. A
 * damaged file is renamed to FILE.damaged (kept for a person to look at)
 * so the next write does not take it for the last good copy.
 */
export async function readState(file: string): Promise<StateRead> {
  const main = await readOne(file);
  if ('content' in main) return { content: main.content, from: 'file', damage: '' };
  const bak = await readOne(`${file}.bak`);
  if ('missing' in main) {
    // A crash between moving the old file aside and renaming the new one in leaves only the .bak.
    if ('content' in bak) return { content: bak.content, from: 'bak', damage: `state file ${file} is missing; restored the last good copy ${file}.bak` };
    return { content: null, from: 'none', damage: '' };
  }
  await rename(file, `${file}.damaged`).catch(() => undefined);
  const what = `state file ${file} ${main.problem} (kept as ${file}.damaged)`;
  if ('content' in bak) return { content: bak.content, from: 'bak', damage: `${what}; restored the last good copy ${file}.bak` };
  return { content: null, from: 'none', damage: `${what}; no good copy in ${file}.bak either: started with no wires` };
}

async function writeDurable(file: string, data: string): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}`);
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  // The rename itself is durable only once the directory is synced.
  const d = openSync(dir, 'r');
  try {
    fsyncSync(d);
  } finally {
    closeSync(d);
  }
}

/**
 * Writes the state file, then the same content as FILE.bak: each through a
 * temporary file fsynced before it is renamed over the old one, so a crash
 * or power cut leaves whole files, and whatever damages one later (a hand
 * edit, a bad disk block) leaves the other, as new as the last write.
 */
export async function writeState(file: string, data: string): Promise<void> {
  await writeDurable(file, data);
  await writeDurable(`${file}.bak`, data);
}
