// tap endpoint: the daemon creates a persistent tap inside the pod namespace
// and holds its fd. Persistent, so the pod's interface outlives a daemon
// crash and a restarted daemon re-attaches to the same device.
import { wire } from '../native/wire.js';
import { linkExists, linkIndex, netnsPath } from '../netns/ip.js';
import { configurePodInterface } from './configure.js';
import { EndpointBase, type EndpointSpec, effectiveMtu, makePort } from './endpoint.js';

export class TapEndpoint extends EndpointBase {
  private fd = -1;


  async open(attach: boolean): Promise<void> {
    const { spec } = this;
    const existed = await linkExists(spec.netns, spec.ifname);
    if (existed && !attach) {
      throw new Error(`interface '${spec.ifname}' already exists in network namespace '${spec.netns}'`);
    }
    const opened = wire.openTap(spec.ifname, netnsPath(spec.netns), { vnetHdr: true, persist: true });
    this.fd = opened.fd;
    this.vnetHdr = opened.vnetHdr;
    this.port = makePort(opened.fd, 'tap', opened.vnetHdr, effectiveMtu(spec));
    try {
      await configurePodInterface(spec, true);
      this.ifindex = await linkIndex(spec.netns, spec.ifname);
    } catch (err) {
      if (!existed) await this.close(true);
      throw err;
    }
  }

  async close(remove: boolean): Promise<void> {
    if (this.fd < 0) return;
    // Dropping persistence before the last close makes the kernel delete it.
    if (remove) {
      try {
        wire.unpersistTap(this.fd);
      } catch {
        /* already gone */
      }
    }
    this.port.close();
    this.fd = -1;
  }
}
