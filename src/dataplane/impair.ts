// Link impairments as the control plane knows them: the one shape the CLI,
// topology files, the state file, the control API and the engine share
// (src/native/wire.ts hands it to the engine as is), with the parsers of
// values with units and the checks that bound every field.
export type JitterDist = 'uniform' | 'normal' | 'pareto' | 'paretonormal';
export const JITTER_DISTS: readonly JitterDist[] = ['uniform', 'normal', 'pareto', 'paretonormal'];

/** Gilbert-Elliott loss, netem's "loss gemodel p r 1-h 1-k", in percent. */
export interface LossBurst {
  /** good -> bad, per frame */
  p: number;
  /** bad -> good, per frame (mean burst length 1/r) */
  r: number;
  /** loss in the bad state (1-h; default 100) */
  bad?: number;
  /** loss in the good state (1-k; default 0) */
  good?: number;
}

export interface Impairment {
  delayUs?: number;
  jitterUs?: number;
  jitterDist?: JitterDist;
  lossPercent?: number;
  lossBurst?: LossBurst;
  duplicatePercent?: number;
  reorderPercent?: number;
  corruptPercent?: number;
  rateBps?: number;
  burstBytes?: number;
  limitBytes?: number;
}

/** One wire end's impairments: `in` what the wire delivers to the pod, `out` what the pod sends. */
export interface EndImpairments {
  in?: Impairment;
  out?: Impairment;
}

export type ImpairDir = 'in' | 'out' | 'both';

export const IMPAIR_LIMITS = {
  maxDelayUs: 60_000_000,
  minRateBps: 8_000,
  maxRateBps: 400_000_000_000,
  maxBurstBytes: 64 * 1024 * 1024,
  minLimitBytes: 64 * 1024,
  maxLimitBytes: 256 * 1024 * 1024,
} as const;

const TIME_UNITS: Record<string, number> = { us: 1, µs: 1, ms: 1000, s: 1_000_000 };
const RATE_UNITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12 };
const SIZE_UNITS: Record<string, number> = { b: 1, k: 1024, kb: 1024, kib: 1024, m: 1 << 20, mb: 1 << 20, mib: 1 << 20 };

function num(s: string): number | null {
  return /^[0-9]+(\.[0-9]+)?$/.test(s) ? Number(s) : null;
}

/** "20ms" -> 20000 (microseconds). A unit is required: "20" could mean anything. */
export function parseTime(what: string, v: string): number {
  const m = /^([0-9.]+)(us|µs|ms|s)$/.exec(v.trim());
  const n = m ? num(m[1]!) : null;
  if (!m || n === null) throw new Error(`${what} '${v}' is not a time with a unit (for example 20ms, 500us, 1.5s)`);
  const us = Math.round(n * TIME_UNITS[m[2]!]!);
  if (us > IMPAIR_LIMITS.maxDelayUs) throw new Error(`${what} '${v}' is over 60s`);
  return us;
}

/** "1%" or "0.1%" -> percent. The % is required. */
export function parsePercent(what: string, v: string): number {
  const m = /^([0-9.]+)%$/.exec(v.trim());
  const n = m ? num(m[1]!) : null;
  if (!m || n === null) throw new Error(`${what} '${v}' is not a percentage (for example 1% or 0.5%)`);
  if (n > 100) throw new Error(`${what} '${v}' is over 100%`);
  return n;
}

/** "100mbit" -> bits per second (tc's units; tc's "bps" means bytes, so it is refused). */
export function parseRate(what: string, v: string): number {
  const s = v.trim().toLowerCase();
  if (/bps$/.test(s)) throw new Error(`${what} '${v}': use bit, kbit, mbit or gbit (bits per second; tc's 'bps' means bytes per second)`);
  const m = /^([0-9.]+)(bit|kbit|mbit|gbit|tbit)$/.exec(s);
  const n = m ? num(m[1]!) : null;
  if (!m || n === null) throw new Error(`${what} '${v}' is not a rate with a unit (for example 100mbit, 1gbit, 512kbit)`);
  const bps = Math.round(n * RATE_UNITS[m[2]!]!);
  if (bps < IMPAIR_LIMITS.minRateBps || bps > IMPAIR_LIMITS.maxRateBps) throw new Error(`${what} '${v}' must be 8kbit to 400gbit`);
  return bps;
}

