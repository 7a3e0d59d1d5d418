// `patchwire link set|reset LAB POD/INTF`: a wire end's impairments at
// runtime, through the control API of the daemon that holds the end.
import { parseArgs } from 'node:util';

import { ControlClient } from '../control/client.js';
import type { PbWireStatus } from '../control/convert.js';
import { endImpairFromPb, formatImpairment, type ImpairDir, type Impairment, impairmentEmpty, impairmentProblem, JITTER_DISTS, type JitterDist, parseLossBurst, parsePercent, parseRate, parseSize, parseTime } from '../dataplane/impair.js';
import { readLab } from '../lab/state.js';
import { carrierPod } from '../topology/resolve.js';
import { UsageError } from './usage.js';

export const IMPAIR_HELP = `Link impairments (applied by the daemons' engines, per wire end and direction):
  patchwire link set LAB POD/INTF [--delay T] [--jitter T] [--jitter-dist uniform|normal|pareto|paretonormal]
                                  [--loss P% | --loss-burst P%,R%[,BAD%[,GOOD%]]] [--duplicate P%]
                                  [--reorder P%] [--corrupt P%] [--rate R] [--burst SIZE] [--limit SIZE]
                                  [--dir in|out|both] [--json]
      Replaces the impairments of POD's interface INTF (like tc's 'change':
      what is not given is off). --dir out: frames POD sends; in: frames
      delivered to POD; both (default). Times need a unit (20ms, 500us, 1s),
      percentages a % sign, rates bit/kbit/mbit/gbit, sizes b/kb/mb.
      --loss-burst is Gilbert-Elliott loss as netem's 'loss gemodel p r 1-h 1-k':
      P good->bad, R bad->good (mean burst 1/R frames), loss in the bad state
      (default 100%) and in the good one (default 0%). --reorder sends that
      share at once while the others wait --delay. --corrupt flips one bit past
      the Ethernet header. --rate is a token bucket of --burst bytes (default:
      2 ms at the rate, at least 16 KiB); --limit bounds the bytes held (8 MiB).
      The daemon keeps them in its state file (they survive a restart).
  patchwire link reset LAB POD/INTF [--dir in|out|both] [--json]
      Removes them; frames still waiting leave at once.
`;

function fail(msg: string): never {
  throw new UsageError(`link: ${msg}`);
}

/** The impairment the options describe. */
export function impairmentFromArgs(v: Record<string, string | boolean | undefined>): Impairment {
  const s = (k: string): string | undefined => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  const i: Impairment = {};
  try {
    if (s('delay') !== undefined) i.delayUs = parseTime('--delay', s('delay')!);
    if (s('jitter') !== undefined) i.jitterUs = parseTime('--jitter', s('jitter')!);
    if (s('jitter-dist') !== undefined) {
      const d = s('jitter-dist')!;
      if (!JITTER_DISTS.includes(d as JitterDist)) fail(`--jitter-dist '${d}' must be one of ${JITTER_DISTS.join(', ')}`);
      if (!i.jitterUs) fail('--jitter-dist needs --jitter');
      i.jitterDist = d as JitterDist;
    }
    if (s('loss') !== undefined && s('loss-burst') !== undefined) fail('give --loss or --loss-burst, not both');
    if (s('loss') !== undefined) i.lossPercent = parsePercent('--loss', s('loss')!);
    if (s('loss-burst') !== undefined) i.lossBurst = parseLossBurst('--loss-burst', s('loss-burst')!);
    if (s('duplicate') !== undefined) i.duplicatePercent = parsePercent('--duplicate', s('duplicate')!);
    if (s('reorder') !== undefined) i.reorderPercent = parsePercent('--reorder', s('reorder')!);
    if (s('corrupt') !== undefined) i.corruptPercent = parsePercent('--corrupt', s('corrupt')!);
    if (s('rate') !== undefined) i.rateBps = parseRate('--rate', s('rate')!);
    if (s('burst') !== undefined) i.burstBytes = parseSize('--burst', s('burst')!);
    if (s('limit') !== undefined) i.limitBytes = parseSize('--limit', s('limit')!);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    fail((err as Error).message);
  }
  const p = impairmentProblem(i);
  if (p) fail(p);
  if (impairmentEmpty(i)) fail("set: nothing to set (give --delay, --loss, --rate, ...; 'link reset' removes impairments)");
  return i;
}

