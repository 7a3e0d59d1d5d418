// VM pods: a QEMU guest started inside the pod's network namespace, one
// virtio-net NIC per link. QEMU creates each NIC's tap in the pod namespace
// under the link's interface name, with a virtio-net header (vnet_hdr), and
// the node's daemon reads that tap as a `host` end (AF_PACKET with
// PACKET_VNET_HDR), so TCP super-frames cross whole. docs/vms.md says why.
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

import type { EndpointSpec } from '../endpoint/endpoint.js';
import type { LinkModel } from '../topology/model.js';
import { alive, labDir, type LabPod, type LabVm, type VmNic } from './state.js';

export type { LabVm, VmNic };

export const QEMU = process.env.PATCHWIRE_QEMU ?? 'qemu-system-x86_64';

/** Where a VM's files live, with the lab (removed by `down`). */
export function vmPaths(lab: string, pod: string): { dir: string; qmp: string; console: string; consoleLog: string; pid: string; log: string } {
  const dir = path.join(labDir(lab), 'vms', pod);
  return { dir, qmp: path.join(dir, 'qmp.sock'), console: path.join(dir, 'console.sock'), consoleLog: path.join(dir, 'console.log'), pid: path.join(dir, 'qemu.pid'), log: path.join(dir, 'qemu.log') };
}

/** A locally administered MAC that stays the same for the same lab, pod and interface (the guest's names follow it). */
export function vmMac(lab: string, pod: string, intf: string): string {
  const h = createHash('sha256').update(`${lab}\0${pod}\0${intf}`).digest();
  return ['52', '54', h[0]!, h[1]!, h[2]!, h[3]!].map((x) => (typeof x === 'string' ? x : x.toString(16).padStart(2, '0'))).join(':');
}

/** The NICs a VM pod gets: one per link end of it, in link order. */
export function vmNics(lab: string, pod: string, links: LinkModel[]): VmNic[] {
  const out: VmNic[] = [];
  for (const l of [...links].sort((a, b) => a.uid - b.uid)) {
    for (const e of [l.a, l.b]) {
      if (e.kind === 'host' || e.pod !== pod) continue;
      out.push({ intf: e.intf, mac: (e.mac ?? vmMac(lab, pod, e.intf)).toLowerCase(), ...(e.mtu ? { mtu: e.mtu } : {}), ips: [e.ip, e.ip6].filter((x): x is string => !!x), netdev: `pw-${e.intf.replace(/[^A-Za-z0-9_.-]/g, '_')}` });
    }
  }
  return out;
}

let kvmWorks: boolean | undefined;

/**
 * Whether QEMU can run a guest with KVM here: /dev/kvm opens, and a paused
 * q35 guest with the host's CPU starts and quits over QMP. Access alone is
 * not enough: a nested hypervisor may offer /dev/kvm and refuse the vCPU's
 * MSRs (QEMU then aborts at start, "kvm_buf_set_msrs"). Probed once per
 * process, in about 50 ms; TCG otherwise.
 */
export function kvmUsable(): boolean {
  if (kvmWorks !== undefined) return kvmWorks;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return (kvmWorks = false);
  }
  const probe = spawnSync(
    'qemu-system-x86_64',
    ['-machine', 'q35,accel=kvm', '-cpu', 'host', '-m', '64', '-nodefaults', '-display', 'none', '-no-user-config', '-S', '-serial', 'none', '-qmp', 'stdio'],
    { input: '{"execute":"qmp_capabilities"}{"execute":"quit"}\n', timeout: 10_000, stdio: ['pipe', 'ignore', 'ignore'] },
  );
  return (kvmWorks = probe.status === 0);
}

