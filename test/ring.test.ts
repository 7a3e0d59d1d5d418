// The capture ring keeps the newest frames, byte for byte, within its limit,
// and accounts for every frame it lets go (evicted) across wrap-arounds.
import t from 'tap';

import { CaptureRing, type Segment } from '../src/capture/ring.js';

function frames(segs: Segment[]): Buffer[] {
  const out: Buffer[] = [];
  for (const s of segs) {
    let start = 0;
    for (let i = 0; i < s.count; i++) {
      out.push(s.data.subarray(start, s.ends[i]!));
      start = s.ends[i]!;
    }
  }
  return out;
}

t.test('random batches: the ring holds a suffix of what was recorded', async (t) => {
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const limit = 64 << 10;
  const ring = new CaptureRing(limit);
  const all: Buffer[] = [];
  let bad = 0;
  let lastHeld = 0;
  for (let b = 0; b < 2000; b++) {
    const count = 1 + rnd(16);
    const src = Buffer.alloc(count * 9100);
    const offs: number[] = [];
    const lens: number[] = [];
    for (let i = 0; i < count; i++) {
      const len = 60 + rnd(b % 50 === 0 ? 9000 : 1500);
      const f = Buffer.alloc(len);
      f.writeUInt32BE(all.length, 0);
      for (let k = 4; k < len; k++) f[k] = (all.length + k) & 0xff;
      f.copy(src, i * 9100);
      offs.push(i * 9100);
      lens.push(len);
      all.push(f);
    }
    ring.record(src, offs, 1, 0, lens, 1, count, b % 2 === 0);
    const held = frames(ring.snapshot());
    const suffix = all.slice(all.length - held.length);
    if (!held.every((f, i) => f.equals(suffix[i]!))) bad++;
    if (ring.heldBytes > limit) bad++;
    if (ring.evicted + held.length !== all.length) bad++;
    lastHeld = held.length;
  }
  t.equal(bad, 0, 'after every batch: newest frames only, exact bytes, within the limit, every frame accounted for');
  t.ok(lastHeld > 0 && ring.evicted > 0, `wrapped many times (held ${lastHeld}, evicted ${ring.evicted})`);
});

t.test('a batch larger than the ring keeps its newest frames', async (t) => {
  const ring = new CaptureRing(3000);
  const src = Buffer.alloc(5000);
  for (let i = 0; i < 5; i++) src.fill(i + 1, i * 1000, (i + 1) * 1000);
  ring.record(src, [0, 1000, 2000, 3000, 4000], 1, 0, [1000, 1000, 1000, 1000, 1000], 1, 5, false);
  const held = frames(ring.snapshot());
  t.same(held.map((f) => f[0]), [3, 4, 5], 'the last three frames');
  t.equal(ring.evicted, 2);
});

t.test('live listeners get their own copy; snapshots survive overwrites', async (t) => {
  const ring = new CaptureRing(2000);
  const got: Segment[] = [];
  ring.listeners.add((s) => got.push(s));
  const one = (v: number): void => {
    const b = Buffer.alloc(900, v);
    ring.record(b, [0], 1, 0, [900], 1, 1, true);
  };
  one(1);
  const snap = ring.snapshot();
  one(2);
  one(3);
  one(4);
  t.same(got.map((s) => s.data[0]), [1, 2, 3, 4], 'each listener copy keeps its bytes');
  t.equal(snap[0]!.data[0], 1, 'an earlier snapshot is not overwritten');
  t.same(frames(ring.snapshot()).map((f) => f[0]), [3, 4], 'the ring itself moved on');
  const off = new CaptureRing(0);
  off.record(Buffer.alloc(10), [0], 1, 0, [10], 1, 1, true);
  t.same(off.snapshot(), [], 'a ring of 0 bytes records nothing');
});
