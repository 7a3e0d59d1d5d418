// IdleMemory (src/util/idle-memory.ts): memory goes back once after start
// and once after each burst of wire changes, never for a lone change, only
// once the changes have been quiet for SETTLE_MS, and not while the
// daemon's other threads are busy carrying frames (at most MAX_POSTPONE_MS).
import { Worker } from 'node:worker_threads';

import t from 'tap';

import { BURST_CHANGES, IdleMemory, otherThreadsCpu, PROBE_MS, SETTLE_MS } from '../../src/util/idle-memory.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `cond` holds; generous, so a loaded machine does not fail it. */
async function until(cond: () => boolean, timeoutMs = SETTLE_MS * 4): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(50);
  }
  return cond();
}

const idleCpu = (): number => 0;

t.test('after start, after a burst, not after a lone change', async (t) => {
  let calls = 0;
  const logs: string[] = [];
  const m = new IdleMemory(() => ++calls > 0, (l) => logs.push(l), { cpuMicros: idleCpu });
  t.teardown(() => m.stop());
  // Keep the process alive while the unref'd timers run.
  const keep = setInterval(() => undefined, 1000);
  t.teardown(() => clearInterval(keep));

  const t0 = Date.now();
  m.started();
  t.ok(await until(() => calls === 1), 'once after start');
  t.ok(Date.now() - t0 >= SETTLE_MS + PROBE_MS - 20, `not before the settle time and the probe (${Date.now() - t0} ms)`);
  t.match(logs[0], /^after starting: returned freed memory in [\d.]+ ms, RSS [\d.]+ -> [\d.]+ MB/);

  m.changed();
  await sleep(SETTLE_MS + PROBE_MS + 500);
  t.equal(calls, 1, 'a lone wire change does not collect');

  for (let i = 0; i < BURST_CHANGES + 8; i++) {
    m.changed();
    await sleep(10);
  }
  const quietFrom = Date.now();
  t.ok(await until(() => calls === 2), 'once the burst has been quiet for the settle time');
  t.ok(Date.now() - quietFrom >= SETTLE_MS + PROBE_MS - 20, `and not before (${Date.now() - quietFrom} ms)`);
  t.match(logs[1], new RegExp(`^after ${BURST_CHANGES + 8} wire changes: returned freed memory`));
});

t.test('waits while the daemon is busy, then collects; a long busy spell collects anyway', async (t) => {
  const keep = setInterval(() => undefined, 1000);
  t.teardown(() => clearInterval(keep));
  // A fake CPU clock: busy adds a whole core's time per millisecond of wall time.
  let busy = true;
  let cpu = 0;
  let last = Date.now();
  const cpuMicros = (): number => {
    const now = Date.now();
    if (busy) cpu += (now - last) * 1000;
    last = now;
    return cpu;
  };
  let calls = 0;
  const logs: string[] = [];
  const m = new IdleMemory(() => ++calls > 0, (l) => logs.push(l), { cpuMicros });
  t.teardown(() => m.stop());
  m.started();
  t.ok(await until(() => logs.length === 1), 'says it waits');
  t.match(logs[0], /^returning freed memory later: the daemon is busy carrying frames \(\d+% of a core\)/);
  await sleep(SETTLE_MS + PROBE_MS + 500);
  t.equal(calls, 0, 'no collection while a core is busy');
  t.equal(logs.length, 1, 'said once');
  busy = false;
  t.ok(await until(() => calls === 1), 'collected once a probe found the threads quiet');
  t.match(logs[1], /^after starting: returned freed memory/);

  let calls2 = 0;
  const m2 = new IdleMemory(() => ++calls2 > 0, () => undefined, { cpuMicros: () => Date.now() * 1000 /* always a full core */, maxPostponeMs: SETTLE_MS });
  t.teardown(() => m2.stop());
  m2.started();
  t.ok(await until(() => calls2 === 1, SETTLE_MS * 6), 'busy past the longest postponement: collected anyway');
});

t.test("the other threads' CPU: a busy worker counts, the event loop does not", async (t) => {
  const cpu = otherThreadsCpu();
  const a = cpu();
  // Burn the event loop's own CPU for 200 ms: it must not count.
  const end = Date.now() + 200;
  while (Date.now() < end);
  const b = cpu();
  t.ok(b - a < 100_000, `the event loop's own 200 ms are not counted (${Math.round(b - a)} us)`);
  // A thread of the process that burns 300 ms (as the engine's does under traffic) counts.
  const w = new Worker('const end = Date.now() + 300; while (Date.now() < end); require("node:worker_threads").parentPort.postMessage(1);', { eval: true });
  await new Promise((r) => w.once('message', r));
  const c = cpu();
  t.ok(c - b >= 150_000, `a worker's 300 ms are (${Math.round(c - b)} us)`);
  await w.terminate();
  t.ok(cpu() >= c, 'and the total never goes back when that thread has ended');
});
