#!/usr/bin/env python3
"""Send numbered raw Ethernet frames out of IFNAME with an AF_PACKET socket
(an independent sender, not patchwire's code), one every GAP seconds, until
SIGTERM or SIGINT (or MAX_SECONDS, so it always stops by itself), then print
how many were sent. A test runs it for as long as something else happens
(a reconcile, a restart) and checks the receiver got every frame.

Each frame: DST SRC 88b5, then MARKER and a 6-digit sequence number, padded
to 64 bytes.
Usage: streamframes.py IFNAME GAP MARKER DST SRC [MAX_SECONDS]"""
import signal
import socket
import sys
import time

ifname, gap, marker, dst, src = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
max_seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 60.0
head = bytes.fromhex(dst.replace(':', '') + src.replace(':', '') + '88b5')

stop = False


def on_signal(_signum, _frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
sent = 0
deadline = time.monotonic() + max_seconds
while not stop and time.monotonic() < deadline:
    body = head + ('%s%06d' % (marker, sent)).encode('ascii')
    s.send(body + bytes(64 - len(body)))
    sent += 1
    time.sleep(gap)
print(sent, flush=True)
