// `patchwire signer`: issues the daemons' node identities. It watches
// CertificateSigningRequests for the signer name patchwire.dev/node-identity
// and, for each, decides from what the API server recorded about the
// requester (not from what the request says about itself):
//  - the requester must be the daemons' service account;
//  - its token must be bound to a pod on node N (the API server puts
//    authentication.kubernetes.io/node-name in the request's extra, from
//    bound service-account tokens, Kubernetes 1.30 and later);
//  - the request must ask for N as its common name and hold a valid
//    self-signature.
// Then it approves the request and issues a certificate for N alone (the
// signer writes the name, the request only proposes it), or denies it with
// the reason. A daemon on node A can therefore never hold a certificate for
// node B, which is what the data plane's peer checks rely on. The signer
// also publishes its CA certificate in a ConfigMap the daemons read.
import { readFile } from 'node:fs/promises';

import { ApiError, type ApiClient } from '../cluster/api.js';
import { wire } from '../native/wire.js';
import { CA_CONFIGMAP, SIGNER_NAME } from './csr.js';
import { identityNameProblem } from './identity.js';

const CSR_PATH = '/apis/certificates.k8s.io/v1/certificatesigningrequests';
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

export interface SignerOptions {
  caCert: string;
  caKey: string;
  /** namespace of the daemons (and of the CA ConfigMap) */
  namespace: string;
  /** the daemons' service account, in `namespace` */
  serviceAccount: string;
  /** longest certificate issued, seconds (a request may ask for less; the API's minimum is 600) */
  maxLifetimeSeconds: number;
  /** how often pending requests are looked for, ms */
  pollMs: number;
  log: (msg: string) => void;
}

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastUpdateTime?: string;
}

interface CsrObject {
  metadata: { name: string; resourceVersion?: string };
  spec: { request: string; signerName: string; username?: string; extra?: Record<string, string[]>; expirationSeconds?: number; usages?: string[] };
  status?: { certificate?: string; conditions?: Condition[] };
}

export interface Decision {
  approve: boolean;
  node: string;
  reason: string;
  message: string;
}

/** Whether the request may have a certificate, and for which node: a pure function of what the API server recorded. */
export function decide(csr: CsrObject, o: Pick<SignerOptions, 'namespace' | 'serviceAccount'>): Decision {
  const deny = (reason: string, message: string): Decision => ({ approve: false, node: '', reason, message });
  const want = `system:serviceaccount:${o.namespace}:${o.serviceAccount}`;
  if (csr.spec.username !== want) return deny('NotPatchwireDaemon', `requested by '${csr.spec.username ?? ''}', not the daemons' service account '${want}'`);
  const nodes = csr.spec.extra?.[NODE_NAME_EXTRA] ?? [];
  if (nodes.length !== 1 || !nodes[0]) return deny('NoBoundNode', `the requester's token is not bound to one node (no ${NODE_NAME_EXTRA}; needs bound service-account tokens, Kubernetes 1.30+)`);
  const node = nodes[0];
  let info: ReturnType<typeof wire.csrInfo>;
  try {
    info = wire.csrInfo({ csr: Buffer.from(csr.spec.request, 'base64') });
  } catch (err) {
    return deny('BadRequest', `the request does not parse: ${(err as Error).message}`);
  }
  if (!info.signatureValid) return deny('BadRequest', 'the request is not signed by the key it carries');
  if (info.commonName !== node) return deny('WrongNode', `the request asks for '${info.commonName}', but its requester runs on node '${node}'`);
  const bad = info.dnsNames.filter((n) => n !== node);
  if (bad.length) return deny('WrongNode', `the request asks for names beyond node '${node}': ${bad.join(', ')}`);
  const p = identityNameProblem(node);
  if (p) return deny('BadNodeName', p);
  return { approve: true, node, reason: 'PatchwireNodeIdentity', message: `node identity for '${node}'` };
}

