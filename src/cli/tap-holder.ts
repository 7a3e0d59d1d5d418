// `patchwire tap-holder`: in a cluster, keeps the carrier of the node daemon's
// taps while the daemon restarts (src/endpoint/tap-holder.ts). It runs as its
// own container of the DaemonSet's pod: a container restart kills every
// process of the container, so a holder inside the daemon's would die with it.
import { parseArgs } from 'node:util';

import { stateFileTapEnds } from '../daemon/state-tap-ends.js';
import { TapHolder } from '../endpoint/tap-holder.js';
import { UsageError } from './usage.js';

export const TAP_HOLDER_HELP = `patchwire tap-holder --state FILE [options]

Keeps the carrier of a node's tap endpoints while its wire daemon restarts
(crash, kill -9, container restart, upgrade). The kernel takes a tap's
carrier when its last open queue closes; this process holds one more
(detached) queue of every tap end listed in the daemon's state file, so a
daemon restarted within the carrier hold time flaps nothing. Follows the file
as the daemon rewrites it. Run it beside the daemon, not in the same
container (deploy/daemonset.yaml), with the same host network, host PID and
state directory, CAP_NET_ADMIN, CAP_SYS_ADMIN and /dev/net/tun.

Options:
  --state FILE         the daemon's state file (its --state; default /run/patchwire/state.json)
  --resync-seconds N   look again this often besides when the file changes, for
                       taps re-created under the same name (default 10; 0: never)
`;

export async function tapHolderMain(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      state: { type: 'string', default: '/run/patchwire/state.json' },
      'resync-seconds': { type: 'string', default: '10' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(TAP_HOLDER_HELP);
    return;
  }
  const file = values.state!;
  if (file === '') throw new UsageError('tap-holder: --state FILE must name the daemon\'s state file');
  const resync = Number(values['resync-seconds']);
  if (!Number.isFinite(resync) || resync < 0 || resync > 3600) throw new UsageError(`tap-holder: --resync-seconds '${values['resync-seconds']}' must be from 0 to 3600`);
  const log = (m: string): void => void process.stderr.write(`[tap-holder] ${m}\n`);
  // The holder's own prefix is for a lab supervisor's log; this one says it already.
  const holder = new TapHolder(stateFileTapEnds(file, log), (m) => log(m.replace(/^tap holder: /, '')), resync * 1000);
  log(`holding the taps listed in ${file}`);
  holder.start();
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      // Releasing the holds takes the carrier of taps whose daemon is not running: the node is going away.
      holder.stop();
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