/** "32kb" -> bytes (k, kb, kib: 1024; m, mb, mib: 1024^2; b: bytes). */
export function parseSize(what: string, v: string): number {
  const m = /^([0-9.]+)(b|k|kb|kib|m|mb|mib)$/.exec(v.trim().toLowerCase());
  const n = m ? num(m[1]!) : null;
  if (!m || n === null) throw new Error(`${what} '${v}' is not a size with a unit (for example 32kb, 1mb, 1500b)`);
  return Math.round(n * SIZE_UNITS[m[2]!]!);
}

/** "1%,25%[,100%[,0%]]": p, r, 1-h, 1-k as netem's gemodel. */
export function parseLossBurst(what: string, v: string): LossBurst {
  const parts = v.split(',');
  if (parts.length < 2 || parts.length > 4) throw new Error(`${what} '${v}' must be P,R[,BAD[,GOOD]] (percentages: good->bad, bad->good, loss in the bad state, loss in the good state), for example 1%,25%`);
  const [p, r, bad, good] = parts.map((x, i) => parsePercent(`${what} ${['P', 'R', 'BAD', 'GOOD'][i]}`, x));
  const out: LossBurst = { p: p!, r: r! };
  if (bad !== undefined) out.bad = bad;
  if (good !== undefined) out.good = good;
  return out;
}

/** Why an impairment cannot be applied (every field bounded), or null. */
export function impairmentProblem(i: Impairment): string | null {
  const int = (v: unknown, lo: number, hi: number): boolean => typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
  const pct = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 100;
  if (typeof i !== 'object' || i === null || Array.isArray(i)) return 'an impairment must be an object';
  const known = new Set(['delayUs', 'jitterUs', 'jitterDist', 'lossPercent', 'lossBurst', 'duplicatePercent', 'reorderPercent', 'corruptPercent', 'rateBps', 'burstBytes', 'limitBytes']);
  for (const k of Object.keys(i)) if (!known.has(k)) return `unknown impairment field '${k}'`;
  if (i.delayUs !== undefined && !int(i.delayUs, 0, IMPAIR_LIMITS.maxDelayUs)) return 'delay must be 0 to 60s';
  if (i.jitterUs !== undefined && !int(i.jitterUs, 0, IMPAIR_LIMITS.maxDelayUs)) return 'jitter must be 0 to 60s';
  if (i.jitterDist !== undefined && !JITTER_DISTS.includes(i.jitterDist)) return `jitter distribution must be ${JITTER_DISTS.join(', ')}`;
  for (const k of ['lossPercent', 'duplicatePercent', 'reorderPercent', 'corruptPercent'] as const) {
    if (i[k] !== undefined && !pct(i[k])) return `${k.replace('Percent', '')} must be 0 to 100%`;
  }
  if (i.lossBurst !== undefined) {
    const b = i.lossBurst;
    if (typeof b !== 'object' || b === null || !pct(b.p) || !pct(b.r) || (b.bad !== undefined && !pct(b.bad)) || (b.good !== undefined && !pct(b.good))) return 'loss burst needs p and r (and optionally bad, good) from 0 to 100%';
    if (b.r === 0 && b.p > 0) return 'loss burst: r (bad -> good) must be over 0%, or a burst never ends';
  }
  if ((i.reorderPercent ?? 0) > 0 && !i.delayUs) return 'reorder needs a delay (reordered frames skip it while the others wait)';
  if ((i.jitterUs ?? 0) > 0 && !i.delayUs) return 'jitter needs a delay';
  if (i.rateBps !== undefined && i.rateBps !== 0 && !int(i.rateBps, IMPAIR_LIMITS.minRateBps, IMPAIR_LIMITS.maxRateBps)) return 'rate must be 8kbit to 400gbit';
  if (i.burstBytes !== undefined && i.burstBytes !== 0) {
    if (!int(i.burstBytes, 1, IMPAIR_LIMITS.maxBurstBytes)) return 'burst must be 1b to 64mb';
    if (!i.rateBps) return 'burst needs a rate';
  }
  if (i.limitBytes !== undefined && i.limitBytes !== 0 && !int(i.limitBytes, IMPAIR_LIMITS.minLimitBytes, IMPAIR_LIMITS.maxLimitBytes)) return 'limit must be 64kb to 256mb';
  return null;
}

