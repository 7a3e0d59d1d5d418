// `patchwire console LAB VM`: the guest's serial console, a unix socket QEMU
// serves (one client at a time; QEMU also writes everything to the lab's
// console.log). On a terminal, stdin goes raw and Ctrl-] leaves.
import { existsSync } from 'node:fs';
import net from 'node:net';

import { LabError } from './lab.js';
import { readLab } from './state.js';
import { vmPaths, vmPid } from './vm.js';

const CTRL_RIGHT_BRACKET = 0x1d;

export function attachConsole(lab: string, vm: string): Promise<number> {
  const state = readLab(lab);
  if (!state) throw new LabError(`no lab named '${lab}' (see 'patchwire ls')`);
  const pod = state.pods.find((p) => p.name === vm);
  const vms = state.pods.filter((p) => p.vm).map((p) => p.name);
  if (!pod?.vm) throw new LabError(`lab ${lab} has no VM '${vm}' (VMs: ${vms.join(', ') || 'none'})`);
  const p = vmPaths(lab, vm);
  if (!vmPid(lab, vm) || !existsSync(p.console)) throw new LabError(`VM ${vm} is not running (the supervisor starts it again; see patchwire status ${lab}); its console log: ${p.consoleLog}`);
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(p.console);
    const tty = process.stdin.isTTY;
    const restore = (): void => {
      if (tty) process.stdin.setRawMode(false);
      process.stdin.pause();
    };
    conn.on('connect', () => {
      if (tty) {
        process.stderr.write(`connected to ${vm}'s console (Ctrl-] leaves)\r\n`);
        process.stdin.setRawMode(true);
      }
      process.stdin.on('data', (d: Buffer) => {
        if (tty && d.includes(CTRL_RIGHT_BRACKET)) {
          conn.end();
          return;
        }
        conn.write(d);
      });
      // Piped input: once it ends, wait a moment for the guest's answer, then leave.
      process.stdin.on('end', () => setTimeout(() => conn.end(), 1500));
      process.stdin.resume();
    });
    conn.on('data', (d: Buffer) => process.stdout.write(d));
    conn.on('error', (err) => {
      restore();
      reject(new LabError(`console of ${vm}: ${err.message}`));
    });
    conn.on('close', () => {
      restore();
      resolve(0);
    });
  });
}
