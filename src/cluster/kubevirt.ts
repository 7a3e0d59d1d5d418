// KubeVirt VMs as link ends (cluster mode). A Topology with
// `spec.patchwire.kubevirt: true` names a VirtualMachineInstance instead of a
// pod; its links end in taps that patchwire creates in the VMI's virt-launcher
// pod namespace and the VM's QEMU opens by name (libvirt's
// `<interface type='ethernet'><target dev='NAME' managed='no'/>`). The daemon
// reads each tap as a `host` end, so no Linux bridge stands between the guest
// and the wire. See docs/vms.md.
import { ipIn, linkIndex } from '../netns/ip.js';

export const KUBEVIRT_GROUP = 'kubevirt.io';
export const KUBEVIRT_VERSION = 'v1';
export const VMI_PLURAL = 'virtualmachineinstances';
/** KubeVirt labels a virt-launcher pod with the uid of the VMI it runs */
export const LAUNCHER_UID_LABEL = 'kubevirt.io/created-by';
/** virt-launcher runs QEMU as this user (non-root KubeVirt); the tap is given to it, as KubeVirt's own taps are */
export const KUBEVIRT_QEMU_UID = 107;

export interface VmiInfo {
  namespace: string;
  name: string;
  uid: string;
  /** status.nodeName: where the VM runs now (the launcher pod there is the one to use) */
  nodeName: string;
  /** spec.domain.devices.interfaces[].name: the interfaces a Topology may name */
  interfaces: string[];
  /** status.interfaces: what the guest reports per interface (mac, name in the guest) */
  guest: Array<{ name: string; mac?: string; interfaceName?: string }>;
  gone: boolean;
}

interface VmiObject {
  metadata?: { name?: string; namespace?: string; uid?: string; deletionTimestamp?: string };
  spec?: { domain?: { devices?: { interfaces?: Array<{ name?: unknown }> } } };
  status?: { nodeName?: unknown; phase?: unknown; interfaces?: Array<{ name?: unknown; mac?: unknown; interfaceName?: unknown }> };
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** The fields patchwire uses from a VirtualMachineInstance object (anything else about it is KubeVirt's). */
export function vmiInfo(o: VmiObject): VmiInfo {
  const phase = str(o.status?.phase);
  return {
    namespace: o.metadata?.namespace ?? 'default',
    name: o.metadata?.name ?? '',
    uid: o.metadata?.uid ?? '',
    nodeName: str(o.status?.nodeName),
    interfaces: (o.spec?.domain?.devices?.interfaces ?? []).map((i) => str(i?.name)).filter(Boolean),
    guest: (o.status?.interfaces ?? []).map((i) => ({ name: str(i?.name), ...(str(i?.mac) ? { mac: str(i?.mac) } : {}), ...(str(i?.interfaceName) ? { interfaceName: str(i?.interfaceName) } : {}) })),
    gone: !!o.metadata?.deletionTimestamp || phase === 'Succeeded' || phase === 'Failed',
  };
}

/** A tap a VM's QEMU will open, in its launcher pod's namespace. */
export interface GuestTap {
  netns: string;
  ifname: string;
  /** 0: the kernel's default */
  mtu: number;
  /** "namespace/vmi" for messages */
  vmi: string;
}

/** Taps verified as taps (netns, name, ifindex), so a resync does not ask `ip` again. */
const verified = new Set<string>();

/**
 * Makes the tap unless it exists. An existing interface of that name must
 * be a tap: anything else (the launcher's eth0, say) would put the pod
 * network on the wire. Persistent and single-queue, owned by KubeVirt's QEMU
 * user, with a virtio-net header, and up: QEMU attaches with `ifname=NAME,
 * vnet_hdr=on` and nothing else configures it. Returns true when it made it.
 */
export async function ensureGuestTap(tap: GuestTap): Promise<boolean> {
  const where = `interface ${tap.ifname} in the virt-launcher pod of VirtualMachineInstance ${tap.vmi}`;
  let index = await linkIndex(tap.netns, tap.ifname);
  const made = index === 0;
  if (made) {
    try {
      await ipIn(tap.netns, 'tuntap', 'add', 'dev', tap.ifname, 'mode', 'tap', 'user', String(KUBEVIRT_QEMU_UID), 'vnet_hdr');
    } catch (err) {
      throw new Error(`creating ${where}: ${(err as Error).message.split('\n')[0]}`);
    }
    try {
      if (tap.mtu) await ipIn(tap.netns, 'link', 'set', 'dev', tap.ifname, 'mtu', String(tap.mtu));
      await ipIn(tap.netns, 'link', 'set', 'dev', tap.ifname, 'up');
    } catch (err) {
      // Nothing half-made: a tap that could not be configured goes again.
      await ipIn(tap.netns, 'link', 'del', 'dev', tap.ifname).catch(() => undefined);
      throw new Error(`creating ${where}: ${(err as Error).message.split('\n')[0]}`);
    }
    index = await linkIndex(tap.netns, tap.ifname);
  }
  const key = `${tap.netns}\0${tap.ifname}\0${index}`;
  if (verified.has(key)) return made;
  const shown = JSON.parse(await ipIn(tap.netns, '-j', '-d', 'link', 'show', 'dev', tap.ifname)) as Array<{ linkinfo?: { info_kind?: string; info_data?: { type?: string } } }>;
  const info = shown[0]?.linkinfo;
  if (info?.info_kind !== 'tun' || info.info_data?.type !== 'tap') {
    throw new Error(`${where} exists and is not a tap (${info?.info_kind ?? 'a device without a kind'}); patchwire reads only taps it made for the VM, so choose another local_intf`);
  }
  if (verified.size > 4096) verified.clear(); // launcher namespaces come and go; re-checking is cheap
  verified.add(key);
  return made;
}
