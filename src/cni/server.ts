// The daemon's end of the CNI socket. The plugin connects, writes one request
// and half-closes; the daemon answers {} or a CNI error object and closes.
import { chmod, mkdir, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

import { CNI_ERR, CniError, type CniRequest, parseCniRequest } from './protocol.js';

const MAX_REQUEST = 64 << 10;

export type CniHandler = (req: CniRequest) => Promise<void>;

export async function startCniServer(socketPath: string, handle: CniHandler, log: (m: string) => void): Promise<net.Server> {
  await mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  await rm(socketPath, { force: true });
  // allowHalfOpen: the plugin half-closes after its request and still reads the answer.
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let version = '1.0.0';
    const answer = (err: CniError | null): void => {
      const body = err ? { cniVersion: version, code: err.code, msg: err.message, ...(err.details ? { details: err.details } : {}) } : {};
      sock.end(`${JSON.stringify(body)}\n`);
    };
    sock.on('error', () => undefined);
    sock.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_REQUEST) {
        answer(new CniError(CNI_ERR.decode, `request is larger than ${MAX_REQUEST} bytes`));
        sock.destroy();
        return;
      }
      chunks.push(c);
    });
    sock.on('end', () => {
      let req: CniRequest;
      try {
        req = parseCniRequest(Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        answer(err instanceof CniError ? err : new CniError(CNI_ERR.decode, (err as Error).message));
        return;
      }
      version = req.cniVersion || version;
      handle(req).then(
        () => answer(null),
        (err: Error) => {
          if (!(err instanceof CniError)) log(`CNI ${req.command} ${req.namespace}/${req.pod}: ${err.message}`);
          answer(err instanceof CniError ? err : new CniError(CNI_ERR.io, err.message));
        },
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on CNI socket ${socketPath}: ${err.message}`)));
    server.listen(socketPath, () => resolve());
  });
  // Only root (the runtime) may hand us namespaces.
  await chmod(socketPath, 0o600);
  return server;
}
