// patchwire's own per-link and per-pod options, under a `patchwire:` key that
// meshnet, KNE and containerlab ignore.
import { macProblem, mtuProblem } from '../netns/ip.js';
import { rangeProblem } from '../limits.js';
import type { LinkEnd, VmSpec } from './model.js';
import { type EndImpairments, parseEndImpair } from '../dataplane/impair.js';

export const LINK_EXTENSION_KEYS = ['kind', 'mtu', 'mac', 'capture_bytes', 'impair', 'state', 'carrier_hold_ms'] as const;
export const POD_EXTENSION_KEYS = ['node', 'vm', 'kubevirt'] as const;
export const VM_KEYS = ['kernel', 'initrd', 'disk', 'memory', 'cpus', 'args', 'append'] as const;

export interface LinkExtension {
  kind?: LinkEnd['kind'];
  mtu?: number;
  mac?: string;
  /** capture ring of this wire end, bytes */
  captureBytes?: number;
  /**
   * impairments: `all` for every end the block speaks for (a containerlab
   * link's two ends, a meshnet pod's own end), `perEnd` by "pod:intf"
   * (a containerlab link naming its ends)
   */
  impair?: { all?: EndImpairments; perEnd?: Map<string, EndImpairments> };
  /** `state: down`: the cable is pulled (at the ends the block applies to) */
  state?: 'up' | 'down';
  /** how long carrier stays on while the far daemon is out of reach, ms */
  carrierHoldMs?: number;
}

/** The LinkEnd fields a link extension sets for cable and carrier. */
export function carrierFields(ext: LinkExtension): { cable?: 'pulled'; carrierHoldMs?: number } {
  return { ...(ext.state === 'down' ? { cable: 'pulled' as const } : {}), ...(ext.carrierHoldMs !== undefined ? { carrierHoldMs: ext.carrierHoldMs } : {}) };
}

type Report = (field: string, message: string) => void;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseLinkExtension(v: unknown, field: string, report: Report): LinkExtension {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) {
    report(field, `must be a mapping with keys ${LINK_EXTENSION_KEYS.join(', ')}`);
    return {};
  }
  const out: LinkExtension = {};
  for (const key of Object.keys(v)) {
    if (!(LINK_EXTENSION_KEYS as readonly string[]).includes(key)) report(`${field}.${key}`, `unknown key '${key}' (known: ${LINK_EXTENSION_KEYS.join(', ')})`);
  }
  if (v.kind !== undefined) {
    if (v.kind === 'veth' || v.kind === 'tap') out.kind = v.kind;
    else report(`${field}.kind`, `'${String(v.kind)}' is not an endpoint kind (veth or tap)`);
  }
  if (v.mtu !== undefined) {
    const p = typeof v.mtu === 'number' ? mtuProblem(v.mtu) : `MTU '${String(v.mtu)}' is not a number`;
    if (p) report(`${field}.mtu`, p);
    else out.mtu = v.mtu as number;
  }
  if (v.capture_bytes !== undefined) {
    const p = rangeProblem('capture_bytes', v.capture_bytes, 'captureBytes');
    if (p) report(`${field}.capture_bytes`, p);
    else out.captureBytes = v.capture_bytes as number;
  }
  if (v.impair !== undefined && v.impair !== null) {
    const imp = v.impair;
    if (isObject(imp) && Object.keys(imp).length > 0 && Object.keys(imp).every((k) => k.includes(':'))) {
      const perEnd = new Map<string, EndImpairments>();
      for (const [k, x] of Object.entries(imp)) {
        const e = parseEndImpair(x, `${field}.impair.${k}`, report);
        if (e) perEnd.set(k, e);
      }
      out.impair = { perEnd };
    } else {
      const all = parseEndImpair(imp, `${field}.impair`, report);
      if (all) out.impair = { all };
    }
  }
  if (v.state !== undefined) {
    if (v.state === 'up' || v.state === 'down') out.state = v.state;
    else report(`${field}.state`, `'${String(v.state)}' is not a link state (up or down)`);
  }
  if (v.carrier_hold_ms !== undefined) {
    const p = rangeProblem('carrier_hold_ms', v.carrier_hold_ms, 'carrierHoldMs');
    if (p) report(`${field}.carrier_hold_ms`, p);
    else out.carrierHoldMs = v.carrier_hold_ms as number;
  }
  if (v.mac !== undefined) {
    const p = typeof v.mac === 'string' ? macProblem(v.mac) : 'MAC must be a string';
    if (p) report(`${field}.mac`, p);
    else out.mac = v.mac as string;
  }
  return out;
}

