// A small-frame generator for the bench, fast enough not to be the limit:
// 64-byte UDP frames out of an interface in batches with sendmmsg (the
// project's addon), paced by a busy loop (this process does nothing else).
// Usage (inside the sender's namespace): node dist/bench/gen.js IFNAME DST_MAC DST_IP PPS SECONDS
// The bench sends to a MAC nobody has: the far pod counts the frame at its
// interface and drops it before the IP stack, so the receiver is not the limit.
// Prints {"sent": N, "seconds": S}.
import { wire } from '../src/native/wire.js';

const [ifname, dstMac, dstIp, ppsArg, secondsArg] = process.argv.slice(2);
if (!ifname || !dstMac || !dstIp || !ppsArg || !secondsArg) {
  process.stderr.write('usage: gen.js IFNAME DST_MAC DST_IP PPS SECONDS\n');
  process.exit(2);
}
const pps = Number(ppsArg);
const seconds = Number(secondsArg);

function ipv4(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}
function checksum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

// Ethernet (14) + IPv4 (20) + UDP (8) + 22 bytes payload = 64 bytes.
const frame = Buffer.alloc(64);
Buffer.from(dstMac.replace(/:/g, ''), 'hex').copy(frame, 0);
Buffer.from('02bebe000001', 'hex').copy(frame, 6);
frame.writeUInt16BE(0x0800, 12);
const ip = frame.subarray(14, 34);
ip[0] = 0x45;
ip.writeUInt16BE(50, 2);
ip[8] = 64;
ip[9] = 17;
ipv4('198.19.0.1').copy(ip, 12);
ipv4(dstIp).copy(ip, 16);
ip.writeUInt16BE(checksum(ip), 10);
frame.writeUInt16BE(40000, 34);
frame.writeUInt16BE(9, 36); // discard
frame.writeUInt16BE(30, 38);

const BATCH = 64;
const buf = Buffer.alloc(64 * BATCH);
for (let i = 0; i < BATCH; i++) frame.copy(buf, i * 64);
const hdrOff = new Int32Array(BATCH).fill(-1);
const dataOff = new Int32Array(BATCH).map((_, i) => i * 64);
const dataLen = new Int32Array(BATCH).fill(64);

const opened = wire.openPacket(ifname, '', { vnetHdr: false });
const port = new wire.Port(opened.fd, 'packet', false, 2048, 1);
const start = process.hrtime.bigint();
const end = start + BigInt(Math.round(seconds * 1e9));
let sent = 0;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
for (;;) {
  const now = process.hrtime.bigint();
  if (now >= end) break;
  const due = Math.floor((Number(now - start) / 1e9) * pps) - sent;
  if (due < BATCH) {
    // Ahead of schedule: sleep until a batch is due rather than spin, so the
    // generator leaves the CPU to the path it measures.
    const waitMs = ((BATCH - Math.max(due, 0)) / pps) * 1000;
    if (waitMs >= 0.05) Atomics.wait(sleeper, 0, 0, waitMs);
    if (due <= 0) continue;
  }
  sent += port.send(buf, hdrOff, dataOff, dataLen, Math.min(due, BATCH));
}
const stats = port.stats();
port.close();
process.stdout.write(JSON.stringify({ sent, seconds, busy: stats.txBusy, errors: stats.txError }) + '\n');
