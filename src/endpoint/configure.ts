// Settings shared by every kind once the pod-side interface exists.
import { netlink, netnsPath } from '../netns/ip.js';
import type { EndpointSpec } from './endpoint.js';

/** MAC and MTU (when asked), addresses, then up, in one netlink call; returns the interface's index. */
export async function configurePodInterface(spec: EndpointSpec, setMacMtu: boolean): Promise<number> {
  const { ifindex } = await (await netlink()).linkConfigure({
    netns: netnsPath(spec.netns),
    name: spec.ifname,
    ...(setMacMtu && spec.mac ? { mac: spec.mac } : {}),
    ...(setMacMtu && spec.mtu ? { mtu: spec.mtu } : {}),
    addrs: spec.ips,
    up: true,
  });
  return ifindex;
}