/** Whether it does anything (an empty one is the same as none). */
export function impairmentEmpty(i: Impairment | undefined): boolean {
  if (!i) return true;
  return !i.delayUs && !i.jitterUs && !i.lossPercent && !(i.lossBurst && (i.lossBurst.p > 0 || (i.lossBurst.good ?? 0) > 0)) && !i.duplicatePercent && !i.reorderPercent && !i.corruptPercent && !i.rateBps;
}

/** The impairment without zero or absent fields (what state files and status show). */
export function normalizeImpairment(i: Impairment | undefined): Impairment | undefined {
  if (impairmentEmpty(i)) return undefined;
  const out: Impairment = {};
  for (const [k, v] of Object.entries(i!)) {
    if (v === undefined || v === 0 || (k === 'jitterDist' && (v === 'uniform' || !i!.jitterUs))) continue;
    (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

export function normalizeEnd(e: EndImpairments | undefined): EndImpairments | undefined {
  const inn = normalizeImpairment(e?.in);
  const out = normalizeImpairment(e?.out);
  if (!inn && !out) return undefined;
  return { ...(inn ? { in: inn } : {}), ...(out ? { out } : {}) };
}

function fmtTime(us: number): string {
  return us % 1000 === 0 ? `${us / 1000}ms` : `${us}us`;
}
function fmtRate(bps: number): string {
  for (const [u, f] of [['gbit', 1e9], ['mbit', 1e6], ['kbit', 1e3]] as const) if (bps >= f && bps % f === 0) return `${bps / f}${u}`;
  return `${bps}bit`;
}

/** "delay 20ms jitter 2ms normal loss 1% rate 100mbit" (tc's order and units). */
export function formatImpairment(i: Impairment | undefined): string {
  const n = normalizeImpairment(i);
  if (!n) return '';
  const parts: string[] = [];
  if (n.delayUs) parts.push(`delay ${fmtTime(n.delayUs)}`);
  if (n.jitterUs) parts.push(`jitter ${fmtTime(n.jitterUs)}${n.jitterDist ? ` ${n.jitterDist}` : ''}`);
  if (n.lossBurst) parts.push(`loss-burst ${n.lossBurst.p}%,${n.lossBurst.r}%,${n.lossBurst.bad ?? 100}%,${n.lossBurst.good ?? 0}%`);
  else if (n.lossPercent) parts.push(`loss ${n.lossPercent}%`);
  if (n.duplicatePercent) parts.push(`duplicate ${n.duplicatePercent}%`);
  if (n.reorderPercent) parts.push(`reorder ${n.reorderPercent}%`);
  if (n.corruptPercent) parts.push(`corrupt ${n.corruptPercent}%`);
  if (n.rateBps) parts.push(`rate ${fmtRate(n.rateBps)}${n.burstBytes ? ` burst ${n.burstBytes}b` : ''}`);
  if (n.limitBytes) parts.push(`limit ${n.limitBytes}b`);
  return parts.join(' ');
}

// ---- control API shape ------------------------------------------------

export interface PbImpairment {
  delay_us: number;
  jitter_us: number;
  jitter_distribution: string;
  loss_percent: number;
  loss_burst: { p_percent: number; r_percent: number; h_percent: number; one_minus_k_percent: number } | null;
  duplicate_percent: number;
  reorder_percent: number;
  corrupt_percent: number;
  rate_bps: number;
  burst_bytes: number;
  limit_bytes: number;
}
export interface PbEndImpairments {
  inbound: PbImpairment | null;
  outbound: PbImpairment | null;
}

export function impairmentToPb(i: Impairment): PbImpairment {
  return {
    delay_us: i.delayUs ?? 0,
    jitter_us: i.jitterUs ?? 0,
    jitter_distribution: `JITTER_DISTRIBUTION_${(i.jitterDist ?? 'uniform').toUpperCase()}`,
    loss_percent: i.lossPercent ?? 0,
    loss_burst: i.lossBurst ? { p_percent: i.lossBurst.p, r_percent: i.lossBurst.r, h_percent: 100 - (i.lossBurst.bad ?? 100), one_minus_k_percent: i.lossBurst.good ?? 0 } : null,
    duplicate_percent: i.duplicatePercent ?? 0,
    reorder_percent: i.reorderPercent ?? 0,
    corrupt_percent: i.corruptPercent ?? 0,
    rate_bps: i.rateBps ?? 0,
    burst_bytes: i.burstBytes ?? 0,
    limit_bytes: i.limitBytes ?? 0,
  };
}

export function impairmentFromPb(p: PbImpairment | null | undefined): Impairment | undefined {
  if (!p) return undefined;
  const dist = String(p.jitter_distribution ?? '').replace(/^JITTER_DISTRIBUTION_/, '').toLowerCase();
  const i: Impairment = {
    delayUs: Number(p.delay_us ?? 0),
    jitterUs: Number(p.jitter_us ?? 0),
    ...(dist && dist !== 'unspecified' ? { jitterDist: dist as JitterDist } : {}),
    lossPercent: Number(p.loss_percent ?? 0),
    duplicatePercent: Number(p.duplicate_percent ?? 0),
    reorderPercent: Number(p.reorder_percent ?? 0),
    corruptPercent: Number(p.corrupt_percent ?? 0),
    rateBps: Number(p.rate_bps ?? 0),
    burstBytes: Number(p.burst_bytes ?? 0),
    limitBytes: Number(p.limit_bytes ?? 0),
  };
  if (p.loss_burst) i.lossBurst = { p: Number(p.loss_burst.p_percent), r: Number(p.loss_burst.r_percent), bad: 100 - Number(p.loss_burst.h_percent), good: Number(p.loss_burst.one_minus_k_percent) };
  return i;
}

export function endImpairToPb(e: EndImpairments | undefined): PbEndImpairments | null {
  const n = normalizeEnd(e);
  if (!n) return null;
  return { inbound: n.in ? impairmentToPb(n.in) : null, outbound: n.out ? impairmentToPb(n.out) : null };
}

export function endImpairFromPb(p: PbEndImpairments | null | undefined): EndImpairments | undefined {
  if (!p) return undefined;
  return normalizeEnd({ in: impairmentFromPb(p.inbound), out: impairmentFromPb(p.outbound) });
}

export const DIR_TO_PB: Record<ImpairDir, string> = { in: 'IMPAIR_DIRECTION_IN', out: 'IMPAIR_DIRECTION_OUT', both: 'IMPAIR_DIRECTION_BOTH' };
export function dirFromPb(d: unknown): ImpairDir {
  const s = String(d ?? '');
  if (s === 'IMPAIR_DIRECTION_IN' || s === '1') return 'in';
  if (s === 'IMPAIR_DIRECTION_OUT' || s === '2') return 'out';
  return 'both';
}

// ---- topology files -----------------------------------------------------

export const IMPAIR_PARAM_KEYS = ['delay', 'jitter', 'jitter_dist', 'loss', 'loss_burst', 'duplicate', 'reorder', 'corrupt', 'rate', 'burst', 'limit'] as const;

type Report = (field: string, message: string) => void;

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * One direction's parameters as a topology file writes them (the CLI's
 * words and units: delay: 20ms, loss: 1%, rate: 100mbit, loss_burst: 1%,25%).
 * A bare number is taken as a percentage for loss, duplicate, reorder and
 * corrupt (netlab's tc.* style), and refused for times, rates and sizes.
 */
export function parseImpairParams(v: unknown, field: string, report: Report): Impairment | undefined {
  if (!isMap(v)) {
    report(field, `must be a mapping of ${IMPAIR_PARAM_KEYS.join(', ')}`);
    return undefined;
  }
  const out: Impairment = {};
  let ok = true;
  const str = (k: string, x: unknown, pct = false): string => (typeof x === 'number' && pct ? `${x}%` : String(x));
  for (const [k, x] of Object.entries(v)) {
    const f = `${field}.${k}`;
    try {
      if (k === 'delay') out.delayUs = parseTime(k, str(k, x));
      else if (k === 'jitter') out.jitterUs = parseTime(k, str(k, x));
      else if (k === 'jitter_dist') {
        if (!JITTER_DISTS.includes(x as JitterDist)) throw new Error(`'${String(x)}' must be one of ${JITTER_DISTS.join(', ')}`);
        out.jitterDist = x as JitterDist;
      } else if (k === 'loss') out.lossPercent = parsePercent(k, str(k, x, true));
      else if (k === 'loss_burst') out.lossBurst = parseLossBurst(k, String(x));
      else if (k === 'duplicate') out.duplicatePercent = parsePercent(k, str(k, x, true));
      else if (k === 'reorder') out.reorderPercent = parsePercent(k, str(k, x, true));
      else if (k === 'corrupt') out.corruptPercent = parsePercent(k, str(k, x, true));
      else if (k === 'rate') out.rateBps = parseRate(k, str(k, x));
      else if (k === 'burst') out.burstBytes = parseSize(k, str(k, x));
      else if (k === 'limit') out.limitBytes = parseSize(k, str(k, x));
      else throw new Error(`unknown impairment '${k}' (known: ${IMPAIR_PARAM_KEYS.join(', ')})`);
    } catch (err) {
      report(f, (err as Error).message);
      ok = false;
    }
  }
  if (!ok) return undefined;
  const p = impairmentProblem(out);
  if (p) {
    report(field, p);
    return undefined;
  }
  return normalizeImpairment(out);
}

/**
 * One end's impairments: either parameters alone (applied to what the end
 * sends, `out`: on a link declared for both ends, each direction is then
 * impaired once), or `in:` / `out:` / `both:` mappings of parameters.
 */
export function parseEndImpair(v: unknown, field: string, report: Report): EndImpairments | undefined {
  if (!isMap(v)) {
    report(field, 'must be a mapping: impairment parameters (delay, loss, rate, ...) or in/out/both with parameters each');
    return undefined;
  }
  const keys = Object.keys(v);
  if (!keys.some((k) => k === 'in' || k === 'out' || k === 'both')) {
    const p = parseImpairParams(v, field, report);
    return p ? { out: p } : undefined;
  }
  const out: EndImpairments = {};
  for (const k of keys) {
    if (k !== 'in' && k !== 'out' && k !== 'both') {
      report(`${field}.${k}`, `'${k}' beside in/out/both: put parameters under in, out or both`);
      continue;
    }
    const p = parseImpairParams(v[k], `${field}.${k}`, report);
    if (!p) continue;
    if (k === 'both') {
      out.in ??= p;
      out.out ??= p;
    } else out[k] = p;
  }
  if (v.both !== undefined && (v.in !== undefined || v.out !== undefined)) report(field, 'both with in or out: give both, or in and out');
  return normalizeEnd(out);
}
