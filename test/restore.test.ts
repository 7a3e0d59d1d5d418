// Restarts never lose a wire (#14 item 9), at the daemon: a damaged state
// file does not stop it (the copy of the last write, FILE.bak, brings the
// wires back and the damage shows in health), and a wire whose interface is
// missing at restore stays in the state file and in the wire list as
// RESTORING, and is re-created once the interface appears.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

import t from 'tap';

import { TestNet, sh, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwgb');
t.teardown(() => net.cleanup());

async function pings(ns: string, addr: string): Promise<number> {
  const r = await net.exec(ns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', addr]);
  return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0);
}

const uidsIn = (file: string): number[] => (JSON.parse(readFileSync(file, 'utf8')) as { wires: Array<{ uid: number }> }).wires.map((w) => w.uid).sort((a, b) => a - b);

t.test('a damaged state file: the daemon starts, says so, and the last good wires come back', async (t) => {
  const na = await net.addNode('na');
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  await net.localWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['192.0.2.1/30'] }), net.endpoint('veth', p2, 'eth1', { ips: ['192.0.2.2/30'] }));
  await net.localWire(2, na, net.endpoint('veth', p1, 'eth2'), net.endpoint('veth', p2, 'eth2'));
  t.same(uidsIn(na.state), [1, 2], 'the state file holds both wires');
  t.same(uidsIn(`${na.state}.bak`), [1, 2], 'and so does its copy');

  for (const [what, damage] of [
    ['the shape the issue found ({"version":1})', '{"version":1}'],
    ['a file cut off mid-write', readFileSync(na.state, 'utf8').slice(0, 40)],
  ] as const) {
    await net.killDaemon(na);
    writeFileSync(na.state, damage);
    await net.startDaemon(na);
    // The control API answers while the daemon re-attaches; wires being restored are listed as such.
    const h = await waitFor('the restore to finish', async () => {
      const x = await na.client.health();
      return x.restoring === 0 ? x : undefined;
    });
    t.match(h.state_file, /state file .* (has no wires list|is not JSON).*kept as .*\.damaged.*restored the last good copy .*\.bak/, `${what}: health says what was wrong and what was done`);
    t.same((await na.client.listWires()).map((w) => [w.spec.uid, w.state]), [[1, 'WIRE_STATE_UP'], [2, 'WIRE_STATE_UP']], `${what}: both wires are back`);
    t.equal(readFileSync(`${na.state}.damaged`, 'utf8'), damage, `${what}: the damaged file is kept for a person to read`);
    t.same(uidsIn(na.state), [1, 2], `${what}: the state file is whole again`);
    t.equal(await pings(p1, '192.0.2.2'), 3, `${what}: frames cross the restored wire`);
    t.match(readFileSync(na.log, 'utf8'), /state file .*\(kept as .*\.damaged\)/, `${what}: and the log says so`);
  }

  // Both copies damaged: the daemon still starts, with no wires, and says so.
  await net.killDaemon(na);
  writeFileSync(na.state, 'garbage');
  writeFileSync(`${na.state}.bak`, '[]');
  await net.startDaemon(na);
  t.match((await na.client.health()).state_file, /no good copy in .*\.bak either: started with no wires/, 'both damaged: reported');
  t.same(await na.client.listWires(), [], 'and no wires');
  // The pods' interfaces outlived the daemon; take them down with the wires' ends.
  sh('ip', '-n', p1, 'link', 'del', 'eth1');
  sh('ip', '-n', p1, 'link', 'del', 'eth2');
});

t.test('a wire whose interface is missing at restore is shown, kept, retried, and restored when it appears', async (t) => {
  const nb = await net.addNode('nb');
  const p3 = net.addPod('p3');
  const p4 = net.addPod('p4');
  // A host endpoint: an interface that exists before the wire (a VM's tap,
  // say). h1 is the side the "VM" sends from.
  const makeHost = (): void => {
    sh('ip', '-n', p3, 'link', 'add', 'h0', 'type', 'veth', 'peer', 'name', 'h1');
    sh('ip', '-n', p3, 'addr', 'add', '192.0.2.5/30', 'dev', 'h1');
    sh('ip', '-n', p3, 'link', 'set', 'h0', 'up');
    sh('ip', '-n', p3, 'link', 'set', 'h1', 'up');
  };
  makeHost();
  await net.localWire(3, nb, net.endpoint('host', p3, 'h0'), net.endpoint('veth', p4, 'eth1', { ips: ['192.0.2.6/30'] }));
  await waitFor('frames across the host wire', async () => (await pings(p3, '192.0.2.6')) > 0);

  await net.killDaemon(nb);
  sh('ip', '-n', p3, 'link', 'del', 'h0');
  await net.startDaemon(nb);
  const w = await waitFor('the first attempt to fail', async () => {
    const [x] = await nb.client.listWires();
    return /attempt/.test(x?.message ?? '') ? x : undefined;
  });
  t.equal(w?.state, 'WIRE_STATE_RESTORING', 'the wire is listed as restoring');
  t.match(w?.message, /not restored yet \(attempt \d+\): .*interface 'h0' does not exist/, 'with the reason');
  t.equal((await nb.client.health()).restoring, 1, 'health counts it');
  t.same(uidsIn(nb.state), [3], 'it stays in the state file');
  t.ok(sh('ip', '-n', p4, '-o', 'link', 'show').includes('eth1'), "the failed attempt left the other end's pod interface in place");

  makeHost();
  const up = await waitFor('the wire to be restored', async () => {
    const [x] = await nb.client.listWires();
    return x?.state === 'WIRE_STATE_UP' ? x : undefined;
  }, 20000);
  t.equal(up.ends.length, 2, 'restored with both ends');
  t.equal((await nb.client.health()).restoring, 0, 'nothing left to restore');
  t.equal(await pings(p3, '192.0.2.6'), 3, 'frames cross it again');
  t.match(readFileSync(nb.log, 'utf8'), /restored wire 3 after \d+ attempts/, 'the log says when it came back');

  // Removing a wire that is still being restored drops it from the file.
  await net.killDaemon(nb);
  sh('ip', '-n', p3, 'link', 'del', 'h0');
  await net.startDaemon(nb);
  await waitFor('the first attempt to fail again', async () => /attempt/.test((await nb.client.listWires())[0]?.message ?? ''));
  t.equal((await nb.client.listWires())[0]?.state, 'WIRE_STATE_RESTORING');
  await nb.client.removeWire(3);
  t.same(await nb.client.listWires(), [], 'removed while restoring');
  t.same(uidsIn(nb.state), [], 'and gone from the state file');
  t.ok(existsSync(`${nb.state}.bak`), 'the copy follows the file');
  t.same(uidsIn(`${nb.state}.bak`), [], 'with the same content');
});
