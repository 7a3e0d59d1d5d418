// Lab commands: up, down, status, exec, validate, ls.
import { parseArgs } from 'node:util';

import { down, execIn, status, type StatusReport, up } from '../lab/lab.js';
import { table } from '../lab/progress.js';
import { alive, listLabs, readLab, readSupervisor } from '../lab/state.js';
import { topologyMain } from './topology.js';
import { parseRtPriority, UsageError } from './usage.js';
import { parseBounded } from '../limits.js';
import { formatImpairment } from '../dataplane/impair.js';

export const LAB_HELP = `Lab commands (one machine; pods are network namespaces):
  patchwire up -f FILE [--name LAB] [--nodes N] [--capture-ring-bytes N] [--rt-priority N] [--plain-text] [--json]
      Build the lab in FILE (meshnet Topology objects, containerlab, netlab
      or KNE text format; see validate),
      or change a running lab to match an edited FILE (only the difference).
      Pods are placed round-robin on N emulated nodes (default 2), each running
      its own daemon; every link becomes a wire. --capture-ring-bytes sizes
      each wire end's capture ring (default 4 MiB; 0 turns capture off).
      --rt-priority N runs the daemons under SCHED_RR at priority N (1-99):
      frames no longer wait behind busy pods for a CPU (ping under iperf3
      load: p50 ~0.5 ms instead of ~5 ms), but each daemon wakes for every few
      frames and takes CPU from the pods (at 50k small frames/s about twice
      the CPU). Default 0: normal scheduling. Set when the lab is created.
      Each emulated node gets its own TLS identity (a lab CA, made at up,
      removed at down); --plain-text runs the data plane without TLS (the
      nodes share this host; it saves CPU, see the README's numbers).
  patchwire down LAB            remove every namespace, interface, process and file of the lab
  patchwire status LAB [--json] nodes, pods and wires with counters and drops
  patchwire exec LAB POD -- CMD [ARGS...]
                                run CMD in the pod's network namespace; exits with its code
  patchwire validate -f FILE [--json]
                                check a topology file without creating anything and print
                                what was understood: pods, links, segments, skipped, expanded
  patchwire graph -f FILE [--format mermaid|dot]
                                print the topology as a Mermaid flowchart (default) or DOT graph
  patchwire ls [--json]         labs on this machine
  patchwire console LAB VM      attach to a VM pod's serial console (Ctrl-] leaves; the whole
                                console output is kept in the lab, see status --json: console_log)
`;

function fmtStatus(s: StatusReport): string {
  let out = `lab ${s.name} (${s.file})\n\n`;
  out += table([
    ['NODE', 'PID', 'ADDRESS', 'HEALTH', 'RESTARTS'],
    ...s.nodes.map((n) => [n.name, String(n.pid), n.address, n.healthy ? (n.state_file || n.restoring ? 'ok (see status --json)' : 'ok') : n.crash_looping ? `CRASH-LOOPING (next restart in ${n.backoff_ms} ms)` : 'DOWN', String(n.restarts)]),
  ]);
  out += '\n';
  const sumDrops = (d: Record<string, number>): number => Object.values(d).reduce((a, b) => a + Number(b), 0);
  out += table([
    ['UID', 'A', 'B', 'NODES', 'STATE', 'CARRIER A/B', 'A->B FRAMES', 'A->B BYTES', 'B->A FRAMES', 'B->A BYTES', 'DROPS'],
    ...s.wires.map((w) => [
      String(w.uid),
      w.endpoints[0],
      w.endpoints[1],
      w.nodes[0] === w.nodes[1] ? w.nodes[0] : `${w.nodes[0]}-${w.nodes[1]}`,
      w.added_by ? `${w.state} (by hand)` : w.state,
      w.ends.map((e) => (e.carrier.on ? 'on' : e.carrier.cable === 'pulled' ? 'off (pulled)' : 'off')).join('/'),
      String(w.a_to_b.frames),
      String(w.a_to_b.bytes),
      String(w.b_to_a.frames),
      String(w.b_to_a.bytes),
      String(w.ends.reduce((n, e) => n + sumDrops(e.drops), 0)),
    ]),
  ]);
  if (s.segments.length) {
    out += '\nsegments (every frame a member sends reaches every other member)\n';
    out += table([
      ['UID', 'SEGMENT', 'MEMBER', 'NODE', 'STATE', 'CARRIER', 'SENT FRAMES', 'RECEIVED FRAMES', 'DROPS'],
      ...s.segments.flatMap((g) =>
        g.members.map((m, i) => [i === 0 ? String(g.uid) : '', i === 0 ? g.name : '', m.name, m.node, i === 0 ? g.state : '', m.carrier.on ? 'on' : m.carrier.cable === 'pulled' ? 'off (pulled)' : 'off', String(m.rx_frames), String(m.tx_frames), String(sumDrops(m.drops))]),
      ),
    ]);
  }
  if (s.vms.length) {
    out += '\n';
    out += table([['VM', 'NODE', 'QEMU', 'RESTARTS', 'NICS'], ...s.vms.map((v) => [v.name, v.node, v.running ? `running (pid ${v.pid})` : 'DOWN (being restarted)', String(v.restarts), v.nics.join(',')])]);
  }
  const restoring = s.wires.filter((w) => w.message && w.state !== 'up').map((w) => `  wire ${w.uid} ${w.state}: ${w.message}`);
  if (restoring.length) out += `\n${restoring.join('\n')}\n`;
  const impaired = s.wires.flatMap((w) => w.ends.filter((e) => e.impair));
  if (impaired.length) {
    out += '\nimpairments (out: what the end sends; in: what it receives)\n';
    out += table([['END', 'NODE', 'OUT', 'IN'], ...impaired.map((e) => [e.name, e.node, formatImpairment(e.impair?.out) || '-', formatImpairment(e.impair?.in) || '-'])]);
  }
  const off = [...s.wires.flatMap((w) => w.ends), ...s.segments.flatMap((g) => g.members)].filter((e) => !e.carrier.on).map((e) => `  ${e.name}: no carrier: ${e.carrier.reason}`);
  if (off.length) out += `\n${off.join('\n')}\n`;
  if (s.carrier_events.length) {
    out += '\nLatest carrier events (patchwire link events LAB for all):\n';
    out += table([['TIME', 'END', 'NODE', 'CARRIER', 'REASON'], ...s.carrier_events.slice(-10).map((e) => [e.time, e.end, e.node, e.carrier ? 'on' : 'off', e.reason])]);
  }
  return out;
}

