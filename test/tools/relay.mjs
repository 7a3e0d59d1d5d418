// Test plumbing: lets processes inside an emulated node's network namespace
// reach the stand-in API server, which listens on a unix socket (sockets on
// the file system cross network namespaces). Usage: relay.mjs HOST:PORT SOCKET
import net from 'node:net';

const [listen, socketPath] = process.argv.slice(2);
const m = /^(.*):(\d+)$/.exec(listen ?? '');
if (!m || !socketPath) {
  process.stderr.write('usage: relay.mjs HOST:PORT SOCKET\n');
  process.exit(2);
}
net
  .createServer((c) => {
    const u = net.connect(socketPath);
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  })
  .listen(Number(m[2]), m[1], () => process.stdout.write('ready\n'));
