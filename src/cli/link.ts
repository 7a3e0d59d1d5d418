// `patchwire link`: pull and plug a lab link's cable (down, up), flap it, and
// list its carrier events. The cable has one state per end: `down` pulls it
// at the named end, `up` plugs it at both, so a link is whole again whichever
// end was pulled (or declared `state: down`).
import { parseArgs } from 'node:util';

import { ControlClient } from '../control/client.js';
import type { PbCarrierEvent } from '../control/convert.js';
import { table } from '../lab/progress.js';
import { readLab, type LabState } from '../lab/state.js';
import type { LinkModel } from '../topology/model.js';
import { carrierPod } from '../topology/resolve.js';
import { UsageError } from './usage.js';

export const LINK_HELP = `Link commands (a lab's cables):
  patchwire link down LAB POD/INTF      pull the cable at POD/INTF: both ends lose carrier,
                                        frames in flight are counted as cable_pulled
  patchwire link up LAB POD/INTF        plug the link's cable back in (at both ends)
  patchwire link flap LAB POD/INTF [--down 2s] [--up 5s] [--count N]
                                        pull and plug it N times (default 1); durations in
                                        ms, s or m (a bare number is seconds)
  patchwire link events LAB [POD/INTF] [--json]
                                        carrier changes with time and reason, both ends of
                                        the link (or of every link), oldest first
  Pulls are kept across daemon restarts; 'up -f FILE' applies a link's declared
  'state: down|up' when the file changes it.
`;

/** One end of a lab link and the daemon that holds it. */
interface LinkEnd {
  name: string;
  node: string;
  control: string;
}

/** A segment member: its own end, and every member (link events show the segment's). */
function findSegmentMember(state: LabState, end: string): { own: LinkEnd; all: LinkEnd[] } | null {
  const seg = (state.segments ?? []).find((s) => s.members.some((m) => `${m.pod}/${m.intf}` === end));
  if (!seg) return null;
  const all = seg.members.map((m): LinkEnd => {
    const node = state.nodes.find((n) => n.name === state.pods.find((p) => p.name === m.pod)?.node);
    if (!node) throw new Error(`lab ${state.name}: no node for ${m.pod}`);
    return { name: `${m.pod}/${m.intf}`, node: node.name, control: node.control };
  });
  return { own: all.find((e) => e.name === end)!, all };
}

function findLink(state: LabState, end: string): { link: LinkModel; ends: [LinkEnd, LinkEnd] } {
  const link = state.links.find((l) => `${l.a.pod}/${l.a.intf}` === end || `${l.b.pod}/${l.b.intf}` === end);
  const segEnds = (state.segments ?? []).flatMap((s) => s.members.map((m) => `${m.pod}/${m.intf}`));
  if (!link) throw new UsageError(`lab ${state.name} has no link end ${end} (ends: ${[...state.links.flatMap((l) => [`${l.a.pod}/${l.a.intf}`, `${l.b.pod}/${l.b.intf}`]), ...segEnds].join(', ') || 'none'})`);
  const endOf = (which: 'a' | 'b'): LinkEnd => {
    const pod = state.pods.find((p) => p.name === carrierPod(link, which));
    const node = state.nodes.find((n) => n.name === pod?.node);
    if (!node) throw new Error(`lab ${state.name}: no node for ${link[which].pod}`);
    // A host end's status name is its pod/intf as the resolver gives it.
    return { name: `${link[which].pod}/${link[which].intf}`, node: node.name, control: node.control };
  };
  return { link, ends: [endOf('a'), endOf('b')] };
}

/** "2s", "500ms", "1m", "3" (seconds) as milliseconds. */
export function parseDurationMs(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new UsageError(`link flap: ${flag} '${v}' is not a duration (like 500ms, 2s, 1m)`);
  const ms = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60000 : 1000);
  if (ms < 10 || ms > 3_600_000) throw new UsageError(`link flap: ${flag} must be 10ms to 1h`);
  return Math.round(ms);
}

async function withClient<T>(control: string, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const c = new ControlClient(control);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

async function setCable(end: LinkEnd, plugged: boolean): Promise<void> {
  await withClient(end.control, (c) => c.setLinkCable(end.name, plugged));
}

/** Pulls the cable at `end` (down) or plugs both ends of its link (up). */
export async function linkCable(lab: string, end: string, plugged: boolean): Promise<void> {
  const state = readLab(lab);
  if (!state) throw new UsageError(`no lab named '${lab}' (see 'patchwire ls')`);
  // A segment member's cable is its own: up plugs it alone (the other members keep theirs).
  const member = findSegmentMember(state, end);
  if (member) return setCable(member.own, plugged);
  const { ends } = findLink(state, end);
  if (!plugged) return setCable(ends.find((e) => e.name === end)!, false);
  await Promise.all(ends.map((e) => setCable(e, true)));
}

export async function linkEvents(lab: string, end?: string): Promise<PbCarrierEvent[]> {
  const state = readLab(lab);
  if (!state) throw new UsageError(`no lab named '${lab}' (see 'patchwire ls')`);
  const member = end ? findSegmentMember(state, end) : null;
  const wanted = end ? new Set((member ? member.all : findLink(state, end).ends).map((e) => e.name)) : null;
  const all = await Promise.all(state.nodes.map((n) => withClient(n.control, (c) => c.listLinkEvents())));
  return all
    .flat()
    .filter((e) => !wanted || wanted.has(e.end))
    .sort((a, b) => Number(a.timestamp_us) - Number(b.timestamp_us));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function linkMain(sub: string | undefined, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      down: { type: 'string', default: '2s' },
      up: { type: 'string', default: '5s' },
      count: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || sub === undefined || sub === 'help') {
    process.stdout.write(LINK_HELP);
    return 0;
  }
  const [lab, end] = positionals;
  if (!lab) throw new UsageError(`link ${sub}: LAB is required`);
  switch (sub) {
    case 'down':
    case 'up':
      if (!end) throw new UsageError(`link ${sub}: POD/INTF is required`);
      await linkCable(lab, end, sub === 'up');
      return 0;
    case 'flap': {
      if (!end) throw new UsageError('link flap: POD/INTF is required');
      const downMs = parseDurationMs('--down', values.down!);
      const upMs = parseDurationMs('--up', values.up!);
      const count = Number(values.count);
      if (!Number.isInteger(count) || count < 1 || count > 100000) throw new UsageError(`link flap: --count '${values.count}' must be 1 to 100000`);
      for (let i = 0; i < count; i++) {
        await linkCable(lab, end, false);
        await sleep(downMs);
        await linkCable(lab, end, true);
        // The last plug needs no wait after it.
        if (i < count - 1) await sleep(upMs);
      }
      return 0;
    }
    case 'events': {
      const events = await linkEvents(lab, end);
      if (values.json) {
        process.stdout.write(JSON.stringify({ events: events.map((e) => ({ time: new Date(Number(e.timestamp_us) / 1000).toISOString(), timestamp_us: Number(e.timestamp_us), uid: Number(e.uid), end: e.end, node: e.node, carrier: e.carrier, reason: e.reason })) }, null, 1) + '\n');
      } else if (events.length === 0) {
        process.stdout.write('no carrier events\n');
      } else {
        process.stdout.write(table([['TIME', 'END', 'NODE', 'CARRIER', 'REASON'], ...events.map((e) => [new Date(Number(e.timestamp_us) / 1000).toISOString(), e.end, e.node, e.carrier ? 'on' : 'off', e.reason])]));
      }
      return 0;
    }
    default:
      throw new UsageError(`link: unknown subcommand '${sub}' (down, up, flap, events, set, reset)`);
  }
}
