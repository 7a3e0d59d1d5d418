// proto-loader for the control plane (the frame path has its own codec).
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { PACKAGE_ROOT } from '../paths.js';

export const PROTO_ROOT = path.join(PACKAGE_ROOT, 'proto');

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
