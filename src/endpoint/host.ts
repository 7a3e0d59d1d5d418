// host endpoint: an interface that already exists (a VM's tap, a physical
// NIC). The daemon reads and writes it with AF_PACKET and never deletes it.
import { wire } from '../native/wire.js';
import { linkExists, netnsPath } from '../netns/ip.js';
import { EndpointBase, type EndpointSpec } from './endpoint.js';

export class HostEndpoint extends EndpointBase {


  async open(): Promise<void> {
    const { spec } = this;
    if (!(await linkExists(spec.netns, spec.ifname))) {
      throw new Error(`interface '${spec.ifname}' does not exist in network namespace '${spec.netns || '(daemon)'}'`);
    }
    const opened = wire.openPacket(spec.ifname, netnsPath(spec.netns), { vnetHdr: true });
    this.ifindex = opened.ifindex;
    this.setIo(opened.fd, 'packet', opened.vnetHdr);
  }

  async close(): Promise<void> {
    this.closeFd();
  }
}
