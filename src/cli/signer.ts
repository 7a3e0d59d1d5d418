// `patchwire signer`: the issuer of the daemons' node identities (src/tls/signer.ts).
import { parseArgs } from 'node:util';

import { apiClientFrom } from '../cluster/api.js';
import { Signer } from '../tls/signer.js';
import { UsageError } from './usage.js';

export const SIGNER_HELP = `patchwire signer --ca-cert FILE --ca-key FILE [options]

Issues each wire daemon its own certificate, naming its node, through the
Kubernetes certificates API (signer name patchwire.dev/node-identity). A
request is approved only when it comes from the daemons' service account,
with a token bound to a pod on the node it asks for (Kubernetes 1.30+); the
certificate names that node alone. Publishes the CA certificate in the
ConfigMap patchwire-peer-ca. Runs as one Deployment (deploy/signer.yaml).

Options:
  --ca-cert FILE              CA certificate (PEM)
  --ca-key FILE               CA key (PEM); keep it in a Secret only the signer reads
  --namespace NS              the daemons' namespace (default: $POD_NAMESPACE or patchwire-system)
  --service-account NAME      the daemons' service account (default: patchwire)
  --max-lifetime-seconds N    longest certificate issued (default 86400; 60 to 31536000)
  --poll-seconds N            how often pending requests are looked for (default 2)
  --kubeconfig FILE           API server credentials (default: $KUBECONFIG, ~/.kube/config or in-cluster)
`;

export async function signerMain(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'ca-cert': { type: 'string' },
      'ca-key': { type: 'string' },
      namespace: { type: 'string', default: process.env.POD_NAMESPACE ?? 'patchwire-system' },
      'service-account': { type: 'string', default: 'patchwire' },
      'max-lifetime-seconds': { type: 'string', default: '86400' },
      'poll-seconds': { type: 'string', default: '2' },
      kubeconfig: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(SIGNER_HELP);
    return;
  }
  if (!values['ca-cert'] || !values['ca-key']) throw new UsageError('signer: --ca-cert and --ca-key are required');
  const lifetime = Number(values['max-lifetime-seconds']);
  if (!Number.isInteger(lifetime) || lifetime < 60 || lifetime > 31536000) throw new UsageError(`signer: --max-lifetime-seconds '${values['max-lifetime-seconds']}' must be an integer from 60 to 31536000`);
  const poll = Number(values['poll-seconds']);
  if (!Number.isFinite(poll) || poll < 0.1 || poll > 3600) throw new UsageError(`signer: --poll-seconds '${values['poll-seconds']}' must be from 0.1 to 3600`);
  const log = (m: string): void => void process.stderr.write(`[signer] ${m}\n`);
  const signer = new Signer(apiClientFrom(values.kubeconfig, 30000), {
    caCert: values['ca-cert'],
    caKey: values['ca-key'],
    namespace: values.namespace!,
    serviceAccount: values['service-account']!,
    maxLifetimeSeconds: lifetime,
    pollMs: poll * 1000,
    log,
  });
  await signer.start();
  log(`issuing node identities for ${values.namespace}/${values['service-account']}`);
  const stop = (): void => {
    signer.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
