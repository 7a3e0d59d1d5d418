// The browser view served by a daemon in cluster mode (/ui/ on its HTTP
// port), against the STAND-IN API server (test/helpers/apiserver.ts) with
// real daemons, real pods' interfaces and Debian's headless Chromium. The
// page is reached the way `kubectl port-forward` reaches it: through a relay
// into the node's network namespace. Access is decided by TokenReview and
// SubjectAccessReview: viewing needs get nodes/metrics (and list topologies
// for the whole lab), a cable pull needs patch on the end's Topology; a
// token without it gets a clear 403 (over HTTP and in the page), one with it
// pulls the cable from the page, the wire turns to pulled and both pods'
// interfaces (one on each node) lose carrier; plugged back, carrier returns.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { chromium, type BrowserContext, type Page } from 'playwright-core';
import t from 'tap';

import { clusterWireId } from '../src/cluster/plan.js';
import { type UserInfo } from './helpers/apiserver.js';
import { TestCluster, type TestPod } from './helpers/cluster.js';
import { parsePcapng } from './helpers/pcap.js';
import { ROOT, run, waitFor } from './helpers/testnet.js';

const NS = 'udlab';
const cluster = new TestCluster('pwud');
const dir = mkdtempSync(path.join(os.tmpdir(), 'pwud-'));
const children: ChildProcess[] = [];
let browser: BrowserContext | null = null;
let forward: net.Server | null = null;

