// Per-node TLS identities for the data plane: a private CA and, for each
// node, a key and a certificate whose DNS subjectAltName is the node's name.
// Each daemon presents its own and checks that a peer's certificate names the
// node it claims to be, so holding one node's files does not let anyone pose
// as another. Lab mode makes these at `up` and removes them at `down`; tests
// use them for cluster-mode daemons. Keys and certificates come from the
// openssl command (Debian's openssl package), run asynchronously.
import { execFile } from 'node:child_process';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface NodeIdentityFiles {
  cert: string;
  key: string;
  ca: string;
}

/** The names a certificate can carry as a DNS name (RFC 1123 labels; node names in labs and clusters are). */
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export function identityNameProblem(node: string): string | null {
  return DNS_NAME.test(node) ? null : `node name '${node}' cannot name a TLS identity: it must be a lower-case DNS name (RFC 1123)`;
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args, { timeout: 30_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error('making TLS identities needs the openssl command (apt-get install openssl)');
    throw new Error(`openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim().split('\n').pop()}`);
  }
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A CA in `dir` (ca.crt, ca.key), valid `days`. */
export async function makeCa(dir: string, name: string, days = 825): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await openssl(['req', '-x509', ...EC, '-keyout', path.join(dir, 'ca.key'), '-out', path.join(dir, 'ca.crt'), '-days', String(days), '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await chmod(path.join(dir, 'ca.key'), 0o600);
}

/**
 * A key and certificate for `node`, signed by the CA in `caDir`, written as
 * `<node>.key` / `<node>.crt` in `dir` (or `certName` instead of the node
 * name for the file names). `dnsNames` defaults to [node]: tests pass other
 * names to make impostors.
 */
export async function makeNodeIdentity(caDir: string, dir: string, node: string, o: { dnsNames?: string[]; days?: number; fileBase?: string } = {}): Promise<NodeIdentityFiles> {
  const names = o.dnsNames ?? [node];
  for (const n of names) {
    const p = identityNameProblem(n);
    if (p) throw new Error(p);
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const base = path.join(dir, o.fileBase ?? node);
  const ext = `${base}.ext`;
  await writeFile(ext, `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n`);
  try {
    await openssl(['req', ...EC, '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${node}`]);
    await chmod(`${base}.key`, 0o600);
    await openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', path.join(caDir, 'ca.crt'), '-CAkey', path.join(caDir, 'ca.key'), '-set_serial', `0x${randomSerial()}`, '-days', String(o.days ?? 825), '-extfile', ext, '-out', `${base}.crt`]);
  } finally {
    await rm(ext, { force: true });
    await rm(`${base}.csr`, { force: true });
  }
  return { cert: `${base}.crt`, key: `${base}.key`, ca: path.join(caDir, 'ca.crt') };
}

function randomSerial(): string {
  // 16 random bytes, top bit clear: a positive serial no two certificates share.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0]! &= 0x7f;
  return Buffer.from(b).toString('hex');
}

/** A CA and one identity per node under `dir`: what a lab's daemons use. */
export async function makeLabIdentities(dir: string, lab: string, nodes: string[]): Promise<Map<string, NodeIdentityFiles>> {
  for (const n of nodes) {
    const p = identityNameProblem(n);
    if (p) throw new Error(p);
  }
  await makeCa(dir, `patchwire lab ${lab}`);
  const out = new Map<string, NodeIdentityFiles>();
  // One after another: openssl is quick, and a lab has a handful of nodes.
  for (const n of nodes) out.set(n, await makeNodeIdentity(dir, dir, n));
  return out;
}
