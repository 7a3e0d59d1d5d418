// The tap ends a cluster's `patchwire tap-holder` holds (src/endpoint/tap-holder.ts):
// every wire in the daemon's state file whose local end is a tap. Read only:
// the daemon owns the file (it alone moves a damaged one aside). Each problem
// with the file is said once, when it starts; while the file cannot be read,
// what is held stays held.
import { readFileSync } from 'node:fs';

import type { TapEnd, TapEndSource } from '../endpoint/tap-holder.js';
import { parseState } from './statefile.js';

type Read = { ends: TapEnd[] } | { missing: true } | { problem: string };

function readEnds(file: string): Read {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { missing: true };
    return { problem: `cannot be read (${(err as Error).message})` };
  }
  const parsed = parseState(text);
  if ('problem' in parsed) return parsed;
  const ends: TapEnd[] = [];
  for (const w of (parsed.content as unknown as { wires: Array<{ local: { kind?: unknown; netns?: unknown; ifname?: unknown } }> }).wires) {
    const { kind, netns, ifname } = w.local;
    if (kind === 'tap' && typeof netns === 'string' && netns !== '' && typeof ifname === 'string' && ifname !== '') ends.push({ netns, ifname });
  }
  return { ends };
}

export function stateFileTapEnds(file: string, log: (m: string) => void): TapEndSource {
  let said = '';
  const say = (m: string): void => {
    if (m !== said) log(m);
    said = m;
  };
  return {
    file,
    wanted(): TapEnd[] | null {
      const main = readEnds(file);
      if ('ends' in main) {
        if (said) say(`state file ${file} read: holding its taps`);
        return main.ends;
      }
      // The daemon writes FILE, then FILE.bak: a crash between leaves a good .bak.
      const bak = readEnds(`${file}.bak`);
      const what = 'missing' in main ? `state file ${file} is missing` : `state file ${file} ${main.problem}`;
      if ('ends' in bak) {
        say(`${what}; holding the taps of ${file}.bak`);
        return bak.ends;
      }
      if ('missing' in main && 'missing' in bak) {
        say(`${what} (no daemon has written it yet?): holding no taps until it is there`);
        return [];
      }
      say(`${what}, and ${file}.bak has no good copy: keeping the taps held now until it is readable`);
      return null;
    },
  };
}
