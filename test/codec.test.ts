// The hand-written batch codec against proto-loader's generic one: both must
// agree on the wire format defined in proto/patchwire/v1/dataplane.proto.
import t from 'tap';
import * as protoLoader from '@grpc/proto-loader';
import * as grpc from '@grpc/grpc-js';

import { DecodedBatch, decodeBatch, encodeBatch, encodeHelloResponse, encodeSubscribeRequest, decodeSubscribeRequest, DecodeError } from '../src/dataplane/codec.js';
import { PROTO_ROOT } from '../src/proto/load.js';

const def = protoLoader.loadSync('patchwire/v1/dataplane.proto', { includeDirs: [PROTO_ROOT], keepCase: true, longs: Number, defaults: true });
const pkg = grpc.loadPackageDefinition(def) as unknown as { patchwire: { v1: { DataplaneService: { service: grpc.ServiceDefinition } } } };
const method = pkg.patchwire.v1.DataplaneService.service.Subscribe!;

function portBatch(frames: Array<{ hdr?: Buffer; data: Buffer }>, vnet: boolean): { rx: Uint8Array; meta: Int32Array } {
  const slot = 10000;
  const rx = new Uint8Array(slot * frames.length);
  const meta = new Int32Array(frames.length * 2);
  frames.forEach((f, i) => {
    const off = i * slot + 4;
    let len = 0;
    if (vnet) {
      rx.set(f.hdr ?? Buffer.alloc(10), off);
      len += 10;
    }
    rx.set(f.data, off + len);
    meta[2 * i] = off;
    meta[2 * i + 1] = len + f.data.length;
  });
  return { rx, meta };
}

t.test('encodeBatch output decodes with proto-loader, field for field', async (t) => {
  const gso = Buffer.from([1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0]); // NEEDS_CSUM, TCPv4
  const frames = [
    { hdr: gso, data: Buffer.alloc(3000, 7) },
    { data: Buffer.from('0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab') },
  ];
  const { rx, meta } = portBatch(frames, true);
  const buf = encodeBatch(300000, rx, meta, 2, true);
  const msg = method.responseDeserialize(buf) as { frames: Array<{ wire: number; vnet_hdr: Buffer; data: Buffer }> };
  t.equal(msg.frames.length, 2);
  t.equal(msg.frames[0]!.wire, 300000);
  t.same(Buffer.from(msg.frames[0]!.vnet_hdr), gso, 'a meaningful virtio-net header travels');
  t.same(Buffer.from(msg.frames[0]!.data), frames[0]!.data);
  t.equal(msg.frames[1]!.vnet_hdr.length, 0, 'an all-zero header is left out');
  t.same(Buffer.from(msg.frames[1]!.data), frames[1]!.data);
});

t.test('decodeBatch reads what proto-loader encodes', async (t) => {
  const data = [Buffer.alloc(60, 1), Buffer.alloc(9014, 2)];
  const buf = method.responseSerialize({
    frames: [
      { wire: 7, data: data[0] },
      { wire: 2 ** 40, vnet_hdr: Buffer.alloc(10, 3), data: data[1] },
    ],
  }) as Buffer;
  const d = new DecodedBatch();
  decodeBatch(buf, d);
  t.equal(d.count, 2);
  t.equal(d.wire[0], 7);
  t.equal(d.wire[1], 2 ** 40, 'uids beyond 32 bits survive');
  t.equal(d.hdrOff[0], -1);
  t.same(buf.subarray(d.hdrOff[1]!, d.hdrOff[1]! + 10), Buffer.alloc(10, 3));
  t.same(buf.subarray(d.dataOff[1]!, d.dataOff[1]! + d.dataLen[1]!), data[1]);
});

t.test('decodeBatch grows past its initial capacity', async (t) => {
  const frames = Array.from({ length: 300 }, (_, i) => ({ data: Buffer.alloc(60, i & 0xff) }));
  const { rx, meta } = portBatch(frames, false);
  const d = new DecodedBatch();
  decodeBatch(encodeBatch(1, rx, meta, 300, false), d);
  t.equal(d.count, 300);
  const buf = encodeBatch(1, rx, meta, 300, false);
  decodeBatch(buf, d);
  t.equal(buf[d.dataOff[299]!], 299 & 0xff, 'the last frame points at its own bytes');
});

t.test('malformed batches are rejected, not misread', async (t) => {
  const { rx, meta } = portBatch([{ data: Buffer.alloc(100, 9) }], false);
  const good = encodeBatch(1, rx, meta, 1, false);
  const d = new DecodedBatch();
  t.throws(() => decodeBatch(good.subarray(0, good.length - 5), d), { name: 'DecodeError' });
  t.throws(() => decodeBatch(Buffer.from([0x0a, 0x02, 0x08, 0x01]), d), { name: 'DecodeError' }, 'a frame without data');
  t.throws(() => decodeBatch(Buffer.from([0x0a, 0xff]), d), { name: 'DecodeError' });
});

t.test('subscribe requests round-trip and match proto-loader', async (t) => {
  const r = { node: 'node-a', lab: 'lab1' };
  const enc = encodeSubscribeRequest(r);
  t.same(method.requestDeserialize(enc), r);
  t.same(decodeSubscribeRequest(method.requestSerialize(r) as Buffer), r);
});

t.test('the hello response is a SubscribeResponse with the node name and no frames', async (t) => {
  const hello = encodeHelloResponse('node-7');
  t.same(method.responseDeserialize(hello), { frames: [], node: 'node-7', carrier: [] });
  const d = new DecodedBatch();
  decodeBatch(hello, d);
  t.equal(d.count, 0, 'our decoder skips the node field');
});

t.test('a batch from an encoder that writes proto3 defaults decodes', async (t) => {
  // protobufjs writes empty strings and bytes that are set: an empty vnet_hdr means none.
  const buf = method.responseSerialize({ node: '', frames: [{ wire: 5, vnet_hdr: Buffer.alloc(0), data: Buffer.from('frame-bytes') }] }) as Buffer;
  const d = new DecodedBatch();
  decodeBatch(buf, d);
  t.equal(d.count, 1);
  t.equal(d.wire[0], 5);
  t.equal(d.hdrOff[0], -1, 'no virtio-net header');
  t.equal(buf.toString('utf8', d.dataOff[0]!, d.dataOff[0]! + d.dataLen[0]!), 'frame-bytes');
  t.throws(() => decodeBatch(method.responseSerialize({ frames: [{ wire: 5, vnet_hdr: Buffer.alloc(3), data: Buffer.from('x') }] }) as Buffer, d), DecodeError, 'a 3-byte vnet_hdr is still refused');
});
