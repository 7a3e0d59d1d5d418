// patchwire command line: dispatches to one module per command.
import { TopologyErrors } from '../topology/model.js';
import { UsageError } from './usage.js';

// Each command's module is loaded only when that command runs: the CLI is
// started for every lab step and by every daemon, and loading all of them
// (the Kubernetes client above all) took most of a second each time.
const HELP = `patchwire: virtual patch cables for network labs

Usage: patchwire COMMAND [options]

Commands:
  up        build a lab from a topology file, or reconcile a running one
  down      tear a lab down, leaving nothing behind
  status    a lab's nodes and wires, with counters and drops
  exec      run a command inside a pod of a lab
  console   attach to a VM pod's serial console
  validate  check a topology file and print what it says
  graph     print a topology file as Mermaid or DOT
  ls        list labs on this machine
  link      a lab link: pull, plug or flap its cable, carrier events; set or reset impairments
  capture   capture the frames of wire ends as pcapng (ring, then live)
  map       a lab's live link map: nodes, pods, wires, state, rates, drops
  ui        a lab's browser view: live map, capture, packet list, cable and impairments
  daemon    run a wire daemon (one per node; --cluster for Kubernetes)
  cni       install or uninstall the CNI plugin on a node
  tap-holder  keep a node's taps' carrier while its daemon restarts (cluster)
  wire      add, remove or list the wires of a daemon
  health    show a daemon's health and peers
  help      this text

Run 'patchwire COMMAND --help' for the options of a command.
`;

async function fullHelp(): Promise<string> {
  const [lab, capture, daemon, wire, cni, signer, map, link, impair, ui, tapHolder] = await Promise.all([import('./lab.js'), import('./capture.js'), import('./daemon.js'), import('./wire.js'), import('./cni.js'), import('./signer.js'), import('./map.js'), import('./link.js'), import('./impair.js'), import('./ui.js'), import('./tap-holder.js')]);
  return `${HELP}\n${lab.LAB_HELP}\n${link.LINK_HELP}\n${impair.IMPAIR_HELP}\n${capture.CAPTURE_HELP}\n${map.MAP_HELP}\n${ui.UI_HELP}\n${daemon.DAEMON_HELP}\n${wire.WIRE_HELP}\n${cni.CNI_HELP}\n${tapHolder.TAP_HOLDER_HELP}\n${signer.SIGNER_HELP}`;
}

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
    case 'console':
      process.exitCode = await (await import('./lab.js')).labMain(cmd, rest);
      return;
    case 'link': {
      // One command group: cable and carrier (link.ts), impairments (impair.ts).
      const [sub, ...args] = rest;
      if (sub === 'set' || sub === 'reset') {
        process.exitCode = await (await import('./impair.js')).impairMain(sub, args);
        return;
      }
      if (sub === '--help' || sub === '-h' || sub === undefined) {
        const [link, impair] = await Promise.all([import('./link.js'), import('./impair.js')]);
        process.stdout.write(`${link.LINK_HELP}\n${impair.IMPAIR_HELP}`);
        return;
      }
      process.exitCode = await (await import('./link.js')).linkMain(sub, args);
      return;
    }
    case 'capture':
      process.exitCode = await (await import('./capture.js')).captureMain(rest);
      return;
    case 'map':
      process.exitCode = await (await import('./map.js')).mapMain(rest);
      return;
    case 'ui':
      process.exitCode = await (await import('./ui.js')).uiMain(rest);
      return;
    case 'supervise':
      return (await import('../lab/supervisor.js')).superviseMain(rest);
    case 'daemon':
      return (await import('./daemon.js')).daemonMain(rest);
    case 'wire':
      return (await import('./wire.js')).wireMain(rest);
    case 'cni':
      process.exitCode = await (await import('./cni.js')).cniMain(rest);
      return;
    case 'tap-holder':
      return (await import('./tap-holder.js')).tapHolderMain(rest);
    case 'signer':
      return (await import('./signer.js')).signerMain(rest);
    case 'health':
      return (await import('./wire.js')).wireMain(['health', ...rest]);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(await fullHelp());
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
