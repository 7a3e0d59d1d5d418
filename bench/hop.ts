// npm run bench:hop: what one hop between two daemons costs before any of
// patchwire's own work, on this machine. Two Node processes in two network
// namespaces (a veth pair) echo a 100-byte message, 20 ms apart, over raw
// TCP, over a node:http2 stream and over a grpc-js bidi stream (what the
// data plane uses). The difference between the rows is the cost of each
// layer; a wire's ping RTT pays it twice (once per direction).
import { execFileSync, spawn } from 'node:child_process';
import http2 from 'node:http2';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';

const ECHOES = 300;
const NS = ['pwbh-a', 'pwbh-b'] as const;
const SERVER = '198.18.97.1';
const pass = (b: Buffer): Buffer => b;
const def: grpc.ServiceDefinition = {
  echo: { path: '/bench.Echo/Echo', requestStream: true, responseStream: true, requestSerialize: pass, requestDeserialize: pass, responseSerialize: pass, responseDeserialize: pass },
};
type Mode = 'tcp' | 'http2' | 'grpc-js';

function serve(mode: Mode, port: number): void {
  if (mode === 'tcp') net.createServer({ noDelay: true }, (s) => s.on('data', (d) => s.write(d))).listen(port, SERVER);
  else if (mode === 'http2') {
    const srv = http2.createServer();
    srv.on('connection', (s: net.Socket) => s.setNoDelay(true));
    srv.on('stream', (st) => {
      st.respond({ ':status': 200 });
      st.on('data', (d: Buffer) => st.write(d));
    });
    srv.listen(port, SERVER);
  } else {
    const srv = new grpc.Server();
    srv.addService(def, { echo: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => call.on('data', (d: Buffer) => call.write(d)) });
    srv.bindAsync(`${SERVER}:${port}`, grpc.ServerCredentials.createInsecure(), () => undefined);
  }
  process.stdout.write('ready\n');
}

async function measure(mode: Mode, port: number): Promise<number[]> {
  let send: (b: Buffer) => void;
  let onData: (cb: () => void) => void;
  let close: () => void;
  if (mode === 'tcp') {
    const s = net.connect({ host: SERVER, port, noDelay: true });
    await new Promise((r) => s.once('connect', r));
    send = (b) => s.write(b);
    onData = (cb) => s.on('data', cb);
    close = () => s.destroy();
  } else if (mode === 'http2') {
    const c = http2.connect(`http://${SERVER}:${port}`, { createConnection: () => net.connect({ host: SERVER, port, noDelay: true }) });
    const st = c.request({ ':method': 'POST', ':path': '/echo' }, { endStream: false });
    send = (b) => st.write(b);
    onData = (cb) => st.on('data', cb);
    close = () => c.destroy();
  } else {
    const Client = grpc.makeGenericClientConstructor(def, 'Echo');
    const c = new Client(`${SERVER}:${port}`, grpc.credentials.createInsecure());
    const call = (c as unknown as { echo(): grpc.ClientDuplexStream<Buffer, Buffer> }).echo();
    send = (b) => call.write(b);
    onData = (cb) => call.on('data', cb);
    close = () => c.close();
  }
  const times: number[] = [];
  let t0 = 0n;
  let done: () => void = () => undefined;
  onData(() => {
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
    done();
  });
  for (let i = 0; i < ECHOES + 20; i++) {
    await new Promise((r) => setTimeout(r, 20));
    await new Promise<void>((r) => {
      done = r;
      t0 = process.hrtime.bigint();
      send(Buffer.alloc(100, i));
    });
  }
  close();
  return times.slice(20).sort((a, b) => a - b);
}

function sh(...args: string[]): void {
  execFileSync(args[0]!, args.slice(1), { stdio: 'ignore' });
}

function cleanup(): void {
  for (const ns of NS) {
    try {
      sh('ip', 'netns', 'del', ns);
    } catch {
      /* not there */
    }
  }
}

async function main(): Promise<void> {
  const [role, mode, portArg] = process.argv.slice(2);
  if (role === 'server') return serve(mode as Mode, Number(portArg));
  if (role === 'client') {
    const t = await measure(mode as Mode, Number(portArg));
    process.stdout.write(`${JSON.stringify({ p10: t[Math.floor(t.length * 0.1)], p50: t[t.length >> 1], p90: t[Math.floor(t.length * 0.9)] })}\n`);
    process.exit(0);
  }
  cleanup();
  process.on('exit', cleanup);
  for (const ns of NS) {
    sh('ip', 'netns', 'add', ns);
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  }
  sh('ip', '-n', NS[0], 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1', 'netns', NS[1]);
  sh('ip', '-n', NS[0], 'addr', 'add', `${SERVER}/24`, 'dev', 'v0');
  sh('ip', '-n', NS[1], 'addr', 'add', '198.18.97.2/24', 'dev', 'v1');
  sh('ip', '-n', NS[0], 'link', 'set', 'v0', 'up');
  sh('ip', '-n', NS[1], 'link', 'set', 'v1', 'up');
  const self = fileURLToPath(import.meta.url);
  const rows: Array<[Mode, { p10: number; p50: number; p90: number }]> = [];
  let port = 9700;
  for (const mode of ['tcp', 'http2', 'grpc-js'] as Mode[]) {
    port++;
    const server = spawn('ip', ['netns', 'exec', NS[0], process.execPath, self, 'server', mode, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => server.stdout!.once('data', r));
    const out = execFileSync('ip', ['netns', 'exec', NS[1], process.execPath, self, 'client', mode, String(port)], { encoding: 'utf8' });
    server.kill('SIGKILL');
    rows.push([mode, JSON.parse(out) as { p10: number; p50: number; p90: number }]);
  }
  process.stdout.write('| transport | echo RTT p10 µs | p50 µs | p90 µs | one hop (p50/2) µs |\n|---|---:|---:|---:|---:|\n');
  for (const [mode, r] of rows) process.stdout.write(`| ${mode} | ${r.p10.toFixed(0)} | ${r.p50.toFixed(0)} | ${r.p90.toFixed(0)} | ${(r.p50 / 2).toFixed(0)} |\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`bench:hop: ${err.message}\n`);
  process.exit(1);
});
