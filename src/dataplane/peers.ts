// Streams between daemons. Each daemon subscribes to every peer it has wires
// with (it is the client of the stream it receives on) and serves the
// subscriptions of its peers. The stream is gRPC
// (patchwire.v1.DataplaneService/Subscribe), spoken on node:http2 with
// grpc-wire.ts, so any gRPC implementation can subscribe; both sides raise
// their HTTP/2 windows to WINDOW.
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';

import { decodeSubscribeRequest, encodeHelloResponse, encodeSubscribeRequest, type SubscribeRequest } from './codec.js';
import { decodeGrpcMessage, encodeGrpcMessage, frame, GrpcProtocolError, GrpcStatus, MessageReader, writePrefix } from './grpc-wire.js';
import { batchPool } from './pool.js';
import { parseHostPort } from '../util/hostport.js';

export const SUBSCRIBE_PATH = '/patchwire.v1.DataplaneService/Subscribe';

const WINDOW = 16 << 20;
export const MAX_MESSAGE = 64 << 20;
/** Fewer, larger DATA frames: one frame header per MiB instead of per 16 KiB. */
const MAX_FRAME = 1 << 20;
const KEEPALIVE_MS = 5000;
const CONNECT_TIMEOUT_MS = 5000;
const h2Options = {
  settings: { initialWindowSize: WINDOW, maxFrameSize: MAX_FRAME, enablePush: false },
  // A peer stream may have up to MAX_QUEUED_BYTES buffered; node's 10 MB
  // default would refuse a reconnecting stream while that drains.
  maxSessionMemory: 128,
};

/** Certificates for mutual TLS between daemons. */
export interface DataTls {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  /** name the peers' certificates are checked against */
  serverName: string;
}

/** Bytes allowed in flight to one peer before frames count as queue_full. */
export const MAX_QUEUED_BYTES = 32 << 20;
/**
 * Past this, senders are asked to pause reading their ports until the queue
 * drains to half: under overload frames then wait (or drop, counted) in the
 * kernel before any work is spent on them.
 */
export const HIGH_WATER_BYTES = 24 << 20;

/** 'busy': sent, but pause until onDrain() calls back. */
export type SendResult = 'ok' | 'busy' | 'peer_down' | 'queue_full';

interface Outbound {
  stream: http2.ServerHttp2Stream;
  queuedBytes: number;
  drainWaiters: Array<() => void>;
  framesOut: number;
  batchesOut: number;
}

export interface PeerStats {
  node: string;
  address: string;
  inbound: boolean;
  outbound: boolean;
  reconnects: number;
  framesIn: number;
  framesOut: number;
  batchesIn: number;
  batchesOut: number;
  /** why our subscription to the peer last ended or failed ('' if it never did) */
  lastError: string;
}

function wake(out: Outbound): void {
  const w = out.drainWaiters;
  out.drainWaiters = [];
  for (const fn of w) fn();
}

/** Pings the other side every KEEPALIVE_MS; a session that stops answering is destroyed. */
function keepalive(session: http2.Http2Session): void {
  let waiting = false;
  const timer = setInterval(() => {
    if (session.destroyed || session.closed) return;
    if (waiting) {
      session.destroy(new Error(`peer did not answer a keepalive ping within ${KEEPALIVE_MS} ms`));
      return;
    }
    waiting = true;
    session.ping((err) => {
      if (!err) waiting = false;
    });
  }, KEEPALIVE_MS);
  timer.unref();
  session.once('close', () => clearInterval(timer));
}

