#!/usr/bin/env python3
# Writes the seed corpus of wire/fuzz/codec_fuzz.cc into wire/fuzz/corpus/codec/:
# small valid batches, hellos and requests (raw and as gRPC message streams) and
# edge cases at each bound the target's limits set (16 frames, 512-byte frames,
# 2048-byte messages, 64-byte hello strings). Run again after changing a seed.
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus', 'codec')


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7f) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field(num, wt, body=b''):
    key = varint((num << 3) | wt)
    return key + (varint(len(body)) + body if wt == 2 else body)


def frame(wire, data, hdr=None):
    inner = field(1, 0, varint(wire)) + (field(2, 2, hdr) if hdr is not None else b'') + field(3, 2, data)
    return field(1, 2, inner)


def grpc(msg, flag=0):
    return struct.pack('>BI', flag, len(msg)) + msg


def eth(n, seed):
    return bytes((i * 31 + seed) & 0xff for i in range(n))


GSO = bytes([1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0])

seeds = {
    'empty': b'',
    'batch-one': frame(1, eth(60, 1)),
    'batch-two-gso': frame(300000, eth(200, 2), GSO) + frame(7, eth(64, 3)),
    'batch-hello': field(2, 2, b'node-a'),
    # what the fuzzer found within a second when the node field's bound was removed on purpose
    'batch-node-past-end': b'\x00\x00\x00\x00\x06\x12\x11\x17\x11lb',
    'batch-defaults': field(2, 2, b'') + frame(5, eth(11, 4), b''),
    'batch-unknown-fields': field(9, 0, varint(2**64 - 1)) + field(10, 1, b'\x01' * 8) + field(300, 2, b'xyz')
    + field(1, 2, field(12, 5, b'\x00' * 4) + field(1, 0, varint(9)) + field(3, 2, eth(20, 5))),
    'batch-uid-max': frame(2**64 - 1, eth(60, 6)),
    'batch-16-frames': b''.join(frame(i, eth(60, i)) for i in range(16)),
    'batch-17-frames': b''.join(frame(i, eth(60, i)) for i in range(17)),
    'batch-frame-512': frame(1, eth(512, 7)),
    'batch-frame-513': frame(1, eth(513, 8)),
    'batch-vnet-3': field(1, 2, field(2, 2, b'abc') + field(3, 2, b'd')),
    'batch-no-data': field(1, 2, field(1, 0, b'\x01')),
    'batch-varint-11': b'\x08' + b'\xff' * 10 + b'\x01',
    'batch-len-huge': b'\x0a' + varint(2**64 - 1),
    'batch-data-past-frame': field(1, 2, field(1, 0, b'\x01') + b'\x1a\x14') + b'\x00' * 20,
    'batch-group': b'\x0b\x0c',
    'batch-field-0': b'\x02\x00',
    'request': field(1, 2, b'node-b') + field(2, 2, b'lab1'),
    'request-64': field(1, 2, b'n' * 64) + field(2, 2, b'l' * 64),
    'request-65': field(1, 2, b'n' * 65),
    'stream-hello-batch-keepalive': grpc(field(2, 2, b'peer')) + grpc(frame(3, eth(100, 9), GSO) + frame(3, eth(60, 10)))
    + grpc(b'') + grpc(field(1, 2, b'node-c') + field(2, 2, b'lab')),
    'stream-max-message': grpc(frame(1, eth(500, 11)) * 4 + field(9, 2, b'\x00' * (2048 - 4 * len(frame(1, eth(500, 11))) - 2))),
    'stream-over-max': grpc(b'\x00' * 2049),
    'stream-compressed': grpc(frame(1, eth(60, 12)), flag=1),
    'stream-cut-prefix': grpc(frame(1, eth(60, 13)))[:3],
    'stream-cut-body': grpc(frame(1, eth(60, 14)))[:40],
    'stream-zero-lengths': grpc(b'') * 5,
    # carrier states (SubscribeResponse field 30): valid, at the bound, over it, without a wire, mixed with frames
    'carrier-one': field(30, 2, field(1, 0, varint(7)) + field(2, 0, b'\x01') + field(3, 0, b'\x01')),
    'carrier-pulled-gone': field(30, 2, field(1, 0, varint(2**48)) + field(2, 0, b'\x00') + field(3, 0, b'\x00')),
    'carrier-16': b''.join(field(30, 2, field(1, 0, varint(i + 1)) + field(2, 0, b'\x01') + field(3, 0, varint(i % 2))) for i in range(16)),
    'carrier-17': b''.join(field(30, 2, field(1, 0, varint(i + 1)) + field(2, 0, b'\x01')) for i in range(17)),
    'carrier-no-wire': field(30, 2, field(2, 0, b'\x01')),
    'carrier-unknown-field': field(30, 2, field(1, 0, varint(3)) + field(9, 2, b'xy') + field(2, 0, varint(2**63))),
    'carrier-past-end': b'\xf2\x01\x10\x08\x01',
    'carrier-with-frames': frame(1, eth(60, 15)) + field(30, 2, field(1, 0, varint(1)) + field(3, 0, b'\x01')),
    'stream-carrier': grpc(field(2, 2, b'peer')) + grpc(field(30, 2, field(1, 0, varint(5)) + field(2, 0, b'\x01') + field(3, 0, b'\x00'))),
}

os.makedirs(OUT, exist_ok=True)
for name in os.listdir(OUT):
    os.remove(os.path.join(OUT, name))
for name, data in seeds.items():
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(data)
print(f'{len(seeds)} seeds in {OUT}')
