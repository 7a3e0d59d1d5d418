// `patchwire capture LAB POD/INTF [POD/INTF ...]`: one time-ordered capture
// of wire ends on any nodes of a lab, to stdout (pipe it into
// `wireshark -k -i -`) or a file.
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';

import type { CaptureFormat, CaptureInterface } from '../capture/format.js';
import { mergeCapture, type MergeSource } from '../capture/merge.js';
import { ControlClient } from '../control/client.js';
import { LabError } from '../lab/lab.js';
import { labDir, readLab } from '../lab/state.js';
import { LAB_TOKEN_FILE, readTokenFile } from '../capture/auth.js';
import { UsageError } from './usage.js';
import { parseBounded } from '../limits.js';

export const CAPTURE_HELP = `patchwire capture LAB POD/INTF [POD/INTF ...] [options]

Captures every frame of the named wire ends, on whichever nodes they are, as
one time-ordered pcapng stream: first what the always-on capture rings hold
(frames from before you asked), then, with --follow, live frames.

Options:
  -w FILE              write to FILE instead of stdout
  --follow             keep streaming live frames (until --count, --duration or Ctrl-C)
  --count N            stop after N frames
  --duration S         stop after S seconds
  --format F           pcapng (default) or pcap
  --json               print a JSON summary on stderr at the end

A lab's capture needs the lab's token (written by 'patchwire up' to
/run/patchwire/labs/LAB/capture.token, mode 0600): only the lab's owner can
read it. The same token opens the daemons' HTTP capture port:
  curl -sN -H "Authorization: Bearer $(cat /run/patchwire/labs/demo/capture.token)" \
      'http://NODE-IP:8080/capture?wire=r1/eth1&follow=1' | wireshark -k -i -

Directions (pcapng epb_flags) are those of the pod's interface: outbound =
the pod sent it, inbound = the wire delivered it to the pod.

  patchwire capture demo r1/eth1 --follow | wireshark -k -i -
  patchwire capture demo r1/eth1 r2/eth2 -w both.pcapng

Without a lab (cluster mode, or a daemon started by hand), name the daemon:
  patchwire capture --control unix:///run/patchwire/NODE.sock NS/POD/INTF ...
  kubectl exec -n patchwire-system PATCHWIRE-POD -- patchwire capture \
      --control unix:///run/patchwire/NODE.sock lab1/r1/eth1 > r1-eth1.pcapng
`;

