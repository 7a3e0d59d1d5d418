// Drives the patchwire CLI for lab tests, and checks a lab left nothing behind.
import { readdirSync, readFileSync, existsSync } from 'node:fs';

import { CLI, listNetns, run, type RunResult } from './testnet.js';

export function pw(...args: string[]): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], { timeoutMs: 300000 });
}

export async function pwOk(...args: string[]): Promise<string> {
  const r = await pw(...args);
  if (r.code !== 0) throw new Error(`patchwire ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Everything of a lab that could be left behind: namespaces, processes, files. */
export function labTraces(lab: string): { namespaces: string[]; processes: string[]; dir: boolean } {
  const namespaces = listNetns().filter((n) => n.startsWith(`pw-${lab}-`) || n.startsWith(`pwn-${lab}-`) || n === `pwu-${lab}`);
  const processes: string[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (cmd.some((a) => a.endsWith('patchwire.js')) && cmd.includes(lab)) processes.push(`${d}: ${cmd.join(' ')}`);
    } catch {
      /* gone */
    }
  }
  return { namespaces, processes, dir: existsSync(`/run/patchwire/labs/${lab}`) };
}

export interface StatusJson {
  name: string;
  nodes: Array<{ name: string; pid: number; healthy: boolean; restarts: number }>;
  pods: Array<{ name: string; node: string; netns: string }>;
  wires: Array<{
    uid: number;
    endpoints: [string, string];
    nodes: [string, string];
    state: string;
    a_to_b: { frames: number; bytes: number };
    b_to_a: { frames: number; bytes: number };
    drops: Record<string, Record<string, number>>;
  }>;
}

export async function statusJson(lab: string): Promise<StatusJson> {
  return JSON.parse(await pwOk('status', lab, '--json')) as StatusJson;
}
