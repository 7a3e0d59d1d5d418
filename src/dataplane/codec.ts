// Hand-written protobuf codec for patchwire.v1.SubscribeResponse (frame
// batches) and SubscribeRequest. Follows proto/patchwire/v1/dataplane.proto
// exactly; proto-loader's generic decode costs 30-40% of throughput here.
import { VNET_HDR_LEN } from '../native/wire.js';

const TAG_FRAMES = (1 << 3) | 2;
const TAG_NODE = (2 << 3) | 2;
const TAG_LAB = (2 << 3) | 2;
const TAG_WIRE = (1 << 3) | 0;
const TAG_VNET = (2 << 3) | 2;
const TAG_DATA = (3 << 3) | 2;

export function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/** A virtio-net header that says nothing (no GSO, no partial checksum) need not travel. */
function hdrMatters(rx: Uint8Array, off: number): boolean {
  return rx[off] !== 0 || rx[off + 1] !== 0;
}

/**
 * Encodes `count` frames received on a port into one SubscribeResponse.
 * `meta` is the port's [offset, length] pairs; when `vnet` is set each frame
 * starts with its virtio-net header. `headroom` bytes are left free in front
 * (for the gRPC message prefix, so the message is never copied to add it).
 */
export function encodeBatch(
  wireUid: number,
  rx: Uint8Array,
  meta: Int32Array,
  count: number,
  vnet: boolean,
  alloc: (n: number) => Buffer = Buffer.allocUnsafe,
  headroom = 0,
): Buffer {
  const hdrLen = vnet ? VNET_HDR_LEN : 0;
  const uidSize = 1 + varintSize(wireUid);
  let total = 0;
  for (let i = 0; i < count; i++) {
    const off = meta[2 * i]!;
    const dataLen = meta[2 * i + 1]! - hdrLen;
    let inner = uidSize + 1 + varintSize(dataLen) + dataLen;
    if (vnet && hdrMatters(rx, off)) inner += 2 + VNET_HDR_LEN;
    total += 1 + varintSize(inner) + inner;
  }
  const out = alloc(headroom + total);
  let pos = headroom;
  for (let i = 0; i < count; i++) {
    const off = meta[2 * i]!;
    const dataLen = meta[2 * i + 1]! - hdrLen;
    const withHdr = vnet && hdrMatters(rx, off);
    const inner = uidSize + 1 + varintSize(dataLen) + dataLen + (withHdr ? 2 + VNET_HDR_LEN : 0);
    out[pos++] = TAG_FRAMES;
    pos = writeVarint(out, pos, inner);
    out[pos++] = TAG_WIRE;
    pos = writeVarint(out, pos, wireUid);
    if (withHdr) {
      out[pos++] = TAG_VNET;
      out[pos++] = VNET_HDR_LEN;
      out.set(rx.subarray(off, off + VNET_HDR_LEN), pos);
      pos += VNET_HDR_LEN;
    }
    out[pos++] = TAG_DATA;
    pos = writeVarint(out, pos, dataLen);
    out.set(rx.subarray(off + hdrLen, off + hdrLen + dataLen), pos);
    pos += dataLen;
  }
  return out;
}

/** Decoded frames of one batch; arrays are reused between calls. */
export class DecodedBatch {
  count = 0;
  wire = new Float64Array(256);
  hdrOff = new Int32Array(256);
  dataOff = new Int32Array(256);
  dataLen = new Int32Array(256);

  push(wire: number, hdrOff: number, dataOff: number, dataLen: number): void {
    if (this.count === this.wire.length) this.grow();
    const i = this.count++;
    this.wire[i] = wire;
    this.hdrOff[i] = hdrOff;
    this.dataOff[i] = dataOff;
    this.dataLen[i] = dataLen;
  }

  private grow(): void {
    const n = this.wire.length * 2;
    const w = new Float64Array(n);
    w.set(this.wire);
    this.wire = w;
    for (const k of ['hdrOff', 'dataOff', 'dataLen'] as const) {
      const a = new Int32Array(n);
      a.set(this[k]);
      this[k] = a;
    }
  }
}

