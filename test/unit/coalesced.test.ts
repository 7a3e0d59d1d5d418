// coalesced(): calls made while a run waits to start share that run, and
// every call's run starts after the call (so a state file written by it
// holds what the caller changed before calling).
import t from 'tap';

import { coalesced } from '../../src/util/serial.js';

t.test('calls during a run share the next run, which starts after each of them', async (t) => {
  let value = 0;
  const seen: number[] = [];
  let release: () => void = () => undefined;
  const write = coalesced(async () => {
    seen.push(value);
    await new Promise<void>((r) => (release = r));
  });
  value = 1;
  const first = write();
  value = 2;
  const second = write();
  value = 3;
  const third = write();
  t.equal(second, third, 'calls while a run is under way share the one queued run');
  t.not(first, second);
  release();
  await first;
  await new Promise((r) => setImmediate(r));
  release();
  await Promise.all([second, third]);
  t.same(seen, [1, 3], 'two runs for three calls; the second saw the last change');
  value = 4;
  const fourth = write();
  release();
  await fourth;
  t.same(seen, [1, 3, 4], 'a call when nothing runs starts its own run');
});

t.test('a failed run fails its callers only; the next run goes ahead', async (t) => {
  let n = 0;
  const write = coalesced(async () => {
    n++;
    if (n === 1) throw new Error('disk full');
  });
  const a = write();
  const b = write();
  await t.rejects(a, /disk full/);
  await b;
  t.equal(n, 2);
});
