// A dead path, not a dead daemon: the underlay between two nodes is
// blackholed (the bridge port of one node disabled, so both hosts keep their
// links up and their TCP connections open while nothing arrives). The
// daemons' keepalive pings must notice within their bound and say so in
// health; frames sent meanwhile are counted as peer_down; once the path
// returns, the wire comes back by itself.
import t from 'tap';

import { TestNet, type TestNode, sh, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwxb');
t.teardown(() => net.cleanup());

/** README: "keepalive pings every 5 s". */
const KEEPALIVE_MS = 5000;
/**
 * A ping sent just after the path died goes unanswered for a whole period, so
 * a dead peer is noticed within two periods; the rest is room for a loaded
 * machine. TCP alone would keep the connection for many minutes.
 */
const DOWN_BOUND_MS = 2 * KEEPALIVE_MS + 3000;

/** The underlay bridge port of the n-th node (TestNet's naming: `u<index>` in `<prefix>ul`). */
function setUnderlayPort(index: number, forwarding: boolean): void {
  sh('bridge', '-n', `${net.prefix}ul`, 'link', 'set', 'dev', `u${index}`, 'state', forwarding ? '3' : '0');
}

async function wireState(n: TestNode): Promise<string | undefined> {
  return (await n.client.listWires()).find((w) => w.spec.uid === 1)?.state;
}

t.test('a blackholed underlay takes the wire down within the keepalive bound, and back up', async (t) => {
  const na = await net.addNode('na');
  const nb = await net.addNode('nb');
  const p1 = net.addPod('p1');
  const p2 = net.addPod('p2');
  await net.crossWire(1, na, net.endpoint('veth', p1, 'eth1', { ips: ['198.19.1.1/24'] }), nb, net.endpoint('veth', p2, 'eth1', { ips: ['198.19.1.2/24'] }));
  t.equal((await net.exec(p1, 'ping', ['-c', '2', '-W', '2', '198.19.1.2'])).code, 0, 'the wire carries ping');
  const before = await na.client.health();
  const reconnects0 = { a: before.peers.find((p) => p.node === nb.name)!.reconnects, b: (await nb.client.health()).peers.find((p) => p.node === na.name)!.reconnects };

  const pinger = net.spawnIn(p1, 'ping', ['-i', '0.2', '-W', '1', '198.19.1.2']);
  t.teardown(() => pinger.kill('SIGKILL'));
  try {
    setUnderlayPort(2, false);
    const t0 = Date.now();
    t.match(sh('ip', 'netns', 'exec', na.ns, 'ss', '-tnH', 'state', 'established', 'dst', nb.ip), /\S/, 'the TCP connections to nb are still established after the blackhole');
    // Each daemon on its own: wire down, and the keepalive named as the reason.
    const seen: Record<string, string> = {};
    await waitFor(
      'both daemons to report the wire down for want of keepalive answers',
      async () => {
        for (const [n, peer] of [
          [na, nb],
          [nb, na],
        ] as const) {
          if (seen[n.name] !== undefined) continue;
          const h = await n.client.health();
          const err = h.peers.find((p) => p.node === peer.name)?.last_error ?? '';
          if ((await wireState(n)) === 'WIRE_STATE_DOWN' && /keepalive/.test(err)) seen[n.name] = `${Date.now() - t0} ms: ${err}`;
        }
        return Object.keys(seen).length === 2;
      },
      DOWN_BOUND_MS,
      50,
    );
    t.comment(`down after ${JSON.stringify(seen)}`);
    for (const n of [na, nb]) t.match(seen[n.name], /keepalive ping/, `${n.name} says the peer stopped answering keepalive pings`);

    const dropped = await waitFor('peer_down drops at na', async () => {
      const c = (await na.client.listWires())[0]!.ends[0]!.counters.drops.peer_down;
      return c > 0 ? c : undefined;
    });
    t.ok(dropped > 0, `pings sent while the wire is down are counted as peer_down (${dropped})`);
  } finally {
    setUnderlayPort(2, true);
  }
  // Reconnects back off up to 2 s and a connect attempt caught in the blackhole gives up after 5 s.
  await waitFor('the wire up again on both daemons', async () => (await wireState(na)) === 'WIRE_STATE_UP' && (await wireState(nb)) === 'WIRE_STATE_UP', 30000);
  t.equal((await net.exec(p1, 'ping', ['-c', '3', '-W', '2', '198.19.1.2'])).code, 0, 'the wire carries ping again');
  const ha = (await na.client.health()).peers.find((p) => p.node === nb.name)!;
  const hb = (await nb.client.health()).peers.find((p) => p.node === na.name)!;
  t.ok(ha.inbound && ha.outbound && hb.inbound && hb.outbound, 'both streams are up in health');
  t.ok(ha.reconnects > reconnects0.a && hb.reconnects > reconnects0.b, 'each daemon reconnected by itself');
});
