// The packet list's one-line summaries: the protocols a lab shows most, and
// any bytes at all (truncated, odd) giving a summary, never an exception.
import fc from 'fast-check';
import t from 'tap';

import { summarize } from '../../src/ui/decode.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ETH = 'ffffffffffff 020000000001';

t.test('ARP, ICMP, UDP, VLAN, IPv6, LLDP', async (t) => {
  const arp = summarize(hex(`${ETH} 0806 0001 0800 06 04 0001 020000000001 c0000201 000000000000 c0000202`), 42, 5, 'r1/eth1', true);
  t.match(arp, { dst: 'ff:ff:ff:ff:ff:ff', src: '02:00:00:00:00:01', ethertype: '0x0806', proto: 'ARP', info: 'who has 192.0.2.2? tell 192.0.2.1', dir: 'out', len: 42, end: 'r1/eth1', ts_us: 5 });
  const ip = '4500 0054 0000 4000 4001 0000 c0000201 c0000202';
  t.match(summarize(hex(`${ETH} 0800 ${ip} 0800 0000 0001 0001`), 98, 0, 'e', false), { proto: 'ICMP', info: '192.0.2.1 → 192.0.2.2 echo request', dir: 'in' });
  const udp = '4500 0030 0000 4000 4011 0000 c0000201 c0000202 1234 0035 0010 0000';
  t.match(summarize(hex(`${ETH} 8100 0064 0800 ${udp}`), 64, 0, 'e', false), { proto: 'UDP', ethertype: '0x0800', info: 'vlan 100 192.0.2.1:4660 → 192.0.2.2:53' });
  const v6 = `6000 0000 0008 3aff fe80 0000 0000 0000 0000 0000 0000 0001 ff02 0000 0000 0000 0000 0000 0000 0002 8500 0000`;
  t.match(summarize(hex(`${ETH} 86dd ${v6}`), 62, 0, 'e', false), { proto: 'ICMPv6', info: 'fe80::1 → ff02::2 router solicitation' });
  t.match(summarize(hex(`0180c200000e 020000000001 88cc 0207 04`), 60, 0, 'e', false), { proto: 'LLDP' });
  t.match(summarize(hex('0102'), 2, 0, 'e', false), { proto: 'short', info: '2 bytes' });
  t.match(summarize(hex(`${ETH} 0800 4500`), 16, 0, 'e', false), { proto: 'IPv4', info: '' }, 'a truncated IPv4 header says only IPv4');
});

t.test('any bytes give a summary', async () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 120 }), (bytes) => {
      const s = summarize(Buffer.from(bytes), bytes.length, 0, 'e', true);
      return typeof s.info === 'string' && s.len === bytes.length;
    }),
    { numRuns: 3000 },
  );
});
