// Settings shared by every kind once the pod-side interface exists.
import { ipIn } from '../netns/ip.js';
import type { EndpointSpec } from './endpoint.js';

export async function configurePodInterface(spec: EndpointSpec, setMacMtu: boolean): Promise<void> {
  const args = ['link', 'set', 'dev', spec.ifname];
  if (setMacMtu && spec.mac) args.push('address', spec.mac);
  if (setMacMtu && spec.mtu) args.push('mtu', String(spec.mtu));
  await ipIn(spec.netns, ...args);
  for (const addr of spec.ips) await ipIn(spec.netns, 'addr', 'replace', addr, 'dev', spec.ifname);
  await ipIn(spec.netns, 'link', 'set', 'dev', spec.ifname, 'up');
}
