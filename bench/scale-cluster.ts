// bench:scale --cluster: the same ring with chords in cluster mode. Two
// emulated nodes run real daemons in --cluster mode against the STAND-IN API
// server of the tests (test/helpers/apiserver.ts: no real API server runs on
// these machines; it speaks the API's HTTP and watch protocol), and a tiny
// kubelet runs the real CNI plugin binary for each pod. Pods alternate
// between the nodes, so each node holds `size` link ends.
//   up           seconds from the first CNI ADD until the last returned (the
//                pods' sandboxes and Pod objects exist before: the kubelet
//                makes them before it calls the plugin)
//   first frame  seconds from the first CNI ADD until every wire carried a
//                frame both ways: the node is fully plumbed
//   down         seconds for every pod's CNI DEL and sandbox removal, until
//                both daemons hold no wire
//   rss/end, idle cpu  as in lab mode, for the two daemons
import { execFileSync } from 'node:child_process';

import { parseAllDocuments } from 'yaml';

import { TestCluster, type ClusterNode, type TestPod } from '../test/helpers/cluster.js';
import { ringWithChords } from '../test/helpers/gen.js';
import { waitFor } from '../test/helpers/testnet.js';
import { cpuSeconds, probeAll, round, type Row, rssKb } from './scale-common.js';

