// Test plumbing: joins a TCP address inside an emulated node's network
// namespace to a unix socket (sockets on the file system cross namespaces).
//   relay.mjs HOST:PORT SOCKET       listen on HOST:PORT, connect to SOCKET
//                                    (processes in the node reach a server of the test)
//   relay.mjs unix:SOCKET HOST:PORT  listen on SOCKET, connect to HOST:PORT
//                                    (the test reaches a server in the node)
import { rmSync } from 'node:fs';
import net from 'node:net';

const [from, to] = process.argv.slice(2);
const hostPort = (s) => {
  const m = /^(.*):(\d+)$/.exec(s ?? '');
  return m ? { host: m[1], port: Number(m[2]) } : null;
};
const reverse = from?.startsWith('unix:');
const listenAt = reverse ? from.slice(5) : hostPort(from);
const target = reverse ? hostPort(to) : to;
if (!listenAt || !target) {
  process.stderr.write('usage: relay.mjs HOST:PORT SOCKET | relay.mjs unix:SOCKET HOST:PORT\n');
  process.exit(2);
}
const server = net.createServer((c) => {
  const u = reverse ? net.connect(target.port, target.host) : net.connect(target);
  c.pipe(u).pipe(c);
  c.on('error', () => u.destroy());
  u.on('error', () => c.destroy());
});
const ready = () => process.stdout.write('ready\n');
if (reverse) {
  rmSync(listenAt, { force: true });
  server.listen(listenAt, ready);
} else server.listen(listenAt.port, listenAt.host, ready);
