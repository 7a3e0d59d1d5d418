// `patchwire daemon`: run one wire daemon in the foreground.
import { parseArgs } from 'node:util';

import { controlServiceFor } from '../control/service.js';
import { Daemon, type TlsFiles } from '../daemon/daemon.js';
import { rxSettings } from '../endpoint/endpoint.js';
import { UsageError } from './usage.js';

export const DAEMON_HELP = `patchwire daemon --node NAME --listen HOST:PORT [options]

Runs a wire daemon: it owns the endpoints of its node's wires, streams their
frames to the peer daemons over gRPC and serves the control API.

Options:
  --node NAME          this node's name (peers address us by it)
  --lab NAME           lab this daemon serves; peers of other labs are refused (default: default)
  --listen HOST:PORT   data-plane listener for peer daemons
  --control ADDR       control API address (default unix:///run/patchwire/NODE.sock)
  --state FILE         where desired wires are kept across restarts (default: none)
  --tls-cert FILE      certificate for mutual TLS with peers (with --tls-key, --tls-ca)
  --tls-key FILE
  --tls-ca FILE
  --tls-server-name N  name the peers' certificates carry (default patchwire)
  --insecure           plain-text data plane (only for isolated labs)
  --http HOST:PORT     serve packet capture over HTTP: GET /capture?wire=POD/INTF[&follow=1][&format=pcap]
  --capture-ring-bytes N
                       capture ring per wire end, bytes (default 4194304); 0 turns the rings off
  --rx MODE            how AF_PACKET endpoints receive: mmsg (recvmmsg, default) or ring (TPACKET_V3)
  --capture-dir DIR    also write every wire end to pcapng files in DIR, rotated:
  --capture-file-bytes N   start a new file at N bytes (default 16777216)
  --capture-files K        keep K files per wire end (default 8)
`;

export async function daemonMain(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      node: { type: 'string' },
      lab: { type: 'string', default: 'default' },
      listen: { type: 'string' },
      control: { type: 'string' },
      state: { type: 'string', default: '' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-server-name': { type: 'string', default: 'patchwire' },
      insecure: { type: 'boolean', default: false },
      http: { type: 'string', default: '' },
      'capture-ring-bytes': { type: 'string' },
      'capture-dir': { type: 'string' },
      rx: { type: 'string', default: 'mmsg' },
      'capture-file-bytes': { type: 'string', default: String(16 << 20) },
      'capture-files': { type: 'string', default: '8' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(DAEMON_HELP);
    return;
  }
  if (!values.node) throw new UsageError('daemon: --node is required');
  if (!values.listen) throw new UsageError('daemon: --listen HOST:PORT is required');
  const tlsParts = [values['tls-cert'], values['tls-key'], values['tls-ca']];
  let tls: TlsFiles | null = null;
  if (tlsParts.some(Boolean)) {
    if (!tlsParts.every(Boolean)) throw new UsageError('daemon: --tls-cert, --tls-key and --tls-ca go together');
    tls = { cert: values['tls-cert']!, key: values['tls-key']!, ca: values['tls-ca']!, serverName: values['tls-server-name']! };
  } else if (!values.insecure) {
    throw new UsageError('daemon: give --tls-cert/--tls-key/--tls-ca, or --insecure for a plain-text data plane');
  }
  let ringBytes: number | undefined;
  if (values['capture-ring-bytes'] !== undefined) {
    ringBytes = Number(values['capture-ring-bytes']);
    if (!Number.isSafeInteger(ringBytes) || ringBytes < 0) throw new UsageError(`daemon: --capture-ring-bytes '${values['capture-ring-bytes']}' is not a byte count`);
  }
  if (values.rx !== 'mmsg' && values.rx !== 'ring') throw new UsageError(`daemon: --rx '${values.rx}' is not mmsg or ring`);
  rxSettings.mode = values.rx;
  let captureFiles;
  if (values['capture-dir']) {
    const maxBytes = Number(values['capture-file-bytes']);
    const maxFiles = Number(values['capture-files']);
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 1024) throw new UsageError(`daemon: --capture-file-bytes '${values['capture-file-bytes']}' must be at least 1024`);
    if (!Number.isSafeInteger(maxFiles) || maxFiles < 1) throw new UsageError(`daemon: --capture-files '${values['capture-files']}' must be at least 1`);
    captureFiles = { dir: values['capture-dir'], maxBytes, maxFiles };
  }
  const daemon = new Daemon({
    captureFiles,
    http: values.http,
    captureRingBytes: ringBytes,
    node: values.node,
    lab: values.lab!,
    listen: values.listen,
    control: values.control ?? `unix:///run/patchwire/${values.node}.sock`,
    state: values.state!,
    tls,
  });
  await daemon.start(controlServiceFor);
  const stop = (): void => {
    void daemon.shutdown().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
