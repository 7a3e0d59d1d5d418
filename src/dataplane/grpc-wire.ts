// The gRPC wire format over HTTP/2 (the "gRPC over HTTP2" protocol document),
// spoken directly on node:http2 for the Subscribe stream. grpc-js copied every
// batch into a fresh length-prefixed buffer on send and concatenated every
// received message into another; at gigabits per second that garbage drove
// major GCs of 10-20 ms, and its stream machinery added ~160 µs per hop.
// Here the 5-byte prefix is written into headroom the encoder left, and
// received messages are assembled in one reusable buffer.

/** Length-prefixed message header: compressed flag (1 byte), length (4 bytes, big endian). */
export const GRPC_PREFIX = 5;

/** gRPC status codes used by the data plane. */
export const GrpcStatus = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
} as const;

/** Writes the prefix into the first GRPC_PREFIX bytes of `framed` (payload follows). */
export function writePrefix(framed: Buffer): Buffer {
  framed[0] = 0;
  framed.writeUInt32BE(framed.length - GRPC_PREFIX, 1);
  return framed;
}

/** `payload` as one framed message (a copy: for small control messages only). */
export function frame(payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(GRPC_PREFIX + payload.length);
  out.set(payload, GRPC_PREFIX);
  return writePrefix(out);
}

export class GrpcProtocolError extends Error {
  override name = 'GrpcProtocolError';
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Splits a stream of DATA chunks into messages. A message that lies whole in
 * one chunk is handed on as a view of that chunk; one that spans chunks is
 * assembled in a buffer this reader keeps and reuses. Either way `onMessage`
 * must be done with the bytes when it returns.
 */
export class MessageReader {
  private readonly head = Buffer.alloc(GRPC_PREFIX);
  private headHave = 0;
  /** grown on the first message that spans chunks (a hello-only reader never needs it) */
  private body: Buffer = Buffer.alloc(0);
  private bodyHave = 0;
  /** length of the message being assembled, -1 while its prefix is incomplete */
  private need = -1;

  constructor(
    private readonly maxMessage: number,
    private readonly onMessage: (msg: Buffer) => void,
  ) {}

  /** True between messages (a stream may only end here). */
  get idle(): boolean {
    return this.headHave === 0 && this.need < 0;
  }

  private check(flag: number, len: number): void {
    if (flag !== 0) throw new GrpcProtocolError(GrpcStatus.INTERNAL, `compressed message (flag ${flag}) but no compression was negotiated`);
    if (len > this.maxMessage) throw new GrpcProtocolError(GrpcStatus.RESOURCE_EXHAUSTED, `message of ${len} bytes exceeds the limit of ${this.maxMessage}`);
  }

  /** Throws GrpcProtocolError on a message the stream must be reset for. */
  push(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (this.need < 0) {
        if (this.headHave === 0 && n - off >= GRPC_PREFIX) {
          const len = chunk.readUInt32BE(off + 1);
          this.check(chunk[off]!, len);
          if (n - off - GRPC_PREFIX >= len) {
            // The common case for small frames: no copy at all.
            const start = off + GRPC_PREFIX;
            off = start + len;
            this.onMessage(chunk.subarray(start, off));
            continue;
          }
          this.start(len);
          off += GRPC_PREFIX;
        } else {
          const take = Math.min(GRPC_PREFIX - this.headHave, n - off);
          chunk.copy(this.head, this.headHave, off, off + take);
          this.headHave += take;
          off += take;
          if (this.headHave < GRPC_PREFIX) return;
          const len = this.head.readUInt32BE(1);
          this.check(this.head[0]!, len);
          this.start(len);
          if (this.need < 0) continue; // an empty message, already handed on
        }
      }
      const take = Math.min(this.need - this.bodyHave, n - off);
      chunk.copy(this.body, this.bodyHave, off, off + take);
      this.bodyHave += take;
      off += take;
      if (this.bodyHave === this.need) {
        const len = this.need;
        this.need = -1;
        this.headHave = 0;
        this.bodyHave = 0;
        this.onMessage(this.body.subarray(0, len));
      }
    }
  }

  private start(len: number): void {
    this.need = len;
    this.bodyHave = 0;
    if (this.body.length < len) {
      let size = Math.max(this.body.length, 64 << 10);
      while (size < len) size *= 2;
      this.body = Buffer.allocUnsafeSlow(size);
    }
    if (len === 0) {
      this.need = -1;
      this.headHave = 0;
      this.onMessage(this.body.subarray(0, 0));
    }
  }
}

/** grpc-message is percent-encoded: bytes outside printable ASCII, and '%'. */
export function encodeGrpcMessage(msg: string): string {
  let out = '';
  for (const b of Buffer.from(msg, 'utf8')) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function decodeGrpcMessage(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