/** Default guest size: enough for a small kernel and a busybox initramfs. */
export const VM_DEFAULTS = { memory: 256, cpus: 1 };

/** A `vm:` block: a kernel (and initrd) or a disk, its size, and extra QEMU arguments. */
export function parseVm(v: unknown, field: string, report: Report): VmSpec | undefined {
  if (!isObject(v)) {
    report(field, `must be a mapping with keys ${VM_KEYS.join(', ')}`);
    return undefined;
  }
  let ok = true;
  const bad = (f: string, m: string): void => {
    ok = false;
    report(`${field}.${f}`, m);
  };
  for (const key of Object.keys(v)) if (!(VM_KEYS as readonly string[]).includes(key)) bad(key, `unknown key '${key}' (known: ${VM_KEYS.join(', ')})`);
  const path = (k: 'kernel' | 'initrd' | 'disk'): string | undefined => {
    const x = v[k];
    if (x === undefined || x === null) return undefined;
    if (typeof x !== 'string' || x === '' || x.includes(',') || x.includes('\0')) {
      bad(k, `'${String(x)}' is not a file path (a non-empty string without commas)`);
      return undefined;
    }
    return x;
  };
  const kernel = path('kernel');
  const initrd = path('initrd');
  const disk = path('disk');
  if (v.kernel === undefined && v.disk === undefined) bad('kernel', 'a VM needs a kernel (with an initrd) or a disk image');
  if (initrd && !kernel) bad('initrd', 'an initrd is booted with a kernel: add kernel');
  const count = (k: 'memory' | 'cpus', min: number, max: number): number => {
    const x = v[k];
    if (x === undefined) return VM_DEFAULTS[k];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max) {
      bad(k, `'${String(x)}' must be a whole number from ${min} to ${max}${k === 'memory' ? ' (MiB)' : ''}`);
      return VM_DEFAULTS[k];
    }
    return x;
  };
  const memory = count('memory', 32, 65536);
  const cpus = count('cpus', 1, 64);
  let args: string[] = [];
  if (v.args !== undefined) {
    if (typeof v.args === 'string') args = v.args.split(/\s+/).filter(Boolean);
    else if (Array.isArray(v.args) && v.args.every((a) => typeof a === 'string')) args = v.args as string[];
    else bad('args', 'must be a string or a list of strings (QEMU arguments)');
  }
  if (v.append !== undefined && typeof v.append !== 'string') bad('append', 'must be a string (kernel command line)');
  if (!ok) return undefined;
  return { ...(kernel ? { kernel } : {}), ...(initrd ? { initrd } : {}), ...(disk ? { disk } : {}), memory, cpus, args, ...(typeof v.append === 'string' ? { append: v.append } : {}) };
}

export function parsePodExtension(v: unknown, field: string, report: Report): { node?: string; vm?: VmSpec; kubevirt?: true } {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) {
    report(field, `must be a mapping with keys ${POD_EXTENSION_KEYS.join(', ')}`);
    return {};
  }
  for (const key of Object.keys(v)) {
    if (!(POD_EXTENSION_KEYS as readonly string[]).includes(key)) report(`${field}.${key}`, `unknown key '${key}' (known: ${POD_EXTENSION_KEYS.join(', ')})`);
  }
  const vm = v.vm === undefined ? undefined : parseVm(v.vm, `${field}.vm`, report);
  // kubevirt: the pod is the KubeVirt VirtualMachineInstance of that name (cluster mode; docs/vms.md).
  if (v.kubevirt !== undefined && typeof v.kubevirt !== 'boolean') report(`${field}.kubevirt`, `'${String(v.kubevirt)}' must be true or false`);
  if (v.kubevirt === true && vm) report(`${field}.kubevirt`, 'a pod is either a KubeVirt VM (kubevirt) or a guest patchwire starts (vm), not both');
  const withVm = { ...(vm ? { vm } : {}), ...(v.kubevirt === true ? { kubevirt: true as const } : {}) };
  if (v.node === undefined) return withVm;
  if (typeof v.node === 'number' && Number.isInteger(v.node) && v.node > 0) return { node: `node${v.node}`, ...withVm };
  if (typeof v.node === 'string' && /^node[1-9][0-9]*$/.test(v.node)) return { node: v.node, ...withVm };
  report(`${field}.node`, `'${String(v.node)}' is not an emulated node (node1, node2, ... or a number)`);
  return withVm;
}
