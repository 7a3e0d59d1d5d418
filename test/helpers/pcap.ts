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

export interface PcapngFile {
  interfaces: Array<{ name: string; description: string; tsresol: number }>;
  packets: Array<{ iface: number; tsUs: number; flags: number; origLen: number; data: Buffer }>;
}

/** A small pcapng reader (little-endian sections), independent of the writer under test. */
export function readPcapng(file: string): PcapngFile {
  return parsePcapng(readFileSync(file), file);
}

/** Parses pcapng bytes; a block cut short at the end (a stream still being written) is left out. */
export function parsePcapng(buf: Buffer, file = 'pcapng stream'): PcapngFile {
  const out: PcapngFile = { interfaces: [], packets: [] };
  let pos = 0;
  if (buf.length === 0) return out;
  if (buf.length < 4 || buf.readUInt32LE(0) !== 0x0a0d0d0a) throw new Error(`${file}: not pcapng`);
  const opts = (start: number, end: number): Map<number, Buffer> => {
    const m = new Map<number, Buffer>();
    let o = start;
    while (o + 4 <= end) {
      const code = buf.readUInt16LE(o);
      const len = buf.readUInt16LE(o + 2);
      if (code === 0) break;
      m.set(code, buf.subarray(o + 4, o + 4 + len));
      o += 4 + ((len + 3) & ~3);
    }
    return m;
  };
  while (pos + 12 <= buf.length) {
    const type = buf.readUInt32LE(pos);
    const len = buf.readUInt32LE(pos + 4);
    if (len < 12 || pos + len > buf.length) break;
    if (buf.readUInt32LE(pos + len - 4) !== len) throw new Error(`${file}: block at ${pos} has mismatched lengths`);
    if (type === 1) {
      const o = opts(pos + 16, pos + len - 4);
      out.interfaces.push({ name: o.get(2)?.toString() ?? '', description: o.get(3)?.toString() ?? '', tsresol: o.get(9)?.[0] ?? 6 });
    } else if (type === 6) {
      const cap = buf.readUInt32LE(pos + 20);
      const o = opts(pos + 28 + ((cap + 3) & ~3), pos + len - 4);
      out.packets.push({
        iface: buf.readUInt32LE(pos + 8),
        tsUs: buf.readUInt32LE(pos + 12) * 2 ** 32 + buf.readUInt32LE(pos + 16),
        flags: o.get(2)?.readUInt32LE(0) ?? 0,
        origLen: buf.readUInt32LE(pos + 24),
        data: buf.subarray(pos + 28, pos + 28 + cap),
      });
    }
    pos += len;
  }
  return out;
}
