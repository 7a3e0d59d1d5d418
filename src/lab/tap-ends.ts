// The tap ends a lab's supervisor holds (src/endpoint/tap-holder.ts): every
// `kind: tap` end of the lab's links and segments, in its pod's namespace.
import path from 'node:path';

import type { TapEnd, TapEndSource } from '../endpoint/tap-holder.js';
import { labDir, readLab } from './state.js';

export function labTapEnds(lab: string): TapEndSource {
  return {
    // `up` rewrites it when it adds or removes links.
    file: path.join(labDir(lab), 'lab.json'),
    wanted(): TapEnd[] {
      const state = readLab(lab);
      if (!state) return [];
      const nsOf = new Map(state.pods.map((p) => [p.name, p.ns]));
      const ends = [...state.links.flatMap((l) => [l.a, l.b]), ...(state.segments ?? []).flatMap((g) => g.members)];
      const out: TapEnd[] = [];
      for (const e of ends) {
        const ns = nsOf.get(e.pod);
        if (e.kind === 'tap' && ns) out.push({ netns: ns, ifname: e.intf });
      }
      return out;
    },
  };
}
