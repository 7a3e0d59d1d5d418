// Streams between daemons. Each daemon subscribes to every peer it has wires
// with (it is the gRPC client of the stream it receives on, so the client
// flow-control window applies), and serves the subscriptions of its peers.
import * as grpc from '@grpc/grpc-js';

import { decodeSubscribeRequest, encodeHelloResponse, encodeSubscribeRequest, type SubscribeRequest } from './codec.js';
import { batchPool } from './pool.js';

export const SUBSCRIBE_PATH = '/patchwire.v1.DataplaneService/Subscribe';
const passThrough = (b: Buffer): Buffer => b;
/** grpc-js copies what this returns into its framed message right away: the batch is free after that. */
const serializeBatch = (b: Buffer): Buffer => {
  batchPool.giveAfterCopy(b);
  return b;
};

export const dataplaneServiceDefinition: grpc.ServiceDefinition = {
  subscribe: {
    path: SUBSCRIBE_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: encodeSubscribeRequest,
    requestDeserialize: decodeSubscribeRequest,
    responseSerialize: serializeBatch,
    responseDeserialize: passThrough,
    originalName: 'Subscribe',
  } as grpc.MethodDefinition<SubscribeRequest, Buffer>,
};

const WINDOW = 16 << 20;
export const MAX_MESSAGE = 64 << 20;
export const channelOptions: grpc.ChannelOptions = {
  'grpc-node.flow_control_window': WINDOW,
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
  'grpc.keepalive_time_ms': 5000,
  'grpc.keepalive_timeout_ms': 5000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2000,
};
export const serverOptions: grpc.ServerOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 1000,
};

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
  call: grpc.ServerDuplexStream<SubscribeRequest, Buffer>;
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
}

function wake(out: Outbound): void {
  const w = out.drainWaiters;
  out.drainWaiters = [];
  for (const fn of w) fn();
}

/** Our subscription to one peer: reconnects with backoff until stopped. */
class Subscription {
  connected = false;
  reconnects = 0;
  batchesIn = 0;
  framesIn = 0;
  lastError = '';
  private call: grpc.ClientDuplexStream<SubscribeRequest, Buffer> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private backoff = 100;
  private readonly client: grpc.Client;

  constructor(
    readonly node: string,
    readonly address: string,
    private readonly hello: SubscribeRequest,
    creds: grpc.ChannelCredentials,
    extraOptions: grpc.ChannelOptions,
    private readonly onBatch: (buf: Buffer, sub: Subscription) => void,
  ) {
    this.client = new grpc.Client(address, creds, { ...channelOptions, ...extraOptions });
    this.open();
  }

  private open(): void {
    if (this.stopped) return;
    const call = this.client.makeBidiStreamRequest<SubscribeRequest, Buffer>(
      SUBSCRIBE_PATH,
      encodeSubscribeRequest,
      passThrough,
      new grpc.Metadata(),
    );
    this.call = call;
    let first = true;
    call.on('data', (buf: Buffer) => {
      if (first) {
        // The server's first response is its hello (node name, no frames):
        // from here on the peer knows where to send our frames.
        first = false;
        this.connected = true;
        this.backoff = 100;
        return;
      }
      this.batchesIn++;
      this.onBatch(buf, this);
    });
    const closed = (err?: Error): void => {
      if (this.call !== call) return;
      this.call = null;
      if (err) this.lastError = err.message;
      this.connected = false;
      if (this.stopped) return;
      this.reconnects++;
      this.timer = setTimeout(() => this.open(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 2000);
    };
    call.on('error', closed);
    call.on('end', () => closed());
    call.write(this.hello);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.call?.cancel();
    this.call = null;
    this.connected = false;
    this.client.close();
  }
}

export class Peers {
  private readonly outbound = new Map<string, Outbound>();
  private readonly subs = new Map<string, Subscription>();

  constructor(
    private readonly self: { node: string; lab: string },
    private readonly creds: grpc.ChannelCredentials,
    private readonly onBatch: (buf: Buffer, fromNode: string) => void,
    private readonly clientOptions: grpc.ChannelOptions = {},
  ) {}

  /** The gRPC handler of Subscribe: a peer asks for the frames we have for it. */
  readonly serveSubscribe = (call: grpc.ServerDuplexStream<SubscribeRequest, Buffer>): void => {
    let node = '';
    call.on('data', (req: SubscribeRequest) => {
      if (node !== '') return; // later messages are keepalives
      if (req.lab !== this.self.lab) {
        call.emit('error', {
          code: grpc.status.PERMISSION_DENIED,
          details: `daemon ${this.self.node} serves lab '${this.self.lab}', not '${req.lab}'`,
        });
        return;
      }
      if (!req.node) {
        call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'subscribe hello without node name' });
        return;
      }
      node = req.node;
      const old = this.outbound.get(node);
      if (old) old.call.end();
      this.outbound.set(node, { call, queuedBytes: 0, drainWaiters: [], framesOut: 0, batchesOut: 0 });
      call.write(encodeHelloResponse(this.self.node));
    });
    const gone = (): void => {
      const out = node ? this.outbound.get(node) : undefined;
      if (out?.call === call) {
        this.outbound.delete(node);
        wake(out); // paused senders resume and count peer_down
      }
    };
    call.on('cancelled', gone);
    call.on('error', gone);
    call.on('end', () => {
      gone();
      call.end();
    });
  };

  /** Makes sure we subscribe to the peer at `address`. */
  ensure(node: string, address: string): void {
    if (this.subs.has(node)) return;
    const sub = new Subscription(
      node,
      address,
      { node: this.self.node, lab: this.self.lab },
      this.creds,
      this.clientOptions,
      (buf) => this.onBatch(buf, node),
    );
    this.subs.set(node, sub);
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

  /** Sends one encoded batch of `frames` frames to a peer. */
  send(node: string, batch: Buffer, frames: number): SendResult {
    const out = this.outbound.get(node);
    if (!out) return 'peer_down';
    if (out.queuedBytes + batch.length > MAX_QUEUED_BYTES) return 'queue_full';
    out.queuedBytes += batch.length;
    out.framesOut += frames;
    out.batchesOut++;
    out.call.write(batch, () => {
      out.queuedBytes -= batch.length;
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
      out.call.end();
      wake(out);
    }
    this.outbound.clear();
  }
}
