// Test plumbing: drives Debian's headless Firefox ESR over WebDriver BiDi
// (built into Firefox; playwright-core cannot drive a stock Firefox) for
// test/ui-firefox.test.ts. Run with node --experimental-websocket.
//   firefox-page.mjs URL PROFILE_DIR PORT
// Reads commands as JSON lines on stdin: {"eval": "EXPRESSION"} (awaited;
// answers {"value": ...}), {"screenshot": "FILE"}, {"quit": true}; prints
// {"ready": true} once the page is loaded, and {"log": "..."} for every
// console message of the page.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import readline from 'node:readline';

const [url, profile, port] = process.argv.slice(2);
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const ff = spawn('firefox-esr', ['--headless', '--no-remote', '--profile', profile, '--remote-debugging-port', port, 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, HOME: profile } });
let err = '';
ff.stderr.on('data', (d) => (err += d));
ff.on('exit', (code) => {
  out({ exit: code });
  process.exit(0);
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
for (let i = 0; i < 150 && !/WebDriver BiDi listening/.test(err); i++) await sleep(200);
if (!/WebDriver BiDi listening/.test(err)) {
  out({ error: `firefox did not open WebDriver BiDi: ${err.slice(-500)}` });
  ff.kill('SIGKILL');
}
const ws = new WebSocket(`ws://127.0.0.1:${port}/session`);
await new Promise((resolve, reject) => {
  ws.onopen = resolve;
  ws.onerror = () => reject(new Error('cannot connect to WebDriver BiDi'));
});
let id = 0;
const pending = new Map();
ws.onmessage = (m) => {
  const msg = JSON.parse(String(m.data));
  if (msg.id && pending.has(msg.id)) {
    pending.get(msg.id)(msg);
    pending.delete(msg.id);
  } else if (msg.method === 'log.entryAdded') out({ log: `${msg.params.level}: ${msg.params.text}` });
};
const send = (method, params) =>
  new Promise((resolve, reject) => {
    const i = ++id;
    pending.set(i, (msg) => (msg.type === 'success' ? resolve(msg.result) : reject(new Error(`${method}: ${msg.error} ${msg.message}`))));
    ws.send(JSON.stringify({ id: i, method, params }));
  });
await send('session.new', { capabilities: {} });
await send('session.subscribe', { events: ['log.entryAdded'] });
const context = (await send('browsingContext.getTree', {})).contexts[0].context;
await send('browsingContext.setViewport', { context, viewport: { width: 1440, height: 900 } });
await send('browsingContext.navigate', { context, url, wait: 'complete' });
out({ ready: true, version: (await send('session.status', {})).message ?? '' });
for await (const line of readline.createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  try {
    if (cmd.eval !== undefined) {
      const r = await send('script.evaluate', { expression: cmd.eval, target: { context }, awaitPromise: true, serializationOptions: { maxDomDepth: 0 } });
      out(r.type === 'exception' ? { error: r.exceptionDetails?.text ?? 'exception' } : { value: r.result?.value ?? null });
    } else if (cmd.screenshot) {
      writeFileSync(cmd.screenshot, Buffer.from((await send('browsingContext.captureScreenshot', { context })).data, 'base64'));
      out({ value: cmd.screenshot });
    } else if (cmd.quit) break;
  } catch (e) {
    out({ error: e.message });
  }
}
await send('session.end', {}).catch(() => undefined);
ws.close();
ff.kill('SIGTERM');
