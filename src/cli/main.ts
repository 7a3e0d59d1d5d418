// patchwire command line: dispatches to one module per command.
import { daemonMain, DAEMON_HELP } from './daemon.js';
import { UsageError } from './usage.js';
import { WIRE_HELP, wireMain } from './wire.js';

const HELP = `patchwire: virtual patch cables for network labs

Usage: patchwire COMMAND [options]

Commands:
  daemon    run a wire daemon (one per node)
  wire      add, remove or list the wires of a daemon
  health    show a daemon's health and peers
  help      this text

Run 'patchwire COMMAND --help' for the options of a command.

${DAEMON_HELP}
${WIRE_HELP}`;

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'daemon':
      return daemonMain(rest);
    case 'wire':
      return wireMain(rest);
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
  process.stderr.write(`patchwire: ${msg}\n`);
  process.exit(err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 2 : 1);
});
