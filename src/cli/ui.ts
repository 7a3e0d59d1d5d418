// `patchwire ui LAB`: serves the lab's browser view (src/ui/server.ts) until interrupted.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { LAB_TOKEN_FILE, readTokenFile } from '../capture/auth.js';
import { labDir, readLab } from '../lab/state.js';
import { UiServer } from '../ui/server.js';
import { UsageError } from './usage.js';

export const UI_HELP = `Browser view:
  patchwire ui LAB [--listen 127.0.0.1:8099] [--open] [--json]
      Serves a page with the lab drawn as a graph: wires coloured by carrier
      and cable, live rates and drops; select wire ends to download their
      capture rings as one pcapng or to copy the command that streams them
      into Wireshark; a live packet list of a wire; pull and plug cables and
      set impairments (each asks for confirmation). The page and its API need
      the lab's capture token (/run/patchwire/labs/LAB/capture.token): the
      printed URL carries it after '#' (never sent to a server, kept in the
      tab only). --listen 127.0.0.1:0 picks a free port. --open starts the
      desktop's browser (xdg-open). --json prints {"url": ...} on stdout.
      Stops on Ctrl-C.
`;

export async function uiMain(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { listen: { type: 'string', default: '127.0.0.1:8099' }, open: { type: 'boolean', default: false }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(UI_HELP);
    return 0;
  }
  const lab = positionals[0];
  if (!lab || positionals.length > 1) throw new UsageError('usage: patchwire ui LAB [--listen HOST:PORT] [--open]');
  if (!readLab(lab)) throw new UsageError(`no lab named '${lab}' (see 'patchwire ls')`);
  const tokenFile = path.join(labDir(lab), LAB_TOKEN_FILE);
  let token: string;
  try {
    token = readTokenFile(tokenFile);
  } catch (err) {
    throw new UsageError(`cannot read the capture token of lab ${lab}: ${(err as Error).message} (only the lab's owner may open its page)`);
  }
  const ui = new UiServer(lab, () => readLab(lab), token, tokenFile, (m) => process.stderr.write(`patchwire ui: ${m}\n`));
  let base: string;
  try {
    base = await ui.listen(values.listen!);
  } catch (err) {
    ui.close();
    throw err;
  }
  const url = `${base}#token=${encodeURIComponent(token)}`;
  if (values.json) process.stdout.write(`${JSON.stringify({ url, base })}\n`);
  else process.stdout.write(`lab ${lab}: open ${url}\n(the part after '#' is the lab's token; Ctrl-C stops the page)\n`);
  if (values.open) {
    const child = spawn('xdg-open', [url], { stdio: 'ignore', detached: true });
    child.on('error', (err) => process.stderr.write(`patchwire ui: cannot start a browser (${err.message}); open the URL above\n`));
    child.unref();
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  ui.close();
  return 0;
}
