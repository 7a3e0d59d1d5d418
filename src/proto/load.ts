// proto-loader for the control plane (the frame path has its own codec).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
export const PROTO_ROOT = path.resolve(here, '..', '..', '..', 'proto');

let cached: grpc.GrpcObject | null = null;

export function loadPatchwire(): grpc.GrpcObject {
  if (cached) return cached;
  const def = protoLoader.loadSync(['patchwire/v1/control.proto', 'patchwire/v1/dataplane.proto'], {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    arrays: true,
  });
  cached = grpc.loadPackageDefinition(def);
  return cached;
}

export function controlService(): grpc.ServiceClientConstructor {
  const pkg = loadPatchwire() as unknown as { patchwire: { v1: { ControlService: grpc.ServiceClientConstructor } } };
  return pkg.patchwire.v1.ControlService;
}
