// The browser view in Firefox: Debian's headless Firefox ESR, driven over
// WebDriver BiDi (test/tools/firefox-page.mjs; playwright-core drives only
// its own Firefox builds), opens the page of a running lab: every wire
// drawn and listed, a cable pulled through the page's own button and
// confirmation dialog (the wire turns to pulled, the pod's interface loses
// carrier) and plugged back, and no error in the page's console.
// test/ui.test.ts covers the rest of the page in Chromium.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

import t from 'tap';

import { pw, pwOk } from './helpers/labcli.js';
import { CLI, ROOT, run, waitFor } from './helpers/testnet.js';

const LAB = 'pwue';
const dir = mkdtempSync(path.join(os.tmpdir(), 'pwue-'));
const children: ChildProcess[] = [];

t.teardown(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await pw('down', LAB);
  rmSync(dir, { recursive: true, force: true });
});

async function carrier(pod: string, intf: string): Promise<string> {
  const r = await run('ip', ['netns', 'exec', `pw-${LAB}-${pod}`, 'cat', `/sys/class/net/${intf}/carrier`]);
  return r.code === 0 ? r.stdout.trim() : '0';
}

t.test('the browser view in Firefox', { skip: existsSync('/usr/bin/firefox-esr') ? false : 'firefox-esr is not installed (scripts/setup-host.sh installs it)' }, async (t) => {
  await pw('down', LAB);
  const file = path.join(dir, 'lab.yaml');
  writeFileSync(file, readFileSync(path.join(ROOT, 'examples', 'triangle.yaml'), 'utf8'));
  await pwOk('up', '-f', file, '--name', LAB);
  const ui = spawn(process.execPath, [CLI, 'ui', LAB, '--listen', '127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(ui);
  let uiOut = '';
  ui.stdout!.on('data', (d: Buffer) => (uiOut += d.toString()));
  const url = (JSON.parse(await waitFor('patchwire ui prints its URL', () => (uiOut.includes('\n') ? uiOut.split('\n')[0] : undefined), 30000)) as { url: string }).url;

  const profile = mkdtempSync(path.join(dir, 'firefox-'));
  const ff = spawn(process.execPath, ['--experimental-websocket', path.join(ROOT, 'test', 'tools', 'firefox-page.mjs'), url, profile, '9347'], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(ff);
  const answers: Array<Record<string, unknown>> = [];
  const logs: string[] = [];
  let waiter: ((m: Record<string, unknown>) => void) | null = null;
  readline.createInterface({ input: ff.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as Record<string, unknown>;
    if (typeof m.log === 'string') logs.push(m.log);
    else if (waiter) {
      const w = waiter;
      waiter = null;
      w(m);
    } else answers.push(m);
  });
  // The driver gone (Firefox would not start, say): every question gets that answer instead of waiting.
  ff.once('exit', (c) => {
    const gone = { error: `the Firefox driver exited (${c})` };
    if (waiter) waiter(gone);
    waiter = null;
    for (let i = 0; i < 100; i++) answers.push(gone);
  });
  const next = (): Promise<Record<string, unknown>> => (answers.length ? Promise.resolve(answers.shift()!) : new Promise((r) => (waiter = r)));
  const ev = async (expression: string): Promise<unknown> => {
    ff.stdin!.write(`${JSON.stringify({ eval: expression })}\n`);
    const a = await next();
    if (a.error) throw new Error(String(a.error));
    return a.value;
  };
  const ready = await next();
  t.ok(ready.ready, `Firefox opened the page ${ready.error ?? ''}`);
  const looks = async (): Promise<Array<[number, string]>> => JSON.parse(String(await ev(`JSON.stringify(window.pwui ? window.pwui.cy.edges().map((e) => [e.data('uid'), e.data('look')]) : [])`))) as Array<[number, string]>;
  const drawn = await waitFor('Firefox draws the three wires, up', async () => {
    const l = await looks();
    return l.length === 3 && l.every(([, x]) => x === 'up') ? l : undefined;
  }, 30000);
  t.same(drawn.map(([uid]) => uid).sort(), [1, 2, 3], 'every wire of the topology drawn (cytoscape in Firefox)');
  t.equal(await ev(`document.querySelectorAll('#wires tbody tr').length`), 3, 'and listed');

  await ev(`document.querySelector('#wires tbody tr[data-uid="1"]').click()`);
  await waitFor('the wire detail', async () => (await ev(`!!document.querySelector('#wire-detail .end[data-end="r1/eth1"] button.pull')`)) === true, 10000);
  await ev(`document.querySelector('#wire-detail .end[data-end="r1/eth1"] button.pull').click()`);
  t.equal(await ev(`document.querySelector('#confirm').open`), true, 'the confirmation <dialog> opened');
  t.match(String(await ev(`document.querySelector('#confirm-text').textContent`)), /Pull the cable at r1\/eth1/);
  await ev(`document.querySelector('#confirm-ok').click()`);
  await waitFor('wire 1 drawn as pulled', async () => (await looks()).find(([u]) => u === 1)?.[1] === 'pulled', 20000);
  t.pass('wire 1 turned to pulled in Firefox');
  t.equal(await waitFor('r1/eth1 loses carrier', async () => ((await carrier('r1', 'eth1')) === '0' ? '0' : undefined), 10000), '0', "r1's eth1 lost carrier");
  await ev(`document.querySelector('#wire-detail .end[data-end="r1/eth1"] button.plug').click()`);
  await ev(`document.querySelector('#confirm-ok').click()`);
  await waitFor('wire 1 up again', async () => (await looks()).find(([u]) => u === 1)?.[1] === 'up', 20000);
  t.equal(await waitFor('r1/eth1 carrier back', async () => ((await carrier('r1', 'eth1')) === '1' ? '1' : undefined), 10000), '1', 'plugged back from the page: carrier again');
  const rows = await waitFor('the packet list of wire 1 fills', async () => Number(await ev(`document.querySelectorAll('#packet-list tbody tr').length`)) || undefined, 20000);
  t.ok(rows > 0, `the live packet list shows frames (${rows} rows; fetch with a streamed body in Firefox)`);
  t.same(logs.filter((l) => l.startsWith('error')), [], 'no errors in the console');

  ff.stdin!.write(`${JSON.stringify({ quit: true })}\n`);
  const code = await new Promise<number | null>((r) => (ff.exitCode !== null ? r(ff.exitCode) : ff.once('exit', (c) => r(c))));
  t.equal(code, 0, 'Firefox closed');
  ui.kill('SIGTERM');
  await new Promise((r) => (ui.exitCode !== null ? r(null) : ui.once('exit', r)));
});