/** QEMU's command line for a VM pod (run inside the pod's namespace). */
export function qemuArgs(lab: string, pod: string, vm: LabVm, kvm = kvmUsable()): string[] {
  const p = vmPaths(lab, pod);
  const { spec } = vm;
  const args = [
    '-name', `pw-${lab}-${pod}`,
    '-machine', `q35,accel=${kvm ? 'kvm' : 'tcg'}`,
    '-cpu', kvm ? 'host' : 'max',
    '-m', String(spec.memory),
    '-smp', String(spec.cpus),
    '-nodefaults', '-display', 'none', '-no-user-config',
    // A guest that panics or powers off exits; the supervisor starts it again.
    '-no-reboot',
    '-chardev', `socket,id=console,path=${p.console},server=on,wait=off,logfile=${p.consoleLog},logappend=on`,
    '-serial', 'chardev:console',
    '-qmp', `unix:${p.qmp},server=on,wait=off`,
    '-pidfile', p.pid,
    '-daemonize',
  ];
  if (spec.kernel) {
    args.push('-kernel', spec.kernel);
    if (spec.initrd) args.push('-initrd', spec.initrd);
    // pw.if/pw.ip/pw.mtu: how the test guest's init names and addresses its NICs (docs/vms.md).
    const cmdline = ['console=ttyS0', 'panic=-1', ...vm.nics.map((n) => `pw.if=${n.intf},${n.mac}`), ...vm.nics.flatMap((n) => n.ips.map((ip) => `pw.ip=${n.intf},${ip}`)), ...vm.nics.filter((n) => n.mtu).map((n) => `pw.mtu=${n.intf},${n.mtu}`)];
    if (spec.append) cmdline.push(spec.append);
    args.push('-append', cmdline.join(' '));
  }
  if (spec.disk) args.push('-drive', `file=${spec.disk},if=virtio,snapshot=on`);
  vm.nics.forEach((n, i) => {
    args.push('-netdev', `tap,id=${n.netdev},ifname=${n.intf},script=no,downscript=no,vnet_hdr=on`);
    args.push('-device', `virtio-net-pci,netdev=${n.netdev},mac=${n.mac},addr=${(0x10 + i).toString(16)}${n.mtu ? `,host_mtu=${n.mtu}` : ''}`);
  });
  args.push(...spec.args);
  return args;
}

/** The running QEMU's pid, or 0 (a pid file whose process is gone, or is not this VM's QEMU, is 0). */
export function vmPid(lab: string, pod: string): number {
  try {
    const pid = Number(readFileSync(vmPaths(lab, pod).pid, 'utf8').trim());
    if (!alive(pid)) return 0;
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return cmd.includes(`pw-${lab}-${pod}`) ? pid : 0;
  } catch {
    return 0;
  }
}

/**
 * Starts a VM pod's QEMU in its namespace and brings its taps up (QEMU
 * creates them down). Returns when the taps exist: -daemonize returns once
 * QEMU has set its devices up.
 */
export function startVm(lab: string, pod: LabPod & { vm: LabVm }): number {
  const p = vmPaths(lab, pod.name);
  mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  for (const f of [p.qmp, p.console, p.pid]) rmSync(f, { force: true });
  for (const f of [pod.vm.spec.kernel, pod.vm.spec.initrd, pod.vm.spec.disk]) {
    if (f && !existsSync(f)) throw new Error(`VM ${pod.name}: ${f} does not exist`);
  }
  const r = spawnSync('ip', ['netns', 'exec', pod.ns, QEMU, ...qemuArgs(lab, pod.name, pod.vm)], { encoding: 'utf8', timeout: 60000 });
  if (r.error) throw new Error(`VM ${pod.name}: ${QEMU}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`VM ${pod.name}: ${QEMU} exited ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n').slice(-3).join('; ')}`);
  for (const n of pod.vm.nics) {
    const set = ['-n', pod.ns, 'link', 'set', n.intf, ...(n.mtu ? ['mtu', String(n.mtu)] : []), 'up'];
    const s = spawnSync('ip', set, { encoding: 'utf8' });
    if (s.status !== 0) throw new Error(`VM ${pod.name}: tap ${n.intf}: ${(s.stderr ?? '').trim()}`);
  }
  return vmPid(lab, pod.name);
}

/** A VM pod's link end as the daemon gets it: QEMU's tap, read as a host end, with QMP for its link state. */
export function vmEndpoint(lab: string, pod: LabPod, base: EndpointSpec): EndpointSpec {
  const nic = pod.vm?.nics.find((n) => n.intf === base.ifname);
  return { ...base, kind: 'host', ips: [], mac: '', ...(nic ? { qmp: { socket: vmPaths(lab, pod.name).qmp, netdev: nic.netdev } } : {}) };
}
