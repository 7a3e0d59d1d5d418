// Where a lab lives on this machine, and what it is made of.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';

import type { LinkModel, SegmentModel, VmSpec } from '../topology/model.js';

export const LABS_DIR = process.env.PATCHWIRE_LABS_DIR ?? '/run/patchwire/labs';
export const DATA_PORT = 7000;
export const HTTP_PORT = 8080;
export const LAB_NAME_RE = /^[a-z0-9][a-z0-9_]{0,15}$/;

export interface LabNode {
  name: string;
  ns: string;
  ip: string;
  address: string;
  /** HTTP capture endpoint, inside the node's namespace */
  http: string;
  control: string;
  state: string;
  log: string;
  /** this node's TLS identity (made by `up`); absent in labs made before labs had them: plain text */
  tls?: { cert: string; key: string; ca: string };
}

/** One NIC of a guest: a link end of its pod. */
export interface VmNic {
  /** the link's interface name: the tap's in the pod namespace, and the NIC's in the guest (pw.if=) */
  intf: string;
  mac: string;
  mtu?: number;
  ips: string[];
  /** QEMU's netdev id, which QMP set_link names */
  netdev: string;
}

/** What a lab keeps of a VM pod. */
export interface LabVm {
  spec: VmSpec;
  nics: VmNic[];
}

export interface LabPod {
  name: string;
  ns: string;
  node: string;
  /** a QEMU guest in the pod's namespace (src/lab/vm.ts) */
  vm?: LabVm;
}

export interface LabState {
  version: 1;
  name: string;
  file: string;
  created: string;
  underlay: string;
  nodes: LabNode[];
  pods: LabPod[];
  links: LinkModel[];
  /** shared segments, each with its wire id on the daemons (absent in labs made before segments) */
  segments?: Array<SegmentModel & { uid: number }>;
  /** passed to every daemon as --capture-ring-bytes (absent: the daemon's default) */
  captureRingBytes?: number;
  /** passed to every daemon as --rt-priority (absent: normal scheduling) */
  rtPriority?: number;
}

export interface SupervisorState {
  pid: number;
  daemons: Record<string, number>;
  restarts: Record<string, number>;
  /** per node: the delay before the last restart, ms */
  backoffMs: Record<string, number>;
  /** per node: when its daemon last exited (ms since the epoch, newest last, at most 10) */
  exits: Record<string, number[]>;
  /** per node: its daemon keeps exiting soon after each start */
  crashLooping: Record<string, boolean>;
  /** per VM pod: QEMU's pid (0 while it is down) and how often the supervisor started it again */
  vms?: Record<string, { pid: number; restarts: number; lastExit?: number }>;
}

export function labDir(name: string): string {
  return path.join(LABS_DIR, name);
}

export function labNameProblem(name: string): string | null {
  return LAB_NAME_RE.test(name) ? null : `lab name '${name}' must be 1 to 16 characters of a-z, 0-9 and '_', starting with a letter or digit`;
}

/** Namespace names: pods, nodes and the underlay of one lab never collide with another lab's. */
export function podNs(lab: string, pod: string): string {
  return `pw-${lab}-${pod}`;
}
export function nodeNs(lab: string, node: string): string {
  return `pwn-${lab}-${node}`;
}
export function underlayNs(lab: string): string {
  return `pwu-${lab}`;
}

export function makeNode(lab: string, index: number): LabNode {
  const name = `node${index}`;
  const dir = labDir(lab);
  const ip = `198.18.${Math.floor(index / 250)}.${(index % 250) + 1}`;
  return {
    name,
    ns: nodeNs(lab, name),
    ip,
    address: `${ip}:${DATA_PORT}`,
    http: `${ip}:${HTTP_PORT}`,
    control: `unix://${path.join(dir, `${name}.sock`)}`,
    state: path.join(dir, `${name}.wires.json`),
    log: path.join(dir, `${name}.log`),
    tls: { cert: path.join(dir, 'tls', `${name}.crt`), key: path.join(dir, 'tls', `${name}.key`), ca: path.join(dir, 'tls', 'ca.crt') },
  };
}

/** The lab's file, null if there is none; throws, naming the file, if it is damaged. */
export function readLab(name: string): LabState | null {
  const file = path.join(labDir(name), 'lab.json');
  if (!existsSync(file)) return null;
  let v: LabState;
  try {
    v = JSON.parse(readFileSync(file, 'utf8')) as LabState;
  } catch (err) {
    throw new Error(`lab file ${file} is damaged (${(err as Error).message}); 'patchwire down ${name}' removes the lab`);
  }
  if (typeof v !== 'object' || v === null || v.version !== 1 || !Array.isArray(v.nodes) || !Array.isArray(v.pods) || !Array.isArray(v.links)) {
    throw new Error(`lab file ${file} is damaged (not a version 1 lab with nodes, pods and links); 'patchwire down ${name}' removes the lab`);
  }
  return v;
}

/** Writes the lab file through an fsynced temporary file, so a crash leaves the old or the new one. */
export function writeLab(state: LabState): void {
  const dir = labDir(state.name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = path.join(dir, 'lab.json');
  const fd = openSync(`${file}.tmp`, 'w', 0o644);
  try {
    writeSync(fd, JSON.stringify(state, null, 1));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(`${file}.tmp`, file);
}

export function readSupervisor(name: string): SupervisorState | null {
  try {
    return JSON.parse(readFileSync(path.join(labDir(name), 'supervisor.json'), 'utf8')) as SupervisorState;
  } catch {
    return null;
  }
}

export function writeSupervisor(name: string, s: SupervisorState): void {
  const file = path.join(labDir(name), 'supervisor.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(s));
  renameSync(`${file}.tmp`, file);
}

export function listLabs(): string[] {
  if (!existsSync(LABS_DIR)) return [];
  return readdirSync(LABS_DIR)
    .filter((d) => existsSync(path.join(LABS_DIR, d, 'lab.json')))
    .sort();
}

export function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
