// The ControlService implementation on top of a Daemon.
import * as grpc from '@grpc/grpc-js';

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

export function controlServiceFor(d: Daemon): [grpc.ServiceDefinition, grpc.UntypedServiceImplementation] {
  const impl = {
    AddWire: unary(async (req: { wire: PbWireSpec | null }) => {
      if (!req.wire) throw new WireError(grpc.status.INVALID_ARGUMENT, 'AddWire needs a wire');
      const st = await d.addWire(specFromPb(req.wire), { attach: false, persist: true, checkPeer: true });
      return { wire: statusToPb(st) };
    }),
    RemoveWire: unary(async (req: { uid: number }) => {
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
        malformed: h.malformed,
        peers: h.peers.map((p) => ({
          node: p.node,
          address: p.address,
          inbound: p.inbound,
          outbound: p.outbound,
          reconnects: p.reconnects,
          frames_in: p.framesIn,
          frames_out: p.framesOut,
          batches_in: p.batchesIn,
          batches_out: p.batchesOut,
        })),
      };
    }),
  };
  return [controlService().service, impl as unknown as grpc.UntypedServiceImplementation];
}
