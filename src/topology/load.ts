// Reads a topology file in any format and validates it whole, before
// anything is created: every error of the file at once.
import { readFileSync } from 'node:fs';

import { LineCounter, parseAllDocuments } from 'yaml';

import { looksLikeContainerlab, parseContainerlab } from './containerlab.js';
import type { Env } from './envsubst.js';
import { parseMeshnet } from './meshnet.js';
import { looksLikeKne, parseKne } from './kne.js';
import { looksLikeNetlab, parseNetlab } from './netlab.js';
import { type LabModel, type TopologyError, TopologyErrors } from './model.js';

export interface LoadOptions {
  /** environment for containerlab's ${VAR} expansion (default: the process's) */
  env?: Env;
}

export function parseTopology(text: string, file: string, opts: LoadOptions = {}): LabModel {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false });
  const errors: TopologyError[] = [];
  const values: unknown[] = [];
  for (const doc of Array.isArray(docs) ? docs : [docs]) {
    for (const e of doc.errors) {
      const pos = e.linePos?.[0] ?? lc.linePos(e.pos[0]);
      errors.push({ file, line: pos.line, col: pos.col, message: e.message.split('\n')[0]! });
    }
    if (doc.errors.length > 0) continue;
    try {
      values.push(doc.toJS({ maxAliasCount: 1000 }));
    } catch (err) {
      // An alias to no anchor, or too many aliases (a billion laughs): the document parsed but has no value.
      const pos = doc.contents?.range ? lc.linePos(doc.contents.range[0]) : undefined;
      errors.push({ file, ...(pos ? { line: pos.line, col: pos.col } : {}), message: (err as Error).message.split('\n')[0]! });
    }
  }
  if (errors.length) throw new TopologyErrors(errors);
  const nonEmpty = values.filter((v) => v !== null && v !== undefined);
  if (nonEmpty.length === 0) throw new TopologyErrors([{ file, message: 'holds no topology (the file is empty)' }]);
  const one = nonEmpty.length === 1 ? (nonEmpty[0] as Record<string, unknown>) : undefined;
  const result =
    one && looksLikeContainerlab(one)
      ? parseContainerlab(one, file, opts.env ?? process.env)
      : one && looksLikeNetlab(one)
        ? parseNetlab(one, file)
        : parseMeshnet(nonEmpty, file);
  return finish(result, file);
}

function finish(result: { model: LabModel; errors: TopologyError[] }, file: string): LabModel {
  if (result.errors.length) throw new TopologyErrors(result.errors);
  if (result.model.pods.length === 0) throw new TopologyErrors([{ file, message: 'declares no pods' }]);
  return labWireIds(result.model);
}

/**
 * Lab mode uses a link's uid as its wire id, and wire ids start at 1; KNE
 * numbers links from 0, so such a file's uids all move up by one (said in
 * `expanded`). Cluster mode hashes uids and needs no such step.
 */
function labWireIds(model: LabModel): LabModel {
  if (!model.links.some((l) => l.uid === 0)) return model;
  return {
    ...model,
    links: model.links.map((l) => ({ ...l, uid: l.uid + 1 })),
    expanded: [...model.expanded, "uids numbered from 0 (as KNE does): each link's wire id in the lab is its uid + 1"],
  };
}

export async function loadTopology(file: string, opts: LoadOptions = {}): Promise<LabModel> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TopologyErrors([{ file, message: `cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }]);
  }
  // KNE's text format is told by its name (it is no YAML).
  if (looksLikeKne(file)) return finish(await parseKne(text, file), file);
  return parseTopology(text, file, opts);
}
