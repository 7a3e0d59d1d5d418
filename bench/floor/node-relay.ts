// The floor of a Node.js daemon-per-node wire: relay.c's design (one TCP
// connection between two relay processes, frames length-prefixed with their
// virtio-net header) done by Node with patchwire's own native ports, and no
// HTTP/2, gRPC, capture or counters. Its RTT against relay.c's is what the
// runtime costs; patchwire's against this one is what node:http2, gRPC
// framing and patchwire's own work cost.
//
// usage: node dist/bench/floor/node-relay.js IFNAME listen PORT
//        node dist/bench/floor/node-relay.js IFNAME connect IPV4 PORT
import net from 'node:net';

import { makePort } from '../../src/endpoint/endpoint.js';
import { wire } from '../../src/native/wire.js';

const [ifname, mode, a, b] = process.argv.slice(2);
if (!ifname || (mode !== 'listen' && mode !== 'connect') || !a || (mode === 'connect' && !b)) {
  process.stderr.write('usage: node-relay IFNAME listen PORT | node-relay IFNAME connect IPV4 PORT\n');
  process.exit(2);
}

const opened = wire.openPacket(ifname, '', { vnetHdr: true });
// Sized as a daemon sizes a veth endpoint's port at the default MTU.
const port = makePort(opened.fd, 'packet', true, 1500);
const rx = new Uint8Array(port.rx);
const meta = port.meta;

const MAX_TX = 256;
const hdrOff = new Int32Array(MAX_TX);
const dataOff = new Int32Array(MAX_TX);
const dataLen = new Int32Array(MAX_TX);
/** bytes read from TCP, not yet a whole frame (as relay.c keeps them) */
const stream = Buffer.allocUnsafeSlow(4 << 20);
let have = 0;

function relay(sock: net.Socket): void {
  sock.setNoDelay(true);
  const onFrames = (count: number): void => {
    // One write per batch: 4-byte length, then the header and the frame.
    let total = 0;
    for (let i = 0; i < count; i++) total += 4 + meta[2 * i + 1]!;
    const out = Buffer.allocUnsafe(total);
    let off = 0;
    for (let i = 0; i < count; i++) {
      const o = meta[2 * i]!;
      const len = meta[2 * i + 1]!;
      out.writeUInt32BE(len, off);
      out.set(rx.subarray(o, o + len), off + 4);
      off += 4 + len;
    }
    if (!sock.write(out)) {
      // A full socket stops this relay reading its port, as relay.c's blocking write does.
      port.pause();
      sock.once('drain', () => port.start(onFrames));
    }
  };
  port.start(onFrames);
  sock.on('data', (chunk: Buffer) => {
    // Whole frames are sent from the chunk itself; a partial one is kept in
    // `stream` until the rest arrives.
    let buf = chunk;
    if (have > 0) {
      chunk.copy(stream, have);
      have += chunk.length;
      buf = stream.subarray(0, have);
    }
    let off = 0;
    let n = 0;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32BE(off);
      if (buf.length - off - 4 < len) break;
      hdrOff[n] = off + 4;
      dataOff[n] = off + 4 + wire.VNET_HDR_LEN;
      dataLen[n] = len - wire.VNET_HDR_LEN;
      off += 4 + len;
      if (++n === MAX_TX) {
        port.send(buf, hdrOff, dataOff, dataLen, n);
        n = 0;
      }
    }
    if (n > 0) port.send(buf, hdrOff, dataOff, dataLen, n);
    have = buf.length - off;
    if (have > 0) buf.copy(stream, 0, off); // copyWithin when buf is stream: memmove semantics
  });
  sock.on('close', () => process.exit(0)); // the other relay is gone
  sock.on('error', () => process.exit(0));
}

if (mode === 'listen') {
  const server = net.createServer((sock) => {
    server.close();
    relay(sock);
  });
  server.listen(Number(a));
} else {
  const tryConnect = (tries: number): void => {
    const sock = net.connect({ host: a, port: Number(b) });
    sock.once('connect', () => relay(sock));
    sock.once('error', (err) => {
      if (tries >= 50) {
        process.stderr.write(`node-relay: connect: ${err.message}\n`);
        process.exit(1);
      }
      setTimeout(() => tryConnect(tries + 1), 100);
    });
  };
  tryConnect(0);
}
