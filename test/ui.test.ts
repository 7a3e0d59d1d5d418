// The browser view end to end: `patchwire ui` on a running lab, its API's
// refusals (no token, bad JSON, unknown wire end, oversized body, wrong
// method), and the page in a real headless Chromium (Debian's, driven by
// playwright-core): every wire of the topology drawn, a cable pulled from
// the page (confirmation dialog; the wire turns red and the pods' interfaces
// lose carrier) and plugged back, an impairment set and removed, the live
// packet list showing a ping, and a capture downloaded from the page that
// tshark reads the ping from. PW_UI_SCREENSHOT=1 also writes docs/img/ui.png.
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium, type BrowserContext, type Page } from 'playwright-core';
import fc from 'fast-check';
import t from 'tap';

import { pw, pwOk } from './helpers/labcli.js';
import { CLI, ROOT, run, waitFor } from './helpers/testnet.js';

const LAB = 'pwua';
const dir = mkdtempSync(path.join(os.tmpdir(), 'pwua-'));
const children: ChildProcess[] = [];
let browser: BrowserContext | null = null;

t.teardown(async () => {
  await browser?.close().catch(() => undefined);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await pw('down', LAB);
  rmSync(dir, { recursive: true, force: true });
});

t.before(async () => {
  await pw('down', LAB);
});

async function carrier(pod: string, intf: string): Promise<string> {
  const r = await run('ip', ['netns', 'exec', `pw-${LAB}-${pod}`, 'cat', `/sys/class/net/${intf}/carrier`]);
  // Reading carrier of an interface without it fails with EINVAL.
  return r.code === 0 ? r.stdout.trim() : '0';
}

