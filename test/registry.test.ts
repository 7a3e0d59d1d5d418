// The pod registry answers "is a pod still in this namespace?" once per wire
// while a thousand wires are plumbed; its index must follow every way a pod
// comes and goes (ADD, a new sandbox, DEL, a pod gone from the API, a state
// file).
import t from 'tap';

import { PodRegistry, type RegisteredPod } from '../src/cluster/registry.js';

function pod(name: string, netns: string, containerId = `c-${name}`): RegisteredPod {
  return { namespace: 'lab', pod: name, podUid: `u-${name}`, containerId, netns };
}

t.test('hasNetns follows add, replace, DEL, retain and load', async (t) => {
  const r = new PodRegistry();
  t.equal(r.hasNetns('/run/netns/a'), false, 'empty registry');
  r.add(pod('p1', '/run/netns/a'));
  r.add(pod('p2', '/run/netns/a'));
  r.add(pod('p3', '/run/netns/b'));
  t.ok(r.hasNetns('/run/netns/a') && r.hasNetns('/run/netns/b'), 'both namespaces registered');
  t.equal(r.removeContainer('c-p1')?.pod, 'p1', 'DEL of p1');
  t.ok(r.hasNetns('/run/netns/a'), 'p2 still lives in a');
  r.removeContainer('c-p2');
  t.notOk(r.hasNetns('/run/netns/a'), 'nobody left in a');
  t.equal(r.removeContainer('c-p2'), undefined, 'a repeated DEL changes nothing');
  // A new sandbox of p3 in another namespace replaces the old one.
  t.ok(r.add(pod('p3', '/run/netns/c', 'c-p3b')), 'new sandbox recorded');
  t.notOk(r.hasNetns('/run/netns/b'), "the old sandbox's namespace is forgotten");
  t.ok(r.hasNetns('/run/netns/c'), 'the new one is known');
  t.notOk(r.add(pod('p3', '/run/netns/c', 'c-p3b')), 'the same ADD again is no change');
  t.ok(r.hasNetns('/run/netns/c'), 'and does not count the pod twice');
  const dropped = r.retain((p) => p.pod !== 'p3');
  t.same(dropped.map((p) => p.pod), ['p3'], 'retain drops p3');
  t.notOk(r.hasNetns('/run/netns/c'), 'its namespace with it');

  const saved = new PodRegistry();
  saved.load([pod('q1', '/run/netns/q'), { bogus: true }]);
  t.ok(saved.hasNetns('/run/netns/q'), 'a loaded pod is indexed');
  t.equal(saved.all().length, 1, 'a malformed entry is skipped');
});