/** Opens an HTTP/2 session to a peer daemon (TCP_NODELAY: a lone frame must not wait for an ACK). */
function connect(address: string, tlsFiles: DataTls | null): http2.ClientHttp2Session {
  const hp = parseHostPort(address);
  if (!hp) throw new Error(`peer address '${address}' is not host:port`);
  const { host, port } = hp;
  const authority = `${tlsFiles ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  return http2.connect(authority, {
    ...h2Options,
    createConnection: () => {
      const sock = tlsFiles
        ? tls.connect({ host, port, ca: tlsFiles.ca, cert: tlsFiles.cert, key: tlsFiles.key, servername: tlsFiles.serverName, ALPNProtocols: ['h2'] })
        : net.connect({ host, port });
      sock.setNoDelay(true);
      return sock;
    },
  });
}

/** Our subscription to one peer: reconnects with backoff until stopped. */
class Subscription {
  connected = false;
  reconnects = 0;
  batchesIn = 0;
  framesIn = 0;
  lastError = '';
  private session: http2.ClientHttp2Session | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private backoff = 100;

  constructor(
    readonly node: string,
    readonly address: string,
    private readonly hello: SubscribeRequest,
    private readonly tlsFiles: DataTls | null,
    private readonly onBatch: (buf: Buffer) => void,
  ) {
    this.open();
  }

  private open(): void {
    if (this.stopped) return;
    const session = connect(this.address, this.tlsFiles);
    this.session = session;
    const connectTimer = setTimeout(() => session.destroy(new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
    session.once('connect', () => {
      clearTimeout(connectTimer);
      session.setLocalWindowSize(WINDOW);
      keepalive(session);
    });
    const fail = (msg: string): void => {
      if (this.session === session && !this.stopped) this.lastError = msg;
      session.destroy();
    };
    session.on('error', (err) => fail(err.message));
    session.on('goaway', (code) => {
      if (code !== http2.constants.NGHTTP2_NO_ERROR) fail(`peer sent GOAWAY ${code}`);
    });
    session.once('close', () => {
      clearTimeout(connectTimer);
      this.closed(session);
    });

    const stream = session.request(
      { ':method': 'POST', ':path': SUBSCRIBE_PATH, 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'patchwire' },
      { endStream: false },
    );
    let first = true;
    const reader = new MessageReader(MAX_MESSAGE, (msg) => {
      if (first) {
        // The server's first message is its hello (node name, no frames):
        // from here on the peer knows where to send our frames.
        first = false;
        this.connected = true;
        this.backoff = 100;
        return;
      }
      this.batchesIn++;
      this.onBatch(msg);
    });
    const status = (h: http2.IncomingHttpHeaders): string | null => {
      const code = Number(h['grpc-status']);
      if (h['grpc-status'] === undefined || code === GrpcStatus.OK) return null;
      return `peer refused the stream: ${decodeGrpcMessage(String(h['grpc-message'] ?? ''))} (gRPC status ${code})`;
    };
    stream.on('response', (h) => {
      if (h[':status'] !== 200) return fail(`peer answered HTTP ${h[':status']}`);
      const refused = status(h); // a trailers-only answer
      if (refused) return fail(refused);
      if (!String(h['content-type'] ?? '').startsWith('application/grpc')) fail(`peer answered content-type ${h['content-type']}`);
    });
    stream.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (err) {
        fail(`bad message from peer: ${(err as Error).message}`);
      }
    });
    stream.on('trailers', (h) => fail(status(h) ?? 'peer ended the stream'));
    stream.on('error', (err) => fail(err.message));
    stream.on('close', () => fail(this.lastError || 'stream closed'));
    stream.write(frame(encodeSubscribeRequest(this.hello)));
  }

  private closed(session: http2.ClientHttp2Session): void {
    if (this.session !== session) return;
    this.session = null;
    this.connected = false;
    if (this.stopped) return;
    this.reconnects++;
    this.timer = setTimeout(() => this.open(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 2000);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const s = this.session;
    this.session = null;
    this.connected = false;
    s?.destroy();
  }
}

export class Peers {
  private readonly outbound = new Map<string, Outbound>();
  private readonly subs = new Map<string, Subscription>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly server: http2.Http2Server | http2.Http2SecureServer;
  /** connections refused in the TLS handshake (no client certificate, a foreign one...) */
  tlsRefused = 0;
  /** why the last one was refused, with the address it came from */
  lastTlsRefusal = '';

  constructor(
    private readonly self: { node: string; lab: string },
    private readonly tlsFiles: DataTls | null,
    private readonly onBatch: (buf: Buffer, fromNode: string) => void,
  ) {
    this.server = tlsFiles
      ? http2.createSecureServer({ ...h2Options, cert: tlsFiles.cert, key: tlsFiles.key, ca: tlsFiles.ca, requestCert: true, rejectUnauthorized: true })
      : http2.createServer(h2Options);
    // A refused client never gets a session, so without this it would leave no trace.
    this.server.on('tlsClientError', (err: Error, sock: tls.TLSSocket) => {
      this.tlsRefused++;
      // The TLS socket is closed by now; the TCP socket under it kept the address (see accept()).
      const tcp = (sock as tls.TLSSocket & { _parent?: net.Socket })._parent;
      const from = sock.remoteAddress ?? tcp?.remoteAddress ?? 'unknown address';
      // A certificate that does not verify closes the socket without an error
      // of its own; OpenSSL's errors carry a short reason beside a message with source paths.
      const why = sock.authorizationError ? `client certificate refused: ${String(sock.authorizationError)}` : ((err as Error & { reason?: string }).reason ?? err.message);
      this.lastTlsRefusal = `${from}: ${why}`;
    });
    this.server.on('session', (s: http2.ServerHttp2Session) => {
      this.sessions.add(s);
      s.on('error', () => {}); // the stream's handlers see what matters
      s.once('close', () => this.sessions.delete(s));
      keepalive(s);
    });
    this.server.on('stream', (stream, headers) => this.serve(stream, headers));
  }

  /** Takes a data-plane connection the daemon accepted. */
  accept(sock: net.Socket): void {
    // Reading the address caches it on the socket, so a refusal can still name it after the close.
    void sock.remoteAddress;
    this.server.emit('connection', sock);
  }

  /** A peer asks for the frames we have for it. */
  private serve(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => {});
    let code: number = GrpcStatus.OK;
    let message = '';
    /** Ends the call with a gRPC status (in trailers, or trailers-only before any response). */
    const finish = (c: number, m: string): void => {
      if (stream.destroyed || stream.closed) return;
      if (!stream.headersSent) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(c), 'grpc-message': encodeGrpcMessage(m) }, { endStream: true });
        return;
      }
      code = c;
      message = m;
      stream.end();
    };
    if (headers[':method'] !== 'POST') {
      stream.respond({ ':status': 405 }, { endStream: true });
      return;
    }
    if (!String(headers['content-type'] ?? '').startsWith('application/grpc')) {
      stream.respond({ ':status': 415 }, { endStream: true });
      return;
    }
    if (headers[':path'] !== SUBSCRIBE_PATH) return finish(GrpcStatus.UNIMPLEMENTED, `unknown method ${headers[':path']}`);
    const enc = headers['grpc-encoding'];
    if (enc !== undefined && enc !== 'identity') return finish(GrpcStatus.UNIMPLEMENTED, `grpc-encoding ${enc} is not supported`);
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-accept-encoding': 'identity' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => {
      const trailers: http2.OutgoingHttpHeaders = { 'grpc-status': String(code) };
      if (message) trailers['grpc-message'] = encodeGrpcMessage(message);
      stream.sendTrailers(trailers);
    });

    let node = '';
    const reader = new MessageReader(MAX_MESSAGE, (msg) => {
      if (node !== '') return; // later messages are keepalives
      let req: SubscribeRequest;
      try {
        req = decodeSubscribeRequest(msg);
      } catch (err) {
        return finish(GrpcStatus.INVALID_ARGUMENT, `subscribe hello: ${(err as Error).message}`);
      }
      if (req.lab !== this.self.lab) return finish(GrpcStatus.PERMISSION_DENIED, `daemon ${this.self.node} serves lab '${this.self.lab}', not '${req.lab}'`);
      if (!req.node) return finish(GrpcStatus.INVALID_ARGUMENT, 'subscribe hello without node name');
      node = req.node;
      const old = this.outbound.get(node);
      if (old) old.stream.end();
      this.outbound.set(node, { stream, queuedBytes: 0, drainWaiters: [], framesOut: 0, batchesOut: 0 });
      stream.write(frame(encodeHelloResponse(this.self.node)));
    });
    stream.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (err) {
        const e = err as GrpcProtocolError;
        finish(e.code ?? GrpcStatus.INTERNAL, e.message);
      }
    });
    const gone = (): void => {
      const out = node ? this.outbound.get(node) : undefined;
      if (out?.stream === stream) {
        this.outbound.delete(node);
        wake(out); // paused senders resume and count peer_down
      }
    };
    stream.on('close', gone);
    stream.on('end', () => {
      gone();
      finish(GrpcStatus.OK, '');
    });
  }

  /** Makes sure we subscribe to the peer at `address`. */
  ensure(node: string, address: string): void {
    if (this.subs.has(node)) return;
    const sub = new Subscription(node, address, { node: this.self.node, lab: this.self.lab }, this.tlsFiles, (buf) => this.onBatch(buf, node));
    this.subs.set(node, sub);
  }

  /**
   * Resolves once a peer daemon at `address` accepts an HTTP/2 session from
   * us (TCP, TLS both ways, and its SETTINGS), or rejects saying why not.
   */
  probe(address: string, timeoutMs = 3000): Promise<void> {
    return new Promise((resolve, reject) => {
      const session = connect(address, this.tlsFiles);
      let settled = false;
      const done = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        session.destroy();
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      session.once('remoteSettings', () => done());
      session.on('error', (err) => done(err)); // 'on': a second error must not go unhandled
      session.once('close', () => done(new Error('connection closed')));
    });
  }

  /** Stops subscribing to peers no wire needs any more. */
  retain(nodes: Set<string>): void {
    for (const [node, sub] of this.subs) {
      if (!nodes.has(node)) {
        sub.stop();
        this.subs.delete(node);
      }
    }
  }

  isUp(node: string): boolean {
    return (this.subs.get(node)?.connected ?? false) && this.outbound.has(node);
  }

  /**
   * Sends one batch of `frames` frames to a peer. `framed` holds the encoded
   * SubscribeResponse after GRPC_PREFIX bytes of headroom; it must come from
   * batchPool, which gets it back once it is on the socket.
   */
  send(node: string, framed: Buffer, frames: number): SendResult {
    const out = this.outbound.get(node);
    if (!out) return 'peer_down';
    const len = framed.length;
    if (out.queuedBytes + len > MAX_QUEUED_BYTES) return 'queue_full';
    out.queuedBytes += len;
    out.framesOut += frames;
    out.batchesOut++;
    out.stream.write(writePrefix(framed), (err) => {
      out.queuedBytes -= len;
      // After an error the session may still point at the bytes: let GC have them.
      if (!err) batchPool.give(framed);
      if (out.drainWaiters.length > 0 && out.queuedBytes <= HIGH_WATER_BYTES / 2) wake(out);
    });
    return out.queuedBytes > HIGH_WATER_BYTES ? 'busy' : 'ok';
  }

  /** Calls `fn` once the queue to `node` has drained (or the peer is gone). */
  onDrain(node: string, fn: () => void): void {
    const out = this.outbound.get(node);
    if (!out || out.queuedBytes <= HIGH_WATER_BYTES / 2) fn();
    else out.drainWaiters.push(fn);
  }

  stats(): PeerStats[] {
    const nodes = new Set([...this.subs.keys(), ...this.outbound.keys()]);
    return [...nodes].sort().map((node) => {
      const sub = this.subs.get(node);
      const out = this.outbound.get(node);
      return {
        node,
        address: sub?.address ?? '',
        inbound: sub?.connected ?? false,
        outbound: out !== undefined,
        reconnects: sub?.reconnects ?? 0,
        framesIn: sub?.framesIn ?? 0,
        framesOut: out?.framesOut ?? 0,
        batchesIn: sub?.batchesIn ?? 0,
        batchesOut: out?.batchesOut ?? 0,
        lastError: sub?.lastError ?? '',
      };
    });
  }

  countIn(node: string, frames: number): void {
    const sub = this.subs.get(node);
    if (sub) sub.framesIn += frames;
  }

  close(): void {
    for (const sub of this.subs.values()) sub.stop();
    this.subs.clear();
    for (const out of this.outbound.values()) {
      out.stream.end();
      wake(out);
    }
    this.outbound.clear();
    this.server.close();
    for (const s of this.sessions) s.destroy();
  }
}
