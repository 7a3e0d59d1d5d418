// Sends HTTP requests as raw bytes over TCP (node:net), so a test controls
// every byte, even malformed ones: run inside a namespace with
// `node rawhttp.mjs HOST:PORT < corpus.json`. The corpus is a JSON array of
// {name, chunks: [base64...], gapMs?, waitMs?}: the chunks are written
// gapMs apart (a slow client); the answer is read until the server closes or
// waitMs passes. Prints one JSON line per request: {name, status, bytes,
// closedByServer, sentAll, head}.
import net from 'node:net';

const [host, port] = process.argv[2].split(/:(?=\d+$)/);
const corpus = JSON.parse(await new Promise((resolve) => {
  let s = '';
  process.stdin.on('data', (d) => (s += d));
  process.stdin.on('end', () => resolve(s));
}));

/** The body of a chunked response (as far as it came). */
function dechunk(s) {
  let out = '';
  let i = 0;
  for (;;) {
    const eol = s.indexOf('\r\n', i);
    if (eol < 0) return out;
    const n = parseInt(s.slice(i, eol), 16);
    if (!(n > 0)) return out;
    out += s.slice(eol + 2, eol + 2 + n);
    i = eol + 2 + n + 2;
  }
}

function one(item) {
  return new Promise((resolve) => {
    const sock = net.connect(Number(port), host);
    const got = [];
    let sentAll = false;
    let closedByServer = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const buf = Buffer.concat(got);
      const text = buf.toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const headEnd = text.indexOf('\r\n\r\n');
      const head = headEnd >= 0 ? text.slice(0, headEnd) : text.slice(0, 2000);
      let body = headEnd >= 0 ? text.slice(headEnd + 4) : '';
      if (/^transfer-encoding: chunked/im.test(head)) body = dechunk(body);
      resolve({ name: item.name, status: m ? Number(m[1]) : 0, bytes: buf.length, closedByServer, sentAll, head, body: body.slice(0, 2000) });
    };
    const timer = setTimeout(finish, item.waitMs ?? 5000);
    sock.on('data', (d) => got.push(d));
    sock.on('end', () => {
      closedByServer = true;
      finish();
    });
    sock.on('close', () => {
      closedByServer = true;
      finish();
    });
    sock.on('error', () => {
      closedByServer = true;
      finish();
    });
    sock.on('connect', async () => {
      for (const c of item.chunks) {
        if (done) return;
        sock.write(Buffer.from(c, 'base64'));
        if (item.gapMs) await new Promise((r) => setTimeout(r, item.gapMs));
      }
      sentAll = true;
    });
  });
}

for (const item of corpus) process.stdout.write(JSON.stringify(await one(item)) + '\n');
