#!/usr/bin/env python3
"""Send raw Ethernet frames, one hex string per line on stdin, out of IFNAME
with an AF_PACKET socket (an independent sender: not patchwire's own code).
Usage: sendframes.py IFNAME [GAP_SECONDS]"""
import socket
import sys
import time

ifname = sys.argv[1]
gap = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0005
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
sent = 0
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    s.send(bytes.fromhex(line))
    sent += 1
    if gap:
        time.sleep(gap)
print(sent)
