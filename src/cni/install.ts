// Installs the CNI plugin onto a node (the DaemonSet's init step): copies the
// static binary into the CNI bin directory and chains `{"type": "patchwire"}`
// after the primary plugin in the network configuration the runtime uses.
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';

import { PACKAGE_ROOT } from '../paths.js';
import { writeAtomic } from '../util/serial.js';
import { DEFAULT_CNI_SOCKET } from './protocol.js';

export const PLUGIN_TYPE = 'patchwire';
export const DEFAULT_PLUGIN = path.join(PACKAGE_ROOT, 'cni', 'bin', PLUGIN_TYPE);
/** Suffix given to a single-plugin .conf once it is folded into a .conflist. */
export const FOLDED_SUFFIX = '.patchwire-folded';

export interface InstallOptions {
  binDir: string;
  confDir: string;
  plugin: string;
  socket: string;
  /** false: only copy the binary (Multus users reference the plugin themselves) */
  chain: boolean;
  /** wait this long for the primary plugin's configuration to appear, ms */
  waitMs: number;
  log: (m: string) => void;
}

export interface InstallResult {
  binary: string;
  /** the configuration file chained into ('' when not chaining) */
  config: string;
  /** what was done to it */
  action: 'appended' | 'updated' | 'unchanged' | 'converted' | 'none';
}

/** The configuration the runtime loads: the first .conf, .conflist or .json by name. */
export async function primaryConfig(confDir: string): Promise<string | null> {
  if (!existsSync(confDir)) return null;
  const names = (await readdir(confDir)).filter((n) => /\.(conflist|conf|json)$/.test(n) && !n.startsWith('.')).sort();
  return names.length ? path.join(confDir, names[0]!) : null;
}

type Json = Record<string, unknown>;

function parseConf(file: string, text: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file} is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${file} is not a JSON object`);
  return v as Json;
}

export async function installCni(o: InstallOptions): Promise<InstallResult> {
  if (!existsSync(o.plugin)) throw new Error(`plugin binary ${o.plugin} does not exist (build it with 'make -C cni')`);
  if (!existsSync(o.binDir)) throw new Error(`CNI bin directory ${o.binDir} does not exist`);
  const binary = path.join(o.binDir, PLUGIN_TYPE);
  // Copy then rename: a runtime may be executing the old binary right now.
  await writeAtomic(binary, await readFile(o.plugin), 0o755);
  o.log(`installed ${binary}`);
  if (!o.chain) return { binary, config: '', action: 'none' };

  let conf = await primaryConfig(o.confDir);
  const deadline = Date.now() + o.waitMs;
  let said = false;
  while (!conf && Date.now() < deadline) {
    if (!said) o.log(`waiting up to ${Math.round(o.waitMs / 1000)} s for the primary CNI plugin's configuration in ${o.confDir}`);
    said = true;
    await new Promise((r) => setTimeout(r, 1000));
    conf = await primaryConfig(o.confDir);
  }
  if (!conf) throw new Error(`no CNI network configuration (*.conflist, *.conf) in ${o.confDir} to chain patchwire into; install the primary plugin first, or use --no-chain with Multus`);
  const text = await readFile(conf, 'utf8');
  const parsed = parseConf(conf, text);
  const ours: Json = { type: PLUGIN_TYPE, ...(o.socket !== DEFAULT_CNI_SOCKET ? { socket: o.socket } : {}) };
  if (Array.isArray(parsed.plugins)) {
    const plugins = parsed.plugins as Json[];
    const i = plugins.findIndex((p) => p?.type === PLUGIN_TYPE);
    if (i >= 0 && JSON.stringify(plugins[i]) === JSON.stringify(ours)) {
      o.log(`${conf} already chains patchwire`);
      return { binary, config: conf, action: 'unchanged' };
    }
    if (i >= 0) plugins[i] = ours;
    else plugins.push(ours);
    await writeAtomic(conf, `${JSON.stringify(parsed, null, 2)}\n`);
    o.log(`${i >= 0 ? 'updated patchwire in' : 'chained patchwire into'} ${conf}`);
    return { binary, config: conf, action: i >= 0 ? 'updated' : 'appended' };
  }
  // A single-plugin .conf: fold it into a .conflist of the same name that
  // chains patchwire, and move the .conf out of the runtime's sight.
  if (typeof parsed.type !== 'string') throw new Error(`${conf} has neither "plugins" nor "type"; it is not a CNI configuration`);
  const { cniVersion, name, ...plugin } = parsed;
  const list = { cniVersion: cniVersion ?? '1.0.0', name: name ?? 'k8s-pod-network', plugins: [{ ...plugin }, ours] };
  const target = conf.replace(/\.(conf|json)$/, '.conflist');
  await writeAtomic(target, `${JSON.stringify(list, null, 2)}\n`);
  await rename(conf, `${conf}${FOLDED_SUFFIX}`);
  o.log(`folded ${conf} into ${target}, chaining patchwire`);
  return { binary, config: target, action: 'converted' };
}

/** Undoes installCni: removes the plugin from the chain (restoring a folded .conf) and the binary. */
export async function uninstallCni(o: Pick<InstallOptions, 'binDir' | 'confDir' | 'log'>): Promise<string[]> {
  const done: string[] = [];
  if (existsSync(o.confDir)) {
    for (const n of (await readdir(o.confDir)).sort()) {
      const file = path.join(o.confDir, n);
      if (n.endsWith(FOLDED_SUFFIX)) {
        const orig = file.slice(0, -FOLDED_SUFFIX.length);
        await rm(orig.replace(/\.(conf|json)$/, '.conflist'), { force: true });
        await rename(file, orig);
        done.push(`restored ${orig}`);
        continue;
      }
      if (!n.endsWith('.conflist')) continue;
      let parsed: Json;
      try {
        parsed = parseConf(file, await readFile(file, 'utf8'));
      } catch {
        continue;
      }
      if (!Array.isArray(parsed.plugins)) continue;
      const plugins = (parsed.plugins as Json[]).filter((p) => p?.type !== PLUGIN_TYPE);
      if (plugins.length === parsed.plugins.length) continue;
      parsed.plugins = plugins;
      await writeAtomic(file, `${JSON.stringify(parsed, null, 2)}\n`);
      done.push(`unchained patchwire from ${file}`);
    }
  }
  const binary = path.join(o.binDir, PLUGIN_TYPE);
  if (existsSync(binary)) {
    await rm(binary);
    done.push(`removed ${binary}`);
  }
  for (const d of done) o.log(d);
  return done;
}
