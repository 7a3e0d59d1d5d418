// `patchwire cni install|uninstall`: put the CNI plugin onto a node and chain
// it after the primary plugin (the DaemonSet's init step runs this), or undo it.
import { parseArgs } from 'node:util';

import { DEFAULT_PLUGIN, installCni, uninstallCni } from '../cni/install.js';
import { DEFAULT_CNI_SOCKET } from '../cni/protocol.js';
import { UsageError } from './usage.js';
import { parseBounded } from '../limits.js';

export const CNI_HELP = `patchwire cni install [options]
patchwire cni uninstall [options]

install copies the CNI plugin into the CNI bin directory and chains
{"type": "patchwire"} after the primary plugin in the first network
configuration of the conf directory (the one the runtime uses). A
single-plugin .conf is folded into a .conflist. Running it again changes
nothing. uninstall removes both again.

Options:
  --bin-dir DIR     CNI plugin directory (default /opt/cni/bin)
  --conf-dir DIR    CNI configuration directory (default /etc/cni/net.d)
  --plugin FILE     plugin binary to install (default: the one built in cni/bin)
  --socket PATH     the daemon's CNI socket, if not ${DEFAULT_CNI_SOCKET}
  --no-chain        only copy the binary (with Multus, reference it in a
                    NetworkAttachmentDefinition instead)
  --wait SECONDS    wait this long for the primary plugin's configuration (default 0)
  --json            print what was done as JSON
`;

export async function cniMain(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      'bin-dir': { type: 'string', default: '/opt/cni/bin' },
      'conf-dir': { type: 'string', default: '/etc/cni/net.d' },
      plugin: { type: 'string', default: DEFAULT_PLUGIN },
      socket: { type: 'string', default: DEFAULT_CNI_SOCKET },
      'no-chain': { type: 'boolean', default: false },
      wait: { type: 'string', default: '0' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || sub === '--help' || sub === '-h' || sub === undefined) {
    process.stdout.write(CNI_HELP);
    return sub === undefined && !values.help ? 2 : 0;
  }
  const log = (m: string): void => {
    if (!values.json) process.stderr.write(`patchwire cni: ${m}\n`);
  };
  if (sub === 'install') {
    const wait = parseBounded('--wait', values.wait!, 'cniWaitSeconds', (m) => new UsageError(`cni install: ${m}`), { fractions: true });
    const r = await installCni({
      binDir: values['bin-dir']!,
      confDir: values['conf-dir']!,
      plugin: values.plugin!,
      socket: values.socket!,
      chain: !values['no-chain'],
      waitMs: wait * 1000,
      log,
    });
    if (values.json) process.stdout.write(`${JSON.stringify(r)}\n`);
    return 0;
  }
  if (sub === 'uninstall') {
    const done = await uninstallCni({ binDir: values['bin-dir']!, confDir: values['conf-dir']!, log });
    if (values.json) process.stdout.write(`${JSON.stringify({ done })}\n`);
    else if (!done.length) log('nothing to undo');
    return 0;
  }
  throw new UsageError(`cni: unknown subcommand '${sub}' (install or uninstall)`);
}
