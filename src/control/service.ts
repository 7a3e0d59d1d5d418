// The ControlService implementation on top of a Daemon. This is the only
// place that turns patchwire errors into gRPC status codes (and, for clients
// of the service, gRPC status codes back into patchwire errors).
import * as grpc from '@grpc/grpc-js';

import { type Caller, localRoot } from '../capture/auth.js';
import { CaptureSession, READER_QUEUE_BYTES } from '../capture/session.js';
import type { Daemon } from '../daemon/daemon.js';
import { asPatchwireError, type ErrorCode, errorFor, FailedPrecondition, InvalidArgument, type PatchwireError, Unauthenticated } from '../errors.js';
import { controlService } from '../proto/load.js';
import { rangeProblem } from '../limits.js';
import { type PbWireSpec, specFromPb, statusToPb } from './convert.js';
import { dirFromPb, impairmentFromPb, type PbImpairment } from '../dataplane/impair.js';

const GRPC_STATUS: Record<ErrorCode, grpc.status> = {
  CANCELLED: grpc.status.CANCELLED,
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  INTERNAL: grpc.status.INTERNAL,
};

/** A patchwire error (anything else is Internal) as the gRPC status a client sees. */
export function grpcError(err: unknown): Partial<grpc.StatusObject> {
  const e = asPatchwireError(err);
  return { code: GRPC_STATUS[e.code], details: e.message };
}

/**
 * What a client of the control API got, as a patchwire error: a status our
 * service sent, or one grpc-js made itself (UNAVAILABLE: no daemon there,
 * CANCELLED: the client ended the call).
 */
export function errorFromGrpc(err: unknown): PatchwireError {
  const g = err as { code?: number; details?: string; message?: string };
  const code = (Object.keys(GRPC_STATUS) as ErrorCode[]).find((k) => GRPC_STATUS[k] === g?.code) ?? 'INTERNAL';
  return errorFor(code, g?.details || g?.message || String(err), err);
}

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

function unary<Req, Res>(fn: (req: Req) => Promise<Res> | Res): Unary<Req, Res> {
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => cb(null, res),
        (err: unknown) => cb(grpcError(err)),
      );
  };
}

/** In cluster mode the Topology objects own the wires; hand edits would be undone at the next resync. */
function writable(d: Daemon): void {
  if (d.opts.wiresFrom === 'cluster') {
    throw new FailedPrecondition(`node ${d.opts.node} runs in cluster mode: wires come from Topology objects, edit those instead`);
  }
}