export class Signer {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private caCert = '';
  private caKey = '';
  /** requests handled (for status and tests) */
  readonly handled: Array<{ name: string; decision: Decision }> = [];

  constructor(
    private readonly api: ApiClient,
    private readonly o: SignerOptions,
  ) {}

  async start(): Promise<void> {
    [this.caCert, this.caKey] = await Promise.all([readFile(this.o.caCert, 'utf8'), readFile(this.o.caKey, 'utf8')]);
    await this.publishCa();
    await this.pass();
    this.timer = setInterval(() => void this.pass(), this.o.pollMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** The CA certificate where daemons read it (created, or updated after a CA change). */
  private async publishCa(): Promise<void> {
    const path = `/api/v1/namespaces/${this.o.namespace}/configmaps`;
    const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: CA_CONFIGMAP, namespace: this.o.namespace }, data: { 'ca.crt': this.caCert } };
    try {
      const cur = (await this.api.request('GET', `${path}/${CA_CONFIGMAP}`)) as { metadata: { resourceVersion: string }; data?: Record<string, string> };
      if (cur.data?.['ca.crt'] === this.caCert) return;
      await this.api.request('PUT', `${path}/${CA_CONFIGMAP}`, { ...body, metadata: { ...body.metadata, resourceVersion: cur.metadata.resourceVersion } });
    } catch (err) {
      if (!(err instanceof ApiError) || err.statusCode !== 404) throw err;
      await this.api.request('POST', path, body);
    }
    this.o.log(`published the CA certificate in ${this.o.namespace}/${CA_CONFIGMAP}`);
  }

  private async pass(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const list = (await this.api.request('GET', CSR_PATH)) as { items: CsrObject[] };
      for (const csr of list.items ?? []) {
        if (csr.spec?.signerName !== SIGNER_NAME || csr.status?.certificate) continue;
        const done = csr.status?.conditions?.some((c) => ['Denied', 'Failed'].includes(c.type) && c.status === 'True');
        if (done) continue;
        await this.handle(csr).catch((err) => this.o.log(`request ${csr.metadata.name}: ${(err as Error).message}`));
      }
    } catch (err) {
      this.o.log(`listing certificate requests failed: ${(err as Error).message}`);
    } finally {
      this.running = false;
    }
  }

  private async handle(csr: CsrObject): Promise<void> {
    const approved = csr.status?.conditions?.some((c) => c.type === 'Approved' && c.status === 'True');
    let obj = csr;
    if (!approved) {
      const d = decide(csr, this.o);
      this.handled.push({ name: csr.metadata.name, decision: d });
      const cond: Condition = { type: d.approve ? 'Approved' : 'Denied', status: 'True', reason: d.reason, message: d.message, lastUpdateTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
      obj = (await this.api.request('PUT', `${CSR_PATH}/${csr.metadata.name}/approval`, { ...csr, status: { ...csr.status, conditions: [...(csr.status?.conditions ?? []), cond] } })) as CsrObject;
      this.o.log(`${d.approve ? 'approved' : 'denied'} ${csr.metadata.name}: ${d.message}`);
      if (!d.approve) return;
    }
    // Approved (by us now, or earlier): issue. The name comes from the
    // decision again, never from the request alone.
    const d = decide(obj, this.o);
    if (!d.approve) return;
    const now = Math.floor(Date.now() / 1000);
    const lifetime = Math.min(this.o.maxLifetimeSeconds, obj.spec.expirationSeconds ?? this.o.maxLifetimeSeconds);
    const pem = wire.signCsr({ csr: Buffer.from(obj.spec.request, 'base64'), caCert: this.caCert, caKey: this.caKey, name: d.node, notBefore: now - 60, notAfter: now + lifetime });
    await this.api.request('PUT', `${CSR_PATH}/${obj.metadata.name}/status`, { ...obj, status: { ...obj.status, certificate: Buffer.from(pem).toString('base64') } });
    this.o.log(`issued a certificate for node '${d.node}' (${lifetime} s) to ${obj.metadata.name}`);
  }
}
