// patchwire command line: dispatches to one module per command.
import { TopologyErrors } from '../topology/model.js';
import { superviseMain } from '../lab/supervisor.js';
import { daemonMain, DAEMON_HELP } from './daemon.js';
import { CAPTURE_HELP, captureMain } from './capture.js';
import { LAB_HELP, labMain } from './lab.js';
import { CNI_HELP, cniMain } from './cni.js';
import { UsageError } from './usage.js';
import { WIRE_HELP, wireMain } from './wire.js';

const HELP = `patchwire: virtual patch cables for network labs

Usage: patchwire COMMAND [options]

Commands:
  up        build a lab from a topology file, or reconcile a running one
  down      tear a lab down, leaving nothing behind
  status    a lab's nodes and wires, with counters and drops
  exec      run a command inside a pod of a lab
  validate  check a topology file and print what it says
  graph     print a topology file as Mermaid or DOT
  ls        list labs on this machine
  capture   capture the frames of wire ends as pcapng (ring, then live)
  daemon    run a wire daemon (one per node; --cluster for Kubernetes)
  cni       install or uninstall the CNI plugin on a node
  wire      add, remove or list the wires of a daemon
  health    show a daemon's health and peers
  help      this text

Run 'patchwire COMMAND --help' for the options of a command.

${LAB_HELP}
${CAPTURE_HELP}
${DAEMON_HELP}
${WIRE_HELP}
${CNI_HELP}`;

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'up':
    case 'down':
    case 'status':
    case 'exec':
    case 'validate':
    case 'graph':
    case 'ls':
      process.exitCode = await labMain(cmd, rest);
      return;
    case 'capture':
      process.exitCode = await captureMain(rest);
      return;
    case 'supervise':
      return superviseMain(rest);
    case 'daemon':
      return daemonMain(rest);
    case 'wire':
      return wireMain(rest);
    case 'cni':
      process.exitCode = await cniMain(rest);
      return;
    case 'health':
      return wireMain(['health', ...rest]);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP);
      return;
    default:
      throw new UsageError(`unknown command '${cmd}'; see 'patchwire help'`);
  }
}

main(process.argv.slice(2)).catch((err: Error & { code?: unknown; details?: string }) => {
  const msg = err.details ?? err.message;
  if (err instanceof TopologyErrors) {
    process.stderr.write(`patchwire: ${err.errors.length} error${err.errors.length === 1 ? '' : 's'} in the topology:\n${msg}\n`);
    process.exit(1);
  }
  process.stderr.write(`patchwire: ${msg}\n`);
  process.exit(err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 2 : 1);
});
