// Plumbing helpers: links and namespaces through the addon's rtnetlink
// (wire/src/netlink.cc), a few iproute2 wrappers for what is not per link,
// and the checks of names and addresses. Control-plane only.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import path from 'node:path';

import type { NativeNetlink } from '../native/wire.js';

let loaded: NativeNetlink | null = null;
/**
 * The addon's rtnetlink calls: no `ip` or `nsenter` process per link. Loaded
 * on first use, so validating a topology file does not need the addon.
 */
export async function netlink(): Promise<NativeNetlink> {
  loaded ??= (await import('../native/wire.js')).wire.netlink;
  return loaded;
}

export class CommandError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message);
  }
}

export function run(cmd: string, args: string[], opts: { input?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const msg = (stderr || err.message).trim();
        reject(new CommandError(`${cmd} ${args.join(' ')}: ${msg}`, msg));
      } else resolve(stdout);
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

export function ip(...args: string[]): Promise<string> {
  return run('ip', args);
}

/** A network namespace given by name (under /var/run/netns) or by path. */
export function netnsPath(netns: string): string {
  if (netns === '') return '';
  return netns.startsWith('/') ? netns : path.join('/var/run/netns', netns);
}

/**
 * Processes whose network namespace is the named one (none when it is gone).
 * Deleting a namespace does not end them, so clean-up kills these first.
 */
export function pidsInNetns(netns: string): number[] {
  return pidsInNamespaces([netns]);
}

/**
 * Processes inside any of the given namespaces, in one pass over /proc (a
 * lab's 500 pods cost one scan instead of 500 `ip netns pids`).
 */
export function pidsInNamespaces(namespaces: string[]): number[] {
  const inodes = new Set<string>();
  for (const ns of namespaces) {
    try {
      inodes.add(`net:[${statSync(netnsPath(ns)).ino}]`);
    } catch {
      /* gone */
    }
  }
  if (inodes.size === 0) return [];
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (inodes.has(readlinkSync(`/proc/${d}/ns/net`))) out.push(Number(d));
    } catch {
      /* gone, or a kernel thread */
    }
  }
  return out;
}

export function netnsExists(netns: string): boolean {
  return netns === '' || existsSync(netnsPath(netns));
}

/** `ip -n NS` for named namespaces, `ip -netns PATH` does not exist, so paths go through nsenter. */
export function ipIn(netns: string, ...args: string[]): Promise<string> {
  if (netns === '') return ip(...args);
  if (!netns.startsWith('/')) return ip('-n', netns, ...args);
  return run('nsenter', [`--net=${netns}`, 'ip', ...args]);
}

export async function linkExists(netns: string, ifname: string): Promise<boolean> {
  return (await (await netlink()).linkGet(netnsPath(netns), ifname)) !== null;
}

/** The interface's index, 0 when it does not exist. */
export async function linkIndex(netns: string, ifname: string): Promise<number> {
  return (await (await netlink()).linkGet(netnsPath(netns), ifname))?.ifindex ?? 0;
}

// '%' too: the kernel takes "eth%d" as a template and picks a name itself.
const IFNAME_RE = /^[^\s/:%]+$/;

/** Why a Linux interface name is invalid, or null. */
export function ifnameProblem(name: string): string | null {
  const bytes = Buffer.byteLength(name);
  if (bytes === 0) return 'interface name is empty';
  if (bytes > 15) return `interface name '${name}' is ${bytes} bytes long; Linux allows at most 15`;
  if (name === '.' || name === '..' || !IFNAME_RE.test(name)) {
    return `interface name '${name}' is not a valid Linux name (no '/', ':', '%' or white space, not '.' or '..')`;
  }
  return null;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
export function macProblem(mac: string): string | null {
  if (mac === '') return null;
  if (!MAC_RE.test(mac)) return `MAC address '${mac}' is not of the form 02:00:00:00:00:01`;
  // An interface cannot have a group address (the kernel refuses it).
  if (parseInt(mac.slice(0, 2), 16) & 1) return `MAC address '${mac}' is a multicast (group) address; an interface needs a unicast one (first byte even)`;
  return null;
}

export const MTU_MIN = 68;
export const MTU_MAX = 65535;
export function mtuProblem(mtu: number): string | null {
  if (mtu === 0) return null;
  if (!Number.isInteger(mtu) || mtu < MTU_MIN || mtu > MTU_MAX) return `MTU ${mtu} is out of range (${MTU_MIN} to ${MTU_MAX})`;
  return null;
}

export function cidrProblem(cidr: string): string | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(cidr);
  if (!m) return `address '${cidr}' is not in CIDR form (e.g. 192.0.2.1/24)`;
  const [, addr, lenStr] = m;
  const len = Number(lenStr);
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(addr!);
  if (v4) {
    if (v4.slice(1).some((o) => Number(o) > 255)) return `address '${cidr}' has an octet over 255`;
    if (len > 32) return `address '${cidr}' has a prefix length over 32`;
    return null;
  }
  if (addr!.includes(':')) {
    if (!isIPv6(addr!)) return `address '${cidr}' is not a valid IPv6 address`;
    if (len > 128) return `address '${cidr}' has a prefix length over 128`;
    return null;
  }
  return `address '${cidr}' is not an IPv4 or IPv6 address`;
}
