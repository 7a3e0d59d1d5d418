// Reads classic pcap files (what tcpdump -w writes) for byte-for-byte checks.
import { readFileSync } from 'node:fs';

export interface PcapRecord {
  tsSec: number;
  tsUsec: number;
  origLen: number;
  data: Buffer;
}

export function readPcap(file: string): PcapRecord[] {
  const buf = readFileSync(file);
  if (buf.length < 24) throw new Error(`${file}: not a pcap file (${buf.length} bytes)`);
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && buf.readUInt32BE(0) !== 0xa1b2c3d4 && buf.readUInt32BE(0) !== 0xa1b23c4d) throw new Error(`${file}: bad pcap magic ${magic.toString(16)}`);
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const out: PcapRecord[] = [];
  let pos = 24;
  while (pos + 16 <= buf.length) {
    const incl = u32(pos + 8);
    if (pos + 16 + incl > buf.length) break; // a record cut short by SIGINT
    out.push({ tsSec: u32(pos), tsUsec: u32(pos + 4), origLen: u32(pos + 12), data: buf.subarray(pos + 16, pos + 16 + incl) });
    pos += 16 + incl;
  }
  return out;
}