const NAMESPACE = 'scale';
/** CNI calls in flight at once per node, as a kubelet starting many pods has. */
const CNI_PARALLEL = 8;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` over `items`, at most `limit` at once. */
async function inParallel<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

async function daemonPids(nodes: ClusterNode[]): Promise<number[]> {
  return Promise.all(nodes.map(async (n) => (await n.client.health(2000)).pid));
}

async function wireCount(nodes: ClusterNode[]): Promise<number> {
  let n = 0;
  for (const node of nodes) n += (await node.client.listWires()).length;
  return n;
}

export async function measureCluster(size: number, o: { idleSeconds: number; settleMs: number; log: (m: string) => void }): Promise<Row> {
  const pods = size / 2;
  const { yaml, links } = ringWithChords(pods);
  const cluster = new TestCluster('pwnbk');
  try {
    await cluster.start();
    // Files for the nodes' identities: the signer's CSR round trip is not what is measured.
    // The deployed resync period (the tests' helpers use 2 s).
    const extra = ['--resync-seconds', '10'];
    const nodes = [await cluster.addNode('n1', extra, undefined, 'files'), await cluster.addNode('n2', extra, undefined, 'files')];
    await waitFor('both daemons ready', async () => (await cluster.ready(nodes[0]!)).code === 200 && (await cluster.ready(nodes[1]!)).code === 200, 30000);
    const pids = await daemonPids(nodes);
    await sleep(o.settleMs);
    const baselineKb = pids.reduce((a, pid) => a + rssKb(pid), 0);

    for (const doc of parseAllDocuments(yaml)) {
      const r = await cluster.createTopology(NAMESPACE, doc.toJSON() as Record<string, unknown>);
      if (r.status !== 201) throw new Error(`Topology rejected: ${JSON.stringify(r.body)}`);
    }
    const names = [...new Set(links.flatMap((l) => [l.a, l.b]).map((e) => e.split(':')[0]!))].sort();
    o.log(`cluster, ${size} links, ${pods} pods: sandboxes and Pod objects`);
    const started: TestPod[] = [];
    for (let i = 0; i < names.length; i++) started.push((await cluster.startPod(i % 2 === 0 ? 'n1' : 'n2', NAMESPACE, names[i]!, { cni: false })).pod);
    const netnsOf = new Map(started.map((p) => [p.name, `/var/run/netns/${p.netns}`]));

    o.log(`cluster, ${size} links: CNI ADD of ${pods} pods, ${CNI_PARALLEL} at a time per node`);
    const t0 = Date.now();
    await Promise.all(
      ['n1', 'n2'].map((short) =>
        inParallel(started.filter((p) => p.node.short === short), CNI_PARALLEL, async (p) => {
          const r = await cluster.cni('ADD', p);
          if (r.code !== 0) throw new Error(`CNI ADD of ${p.name}: ${r.stdout}${r.stderr}`);
        }),
      ),
    );
    const upS = (Date.now() - t0) / 1000;
    o.log(`cluster, ${size} links: probing every wire both ways`);
    const probe = await probeAll((pod) => netnsOf.get(pod)!, links, 120000).catch(async (err: Error) => {
      // Where the frames of a link that carried none went: both daemons'
      // view of its wire and the kernel's of its interfaces.
      const uid = Number(/: (\d+)\//.exec(err.message)?.[1]);
      for (const l of links.filter((x) => x.uid === uid)) {
        const names = [l.a, l.b].map((e) => `${NAMESPACE}/${e.replace(':', '/')}`);
        for (const n of nodes) {
          const w = (await n.client.listWires()).find((x) => x.ends.some((e) => names.includes(e.name)));
          o.log(`${n.short}: wire of link ${uid}: ${JSON.stringify(w)}`);
        }
        for (const e of [l.a, l.b]) {
          const [pod, intf] = e.split(':') as [string, string];
          try {
            o.log(`${e}: ${execFileSync('ip', ['-n', started.find((p) => p.name === pod)!.netns, '-s', '-d', 'link', 'show', intf], { stdio: ['ignore', 'pipe', 'pipe'] }).toString()}`);
          } catch (ipErr) {
            o.log(`${e}: ${(ipErr as Error).message.split('\n')[0]}`);
          }
        }
      }
      throw err;
    });
    if (probe.reopened.length) o.log(`cluster, ${size} links: probe sockets opened again after ${probe.reopened.length > 1 ? 'they' : 'it'} saw nothing for 10 s: ${probe.reopened.join(', ')}`);
    const firstFrameS = (probe.at - t0) / 1000;
    await sleep(o.settleMs);
    const rssNow = pids.reduce((a, pid) => a + rssKb(pid), 0);
    o.log(`cluster, ${size} links: idling ${o.idleSeconds} s`);
    const c0 = cpuSeconds(pids);
    const w0 = Date.now();
    await sleep(o.idleSeconds * 1000);
    const cpu = (100 * (cpuSeconds(pids) - c0)) / ((Date.now() - w0) / 1000);

    o.log(`cluster, ${size} links: CNI DEL of every pod`);
    const t1 = Date.now();
    const delMs: number[] = [];
    await Promise.all(
      ['n1', 'n2'].map((short) =>
        inParallel(started.filter((p) => p.node.short === short), CNI_PARALLEL, async (p) => {
          const tt = Date.now();
          const r = await cluster.deletePod(NAMESPACE, p.name);
          delMs.push(Date.now() - tt);
          if (r.code !== 0) throw new Error(`CNI DEL of ${p.name}: ${r.stdout}${r.stderr}`);
        }),
      ),
    );
    await waitFor('both daemons to hold no wire', async () => (await wireCount(nodes)) === 0, 60000, 100);
    const downS = (Date.now() - t1) / 1000;
    delMs.sort((a, b) => a - b);
    o.log(`deletePod ms p50 ${delMs[delMs.length >> 1]} p90 ${delMs[Math.floor(delMs.length * 0.9)]} max ${delMs.at(-1)}`);
    return {
      links: size,
      pods,
      up_s: round(upS),
      first_frame_s: round(firstFrameS),
      down_s: round(downS),
      baseline_rss_mb: round(baselineKb / 1024),
      rss_mb: round(rssNow / 1024),
      rss_per_end_kb: round((rssNow - baselineKb) / (2 * size)),
      idle_cpu_pct: round(cpu),
      idle_cpu_pct_daemons: round(cpu),
    };
  } finally {
    await cluster.cleanup();
  }
}