export function controlServiceFor(d: Daemon): [grpc.ServiceDefinition, grpc.UntypedServiceImplementation] {
  const impl = {
    AddWire: unary(async (req: { wire: PbWireSpec | null }) => {
      writable(d);
      if (!req.wire) throw new InvalidArgument('AddWire needs a wire');
      const st = await d.addWire(specFromPb(req.wire), { attach: false, persist: true, checkPeer: true });
      return { wire: statusToPb(st) };
    }),
    RemoveWire: unary(async (req: { uid: number }) => {
      writable(d);
      await d.removeWire(Number(req.uid));
      return {};
    }),
    ListWires: unary(() => ({ wires: d.listWires().map(statusToPb) })),
    SetImpair: unary(async (req: { end: string; direction: string; impairment: PbImpairment | null }) => {
      writable(d);
      if (!req.end) throw new InvalidArgument('SetImpair needs an end (pod/ifname)');
      if (!req.impairment) throw new InvalidArgument('SetImpair needs an impairment (ResetImpair removes them)');
      return { wire: statusToPb(await d.setImpair(req.end, dirFromPb(req.direction), impairmentFromPb(req.impairment)!)) };
    }),
    ResetImpair: unary(async (req: { end: string; direction: string }) => {
      writable(d);
      if (!req.end) throw new InvalidArgument('ResetImpair needs an end (pod/ifname)');
      return { wire: statusToPb(await d.setImpair(req.end, dirFromPb(req.direction), null)) };
    }),
    // A cable pull is a lab action, not a wire change: cluster mode takes it too (it is not kept in Topology objects).
    SetLinkCable: unary(async (req: { end: string; cable: string }) => {
      if (!req.end) throw new InvalidArgument('SetLinkCable needs an end (pod/ifname)');
      if (req.cable !== 'CABLE_STATE_PLUGGED' && req.cable !== 'CABLE_STATE_PULLED') throw new InvalidArgument('SetLinkCable needs cable CABLE_STATE_PLUGGED or CABLE_STATE_PULLED');
      return { wire: statusToPb(await d.setCable(req.end, req.cable === 'CABLE_STATE_PLUGGED')) };
    }),
    ListLinkEvents: unary((req: { end: string }) => ({
      events: d.linkEvents(req.end).map((e) => ({ uid: e.uid, end: e.end, node: e.node, timestamp_us: e.tsUs, carrier: e.carrier, reason: e.reason })),
    })),
    Health: unary(() => {
      const h = d.health();
      return {
        node: h.node,
        lab: h.lab,
        pid: h.pid,
        listen: h.listen,
        wires: h.wires,
        unknown_wire: h.unknownWire,
        rt_priority: h.rtPriority,
        keeps_freed_memory: h.keepsFreedMemory,
        malformed: h.malformed,
        malformed_frames: h.malformedFrames,
        refused_streams: h.refusedStreams,
        tls_refused: h.tlsRefused,
        last_tls_refusal: h.lastTlsRefusal,
        state_file: h.stateFile,
        restoring: h.restoring,
        identity_refused: h.identityRefused,
        event_loop_delay_p99_ms: h.eventLoopDelayP99Ms,
        event_loop_delay_max_ms: h.eventLoopDelayMaxMs,
        refused_connections: h.refusedConnections,
        last_connection_refusal: h.lastConnectionRefusal,
        ...(h.tls ? { tls: { names: h.tls.names, not_after: h.tls.notAfter, serial: h.tls.serial, rotations: h.tls.rotations, last_rotation_error: h.tls.lastRotationError } } : {}),
        peers: h.peers.map((p) => ({
          node: p.node,
          address: p.address,
          inbound: p.inbound,
          outbound: p.outbound,
          reconnects: p.reconnects,
          frames_in: p.framesIn,
          last_error: p.lastError,
          frames_out: p.framesOut,
          batches_in: p.batchesIn,
          batches_out: p.batchesOut,
          queued_bytes: p.queuedBytes,
        })),
      };
    }),
  };
  /**
   * Capture over the control socket. The socket is root-only, and local root
   * is trusted: without a token the caller is local root and may capture
   * every wire end. A token, when sent (`authorization: Bearer ...`, as
   * `patchwire capture` does for a lab), is checked like on the HTTP port and
   * the caller is held to it. Repeats are folded and the same per-caller
   * caps apply either way.
   */
  const captureCaller = async (call: grpc.ServerWritableStream<unknown, unknown>, wires: string[]): Promise<Caller> => {
    const [token] = call.metadata.get('authorization');
    if (token === undefined) return localRoot;
    if (!d.captureAuth) throw new Unauthenticated('this daemon has no capture credential to check a token against');
    const who = await d.captureAuth.authenticate(String(token));
    await d.captureAuth.authorize(who, wires);
    return who;
  };
  const Capture = (call: grpc.ServerWritableStream<{ wires: string[]; follow: boolean; count: number; duration_ms: number }, unknown>): void => {
    const req = call.request;
    void (async () => {
      const bad = rangeProblem('count', Number(req.count), 'captureCount') ?? rangeProblem('duration (duration_ms / 1000)', Number(req.duration_ms) / 1000, 'captureDurationSeconds', { fractions: true });
      if (bad) throw new InvalidArgument(bad);
      const who = await captureCaller(call as grpc.ServerWritableStream<unknown, unknown>, req.wires);
      const picked = d.captureSources(req.wires, who.seesAll);
      if (call.cancelled) return;
      let first = true;
      let release = (): void => undefined;
      const session: CaptureSession = new CaptureSession(
        picked.sources,
        { follow: req.follow, count: Number(req.count), durationMs: Number(req.duration_ms), maxQueueBytes: READER_QUEUE_BYTES, onClose: () => release() },
        {
          write: (recs, ringDone) => {
            const msg = {
              interfaces: first ? picked.interfaces : [],
              frames: recs.map((r) => ({ interface_id: r.iface, timestamp_us: r.tsUs, outbound: r.outbound, original_length: r.origLen, data: r.data })),
              ring_done: ringDone,
              drops: session.drops,
            };
            first = false;
            return call.write(msg);
          },
          end: () => call.end(),
        },
      );
      release = d.captureGate.admit(who.id, session.open());
      call.on('drain', () => session.resume());
      call.on('cancelled', () => session.stop());
      call.on('close', () => session.stop());
      session.start();
    })().catch((err: unknown) => call.emit('error', grpcError(err)));
  };
  /**
   * The live link map. Like Capture, local root on the socket is trusted; a
   * token, when sent, must be allowed to see the node (authorizeNode).
   */
  const mapCaller = async (call: { metadata: grpc.Metadata }): Promise<void> => {
    const [token] = call.metadata.get('authorization');
    if (token === undefined) return;
    if (!d.captureAuth) throw new Unauthenticated('this daemon has no credential to check a token against');
    await d.captureAuth.authorizeNode(await d.captureAuth.authenticate(String(token)), d.opts.node);
  };
  const GetMap = (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>): void => {
    mapCaller(call).then(
      () => cb(null, { map: d.map.snapshot() }),
      (err: unknown) => cb(grpcError(err)),
    );
  };
  const WatchMap = (call: grpc.ServerWritableStream<unknown, unknown>): void => {
    void (async () => {
      await mapCaller(call);
      if (call.cancelled) return;
      const w = d.map.watch({ send: (ev) => call.write(ev) });
      call.on('drain', () => w.resume());
      call.on('cancelled', () => w.stop());
      call.on('close', () => w.stop());
      call.on('error', () => w.stop());
    })().catch((err: unknown) => call.emit('error', grpcError(err)));
  };
  return [controlService().service, { ...impl, Capture, GetMap, WatchMap } as unknown as grpc.UntypedServiceImplementation];
}
