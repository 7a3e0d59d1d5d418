// One line per frame for the page's live packet list: MACs, EtherType and
// a short summary of the protocols a lab shows most (ARP, IPv4/IPv6 with
// ICMP, TCP, UDP; VLAN tags; LLDP). Every offset is checked against the
// frame's length: a short or odd frame gets what could be read, never an
// exception. Wireshark (the capture download) is the full dissector.

export interface FrameSummary {
  /** µs since the Unix epoch */
  ts_us: number;
  end: string;
  /** the pod's interface sent it (out) or the wire delivered it (in) */
  dir: 'in' | 'out';
  src: string;
  dst: string;
  /** "0x0800" */
  ethertype: string;
  /** short protocol name: ARP, IPv4, ICMP, TCP, UDP, IPv6, ICMPv6, LLDP, ... */
  proto: string;
  /** a few words: addresses, ports, ICMP type */
  info: string;
  /** original length on the wire */
  len: number;
}

const mac = (b: Buffer, o: number): string => [...b.subarray(o, o + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
const ip4 = (b: Buffer, o: number): string => [...b.subarray(o, o + 4)].join('.');
function ip6(b: Buffer, o: number): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(b.readUInt16BE(o + i).toString(16));
  // The longest run of zero words becomes '::' (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return words.join(':');
  return `${words.slice(0, best).join(':')}::${words.slice(best + bestLen).join(':')}`;
}

const ICMP4: Record<number, string> = { 0: 'echo reply', 3: 'unreachable', 8: 'echo request', 11: 'time exceeded' };
const ICMP6: Record<number, string> = { 1: 'unreachable', 3: 'time exceeded', 128: 'echo request', 129: 'echo reply', 133: 'router solicitation', 134: 'router advertisement', 135: 'neighbor solicitation', 136: 'neighbor advertisement' };
const ETHERTYPES: Record<number, string> = { 0x0800: 'IPv4', 0x0806: 'ARP', 0x86dd: 'IPv6', 0x88cc: 'LLDP', 0x8809: 'LACP', 0x8847: 'MPLS', 0x88e5: 'MACsec', 0x8902: 'CFM' };

/** The transport part of an IP packet: protocol name and info. */
function transport(b: Buffer, o: number, proto: number, from: string, to: string): { proto: string; info: string } {
  const arrow = `${from} → ${to}`;
  if ((proto === 6 || proto === 17) && b.length >= o + 4) {
    const name = proto === 6 ? 'TCP' : 'UDP';
    return { proto: name, info: `${from}:${b.readUInt16BE(o)} → ${to}:${b.readUInt16BE(o + 2)}` };
  }
  if (proto === 1 && b.length > o) return { proto: 'ICMP', info: `${arrow} ${ICMP4[b[o]!] ?? `type ${b[o]}`}` };
  if (proto === 58 && b.length > o) return { proto: 'ICMPv6', info: `${arrow} ${ICMP6[b[o]!] ?? `type ${b[o]}`}` };
  const known: Record<number, string> = { 2: 'IGMP', 89: 'OSPF', 112: 'VRRP', 103: 'PIM', 47: 'GRE', 50: 'ESP' };
  return { proto: known[proto] ?? `IP proto ${proto}`, info: arrow };
}

export function summarize(data: Buffer, origLen: number, tsUs: number, end: string, outbound: boolean): FrameSummary {
  const s: FrameSummary = { ts_us: tsUs, end, dir: outbound ? 'out' : 'in', src: '', dst: '', ethertype: '', proto: '', info: '', len: origLen };
  if (data.length < 14) {
    s.proto = 'short';
    s.info = `${data.length} bytes`;
    return s;
  }
  s.dst = mac(data, 0);
  s.src = mac(data, 6);
  let o = 12;
  let type = data.readUInt16BE(o);
  const vlans: number[] = [];
  // 802.1Q / 802.1ad tags, at most two (QinQ).
  while ((type === 0x8100 || type === 0x88a8) && vlans.length < 2 && data.length >= o + 6) {
    vlans.push(data.readUInt16BE(o + 2) & 0x0fff);
    o += 4;
    type = data.readUInt16BE(o);
  }
  o += 2;
  s.ethertype = `0x${type.toString(16).padStart(4, '0')}`;
  const tag = vlans.length ? `vlan ${vlans.join('.')} ` : '';
  if (type < 0x0600) {
    s.proto = 'LLC';
    s.info = `${tag}802.3 length ${type}`;
    return s;
  }
  s.proto = ETHERTYPES[type] ?? s.ethertype;
  if (type === 0x0806 && data.length >= o + 28) {
    const op = data.readUInt16BE(o + 6);
    const spa = ip4(data, o + 14);
    const tpa = ip4(data, o + 24);
    s.info = op === 1 ? `who has ${tpa}? tell ${spa}` : op === 2 ? `${spa} is at ${mac(data, o + 8)}` : `op ${op}`;
  } else if (type === 0x0800 && data.length >= o + 20) {
    const ihl = (data[o]! & 0x0f) * 4;
    const t = transport(data, o + ihl, data[o + 9]!, ip4(data, o + 12), ip4(data, o + 16));
    s.proto = t.proto;
    s.info = t.info;
  } else if (type === 0x86dd && data.length >= o + 40) {
    const t = transport(data, o + 40, data[o + 6]!, ip6(data, o + 8), ip6(data, o + 24));
    s.proto = t.proto === `IP proto ${data[o + 6]}` ? 'IPv6' : t.proto;
    s.info = t.info;
  }
  s.info = tag + s.info;
  return s;
}
