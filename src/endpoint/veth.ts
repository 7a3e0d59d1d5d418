// veth endpoint: the daemon creates a veth pair, puts one end in the pod with
// the requested name, and reads the other end (in the daemon's namespace)
// with an AF_PACKET socket.
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';

import { wire } from '../native/wire.js';
import { ip, linkExists, linkIndex } from '../netns/ip.js';
import { configurePodInterface } from './configure.js';
import { EndpointBase, type EndpointSpec, effectiveMtu } from './endpoint.js';

/** Stable host-side name, so a restarted daemon finds the same interface. */
export function vethHostName(spec: EndpointSpec): string {
  return 'pw' + createHash('sha1').update(`${spec.netns}\0${spec.ifname}`).digest('hex').slice(0, 12);
}

export class VethEndpoint extends EndpointBase {
  readonly hostName: string;

  constructor(spec: EndpointSpec) {
    super(spec);
    this.hostName = vethHostName(spec);
  }

  async open(attach: boolean): Promise<void> {
    const { spec } = this;
    const mtu = String(effectiveMtu(spec));
    const present = attach && (await linkExists('', this.hostName)) && (await linkExists(spec.netns, spec.ifname));
    if (!present) {
      if (await linkExists(spec.netns, spec.ifname)) {
        throw new Error(`interface '${spec.ifname}' already exists in network namespace '${spec.netns}'`);
      }
      // A stale host end from a crash would block the name; it carries nothing.
      if (await linkExists('', this.hostName)) await ip('link', 'del', 'dev', this.hostName);
      const peer = ['name', spec.ifname, 'netns', spec.netns, 'mtu', mtu];
      if (spec.mac) peer.push('address', spec.mac);
      await ip('link', 'add', this.hostName, 'mtu', mtu, 'type', 'veth', 'peer', ...peer);
      try {
        // The host end must stay silent: no IPv6 link-local address, no
        // router solicitations or MLD reports leaking into the pod.
        await writeFile(`/proc/sys/net/ipv6/conf/${this.hostName}/disable_ipv6`, '1').catch(() => undefined);
        await ip('link', 'set', 'dev', this.hostName, 'addrgenmode', 'none').catch(() => undefined);
        await ip('link', 'set', 'dev', this.hostName, 'up');
        await configurePodInterface(spec, false);
      } catch (err) {
        await ip('link', 'del', 'dev', this.hostName).catch(() => undefined);
        throw err;
      }
    }
    try {
      const opened = wire.openPacket(this.hostName, '', { vnetHdr: true });
      this.setIo(opened.fd, 'packet', opened.vnetHdr);
      this.ifindex = await linkIndex(spec.netns, spec.ifname);
    } catch (err) {
      this.closeFd();
      if (!present) await ip('link', 'del', 'dev', this.hostName).catch(() => undefined);
      throw err;
    }
  }

  async close(remove: boolean): Promise<void> {
    this.closeFd();
    // Deleting one end of a veth pair deletes both.
    if (remove) await ip('link', 'del', 'dev', this.hostName).catch(() => undefined);
  }
}
