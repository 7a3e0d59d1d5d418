// A cluster daemon's own identity, from the Kubernetes certificates API: the
// daemon makes a key (it never leaves the node), asks for a certificate with
// a CertificateSigningRequest to patchwire's signer, and writes key, the
// issued certificate and the signer's CA bundle where the data plane reads
// them. The API server stamps the request with who made it; since pods'
// service-account tokens are bound to their node, the signer can check that
// the node named in the request is the node the requesting pod runs on
// (src/tls/signer.ts). Renewal repeats this when two thirds of the
// certificate's life are gone; the daemon's TLS file watcher then takes the
// new identity for new connections without a flap.
import { createPrivateKey, generateKeyPair as generateKeyPairCb, randomBytes, X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import type { ApiClient } from '../cluster/api.js';
import { wire } from '../native/wire.js';
import { identityNameProblem, type NodeIdentityFiles } from './identity.js';

const generateKeyPair = promisify(generateKeyPairCb);

export const SIGNER_NAME = 'patchwire.dev/node-identity';
/** The ConfigMap (in the daemons' namespace) where the signer publishes its CA certificate. */
export const CA_CONFIGMAP = 'patchwire-peer-ca';
const CSR_PATH = '/apis/certificates.k8s.io/v1/certificatesigningrequests';

export interface IdentityRequestOptions {
  node: string;
  /** where key, certificate and CA go (an emptyDir or tmpfs of the daemon's pod) */
  dir: string;
  /** the daemons' namespace, where the CA ConfigMap lives */
  namespace: string;
  /** asked-for lifetime; the signer may give less (the API's minimum is 600 s) */
  lifetimeSeconds: number;
  /** how long to wait for the signer, ms */
  waitMs: number;
  log: (msg: string) => void;
}

interface Csr {
  metadata: { name: string };
  status?: { certificate?: string; conditions?: Array<{ type: string; status: string; reason?: string; message?: string }> };
}

async function writeFileAtomic(file: string, data: string | Buffer, mode: number): Promise<void> {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, file);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Obtains a certificate for this node and writes key, cert and CA into `o.dir`. */
export async function requestNodeIdentity(api: ApiClient, o: IdentityRequestOptions): Promise<NodeIdentityFiles> {
  const problem = identityNameProblem(o.node);
  if (problem) throw new Error(problem);
  await mkdir(o.dir, { recursive: true, mode: 0o700 });
  const files: NodeIdentityFiles = { key: path.join(o.dir, 'tls.key'), cert: path.join(o.dir, 'tls.crt'), ca: path.join(o.dir, 'ca.crt') };
  // The key is made here and never leaves the node; only the request travels.
  const { privateKey } = await generateKeyPair('ec', { namedCurve: 'prime256v1' });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const csrPem = wire.makeCsr({ key: keyPem, name: o.node });
  const name = `patchwire-${o.node.slice(0, 200)}-${randomBytes(4).toString('hex')}`;
  try {
    await api.request('POST', CSR_PATH, {
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { name, labels: { 'app.kubernetes.io/name': 'patchwire', 'patchwire.dev/node': o.node.slice(0, 63) } },
      spec: {
        request: Buffer.from(csrPem).toString('base64'),
        signerName: SIGNER_NAME,
        expirationSeconds: o.lifetimeSeconds,
        usages: ['digital signature', 'server auth', 'client auth'],
      },
    });
    const deadline = Date.now() + o.waitMs;
    let certPem = '';
    for (;;) {
      const csr = (await api.request('GET', `${CSR_PATH}/${name}`)) as Csr;
      const denied = csr.status?.conditions?.find((c) => (c.type === 'Denied' || c.type === 'Failed') && c.status === 'True');
      if (denied) throw new Error(`the signer ${denied.type === 'Denied' ? 'denied' : 'failed'} certificate request ${name}: ${denied.message ?? denied.reason ?? ''}`);
      if (csr.status?.certificate) {
        certPem = Buffer.from(csr.status.certificate, 'base64').toString('utf8');
        break;
      }
      if (Date.now() > deadline) throw new Error(`certificate request ${name} was not signed within ${Math.round(o.waitMs / 1000)} s (is the patchwire signer running? kubectl -n ${o.namespace} get deploy patchwire-signer)`);
      await sleep(500);
    }
    const cm = (await api.request('GET', `/api/v1/namespaces/${o.namespace}/configmaps/${CA_CONFIGMAP}`)) as { data?: Record<string, string> };
    const caPem = cm.data?.['ca.crt'];
    if (!caPem) throw new Error(`ConfigMap ${o.namespace}/${CA_CONFIGMAP} has no ca.crt (the signer publishes it)`);
    const cert = new X509Certificate(certPem);
    if (!cert.checkHost(o.node, { wildcards: false })) throw new Error(`the signer issued a certificate for ${cert.subjectAltName ?? cert.subject}, not node '${o.node}'`);
    // The key first, then the certificate: the daemon's watcher refuses a
    // certificate that does not fit the key beside it and waits for the pair.
    await writeFileAtomic(files.ca, caPem, 0o644);
    await writeFileAtomic(files.key, keyPem, 0o600);
    await writeFileAtomic(files.cert, certPem, 0o644);
    o.log(`node identity: certificate for '${o.node}' from ${SIGNER_NAME}, valid until ${cert.validTo}`);
    return files;
  } finally {
    // The request has served its purpose; leaving it would pile up one per renewal.
    await api.request('DELETE', `${CSR_PATH}/${name}`).catch(() => undefined);
  }
}

/** When to renew a certificate: two thirds into its life, ms from now (at least 1 s). */
export async function renewDelayMs(certFile: string, now = Date.now()): Promise<number> {
  const cert = new X509Certificate(await readFile(certFile));
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  return Math.max(1000, from + ((to - from) * 2) / 3 - now);
}

/**
 * Keeps the identity fresh: one timer per daemon (not per wire). A failed
 * renewal is retried every 30 s while the current certificate lasts.
 */
export class IdentityKeeper {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  lastError = '';

  constructor(
    private readonly api: ApiClient,
    private readonly o: IdentityRequestOptions,
  ) {}

  async start(): Promise<NodeIdentityFiles> {
    // A restarted daemon keeps the identity it has while it is fresh: the
    // data plane comes back even when the API server does not answer.
    const kept = await this.usable();
    const files = kept ?? (await requestNodeIdentity(this.api, this.o));
    if (kept) this.o.log(`node identity: keeping the certificate in ${this.o.dir}`);
    await this.schedule(files);
    return files;
  }

  /** The identity already in the directory, if it names this node, fits its key and is not due for renewal. */
  private async usable(): Promise<NodeIdentityFiles | null> {
    const files: NodeIdentityFiles = { key: path.join(this.o.dir, 'tls.key'), cert: path.join(this.o.dir, 'tls.crt'), ca: path.join(this.o.dir, 'ca.crt') };
    try {
      const [certPem, keyPem] = await Promise.all([readFile(files.cert), readFile(files.key), readFile(files.ca)]);
      const cert = new X509Certificate(certPem);
      if (!cert.checkHost(this.o.node, { wildcards: false }) || !cert.checkPrivateKey(createPrivateKey(keyPem))) return null;
      const from = Date.parse(cert.validFrom);
      const to = Date.parse(cert.validTo);
      return Date.now() < from + ((to - from) * 2) / 3 ? files : null;
    } catch {
      return null;
    }
  }

  private async schedule(files: NodeIdentityFiles): Promise<void> {
    if (this.stopped) return;
    const delay = await renewDelayMs(files.cert);
    this.timer = setTimeout(() => void this.renew(), Math.min(delay, 2 ** 31 - 1));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      const files = await requestNodeIdentity(this.api, this.o);
      this.lastError = '';
      await this.schedule(files);
    } catch (err) {
      this.lastError = (err as Error).message;
      this.o.log(`node identity renewal failed (${this.lastError}); retrying in 30 s`);
      if (this.stopped) return;
      this.timer = setTimeout(() => void this.renew(), 30_000);
      this.timer.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}
