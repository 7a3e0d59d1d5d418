// host endpoint: an interface that already exists (a VM's tap, a physical
// NIC). The daemon reads and writes it with AF_PACKET and never deletes it.
import { wire } from '../native/wire.js';
import { netlink, netnsPath } from '../netns/ip.js';
import { DEFAULT_MTU, EndpointBase, maxFrameFor } from './endpoint.js';

export class HostEndpoint extends EndpointBase {
  async open(): Promise<void> {
    const { spec } = this;
    const link = await (await netlink()).linkGet(netnsPath(spec.netns), spec.ifname);
    if (!link) {
      throw new Error(`interface '${spec.ifname}' does not exist in network namespace '${spec.netns || '(daemon)'}'`);
    }
    // Not ours to configure: unless the spec names an MTU, the interface's
    // own MTU says how large a frame it takes (a VM's tap at 9000 gets jumbo
    // frames instead of counting them too_big against a default of 1500).
    const mtu = spec.mtu || link.mtu || DEFAULT_MTU;
    this.maxFrame = maxFrameFor(mtu);
    const opened = wire.openPacket(spec.ifname, netnsPath(spec.netns), { vnetHdr: true });
    this.ifindex = opened.ifindex;
    this.setIo(opened.fd, 'packet', opened.vnetHdr, mtu);
    // Not ours: its carrier is its owner's (a VM's tap follows its QEMU).
    // The wire's carrier is tracked and reported, and frames meeting a
    // pulled cable are dropped and counted, but the interface is not touched.
    this.carrier = { how: 'none', ifindex: 0 };
    this.reattached = true;
  }

  async close(): Promise<void> {
    this.closeFd();
  }
}
