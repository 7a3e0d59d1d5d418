// veth endpoint: the daemon creates a veth pair, puts one end in the pod with
// the requested name, and reads the other end (in the daemon's namespace)
// with an AF_PACKET socket. The host end's ingress guard keeps the pod's
// frames out of the node's IP stack (SECURITY.md).
import { createHash } from 'node:crypto';

import { wire } from '../native/wire.js';
import { linkExists, linkIndex, netlink, netnsPath } from '../netns/ip.js';
import { EndpointBase, type EndpointSpec, effectiveMtu } from './endpoint.js';

/** Stable host-side name, so a restarted daemon finds the same interface. */
export function vethHostName(spec: EndpointSpec): string {
  return 'pw' + createHash('sha1').update(`${spec.netns}\0${spec.ifname}`).digest('hex').slice(0, 12);
}

/** One counter socket in the daemon's own namespace serves every host end. */
let hostCounters: number | undefined;
const daemonCounters = (): number => (hostCounters ??= wire.netlink.countersOpen(''));

export class VethEndpoint extends EndpointBase {
  readonly hostName: string;
  private hostIndex = 0;

  constructor(spec: EndpointSpec) {
    super(spec);
    this.hostName = vethHostName(spec);
  }

  async open(attach: boolean): Promise<void> {
    const { spec } = this;
    const nl = await netlink();
    const present = attach && (await linkExists('', this.hostName)) && (await linkExists(spec.netns, spec.ifname));
    if (!present) {
      // One netlink call: the pair with the pod end made straight in the pod
      // (name, MAC, MTU, addresses, up) and the host end silent (no IPv6) and
      // up; on any failure nothing of it is left. A stale host end from a
      // crash would block the name; it carries nothing, so it goes first.
      const made = await nl.vethCreate({
        host: this.hostName,
        peer: spec.ifname,
        peerNetns: netnsPath(spec.netns),
        mtu: effectiveMtu(spec),
        peerMac: spec.mac,
        peerAddrs: spec.ips,
        replaceStaleHost: true,
        guardHost: true,
        // Down until the engine knows the far end is ready: the pod's end
        // has no carrier and keeps what it sends in its own kernel.
        hostUp: false,
      });
      this.ifindex = made.peerIndex;
      this.hostIndex = made.hostIndex;
    }
    try {
      const opened = wire.openPacket(this.hostName, '', { vnetHdr: true });
      this.setIo(opened.fd, 'packet', opened.vnetHdr);
      this.carrier = { how: 'veth', ifindex: opened.ifindex };
      this.reattached = present;
      if (present) {
        this.ifindex = await linkIndex(spec.netns, spec.ifname);
        this.hostIndex = await linkIndex('', this.hostName);
        // A host end made by a daemon from before the guard gets it now.
        await nl.ingressGuard('', this.hostName);
      }
      // A frame the pod sends that the host end's input backlog has no room
      // for is dropped there, before our socket sees it: counted as its rx_dropped.
      this.watchQueueDrops(daemonCounters(), this.hostIndex, 'rxDropped');
    } catch (err) {
      this.closeFd();
      if (!present) await nl.linkDel('', this.hostName).catch(() => undefined);
      throw err;
    }
  }

  async close(remove: boolean): Promise<void> {
    this.closeFd();
    // Deleting one end of a veth pair deletes both.
    if (remove) await (await netlink()).linkDel('', this.hostName).catch(() => undefined);
  }
}
