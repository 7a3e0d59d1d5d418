// gRPC length-prefixed messages: MessageReader must give back exactly the
// messages that were framed, however the DATA chunks cut them.
import t from 'tap';

import { decodeGrpcMessage, encodeGrpcMessage, frame, GRPC_PREFIX, GrpcProtocolError, GrpcStatus, MessageReader, writePrefix } from '../src/dataplane/grpc-wire.js';

function payload(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Feeds `stream` cut at `cuts` and returns copies of the messages read (null if it ends inside one). */
function readAll(stream: Buffer, cuts: number[], max = 1 << 20): Buffer[] | null {
  const out: Buffer[] = [];
  const r = new MessageReader(max, (m) => out.push(Buffer.from(m)));
  let prev = 0;
  for (const c of [...cuts, stream.length]) {
    r.push(stream.subarray(prev, c));
    prev = c;
  }
  return r.idle ? out : null;
}

t.test('messages survive every cut of the stream', async (t) => {
  const msgs = [payload(0, 1), payload(1, 2), payload(7, 3), payload(300, 4), payload(0, 5), payload(5, 6)];
  const stream = Buffer.concat(msgs.map((m) => frame(m)));
  let cases = 0;
  for (let a = 0; a <= stream.length; a++) {
    for (let b = a; b <= stream.length; b += 13) {
      const got = readAll(stream, [a, b]);
      if (!got || got.length !== msgs.length || got.some((m, i) => !m.equals(msgs[i]!))) {
        t.fail(`cut at ${a} and ${b}`);
        return;
      }
      cases++;
    }
  }
  t.pass(`${cases} ways of cutting the stream give back the same ${msgs.length} messages`);
  const oneByte = Array.from({ length: stream.length }, (_, i) => i);
  t.same(readAll(stream, oneByte), msgs, 'one byte per chunk');
});

t.test('large messages across many 64 KiB chunks', async (t) => {
  const msgs = [payload(200_000, 7), payload(70_000, 8), payload(500_000, 9)];
  const stream = Buffer.concat(msgs.map((m) => frame(m)));
  const cuts: number[] = [];
  for (let c = 65536; c < stream.length; c += 65536) cuts.push(c);
  t.same(readAll(stream, cuts), msgs);
});

t.test('a message whole in one chunk is handed on without a copy', async (t) => {
  const chunk = Buffer.concat([frame(payload(100, 1)), frame(payload(50, 2))]);
  const views: Buffer[] = [];
  new MessageReader(1 << 20, (m) => views.push(m)).push(chunk);
  t.equal(views.length, 2);
  t.equal(views[0]!.buffer, chunk.buffer, 'the message is a view of the chunk');
  t.equal(views[1]!.byteOffset, chunk.byteOffset + GRPC_PREFIX + 100 + GRPC_PREFIX);
});

t.test('writePrefix frames a batch in its own headroom', async (t) => {
  const b = Buffer.alloc(GRPC_PREFIX + 3);
  b.set([1, 2, 3], GRPC_PREFIX);
  t.same([...writePrefix(b)], [0, 0, 0, 0, 3, 1, 2, 3]);
});

t.test('bad messages are refused with the gRPC status to reset with', async (t) => {
  const compressed = frame(payload(10, 1));
  compressed[0] = 1;
  t.throws(() => new MessageReader(100, () => undefined).push(compressed), { name: 'GrpcProtocolError', code: GrpcStatus.INTERNAL, message: /compressed message/ });
  const big = frame(payload(101, 1));
  t.throws(() => new MessageReader(100, () => undefined).push(big), { code: GrpcStatus.RESOURCE_EXHAUSTED, message: 'message of 101 bytes exceeds the limit of 100' });
  // The prefix cut in two still gets checked before any body is buffered.
  const r = new MessageReader(100, () => undefined);
  r.push(big.subarray(0, 2));
  t.throws(() => r.push(big.subarray(2, 5)), GrpcProtocolError);
});

t.test('grpc-message is percent-encoded', async (t) => {
  const msg = "lab 'x' ≠ 'y': 100% wrong\n";
  const enc = encodeGrpcMessage(msg);
  t.match(enc, /^[\x20-\x7e]*$/, 'printable ASCII only');
  t.ok(enc.includes('100%25'), "'%' itself is encoded");
  t.equal(decodeGrpcMessage(enc), msg, 'and decodes back');
  t.equal(decodeGrpcMessage('bad %zz'), 'bad %zz', 'a malformed escape is kept as it is');
});
