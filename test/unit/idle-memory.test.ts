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
  t.match(logs[0], /^after starting: returned freed memory, RSS [\d.]+ -> [\d.]+ MB/);

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
