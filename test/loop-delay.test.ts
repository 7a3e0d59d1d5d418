// Health's event-loop figures are the loop's lateness, not the sampling
// interval: Node's histogram records the whole time between two samples, and
// an idle daemon once reported a "max delay" of 100-107 ms (the interval)
// while nothing was late. A daemon stopped for a while must show that stop.
import t from 'tap';

import { TestNet, sleep, waitFor } from './helpers/testnet.js';

const net = new TestNet('pwld');
t.teardown(() => net.cleanup());

const STOP_MS = 600;

t.test("health reports the event loop's lateness", async (t) => {
  const n = await net.addNode('a');
  // Two 10 s windows are kept; the start-up of the daemon (loading, the first
  // collection) may be late by itself, so wait until it has left them.
  const idle = await waitFor(
    'an idle window without start-up',
    async () => {
      const h = await n.client.health();
      return h.event_loop_delay_max_ms < 50 ? h : undefined;
    },
    40000,
    1000,
  );
  t.ok(idle.event_loop_delay_max_ms < 50, `an idle daemon is not late (max ${idle.event_loop_delay_max_ms} ms)`);
  t.ok(idle.event_loop_delay_p99_ms < 50, `nor at p99 (${idle.event_loop_delay_p99_ms} ms)`);

  const pid = n.proc!.pid!;
  process.kill(pid, 'SIGSTOP');
  await sleep(STOP_MS);
  process.kill(pid, 'SIGCONT');
  await sleep(300); // a sample after the stop
  const h = await n.client.health();
  t.ok(h.event_loop_delay_max_ms >= STOP_MS - 150, `a ${STOP_MS} ms stop shows as lateness (max ${h.event_loop_delay_max_ms} ms)`);
  t.ok(h.event_loop_delay_max_ms < STOP_MS + 2000, `and not more than the stop and a loaded machine's slack (${h.event_loop_delay_max_ms} ms)`);
});