function parseDir(d: string | undefined): ImpairDir {
  if (d === undefined) return 'both';
  if (d === 'in' || d === 'out' || d === 'both') return d;
  return fail(`--dir '${d}' must be in, out or both`);
}

/**
 * The daemon holding POD/INTF in the lab, and the end's name as the daemon
 * knows it. A host end (host/INTF) is held by its carrier pod's daemon.
 */
export function locate(labName: string, endArg: string): { control: string; end: string; node: string } {
  const state = readLab(labName);
  if (!state) fail(`no lab named '${labName}' (see 'patchwire ls')`);
  const m = /^([^/]+)\/([^/]+)$/.exec(endArg);
  if (!m) fail(`'${endArg}' is not POD/INTF`);
  const [, pod, intf] = m;
  const link = state.links.find((l) => (l.a.pod === pod && l.a.intf === intf) || (l.b.pod === pod && l.b.intf === intf));
  if (!link) {
    if (pod !== 'host' && !state.pods.some((x) => x.name === pod)) fail(`lab ${labName} has no pod '${pod}' (pods: ${state.pods.map((x) => x.name).join(', ')})`);
    fail(`lab ${labName} has no link on ${pod}/${intf}`);
  }
  const side = link.a.pod === pod && link.a.intf === intf ? 'a' : 'b';
  const p = state.pods.find((x) => x.name === carrierPod(link, side));
  const node = state.nodes.find((n) => n.name === p?.node);
  if (!node) fail(`lab ${labName} has no node for ${pod}/${intf}`);
  return { control: node.control, end: `${pod}/${intf}`, node: node.name };
}

function describe(w: PbWireStatus, end: string): { in: string; out: string } {
  const e = w.ends.find((x) => x.name === end);
  const imp = endImpairFromPb(e?.impair);
  return { in: formatImpairment(imp?.in) || 'none', out: formatImpairment(imp?.out) || 'none' };
}

export async function impairMain(sub: string, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      delay: { type: 'string' },
      jitter: { type: 'string' },
      'jitter-dist': { type: 'string' },
      loss: { type: 'string' },
      'loss-burst': { type: 'string' },
      duplicate: { type: 'string' },
      reorder: { type: 'string' },
      corrupt: { type: 'string' },
      rate: { type: 'string' },
      burst: { type: 'string' },
      limit: { type: 'string' },
      dir: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(IMPAIR_HELP);
    return 0;
  }
  if (sub !== 'set' && sub !== 'reset') fail(`unknown subcommand '${sub}' (set or reset)`);
  if (positionals.length !== 2) fail(`usage: patchwire link ${sub} LAB POD/INTF [options]`);
  const dir = parseDir(values.dir);
  let imp: Impairment | null = null;
  if (sub === 'set') imp = impairmentFromArgs(values);
  else if (Object.keys(values).some((k) => !['dir', 'json', 'help'].includes(k) && values[k as keyof typeof values] !== undefined)) fail('reset takes only --dir (and --json)');
  const at = locate(positionals[0]!, positionals[1]!);
  const client = new ControlClient(at.control);
  try {
    const w = imp ? await client.setImpair(at.end, dir, imp) : await client.resetImpair(at.end, dir);
    const d = describe(w, at.end);
    if (values.json) process.stdout.write(JSON.stringify({ end: at.end, node: at.node, in: endImpairFromPb(w.ends.find((x) => x.name === at.end)?.impair)?.in ?? null, out: endImpairFromPb(w.ends.find((x) => x.name === at.end)?.impair)?.out ?? null }) + '\n');
    else process.stdout.write(`${at.end} (${at.node}): in: ${d.in}; out: ${d.out}\n`);
    return 0;
  } finally {
    client.close();
  }
}