export async function captureMain(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      write: { type: 'string', short: 'w' },
      follow: { type: 'boolean', default: false },
      count: { type: 'string' },
      duration: { type: 'string' },
      format: { type: 'string', default: 'pcapng' },
      json: { type: 'boolean', default: false },
      control: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(CAPTURE_HELP);
    return 0;
  }
  const [lab, ...repeated] = values.control ? ['', ...positionals] : positionals;
  // A wire end named twice is captured once.
  const names = [...new Set(repeated)];
  if (values.control === undefined && !lab) throw new UsageError(`capture: name a lab and at least one POD/INTF\n\n${CAPTURE_HELP}`);
  if (names.length === 0) throw new UsageError(`capture: name at least one wire end (POD/INTF)\n\n${CAPTURE_HELP}`);
  const format = values.format as CaptureFormat;
  if (format !== 'pcapng' && format !== 'pcap') throw new UsageError(`capture: --format '${values.format}' is not pcapng or pcap`);
  const usage = (m: string): UsageError => new UsageError(`capture: ${m}`);
  const count = values.count === undefined ? 0 : parseBounded('--count', values.count, 'captureCount', usage);
  const duration = values.duration === undefined ? 0 : parseBounded('--duration', values.duration, 'captureDurationSeconds', usage, { fractions: true });

  const byNode = new Map<string, MergeSource>();
  const interfaces: CaptureInterface[] = [];
  const clients: ControlClient[] = [];
  if (values.control) {
    // One daemon named directly: it reports unknown wire ends itself.
    const client = new ControlClient(values.control);
    clients.push(client);
    byNode.set(values.control, { node: values.control, client, wires: names.map((name, id) => ({ name, id })) });
    names.forEach((name, id) => interfaces.push({ id, name, description: `daemon ${values.control}` }));
  } else {
    await collectLabSources(lab!, names, byNode, interfaces, clients);
  }


  const out: Writable = values.write ? createWriteStream(values.write) : process.stdout;
  const tty = process.stderr.isTTY === true && !values.json;
  let lastShown = 0;
  const m = mergeCapture([...byNode.values()], {
    format,
    follow: values.follow,
    count,
    durationMs: duration * 1000,
    interfaces,
    out,
    onProgress: (frames, bytes) => {
      const now = Date.now();
      if (tty && now - lastShown > 200) {
        lastShown = now;
        process.stderr.write(`\r\x1b[2K${frames} frames, ${bytes} bytes`);
      }
    },
  });
  // Wireshark closing the pipe, or Ctrl-C, ends the capture cleanly.
  out.on('error', () => m.stop());
  process.once('SIGINT', () => m.stop());
  process.once('SIGTERM', () => m.stop());
  try {
    const r = await m.done;
    await new Promise<void>((res) => (out === process.stdout ? res() : out.end(res)));
    if (tty) process.stderr.write('\r\x1b[2K');
    if (values.json) process.stderr.write(JSON.stringify(r) + '\n');
    else if (tty || values.write) process.stderr.write(`captured ${r.frames} frames, ${r.bytes} bytes${r.drops ? `; ${r.drops} live frames lost to slow reading` : ''}\n`);
    return 0;
  } finally {
    for (const c of clients) c.close();
  }
}

/**
 * The daemons holding the named ends of a lab, one merge source per node.
 * Every wire a lab daemon holds counts, however it was added: the lab file's
 * links, host ends (held by the other end's node), and wires added by hand
 * (`patchwire wire add`, the control API).
 */
async function collectLabSources(lab: string, names: string[], byNode: Map<string, MergeSource>, interfaces: CaptureInterface[], clients: ControlClient[]): Promise<void> {
  const state = readLab(lab);
  if (!state) throw new LabError(`no lab named '${lab}' (see 'patchwire ls')`);
  let token: string;
  try {
    token = readTokenFile(path.join(labDir(lab), LAB_TOKEN_FILE));
  } catch (err) {
    throw new LabError(`cannot read the capture token of lab ${lab}: ${(err as Error).message} (only the lab's owner may capture it)`);
  }
  const nodeClients = new Map(state.nodes.map((n) => [n.name, new ControlClient(n.control)]));
  clients.push(...nodeClients.values());
  const ends = new Map<string, string>();
  await Promise.all(
    [...nodeClients].map(async ([node, c]) => {
      for (const w of await c.listWires().catch(() => [])) for (const e of w.ends) ends.set(e.name, node);
    }),
  );
  // Ends of the lab file a daemon does not hold right now (restarting): where they would be.
  for (const l of state.links) {
    for (const [e, other] of [
      [l.a, l.b],
      [l.b, l.a],
    ] as const) {
      const name = `${e.kind === 'host' ? 'host' : e.pod}/${e.intf}`;
      const pod = state.pods.find((p) => p.name === (e.kind === 'host' ? other.pod : e.pod));
      if (!ends.has(name) && pod) ends.set(name, pod.node);
    }
  }
  names.forEach((name, id) => {
    const nodeName = ends.get(name);
    if (!nodeName) throw new LabError(`lab ${lab} has no wire end '${name}' (ends: ${[...ends.keys()].sort().join(', ')})`);
    let src = byNode.get(nodeName);
    if (!src) {
      src = { node: nodeName, client: nodeClients.get(nodeName)!, wires: [], token };
      byNode.set(nodeName, src);
    }
    src.wires.push({ name, id });
    interfaces.push({ id, name, description: `node ${nodeName}, lab ${lab}` });
  });
}