export class DecodeError extends Error {
  override name = 'DecodeError';
}

function readVarint(buf: Uint8Array, pos: number, end: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new DecodeError('truncated varint');
    const b = buf[pos++]!;
    v += (b & 0x7f) * mul;
    if (b < 0x80) return [v, pos];
    mul *= 128;
  }
  throw new DecodeError('varint too long');
}

function skipField(buf: Uint8Array, pos: number, end: number, wireType: number): number {
  switch (wireType) {
    case 0:
      return readVarint(buf, pos, end)[1];
    case 1:
      return pos + 8;
    case 2: {
      const [len, p] = readVarint(buf, pos, end);
      return p + len;
    }
    case 5:
      return pos + 4;
    default:
      throw new DecodeError(`unsupported wire type ${wireType}`);
  }
}

/** Decodes the frames of a SubscribeResponse into `out` (offsets point into `buf`). */
export function decodeBatch(buf: Uint8Array, out: DecodedBatch): void {
  out.count = 0;
  const end = buf.length;
  let pos = 0;
  while (pos < end) {
    const tag = buf[pos++]!;
    if (tag === TAG_FRAMES) {
      let len: number;
      [len, pos] = readVarint(buf, pos, end);
      const fend = pos + len;
      if (fend > end) throw new DecodeError('frame runs past the batch');
      let wire = 0;
      let hdrOff = -1;
      let dataOff = -1;
      let dataLen = 0;
      while (pos < fend) {
        const t = buf[pos++]!;
        if (t === TAG_WIRE) [wire, pos] = readVarint(buf, pos, fend);
        else if (t === TAG_VNET || t === TAG_DATA) {
          let l: number;
          [l, pos] = readVarint(buf, pos, fend);
          if (pos + l > fend) throw new DecodeError('field runs past the frame');
          if (t === TAG_VNET) {
            // Empty is the proto3 default, as encoders that write defaults send it.
            if (l !== VNET_HDR_LEN && l !== 0) throw new DecodeError(`vnet_hdr of ${l} bytes`);
            hdrOff = l === 0 ? -1 : pos;
          } else {
            dataOff = pos;
            dataLen = l;
          }
          pos += l;
        } else pos = skipField(buf, pos, fend, t & 7);
      }
      if (dataOff < 0 || dataLen === 0) throw new DecodeError('frame without data');
      out.push(wire, hdrOff, dataOff, dataLen);
    } else {
      // node (the hello) and any field a newer peer adds are skipped.
      pos = skipField(buf, pos, end, tag & 7);
    }
  }
  if (pos !== end) throw new DecodeError('batch ends inside a field');
}

function encodeStrings(fields: Array<[number, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [tag, s] of fields) {
    if (!s) continue;
    const b = Buffer.from(s, 'utf8');
    const head = Buffer.alloc(1 + varintSize(b.length));
    head[0] = tag;
    writeVarint(head, 1, b.length);
    parts.push(head, b);
  }
  return Buffer.concat(parts);
}

/** The first (node-name only) SubscribeResponse, telling the subscriber it is accepted. */
export function encodeHelloResponse(node: string): Buffer {
  return encodeStrings([[TAG_NODE, node]]);
}

export interface SubscribeRequest {
  node: string;
  lab: string;
}

export function encodeSubscribeRequest(r: SubscribeRequest): Buffer {
  return encodeStrings([
    [(1 << 3) | 2, r.node],
    [TAG_LAB, r.lab],
  ]);
}

export function decodeSubscribeRequest(buf: Buffer): SubscribeRequest {
  const r: SubscribeRequest = { node: '', lab: '' };
  let pos = 0;
  while (pos < buf.length) {
    const tag = buf[pos++]!;
    if ((tag & 7) === 2) {
      let len: number;
      [len, pos] = readVarint(buf, pos, buf.length);
      const s = buf.toString('utf8', pos, pos + len);
      if (tag >> 3 === 1) r.node = s;
      else if (tag >> 3 === 2) r.lab = s;
      pos += len;
    } else pos = skipField(buf, pos, buf.length, tag & 7);
  }
  return r;
}
