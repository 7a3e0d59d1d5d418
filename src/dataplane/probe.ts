// Whether a peer daemon answers on its data port: TCP, TLS both ways and
// HTTP/2 SETTINGS, as the engine's own connection will need. Used before a
// wire is added, so a typo in a peer address fails the add with the reason.
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';

import { parseHostPort } from '../util/hostport.js';

/** Certificates for mutual TLS between daemons. */
export interface DataTls {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** `node`: the node the daemon at `address` must prove it is (its certificate names it). */
export function probePeer(address: string, node: string, tlsFiles: DataTls | null, timeoutMs = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    const hp = parseHostPort(address);
    if (!hp) return reject(new Error(`peer address '${address}' is not host:port`));
    const { host, port } = hp;
    const authority = `${tlsFiles ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
    const session = http2.connect(authority, {
      createConnection: () =>
        tlsFiles
          ? tls.connect({ host, port, ca: tlsFiles.ca, cert: tlsFiles.cert, key: tlsFiles.key, servername: node, ALPNProtocols: ['h2'] })
          : net.connect({ host, port }),
    });
    let settled = false;
    const done = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    session.once('remoteSettings', () => done());
    session.on('error', (err) => done(err)); // 'on': a second error must not go unhandled
    session.once('close', () => done(new Error('connection closed')));
  });
}