export async function labMain(cmd: string, argv: string[]): Promise<number> {
  if (cmd === 'exec') {
    const dd = argv.indexOf('--');
    const head = dd >= 0 ? argv.slice(0, dd) : argv.slice(0, 2);
    const rest = dd >= 0 ? argv.slice(dd + 1) : argv.slice(2);
    if (head.includes('--help') || head.includes('-h')) {
      process.stdout.write(LAB_HELP);
      return 0;
    }
    if (head.length !== 2) throw new UsageError('usage: patchwire exec LAB POD -- CMD [ARGS...]');
    return execIn(head[0]!, head[1]!, rest);
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      file: { type: 'string', short: 'f' },
      name: { type: 'string' },
      nodes: { type: 'string' },
      'capture-ring-bytes': { type: 'string' },
      'rt-priority': { type: 'string', default: '0' },
      'plain-text': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      format: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(LAB_HELP);
    return 0;
  }
  switch (cmd) {
    case 'validate':
    case 'graph':
      return topologyMain(cmd, values);
    case 'up': {
      if (!values.file) throw new UsageError('up: -f FILE is required');
      let nodes: number | undefined;
      if (values.nodes !== undefined) {
        nodes = parseBounded('--nodes', values.nodes, 'nodes', (m) => new UsageError(`up: ${m}`));
      }
      let ring: number | undefined;
      if (values['capture-ring-bytes'] !== undefined) {
        ring = parseBounded('--capture-ring-bytes', values['capture-ring-bytes'], 'captureRingBytes', (m) => new UsageError(`up: ${m}`));
      }
      const rtPriority = parseRtPriority('up', values['rt-priority']!);
      const r = await up({ file: values.file, name: values.name, nodes, quiet: values.json, captureRingBytes: ring, rtPriority, plainText: values['plain-text'] });
      if (values.json) {
        process.stdout.write(JSON.stringify({ name: r.state.name, created: r.created, added: r.added, removed: r.removed, kept: r.kept, repaired: r.repaired, seconds: r.seconds }) + '\n');
        return 0;
      }
      const verb = r.created ? 'is up' : `reconciled: ${r.added} links added${r.repaired ? ` (${r.repaired} the daemons had lost)` : ''}, ${r.removed} removed, ${r.kept} untouched`;
      process.stdout.write(`lab ${r.state.name} ${verb} in ${r.seconds.toFixed(1)}s\n\n`);
      process.stdout.write(fmtStatus(await status(r.state.name)));
      process.stdout.write(`\nTry: patchwire exec ${r.state.name} ${r.state.pods[0]?.name ?? 'POD'} -- ip addr\n     patchwire down ${r.state.name}\n`);
      return 0;
    }
    case 'down': {
      const name = positionals[0];
      if (!name) throw new UsageError('down: LAB is required');
      await down(name);
      return 0;
    }
    case 'status': {
      const name = positionals[0];
      if (!name) throw new UsageError('status: LAB is required');
      const s = await status(name);
      process.stdout.write(values.json ? JSON.stringify(s, null, 1) + '\n' : fmtStatus(s));
      return 0;
    }
    case 'console': {
      const [name, vm] = positionals;
      if (!name || !vm) throw new UsageError('console: LAB and VM are required (patchwire console LAB VM)');
      return (await import('../lab/console.js')).attachConsole(name, vm);
    }
    case 'ls': {
      const labs = listLabs().map((name) => {
        let st;
        try {
          st = readLab(name)!;
        } catch (err) {
          // One damaged lab file must not hide the others.
          return { name, nodes: 0, pods: 0, links: 0, running: alive(readSupervisor(name)?.pid), file: `(damaged: ${(err as Error).message})` };
        }
        return { name, nodes: st.nodes.length, pods: st.pods.length, links: st.links.length, running: alive(readSupervisor(name)?.pid), file: st.file };
      });
      if (values.json) process.stdout.write(JSON.stringify({ labs }, null, 1) + '\n');
      else if (labs.length === 0) process.stdout.write('no labs\n');
      else
        process.stdout.write(
          table([['LAB', 'NODES', 'PODS', 'LINKS', 'RUNNING', 'FILE'], ...labs.map((l) => [l.name, String(l.nodes), String(l.pods), String(l.links), l.running ? 'yes' : 'no', l.file])]),
        );
      return 0;
    }
    default:
      throw new UsageError(`unknown command '${cmd}'`);
  }
}
