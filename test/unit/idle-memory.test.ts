// IdleMemory (src/util/idle-memory.ts): memory goes back once after start
// and once after each burst of wire changes, never for a lone change, and
// only once the changes have been quiet for SETTLE_MS.
import t from 'tap';

import { BURST_CHANGES, IdleMemory, SETTLE_MS } from '../../src/util/idle-memory.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('after start, after a burst, not after a lone change', async (t) => {
  let calls = 0;
  const logs: string[] = [];
  const m = new IdleMemory(() => {
    calls++;
    return true;
  }, (l) => logs.push(l));
  t.teardown(() => m.stop());
  // Keep the process alive while the unref'd timers run.
  const keep = setInterval(() => undefined, 1000);
  t.teardown(() => clearInterval(keep));

  m.started();
  await sleep(SETTLE_MS + 300);
  t.equal(calls, 1, 'once after start');
  t.match(logs[0], /^after starting: returned freed memory in [\d.]+ ms, RSS [\d.]+ -> [\d.]+ MB/);

  m.changed();
  await sleep(SETTLE_MS + 300);
  t.equal(calls, 1, 'a lone wire change does not collect');

  for (let i = 0; i < BURST_CHANGES + 8; i++) {
    m.changed();
    await sleep(10);
  }
  await sleep(SETTLE_MS / 2);
  t.equal(calls, 1, 'not while the burst has not settled');
  await sleep(SETTLE_MS / 2 + 400);
  t.equal(calls, 2, 'once the burst has been quiet for the settle time');
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
  await sleep(SETTLE_MS * 2 + 300);
  t.equal(calls, 0, 'no collection while a core is busy');
  t.equal(logs.length, 1, 'said once');
  t.match(logs[0], /^returning freed memory later: the daemon is busy carrying frames \(\d+% of a core\)/);
  busy = false;
  await sleep(SETTLE_MS + 300);
  t.equal(calls, 1, 'collected once a settle time passed quietly');
  t.match(logs[1], /^after starting: returned freed memory/);

  let calls2 = 0;
  const m2 = new IdleMemory(() => ++calls2 > 0, () => undefined, { cpuMicros: () => Date.now() * 1000 /* always a full core */, maxPostponeMs: SETTLE_MS });
  t.teardown(() => m2.stop());
  m2.started();
  await sleep(SETTLE_MS * 2 + 300);
  t.equal(calls2, 1, 'busy past the longest postponement: collected anyway');
});