/** Starts `patchwire ui` and returns its URL (with the token) and base. */
async function startUi(): Promise<{ url: string; base: string; proc: ChildProcess }> {
  const proc = spawn(process.execPath, [CLI, 'ui', LAB, '--listen', '127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const line = await waitFor(`patchwire ui prints its URL (stderr: ${err})`, () => (out.includes('\n') ? out.split('\n')[0] : undefined), 30000);
  return { ...(JSON.parse(line!) as { url: string; base: string }), proc };
}

t.test('the browser view of a lab', async (t) => {
  const file = path.join(dir, 'lab.yaml');
  writeFileSync(file, readFileSync(path.join(ROOT, 'examples', 'triangle.yaml'), 'utf8'));
  await pwOk('up', '-f', file, '--name', LAB);
  const lab = JSON.parse(readFileSync(`/run/patchwire/labs/${LAB}/lab.json`, 'utf8')) as { links: Array<{ uid: number }>; nodes: Array<{ name: string; ns: string; http: string }> };
  const token = readFileSync(`/run/patchwire/labs/${LAB}/capture.token`, 'utf8').trim();
  /** The daemons' open map streams (patchwire_map_watchers), node by node. */
  const watchers = async (): Promise<number[]> =>
    Promise.all(
      lab.nodes.map(async (n) => {
        const r = await run('ip', ['netns', 'exec', n.ns, 'curl', '-s', '-H', `Authorization: Bearer ${token}`, `http://${n.http}/metrics`]);
        return Number(/^patchwire_map_watchers\{[^}]*\} (\d+)/m.exec(r.stdout)?.[1] ?? -1);
      }),
    );
  const ui = await startUi();
  t.match(ui.url, /^http:\/\/127\.0\.0\.1:\d+\/#token=/, 'the URL carries the token in its fragment');
  const api = (p: string, init: RequestInit = {}, auth = true): Promise<Response> => fetch(new URL(p, ui.base), { ...init, headers: { ...(auth ? { authorization: `Bearer ${token}` } : {}), ...((init.headers as Record<string, string>) ?? {}) } });
  const post = (p: string, body: string, type = 'application/json'): Promise<Response> => api(p, { method: 'POST', body, headers: { 'content-type': type } });

  await t.test('the API refuses bad requests with clear errors', async (t) => {
    const page = await fetch(ui.base);
    t.equal(page.status, 200, 'the page itself needs no token');
    t.match(await page.text(), /<script type="module" src="assets\/app.js">/);
    const cy = await fetch(new URL('/assets/cytoscape.esm.min.mjs', ui.base));
    t.equal(cy.status, 200, 'cytoscape is served by patchwire');
    t.ok((await cy.text()).length > 100000, 'the whole library');
    const anon = await api('/api/view', {}, false);
    t.equal(anon.status, 401, 'the API without the token: 401');
    t.match(((await anon.json()) as { error: string }).error, /capture\.token/, 'saying where the token is');
    const wrong = await fetch(new URL('/api/view', ui.base), { headers: { authorization: 'Bearer not-the-token-of-this-lab' } });
    t.equal(wrong.status, 401, 'a wrong token: 401');
    t.equal((await api('/api/cable')).status, 405, 'GET on a POST route: 405');
    t.equal((await api('/api/nothing')).status, 404, 'an unknown path: 404');
    const badJson = await post('/api/cable', '{"end": "r1/eth1", ');
    t.equal(badJson.status, 400, 'bad JSON: 400');
    t.match(((await badJson.json()) as { error: string }).error, /not JSON/);
    const notObj = await post('/api/cable', '[1,2]');
    t.equal(notObj.status, 400, 'a JSON array: 400');
    const badType = await post('/api/cable', '{"end":"r1/eth1","plugged":false}', 'text/plain');
    t.equal(badType.status, 415, 'not declared as JSON: 415');
    const unknownEnd = await post('/api/cable', JSON.stringify({ end: 'r9/eth9', plugged: false }));
    t.equal(unknownEnd.status, 404, 'an unknown wire end: 404');
    t.match(((await unknownEnd.json()) as { error: string }).error, /no pod 'r9'/);
    const unknownField = await post('/api/cable', JSON.stringify({ end: 'r1/eth1', plugged: false, force: true }));
    t.equal(unknownField.status, 400, 'an unknown field: 400');
    const notBool = await post('/api/cable', JSON.stringify({ end: 'r1/eth1', plugged: 'no' }));
    t.equal(notBool.status, 400, '"plugged" not a boolean: 400');
    const big = await post('/api/cable', JSON.stringify({ end: 'r1/eth1', pad: 'x'.repeat(20000) }));
    t.equal(big.status, 413, 'a body over 16 KiB: 413');
    const chunked = await api('/api/cable', { method: 'POST', body: new Blob([JSON.stringify({ end: 'r1/eth1', pad: 'x'.repeat(40000) })]).stream(), duplex: 'half', headers: { 'content-type': 'application/json' } } as RequestInit);
    t.equal(chunked.status, 413, 'the same sent chunked (no length given): 413');
    const badImpair = await post('/api/impair', JSON.stringify({ end: 'r1/eth1', set: { delay: 'soon' } }));
    t.equal(badImpair.status, 400, 'an impairment that does not parse: 400');
    t.match(((await badImpair.json()) as { error: string }).error, /--delay/);
    const capNone = await api('/api/capture?end=r1/eth9');
    t.equal(capNone.status, 404, 'capture of an unknown end: 404');
    t.equal((await api('/api/capture?wire=r1/eth1')).status, 400, 'capture with an unknown parameter: 400');
    t.equal((await api('/api/packets?end=r1/eth1&follow=1')).status, 400, 'the packet list takes only end=: 400');
    t.equal((await api('/api/view?x=1')).status, 400, 'the view takes no parameters: 400');
    // Whatever arrives gets an answer, and the server stays up.
    const paths = ['/api/cable', '/api/impair', '/api/view?x=%zz', '/api/capture?end=', '/api/packets?end=%ff', '/assets/../lab.json', '/assets/%2e%2e%2fserver.js', '/api/impair?x=1'];
    const bodies = fc.sample(fc.oneof(fc.json(), fc.string(), fc.constant('{"end":"r1/eth1","set":{"delay":"1ms","loss":[]}}'), fc.constant('{"end":"r1/eth1","dir":"sideways","reset":true}'), fc.constant('{"end":null,"plugged":true}')), { numRuns: 120, seed: 18 });
    const statuses = new Set<number>();
    const accepted: string[] = [];
    for (const [i, body] of bodies.entries()) {
      const r = await api(paths[i % paths.length]!, { method: i % 3 === 0 ? 'GET' : 'POST', headers: { 'content-type': 'application/json' }, ...(i % 3 === 0 ? {} : { body }) });
      statuses.add(r.status);
      if (r.status < 400) accepted.push(`${i % 3 === 0 ? 'GET' : 'POST'} ${paths[i % paths.length]} ${i % 3 === 0 ? '' : body}`);
      await r.arrayBuffer();
    }
    t.same(accepted, [], `120 odd requests all refused (${[...statuses].sort().join(', ')})`);
    t.ok([...statuses].every((c) => c >= 400 && c < 500), 'with 4xx');
    const raw = await run('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${new URL(ui.base).port}; printf 'NOT HTTP AT ALL\r\n\r\n' >&3; head -c 12 <&3`]);
    t.match(raw.stdout, /^HTTP\/1\.1 400/, 'bytes that are not HTTP: 400');
    t.equal(await carrier('r1', 'eth1'), '1', 'none of them pulled a cable');

    // Streams: bounded, and one map stream per daemon however many pages watch.
    const ctl = new AbortController();
    const open = await Promise.all(Array.from({ length: 16 }, () => api('/api/events', { signal: ctl.signal })));
    t.ok(open.every((r) => r.status === 200), '16 event streams open');
    const more = await api('/api/events');
    t.equal(more.status, 429, 'the 17th: 429');
    t.match(((await more.json()) as { error: string }).error, /at most 16 open streams/);
    t.same(await waitFor('one map stream per daemon', async () => ((await watchers()).every((n) => n === 1) ? watchers() : undefined)), lab.nodes.map(() => 1), 'each daemon streams its map once, for all 16');
    ctl.abort();
    t.same(await waitFor('the map streams end', async () => ((await watchers()).every((n) => n === 0) ? watchers() : undefined)), lab.nodes.map(() => 0), 'the pages gone, the map streams end on the daemons');
    const view = await api('/api/view');
    t.equal(view.status, 200, 'the server still answers');
    const v = (await view.json()) as { wires: Array<{ uid: number; state: string; ends: Array<{ carrier: string; cable: string }> }> };
    t.same(v.wires.map((w) => w.uid), lab.links.map((l) => l.uid), 'the view has every link of the lab');
    t.ok(v.wires.every((w) => w.state === 'up' && w.ends.every((e) => e.carrier === 'up' && e.cable === 'plugged')), 'all up, carrier on, cables plugged');
    t.equal(await carrier('r1', 'eth1'), '1', 'nothing was pulled by the refused requests');
  });

  const userData = mkdtempSync(path.join(dir, 'chromium-'));
  browser = await chromium.launchPersistentContext(userData, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1440, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page: Page = browser.pages()[0] ?? (await browser.newPage());
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('crash', () => pageErrors.push('the page crashed'));
  page.on('close', () => browser && pageErrors.push('the page closed'));
  page.on('console', (m) => m.type() === 'error' && pageErrors.push(`${m.text()} (${m.location().url})`));
  await page.goto(ui.url);
  t.equal(new URL(page.url()).hash, '', 'the page takes the token out of the address bar');

  const edges = (): Promise<Array<{ uid: number; look: string; cable: string }>> => page.evaluate(() => (window as unknown as { pwui: { cy: { edges(): { map<T>(f: (e: { data(k: string): unknown }) => T): T[] } } } }).pwui.cy.edges().map((e) => ({ uid: e.data('uid') as number, look: e.data('look') as string, cable: e.data('cable') as string })));
  const drawn = await waitFor('the page draws the wires', async () => {
    const e = await edges();
    return e.length === lab.links.length && e.every((x) => x.look === 'up') ? e : undefined;
  }, 30000);
  t.same(drawn.map((e) => e.uid).sort(), lab.links.map((l) => l.uid).sort(), `every wire of the topology drawn (${drawn.length}), all up`);
  t.equal(await page.locator('#wires tbody tr').count(), lab.links.length, 'and listed');
  const look = async (uid: number): Promise<string | undefined> => (await edges()).find((e) => e.uid === uid)?.look;

  await t.test('pull and plug a cable from the page', async (t) => {
    await page.locator('#wires tbody tr[data-uid="1"]').click();
    const pullBtn = page.locator('#wire-detail .end[data-end="r1/eth1"] button.pull');
    // Cancel first: nothing changes.
    await pullBtn.click();
    await page.locator('#confirm[open]').waitFor();
    t.match(await page.locator('#confirm-text').textContent(), /Pull the cable at r1\/eth1/, 'a confirmation dialog names the end');
    await page.locator('#confirm-cancel').click();
    await new Promise((r) => setTimeout(r, 1500));
    t.equal(await look(1), 'up', 'cancelled: the wire stays up');
    t.equal(await carrier('r1', 'eth1'), '1', 'cancelled: r1/eth1 keeps carrier');

    await pullBtn.click();
    await page.locator('#confirm-ok').click();
    await waitFor('wire 1 drawn as pulled', async () => (await look(1)) === 'pulled', 20000);
    t.pass('wire 1 turned to pulled on the page');
    t.equal(await page.locator('#wires tbody tr[data-uid="1"] .state').textContent(), 'cable pulled', 'the list says so');
    t.equal(await waitFor('r1/eth1 loses carrier', async () => ((await carrier('r1', 'eth1')) === '0' ? '0' : undefined), 10000), '0', "r1's eth1 lost carrier");
    t.equal(await waitFor('r2/eth1 loses carrier', async () => ((await carrier('r2', 'eth1')) === '0' ? '0' : undefined), 10000), '0', "r2's eth1 (the far end) lost carrier");
    t.equal(await look(3), 'up', 'the other wires stay up');

    await page.locator('#wire-detail .end[data-end="r1/eth1"] button.plug').click();
    t.match(await page.locator('#confirm-text').textContent(), /Plug the cable/);
    await page.locator('#confirm-ok').click();
    await waitFor('wire 1 drawn up again', async () => (await look(1)) === 'up', 20000);
    t.pass('plugged: wire 1 up again on the page');
    t.equal(await waitFor('r1/eth1 carrier back', async () => ((await carrier('r1', 'eth1')) === '1' ? '1' : undefined), 10000), '1', "r1's eth1 has carrier again");
  });

  await t.test('the live packet list shows a ping', async (t) => {
    // Wire 1 is selected: its packet list follows both ends.
    t.match(await page.locator('#packets-of').textContent(), /wire 1: r1\/eth1 ↔ r2\/eth1/);
    const ping = await pw('exec', LAB, 'r1', '--', 'ping', '-c', '5', '-i', '0.2', '-W', '2', '192.0.2.2');
    t.equal(ping.code, 0, 'r1 pings r2 across wire 1');
    const rows = await waitFor('echo requests in the packet list', async () => {
      const texts = await page.locator('#packet-list tbody tr').allTextContents();
      return texts.filter((x) => /ICMP.*192\.0\.2\.1 → 192\.0\.2\.2 echo request/.test(x)).length >= 10 ? texts : undefined;
    }, 20000);
    const req = rows.filter((x) => /echo request/.test(x));
    t.ok(req.some((x) => x.includes('r1/eth1') && x.includes('out')), 'seen leaving r1/eth1 (out)');
    t.ok(req.some((x) => x.includes('r2/eth1') && x.includes('in')), 'and delivered at r2/eth1 (in)');
    t.ok(rows.some((x) => /echo reply/.test(x)), 'with the replies');
    const cells = await page.locator('#packet-list tbody tr').filter({ hasText: 'echo request' }).first().locator('td').allTextContents();
    t.match(cells[0], /^\d\d:\d\d:\d\d\.\d{6}$/, 'a time');
    t.match(cells[3], /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, 'a source MAC');
    t.match(cells[4], /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, 'a destination MAC');
    t.equal(cells[5], '0x0800', 'the EtherType');
    t.equal(cells[6], 'ICMP', 'the protocol');
    t.equal(cells[8], '98', 'the length');
  });

  await t.test('download a capture of two ends from the page', async (t) => {
    await page.locator('input[data-end="r1/eth1"]').check();
    await page.locator('input[data-end="r2/eth1"]').check();
    t.match(await page.locator('#live-command').inputValue(), /curl -sN -H "Authorization: Bearer \$\(sudo cat \/run\/patchwire\/labs\/pwua\/capture\.token\)" 'http:\/\/127\.0\.0\.1:\d+\/api\/capture\?end=r1%2Feth1&end=r2%2Feth1&follow=1' \| wireshark -k -i -/, 'the live command for Wireshark');
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#download').click()]);
    const saved = path.join(dir, 'page.pcapng');
    await download.saveAs(saved);
    t.match(download.suggestedFilename(), /^pwua-r1_eth1\+r2_eth1-\d{8}T\d{6}\.pcapng$/, 'named after the lab and its ends');
    const r = await run('tshark', ['-r', saved, '-Y', 'icmp.type == 8 && ip.dst == 192.0.2.2', '-T', 'fields', '-e', 'frame.interface_name']);
    t.equal(r.code, 0, `tshark reads it ${r.stderr}`);
    const ifs = r.stdout.trim().split('\n');
    t.ok(ifs.filter((x) => x === 'r1/eth1').length >= 5, `the ping's echo requests leaving r1/eth1 (${ifs.filter((x) => x === 'r1/eth1').length})`);
    t.ok(ifs.filter((x) => x === 'r2/eth1').length >= 5, `and arriving at r2/eth1 (${ifs.filter((x) => x === 'r2/eth1').length})`);
    // The command the page shows works as it says (curl, minus Wireshark).
    const live = await run('curl', ['-sN', '--max-time', '3', '-H', `Authorization: Bearer ${token}`, `${ui.base}api/capture?end=r1%2Feth1&end=r2%2Feth1&follow=1`, '-o', path.join(dir, 'live.pcapng')]);
    t.equal(live.code, 28, 'the live URL streams until curl stops it');
    const n = await run('tshark', ['-r', path.join(dir, 'live.pcapng'), '-Y', 'icmp.type == 8']);
    t.ok(n.stdout.trim().split('\n').length >= 10, 'and carries the ring first');
  });

  await t.test('set and remove an impairment from the page', async (t) => {
    await page.locator('#impair-end').selectOption('r1/eth1');
    await page.locator('#impair-dir').selectOption('out');
    await page.locator('#impair-delay').fill('80ms');
    await page.locator('#impair-set').click();
    t.match(await page.locator('#confirm-text').textContent(), /delay 80ms/);
    await page.locator('#confirm-ok').click();
    await waitFor('the page shows the delay', async () => /out delay 80ms/.test((await page.locator('#wire-detail .end[data-end="r1/eth1"] .impair').textContent()) ?? ''), 10000);
    t.pass('the end shows out delay 80ms');
    const ping = await pw('exec', LAB, 'r1', '--', 'ping', '-c', '3', '-i', '0.2', '-W', '2', '192.0.2.2');
    const min = Number(/= ([\d.]+)\//.exec(ping.stdout)?.[1]);
    t.ok(min >= 80, `the ping's round trip grew to ${min} ms`);
    await page.locator('#impair-reset').click();
    await page.locator('#confirm-ok').click();
    await waitFor('the page shows no impairment', async () => /in none; out none/.test((await page.locator('#wire-detail .end[data-end="r1/eth1"] .impair').textContent()) ?? ''), 10000);
    t.pass('removed');
    const after = await pw('exec', LAB, 'r1', '--', 'ping', '-c', '3', '-i', '0.2', '-W', '2', '192.0.2.2');
    t.ok(Number(/= ([\d.]+)\//.exec(after.stdout)?.[1]) < 80, 'and the round trip is short again');
  });

  await t.test('a screenshot of the page', async (t) => {
    // Some traffic for the rates, and one pulled cable to show its colour.
    await pwOk('link', 'down', LAB, 'r3/eth2');
    const bg = spawn(process.execPath, [CLI, 'exec', LAB, 'r2', '--', 'ping', '-c', '40', '-i', '0.1', '-s', '1200', '192.0.2.6'], { stdio: 'ignore' });
    children.push(bg);
    const bg1 = spawn(process.execPath, [CLI, 'exec', LAB, 'r1', '--', 'ping', '-c', '40', '-i', '0.1', '192.0.2.2'], { stdio: 'ignore' });
    children.push(bg1);
    await waitFor('wire 3 pulled and wire 2 moving', async () => (await look(3)) === 'pulled' && /[1-9]/.test((await page.locator('#wires tbody tr[data-uid="2"] td').nth(4).textContent()) ?? ''), 20000);
    await new Promise((r) => setTimeout(r, 1500));
    const shot = path.join(dir, 'ui.png');
    await page.screenshot({ path: shot });
    t.ok(readFileSync(shot).length > 10000, 'a screenshot');
    if (process.env.PW_UI_SCREENSHOT === '1') copyFileSync(shot, path.join(ROOT, 'docs', 'img', 'ui.png'));
    await pwOk('link', 'up', LAB, 'r3/eth2');
  });

  t.same(pageErrors, [], 'no errors in the page');
  t.same(await watchers(), lab.nodes.map(() => 1), 'while the page is open, one map stream per daemon');
  await browser.close();
  browser = null;
  t.same(await waitFor('the map streams end', async () => ((await watchers()).every((n) => n === 0) ? watchers() : undefined)), lab.nodes.map(() => 0), 'the browser closed, the daemons stream no map');
  ui.proc.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => (ui.proc.exitCode !== null ? r(ui.proc.exitCode) : ui.proc.once('exit', (c) => r(c))));
  t.equal(code, 0, 'patchwire ui stops cleanly');
});
