// tap endpoint: the daemon creates a persistent, multi-queue tap inside the
// pod namespace and holds its fd (one queue). Persistent, so the pod's
// interface outlives a daemon crash and a restarted daemon re-attaches to the
// same device; multi-queue, so that another process (a lab's supervisor, a
// cluster's tap-holder container) can hold a detached queue that keeps its
// carrier meanwhile (src/endpoint/tap-holder.ts).
import { closeSync } from 'node:fs';

import { wire } from '../native/wire.js';
import { linkExists, netnsPath } from '../netns/ip.js';
import { configurePodInterface } from './configure.js';
import { EndpointBase } from './endpoint.js';

export class TapEndpoint extends EndpointBase {
  /** counter socket in the pod's namespace (see kernelQueueDrops) */
  private counters = 0;

  async open(attach: boolean): Promise<void> {
    const { spec } = this;
    const existed = await linkExists(spec.netns, spec.ifname);
    if (existed && !attach) {
      throw new Error(`interface '${spec.ifname}' already exists in network namespace '${spec.netns}'`);
    }
    const opened = wire.openTap(spec.ifname, netnsPath(spec.netns), { vnetHdr: true, persist: true });
    this.setIo(opened.fd, 'tap', opened.vnetHdr);
    this.carrier = { how: 'tap', ifindex: 0 };
    this.reattached = existed;
    try {
      this.ifindex = await configurePodInterface(spec, true);
      // While the engine does not read the tap (backpressure), the frames the
      // pod sends wait in the tap's queue; what does not fit is dropped there
      // and counted as the tap's tx_dropped.
      this.counters = wire.netlink.countersOpen(netnsPath(spec.netns));
      this.watchQueueDrops(this.counters, this.ifindex, 'txDropped');
    } catch (err) {
      if (this.counters) wire.netlink.countersClose(this.counters);
      this.counters = 0;
      if (!existed) await this.close(true);
      else this.closeFd();
      throw err;
    }
  }

  async close(remove: boolean): Promise<void> {
    if (this.counters) wire.netlink.countersClose(this.counters);
    this.counters = 0;
    if (remove) {
      // Dropping persistence before the last close makes the kernel delete
      // it. The engine has closed its fd by now, so attach once more to do it.
      try {
        if (this.io && !this.handedOff) wire.unpersistTap(this.io.fd);
        else {
          const again = wire.openTap(this.spec.ifname, netnsPath(this.spec.netns), { vnetHdr: true, persist: false });
          closeSync(again.fd);
        }
      } catch {
        /* already gone */
      }
      // A tap whose detached queue another process holds (src/endpoint/tap-holder.ts)
      // outlives its last attached queue: delete it outright.
      await wire.netlink.linkDel(netnsPath(this.spec.netns), this.spec.ifname).catch(() => false);
    }
    this.closeFd();
  }
}
