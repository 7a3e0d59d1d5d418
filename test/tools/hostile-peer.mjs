// A hostile peer daemon for test/peer-flood.test.ts. It listens where a
// daemon's wire says its far end is, answers the daemon's Subscribe like a
// daemon (real HTTP/2 through Node's nghttp2, real gRPC framing, messages from
// proto/patchwire/v1/dataplane.proto), then abuses the stream as `mode` says:
//   oversized  a gRPC prefix announcing a 64 MiB message, then its bytes
//   frames     batches of 4097 one-byte frames (one more than a batch may hold)
//   volume     for `seconds`, back-to-back batches of 15 frames of 512 KiB
//              (7.5 MiB, just under the 8 MiB message limit) for wire `uid`
// Usage: node hostile-peer.mjs HOST PORT NODE MODE SECONDS UID
// Prints one JSON line per Subscribe it served, when that stream closes or
// the flood ends: {mode, messages, bytes}.
import http2 from 'node:http2';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import protobuf from 'protobufjs';

const [host, port, node, mode, seconds, uid] = process.argv.slice(2);
const root = protobuf.loadSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'proto', 'patchwire', 'v1', 'dataplane.proto'));
const Response = root.lookupType('patchwire.v1.SubscribeResponse');

const message = (body) => {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
};
const batch = (frames) => message(Buffer.from(Response.encode({ frames }).finish()));

const server = http2.createServer({ settings: { maxConcurrentStreams: 100 } });
server.on('stream', (stream) => {
  const sent = { mode, messages: 0, bytes: 0 };
  const write = (buf) => {
    sent.messages++;
    sent.bytes += buf.length;
    return stream.write(buf);
  };
  stream.on('error', () => undefined);
  let reported = false;
  const report = () => {
    if (!reported) process.stdout.write(`${JSON.stringify(sent)}\n`);
    reported = true;
  };
  stream.on('close', report);
  stream.on('data', () => undefined);  // the hello and keepalives
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
  write(message(Buffer.from(Response.encode({ node }).finish())));
  if (mode === 'oversized') {
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(64 << 20, 1);
    write(prefix);
    write(Buffer.alloc(1 << 20, 0x41));
  } else if (mode === 'frames') {
    const frames = Array.from({ length: 4097 }, () => ({ wire: Number(uid), data: Buffer.from([0x42]) }));
    const timer = setInterval(() => !stream.destroyed && write(batch(frames)), 100);
    stream.on('close', () => clearInterval(timer));
  } else if (mode === 'volume') {
    const big = batch(Array.from({ length: 15 }, () => ({ wire: Number(uid), data: Buffer.alloc(512 << 10, 0x43) })));
    const until = Date.now() + Number(seconds) * 1000;
    const pump = () => {
      while (!stream.destroyed && Date.now() < until) if (!write(big)) return void stream.once('drain', pump);
      // The flood is over when its last batch is handed over (the daemon keeps its side open).
      report();
      if (!stream.destroyed) stream.end();
    };
    pump();
  }
});
server.listen(Number(port), host, () => process.stderr.write(`hostile peer ${node} (${mode}) on ${host}:${port}\n`));