t.teardown(async () => {
  await browser?.close().catch(() => undefined);
  forward?.close();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await cluster.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

const VIEWER = 'viewer-token-0123456789';
const OPERATOR = 'operator-token-0123456789';
const NOBODY = 'nobody-token-0123456789';

async function carrier(pod: TestPod, intf: string): Promise<string> {
  const r = await run('ip', ['netns', 'exec', pod.netns, 'cat', `/sys/class/net/${intf}/carrier`]);
  return r.code === 0 ? r.stdout.trim() : '0';
}

/** `kubectl port-forward` for the test: 127.0.0.1:PORT here to 127.0.0.1:8080 inside the node. */
async function portForward(nodeNs: string): Promise<string> {
  const sock = path.join(dir, 'ui.sock');
  const relay = spawn('ip', ['netns', 'exec', nodeNs, process.execPath, path.join(ROOT, 'test', 'tools', 'relay.mjs'), `unix:${sock}`, '127.0.0.1:8080'], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(relay);
  await new Promise<void>((resolve, reject) => {
    relay.stdout!.once('data', () => resolve());
    relay.once('exit', (c) => reject(new Error(`relay exited with ${c}`)));
  });
  forward = net.createServer((c) => {
    const u = net.connect(sock);
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => forward!.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(forward.address() as net.AddressInfo).port}`;
}

t.test('the page of a daemon in a cluster', async (t) => {
  await cluster.start();
  const n1 = await cluster.addNode('n1', ['--http', '127.0.0.1:8080']);
  const n2 = await cluster.addNode('n2');
  const viewer: UserInfo = { name: 'viewer', groups: ['system:authenticated'] };
  const operator: UserInfo = { name: 'operator', groups: ['system:authenticated'] };
  cluster.api.addToken(VIEWER, viewer);
  cluster.api.addToken(OPERATOR, operator);
  cluster.api.addToken(NOBODY, { name: 'nobody', groups: ['system:authenticated'] });
  // What an admin grants (README, "Browser view"): viewers see and capture, operators also change links.
  cluster.api.addRbac([
    { kind: 'ClusterRole', metadata: { name: 'patchwire-node-view' }, rules: [{ apiGroups: [''], resources: ['nodes/metrics'], verbs: ['get'] }] },
    { kind: 'ClusterRoleBinding', metadata: { name: 'patchwire-node-view' }, roleRef: { kind: 'ClusterRole', name: 'patchwire-node-view' }, subjects: [{ kind: 'User', name: 'viewer' }, { kind: 'User', name: 'operator' }] },
    { kind: 'Role', metadata: { name: 'lab-view', namespace: NS }, rules: [{ apiGroups: ['networkop.co.uk'], resources: ['topologies'], verbs: ['list'] }, { apiGroups: [''], resources: ['pods/capture'], verbs: ['get'] }] },
    { kind: 'RoleBinding', metadata: { name: 'lab-view', namespace: NS }, roleRef: { kind: 'Role', name: 'lab-view' }, subjects: [{ kind: 'User', name: 'viewer' }, { kind: 'User', name: 'operator' }] },
    { kind: 'Role', metadata: { name: 'lab-operate', namespace: NS }, rules: [{ apiGroups: ['networkop.co.uk'], resources: ['topologies'], verbs: ['patch'] }] },
    { kind: 'RoleBinding', metadata: { name: 'lab-operate', namespace: NS }, roleRef: { kind: 'Role', name: 'lab-operate' }, subjects: [{ kind: 'User', name: 'operator' }] },
  ]);
  // r1 (n1) - r2 (n2) across nodes, r1 - r3 within n1, r4 - r5 within n2 (no end on n1's daemon).
  const link = (uid: number, peer: string, local: string, peerIntf: string): Record<string, unknown> => ({ uid, peer_pod: peer, local_intf: local, peer_intf: peerIntf });
  const topos: Array<[string, Array<Record<string, unknown>>]> = [
    ['r1', [link(1, 'r2', 'eth1', 'eth1'), link(2, 'r3', 'eth2', 'eth1')]],
    ['r2', [link(1, 'r1', 'eth1', 'eth1')]],
    ['r3', [link(2, 'r1', 'eth1', 'eth2')]],
    ['r4', [link(3, 'r5', 'eth1', 'eth1')]],
    ['r5', [link(3, 'r4', 'eth1', 'eth1')]],
  ];
  for (const [name, links] of topos) t.equal((await cluster.createTopology(NS, { apiVersion: 'networkop.co.uk/v1beta1', kind: 'Topology', metadata: { name }, spec: { links } })).status, 201);
  const pods: Record<string, TestPod> = {};
  for (const [name, node] of [['r1', 'n1'], ['r2', 'n2'], ['r3', 'n1'], ['r4', 'n2'], ['r5', 'n2']] as const) pods[name] = (await cluster.startPod(node, NS, name)).pod;
  await cluster.waitReady(NS, 'r1', '2/2');
  for (const p of ['r2', 'r3', 'r4', 'r5']) await cluster.waitReady(NS, p, '1/1');
  const w1 = clusterWireId(NS, 1);

  const base = await portForward(n1.ns);
  const get = (p: string, token?: string, init: RequestInit = {}): Promise<Response> => fetch(`${base}${p}`, { ...init, redirect: 'manual', headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...((init.headers as Record<string, string>) ?? {}) } });
  const post = (p: string, token: string, body: unknown): Promise<Response> => get(p, token, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });

  await t.test('access over HTTP', async (t) => {
    const moved = await get('/ui');
    t.equal(moved.status, 308, '/ui redirects');
    t.equal(moved.headers.get('location'), '/ui/', 'to /ui/');
    const page = await get('/ui/');
    t.equal(page.status, 200, 'the page itself needs no token');
    t.match(await page.text(), /<script type="module" src="assets\/app.js">/, 'the same page as patchwire ui');
    const cy = await get('/ui/assets/cytoscape.esm.min.mjs');
    t.equal(cy.status, 200, 'with its assets, served by the daemon');
    t.ok((await cy.text()).length > 100000, 'the whole graph library');
    const none = await get('/ui/api/view');
    t.equal(none.status, 401, 'the API without a token: 401');
    t.match(((await none.json()) as { error: string }).error, /Bearer/, 'saying how to send one');
    t.equal((await get('/ui/api/view', 'mallory-0123456789')).status, 401, 'a token the API server does not know: 401');
    const nobody = await get('/ui/api/view', NOBODY);
    t.equal(nobody.status, 403, 'a user without get nodes/metrics: 403');
    t.match(((await nobody.json()) as { error: string }).error, /"nobody" may not get nodes\/metrics/);
    t.equal((await get('/ui/api/nope', VIEWER)).status, 404, 'an unknown API path: 404');
    t.equal((await get('/ui/api/cable', VIEWER)).status, 405, 'GET on a POST path: 405');

    const view = (await (await get('/ui/api/view', VIEWER)).json()) as { mode: string; node: string; wires: Array<{ uid: number; state: string; ends: Array<{ name: string; node: string; carrier: string; cable: string }> }> };
    t.equal(view.mode, 'cluster');
    t.equal(view.node, n1.name, "the daemon's node");
    t.same(
      view.wires.map((w) => [w.uid, w.state, w.ends.map((e) => `${e.name}@${e.node}`)]),
      [
        [w1, 'up', [`${NS}/r1/eth1@${n1.name}`, `${NS}/r2/eth1@${n2.name}`]],
        [clusterWireId(NS, 2), 'up', [`${NS}/r1/eth2@${n1.name}`, `${NS}/r3/eth1@${n1.name}`]],
        [clusterWireId(NS, 3), 'up', [`${NS}/r4/eth1@${n2.name}`, `${NS}/r5/eth1@${n2.name}`]],
      ],
      'the whole lab: its own wires from its map, the others from the Topology objects',
    );
    t.ok(view.wires.every((w) => w.ends.every((e) => e.carrier === 'up' && e.cable === 'plugged')), 'every end with carrier and its cable plugged (far ends from their Topology status)');

    const denied = await post('/ui/api/cable', VIEWER, { end: `${NS}/r1/eth1`, plugged: false });
    t.equal(denied.status, 403, 'a cable pull by a viewer: 403');
    t.match(((await denied.json()) as { error: string }).error, /"viewer" may not patch topologies\.networkop\.co\.uk udlab\/r1/, 'saying who and what is missing');
    const sar = cluster.daemonRequests().filter((r) => r.resource === 'subjectaccessreviews').map((r) => (r.body as { spec: { user: string; resourceAttributes: Record<string, string> } }).spec).find((s) => s.user === 'viewer' && s.resourceAttributes.verb === 'patch');
    t.same(sar?.resourceAttributes, { namespace: NS, name: 'r1', verb: 'patch', group: 'networkop.co.uk', resource: 'topologies', subresource: '' }, 'the SubjectAccessReview asked for patch on the Topology r1');
    t.equal(await carrier(pods.r1!, 'eth1'), '1', 'r1/eth1 keeps carrier');
    const impDenied = await post('/ui/api/impair', VIEWER, { end: `${NS}/r1/eth1`, set: { delay: '10ms' } });
    t.equal(impDenied.status, 403, 'an impairment by a viewer: 403');
    const far = await post('/ui/api/cable', OPERATOR, { end: `${NS}/r2/eth1`, plugged: false });
    t.equal(far.status, 409, "an end on another node: 409");
    t.match(((await far.json()) as { error: string }).error, new RegExp(`is on node ${n2.name}: open the page of that node's daemon`));
    t.equal(await carrier(pods.r2!, 'eth1'), '1', 'r2/eth1 keeps carrier');
    const cap = await get(`/ui/api/capture?end=${encodeURIComponent(`${NS}/r1/eth1`)}`, VIEWER);
    t.equal(cap.status, 200, 'a viewer captures an end of this node');
    t.same(parsePcapng(Buffer.from(await cap.arrayBuffer())).interfaces.map((i) => i.name), [`${NS}/r1/eth1`], 'as pcapng with the end named');
    t.equal((await get(`/ui/api/capture?end=${encodeURIComponent(`${NS}/r4/eth1`)}`, VIEWER)).status, 409, 'an end on another node: 409');
  });

  const userData = path.join(dir, 'chromium');
  browser = await chromium.launchPersistentContext(userData, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const pageErrors: string[] = [];
  const open = async (token: string): Promise<Page> => {
    const page = await browser!.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('crash', () => pageErrors.push('the page crashed'));
    // The token in the fragment, as a user pastes the URL: kept in the tab only.
    await page.goto(`${base}/ui/#token=${token}`);
    return page;
  };
  type Edge = { uid: number; look: string };
  const edges = (page: Page): Promise<Edge[]> => page.evaluate(() => (window as unknown as { pwui: { cy: { edges(): { map<T>(f: (e: { data(k: string): unknown }) => T): T[] } } } }).pwui.cy.edges().map((e) => ({ uid: e.data('uid') as number, look: e.data('look') as string })));
  const look = async (page: Page, uid: number): Promise<string | undefined> => (await edges(page)).find((e) => e.uid === uid)?.look;

  await t.test('a viewer gets a 403 from the page', async (t) => {
    const page = await open(VIEWER);
    const drawn = await waitFor('the page draws the three wires', async () => {
      const e = await edges(page);
      return e.length === 3 && e.every((x) => x.look === 'up') ? e : undefined;
    }, 30000);
    t.equal(drawn.length, 3, 'every wire of the lab drawn, all up');
    await page.locator(`#wires tbody tr[data-uid="${w1}"]`).click();
    await page.locator(`#wire-detail .end[data-end="${NS}/r1/eth1"] button.pull`).click();
    await page.locator('#confirm-ok').click();
    const toast = await waitFor('the page says why not', async () => {
      const s = (await page.locator('#toast').textContent()) ?? '';
      return /pull failed/.test(s) ? s : undefined;
    }, 10000);
    t.match(toast, /pull failed: user "viewer" may not patch topologies\.networkop\.co\.uk udlab\/r1/, `the page shows the refusal (${toast})`);
    await new Promise((r) => setTimeout(r, 1500));
    t.equal(await look(page, w1), 'up', 'the wire stays up');
    t.equal(await carrier(pods.r1!, 'eth1'), '1', 'r1/eth1 keeps carrier');
    await page.close();
  });

  await t.test('an operator pulls and plugs a cable from the page', async (t) => {
    const page = await open(OPERATOR);
    await waitFor('the page draws the wires', async () => (await edges(page)).length === 3, 30000);
    t.match(await page.locator('#lab-name').textContent(), new RegExp(`node ${n1.name}`), 'the page names the daemon it came from');
    await page.locator(`#wires tbody tr[data-uid="${w1}"]`).click();
    await page.locator(`#wire-detail .end[data-end="${NS}/r1/eth1"] button.pull`).click();
    t.match(await page.locator('#confirm-text').textContent(), /Pull the cable at udlab\/r1\/eth1/, 'asked to confirm');
    await page.locator('#confirm-ok').click();
    await waitFor('wire 1 drawn as pulled', async () => (await look(page, w1)) === 'pulled', 20000);
    t.pass('the wire turned to pulled on the page');
    t.equal(await waitFor('r1/eth1 loses carrier', async () => ((await carrier(pods.r1!, 'eth1')) === '0' ? '0' : undefined), 10000), '0', "r1's eth1 (node n1) lost carrier");
    t.equal(await waitFor('r2/eth1 loses carrier', async () => ((await carrier(pods.r2!, 'eth1')) === '0' ? '0' : undefined), 10000), '0', "r2's eth1 (node n2, the far end) lost carrier");
    const far = await waitFor("the far end's state on the page", async () => {
      const s = (await page.locator(`#wire-detail .end[data-end="${NS}/r2/eth1"] .carrier`).textContent()) ?? '';
      return /carrier down/.test(s) ? s : undefined;
    }, 15000);
    t.match(far, /carrier down/, "the far end's carrier from its Topology status");
    t.equal(await look(page, clusterWireId(NS, 2)), 'up', 'the other wires stay up');

    await page.locator(`#wire-detail .end[data-end="${NS}/r1/eth1"] button.plug`).click();
    await page.locator('#confirm-ok').click();
    await waitFor('wire 1 drawn up again', async () => (await look(page, w1)) === 'up', 30000);
    t.pass('plugged: the wire is up again on the page');
    t.equal(await carrier(pods.r1!, 'eth1'), '1', "r1's eth1 has carrier again");
    t.equal(await waitFor('r2/eth1 carrier back', async () => ((await carrier(pods.r2!, 'eth1')) === '1' ? '1' : undefined), 10000), '1', "r2's eth1 too");
    await page.close();
  });

  t.same(pageErrors, [], 'no errors in the pages');
  await browser.close();
  browser = null;
  const watchers = async (): Promise<number> => {
    const r = await get('/metrics', VIEWER);
    return Number(/^patchwire_map_watchers\{[^}]*\} (\d+)/m.exec(await r.text())?.[1] ?? -1);
  };
  t.equal(await waitFor('the pages let go of their map streams', async () => ((await watchers()) === 0 ? 0 : undefined), 15000), 0, 'the browser closed: no map watchers left on the daemon');
});
