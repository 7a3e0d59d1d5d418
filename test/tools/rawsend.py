#!/usr/bin/env python3
"""Send COUNT raw Ethernet frames of SIZE bytes out of IFNAME with an AF_PACKET
socket (an independent sender: not patchwire's code) and print, as JSON, how
many the kernel took ("sent") and how many it refused ("refused", by errno).
Each frame carries MARK and its sequence number after the Ethernet header.

Usage: rawsend.py IFNAME COUNT SIZE [--gso] [--gap SECONDS] [--mark TEXT]

--gso   each frame is an IPv6/TCP super-frame with a virtio-net header that
        asks for TCP segmentation (gso_size 1428), the way a pod's TCP stack
        with TSO hands a super-frame to its interface. Frames over 64 KiB need
        the interface's gso_max_size raised, or the kernel segments them.
--gap   seconds between frames (default 0: as fast as the kernel takes them;
        a refused frame is counted, not retried)."""
import argparse
import errno
import json
import socket
import struct
import time

PACKET_VNET_HDR = 15
SOL_PACKET = 263
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4

p = argparse.ArgumentParser()
p.add_argument('ifname')
p.add_argument('count', type=int)
p.add_argument('size', type=int)
p.add_argument('--gso', action='store_true')
p.add_argument('--gap', type=float, default=0.0)
p.add_argument('--mark', default='PWXRAW')
a = p.parse_args()

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
if a.gso:
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
s.bind((a.ifname, 0))
# A large send buffer: a flood should meet the wire's limits, not the sender's.
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

DST = bytes.fromhex('020000000002')
SRC = bytes.fromhex('020000000001')


def plain(seq):
    body = ('%s%08d' % (a.mark, seq)).encode()
    head = DST + SRC + struct.pack('!H', 0x88B5)
    return (head + body).ljust(a.size, b'\x00')


def gso(seq):
    eth = DST + SRC + struct.pack('!H', 0x86DD)
    plen = a.size - 14 - 40
    # Payload length 0 stands for "more than 64 KiB" (as in IPv6 BIG TCP).
    ip6 = struct.pack('!IHBB16s16s', 0x60000000, plen if plen < 65536 else 0, 6, 64, bytes(15) + b'\x01', bytes(15) + b'\x02')
    tcp = struct.pack('!HHIIBBHHH', 40000, 5201, seq, 0, 5 << 4, 0x10, 65535, 0, 0)
    body = ('%s%08d' % (a.mark, seq)).encode()
    frame = (eth + ip6 + tcp + body).ljust(a.size, b'\x00')
    # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (host order)
    vnet = struct.pack('<BBHHHH', VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 74, 1428, 54, 16)
    return vnet + frame


build = gso if a.gso else plain
sent = 0
refused = {}
for i in range(a.count):
    try:
        s.send(build(i))
        sent += 1
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        refused[name] = refused.get(name, 0) + 1
    if a.gap:
        time.sleep(a.gap)
print(json.dumps({'sent': sent, 'refused': refused}))
