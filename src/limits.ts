// The range of every number patchwire accepts from outside (topology files,
// Topology objects, the control API, command-line flags), defined once here
// so each entry point checks the same bounds and says the same thing. The
// CRD's minimum/maximum (deploy/crd.yaml) and the README mirror these;
// test/bounds.test.ts checks that they agree.

export interface Limit {
  min: number;
  max: number;
  /** what the number counts, for messages ("bytes", "seconds", ...) */
  unit: string;
}

const MiB = 1 << 20;

export const LIMITS = {
  /**
   * Capture ring per wire end. The ring is one preallocated buffer per end
   * taken when the wire is added; 1000 links at the 4 MiB default already
   * hold 8 GB, so one end may ask for 256 MiB at most. 0 (flags only): rings off.
   */
  captureRingBytes: { min: 0, max: 256 * MiB, unit: 'bytes' },
  /** the same per link end in a topology; absent means the daemon's default */
  captureBytes: { min: 1, max: 256 * MiB, unit: 'bytes' },
  /** interface MTU (0 in a wire spec: the kernel's default); Linux caps at 65535 */
  mtu: { min: 68, max: 65535, unit: 'bytes' },
  /**
   * Wire ids: cluster mode hashes namespace and uid into 48 bits, lab mode uses
   * the link's uid; both fit 48 bits, well inside what a double holds exactly.
   */
  wireUid: { min: 1, max: 2 ** 48 - 1, unit: '' },
  /** a link's uid in a topology file (KNE numbers links from 0; lab mode makes wire ids of them) */
  linkUid: { min: 0, max: 2 ** 48 - 1, unit: '' },
  port: { min: 1, max: 65535, unit: '' },
  /** how long carrier stays on while a wire's far daemon is out of reach (per daemon, per link) */
  carrierHoldMs: { min: 1, max: 3_600_000, unit: 'ms' },
  rtPriority: { min: 0, max: 99, unit: '' },
  /** emulated nodes of a lab: each is a namespace with its own daemon */
  nodes: { min: 1, max: 64, unit: '' },
  resyncSeconds: { min: 1, max: 86400, unit: 'seconds' },
  orphanGraceSeconds: { min: 0, max: 86400, unit: 'seconds' },
  apiTimeoutSeconds: { min: 1, max: 3600, unit: 'seconds' },
  /** rotated capture files: size of one file and files kept per wire end */
  captureFileBytes: { min: 1024, max: 1 << 30, unit: 'bytes' },
  captureFiles: { min: 1, max: 1000, unit: 'files' },
  /** a capture's frame count and duration (0: unlimited) */
  captureCount: { min: 0, max: 2 ** 32 - 1, unit: 'frames' },
  captureDurationSeconds: { min: 0, max: 7 * 86400, unit: 'seconds' },
  /** `cni install --wait` */
  cniWaitSeconds: { min: 0, max: 3600, unit: 'seconds' },
} as const satisfies Record<string, Limit>;

export type LimitName = keyof typeof LIMITS;

function range(l: Limit): string {
  const mib = l.unit === 'bytes' && l.max >= MiB && l.max % MiB === 0 ? ` (${l.max / MiB} MiB)` : '';
  return `${l.min} to ${l.max}${mib}${l.unit && !mib ? ` ${l.unit}` : ''}`;
}

/**
 * Why `value` of `field` is not a number inside the limit (a whole one unless
 * `fractions`), or null. The message names the field, the value and the range.
 */
export function rangeProblem(field: string, value: unknown, name: LimitName, opts: { fractions?: boolean } = {}): string | null {
  const l: Limit = LIMITS[name];
  const ok = typeof value === 'number' && (opts.fractions ? Number.isFinite(value) : Number.isSafeInteger(value)) && value >= l.min && value <= l.max;
  if (ok) return null;
  const shown = typeof value === 'string' ? `'${value}'` : typeof value === 'object' ? JSON.stringify(value) : String(value);
  return `${field} ${shown} is out of range: ${opts.fractions ? 'a number' : 'a whole number'} from ${range(l)}`;
}

/** A number given as text (a flag): the number, or throws `make(message)` naming flag, text and range. */
export function parseBounded<E extends Error>(field: string, text: string, name: LimitName, make: (m: string) => E, opts: { fractions?: boolean } = {}): number {
  const n = text.trim() === '' ? NaN : Number(text);
  if (rangeProblem(field, n, name, opts) === null) return n;
  throw make(rangeProblem(field, text, name, opts)!);
}
