// The ControlService implementation on top of a Daemon.
import * as grpc from '@grpc/grpc-js';

import { CaptureSession } from '../capture/session.js';
import { READER_QUEUE_BYTES } from '../capture/http.js';
import { Daemon, WireError } from '../daemon/daemon.js';
import { controlService } from '../proto/load.js';
import { type PbWireSpec, specFromPb, statusToPb } from './convert.js';

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

function unary<Req, Res>(fn: (req: Req) => Promise<Res> | Res): Unary<Req, Res> {
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => cb(null, res),
        (err: Error) => cb({ code: err instanceof WireError ? err.code : grpc.status.INTERNAL, details: err.message }),
      );
  };
}

/** In cluster mode the Topology objects own the wires; hand edits would be undone at the next resync. */
function writable(d: Daemon): void {
  if (d.opts.wiresFrom === 'cluster') {
    throw new WireError(grpc.status.FAILED_PRECONDITION, `node ${d.opts.node} runs in cluster mode: wires come from Topology objects, edit those instead`);
  }
}

export function controlServiceFor(d: Daemon): [grpc.ServiceDefinition, grpc.UntypedServiceImplementation] {
  const impl = {
    AddWire: unary(async (req: { wire: PbWireSpec | null }) => {
      writable(d);
      if (!req.wire) throw new WireError(grpc.status.INVALID_ARGUMENT, 'AddWire needs a wire');
      const st = await d.addWire(specFromPb(req.wire), { attach: false, persist: true, checkPeer: true });
      return { wire: statusToPb(st) };
    }),
    RemoveWire: unary(async (req: { uid: number }) => {
      writable(d);
      await d.removeWire(Number(req.uid));
      return {};
    }),
    ListWires: unary(() => ({ wires: d.listWires().map(statusToPb) })),
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
        tls_refused: h.tlsRefused,
        last_tls_refusal: h.lastTlsRefusal,
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
  const Capture = (call: grpc.ServerWritableStream<{ wires: string[]; follow: boolean; count: number; duration_ms: number }, unknown>): void => {
    const req = call.request;
    let picked: ReturnType<Daemon['captureSources']>;
    try {
      picked = d.captureSources(req.wires);
    } catch (err) {
      call.emit('error', { code: err instanceof WireError ? err.code : grpc.status.INTERNAL, details: (err as Error).message });
      return;
    }
    let first = true;
    const session: CaptureSession = new CaptureSession(
      picked.sources,
      { follow: req.follow, count: Number(req.count), durationMs: Number(req.duration_ms), maxQueueBytes: READER_QUEUE_BYTES },
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
    call.on('drain', () => session.resume());
    call.on('cancelled', () => session.stop());
    call.on('close', () => session.stop());
    session.start();
  };
  return [controlService().service, { ...impl, Capture } as unknown as grpc.UntypedServiceImplementation];
}
