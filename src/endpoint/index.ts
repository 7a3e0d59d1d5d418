import type { Endpoint, EndpointSpec } from './endpoint.js';
import { HostEndpoint } from './host.js';
import { TapEndpoint } from './tap.js';
import { VethEndpoint } from './veth.js';

export * from './endpoint.js';

export function createEndpoint(spec: EndpointSpec): Endpoint {
  switch (spec.kind) {
    case 'veth':
      return new VethEndpoint(spec);
    case 'tap':
      return new TapEndpoint(spec);
    case 'host':
      return new HostEndpoint(spec);
  }
}
