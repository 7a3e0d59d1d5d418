// pcapng (draft-ietf-opsawg-pcapng) and classic pcap writers for captured
// frames. Timestamps are microseconds since the epoch (if_tsresol 6).
export interface CaptureInterface {
  id: number;
  /** "pod/intf" */
  name: string;
  /** e.g. "node node1, lab demo" */
  description: string;
}

export interface CaptureRecord {
  iface: number;
  tsUs: number;
  /** out of the pod's interface (the pod sent it) rather than into it */
  outbound: boolean;
  origLen: number;
  data: Buffer;
}

export type CaptureFormat = 'pcapng' | 'pcap';
export const LINKTYPE_ETHERNET = 1;
export const SNAPLEN = 262144;

const pad4 = (n: number): number => (n + 3) & ~3;

function option(code: number, value: Buffer): Buffer {
  const out = Buffer.alloc(4 + pad4(value.length));
  out.writeUInt16LE(code, 0);
  out.writeUInt16LE(value.length, 2);
  value.copy(out, 4);
  return out;
}

function block(type: number, body: Buffer): Buffer {
  const len = 12 + body.length;
  const out = Buffer.alloc(len);
  out.writeUInt32LE(type, 0);
  out.writeUInt32LE(len, 4);
  body.copy(out, 8);
  out.writeUInt32LE(len, len - 4);
  return out;
}

export function pcapngHeader(appName = 'patchwire'): Buffer {
  const body = Buffer.alloc(16);
  body.writeUInt32LE(0x1a2b3c4d, 0); // byte-order magic
  body.writeUInt16LE(1, 4);
  body.writeUInt16LE(0, 6);
  body.writeBigInt64LE(-1n, 8); // section length unknown
  return block(0x0a0d0d0a, Buffer.concat([body, option(4, Buffer.from(appName)), option(0, Buffer.alloc(0))]));
}

export function pcapngInterface(i: CaptureInterface): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16LE(LINKTYPE_ETHERNET, 0);
  head.writeUInt32LE(SNAPLEN, 4);
  return block(
    1,
    Buffer.concat([
      head,
      option(2, Buffer.from(i.name)), // if_name
      option(3, Buffer.from(i.description)), // if_description
      option(9, Buffer.from([6])), // if_tsresol: microseconds
      option(0, Buffer.alloc(0)),
    ]),
  );
}

export function pcapngPacket(r: CaptureRecord): Buffer {
  const cap = r.data.length;
  const len = 12 + 20 + pad4(cap) + 12 + 4;
  const out = Buffer.alloc(len);
  out.writeUInt32LE(6, 0);
  out.writeUInt32LE(len, 4);
  out.writeUInt32LE(r.iface, 8);
  out.writeUInt32LE(Math.floor(r.tsUs / 2 ** 32), 12);
  out.writeUInt32LE(r.tsUs % 2 ** 32, 16);
  out.writeUInt32LE(cap, 20);
  out.writeUInt32LE(r.origLen, 24);
  r.data.copy(out, 28);
  let o = 28 + pad4(cap);
  // epb_flags: bits 0-1 direction, 01 inbound, 10 outbound.
  out.writeUInt16LE(2, o);
  out.writeUInt16LE(4, o + 2);
  out.writeUInt32LE(r.outbound ? 2 : 1, o + 4);
  o += 8;
  out.writeUInt32LE(0, o); // opt_endofopt
  out.writeUInt32LE(len, len - 4);
  return out;
}

export function pcapHeader(): Buffer {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(0xa1b2c3d4, 0);
  h.writeUInt16LE(2, 4);
  h.writeUInt16LE(4, 6);
  h.writeUInt32LE(SNAPLEN, 16);
  h.writeUInt32LE(LINKTYPE_ETHERNET, 20);
  return h;
}

export function pcapPacket(r: CaptureRecord): Buffer {
  const out = Buffer.alloc(16 + r.data.length);
  out.writeUInt32LE(Math.floor(r.tsUs / 1e6), 0);
  out.writeUInt32LE(r.tsUs % 1e6, 4);
  out.writeUInt32LE(r.data.length, 8);
  out.writeUInt32LE(r.origLen, 12);
  r.data.copy(out, 16);
  return out;
}

/** Encodes a capture stream in either format: header first, then records. */
export class CaptureWriter {
  private started = false;
  private readonly known = new Set<number>();

  constructor(
    readonly format: CaptureFormat,
    private readonly interfaces: CaptureInterface[],
  ) {}

  header(): Buffer {
    this.started = true;
    if (this.format === 'pcap') return pcapHeader();
    // All interface blocks up front: ids are the order of the IDBs.
    const parts = [pcapngHeader()];
    for (const i of [...this.interfaces].sort((a, b) => a.id - b.id)) {
      parts.push(pcapngInterface(i));
      this.known.add(i.id);
    }
    return Buffer.concat(parts);
  }

  records(rs: CaptureRecord[]): Buffer {
    const parts: Buffer[] = this.started ? [] : [this.header()];
    for (const r of rs) parts.push(this.format === 'pcap' ? pcapPacket(r) : pcapngPacket(r));
    return Buffer.concat(parts);
  }
}
