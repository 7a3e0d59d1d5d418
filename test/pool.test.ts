// The batch pool hands memory back out only once it is given back, never
// takes in memory it did not hand out (Node's shared slab), and returns
// exactly the requested length.
import t from 'tap';

import { BufferPool } from '../src/dataplane/pool.js';

t.test('batch pool', async (t) => {
  const pool = new BufferPool();
  const a = pool.take(5000);
  t.equal(a.length, 5000, 'exact length');
  const b = pool.take(5000);
  t.not(a.buffer, b.buffer, 'two live batches never share memory');
  pool.give(a);
  const c = pool.take(7000);
  t.equal(c.buffer, a.buffer, 'given-back memory is reused for a batch of the same size class');
  t.equal(c.length, 7000);
  t.equal(pool.reused, 1);
  const foreign = Buffer.from('hello');
  pool.give(foreign);
  pool.give(Buffer.allocUnsafe(8192));
  const d = pool.take(8000);
  t.not(d.buffer, foreign.buffer, 'a buffer the pool did not make is never reused');
  t.equal(pool.reused, 1, 'foreign buffers were ignored');
  t.not(pool.take(8000).buffer, d.buffer, 'not back before it is given back');
  pool.give(d);
  t.equal(pool.take(8000).buffer, d.buffer, 'back right after it');
  t.equal(pool.take(16 << 20).length, 16 << 20, 'batches over the largest class are plain allocations');
});
