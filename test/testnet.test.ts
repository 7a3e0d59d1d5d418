// The test harness's own clean-up: whatever a test left running inside its
// namespaces must not outlive them (deleting a namespace does not end its
// processes, and an orphan keeps its namespace alive, unnamed).
import t from 'tap';

import { listNetns, TestNet, waitFor } from './helpers/testnet.js';
import { alive } from '../src/lab/state.js';
import { pidsInNetns } from '../src/netns/ip.js';

t.test('cleanup kills what runs in the test namespaces, orphans included', async (t) => {
  const net = new TestNet('pwtq');
  t.teardown(() => net.cleanup());
  const pod = net.addPod('p1');
  // setsid and a shell that exits at once: the sleeper's parent is gone, as
  // with the lldpd monitor once found orphaned after a test.
  const pid = Number((await net.exec(pod, 'sh', ['-c', 'setsid sleep 600 >/dev/null 2>&1 & echo $!'])).stdout.trim());
  t.ok(pid > 0 && alive(pid), `a process runs in ${pod} (pid ${pid})`);
  t.same(pidsInNetns(pod), [pid], 'ip netns pids finds it there');
  await net.cleanup();
  await waitFor('the orphan to be reaped', () => !alive(pid), 5000);
  t.notOk(alive(pid), 'it is gone after cleanup');
  t.notOk(listNetns().includes(pod), `${pod} is gone`);
  t.same(pidsInNetns(pod), [], 'nothing is listed for a namespace that is gone');
});
