// The test guest (scripts/build-test-guest.sh) and a driver for its serial
// console: commands run in its busybox shell, their output comes back.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import { ROOT, sleep } from './testnet.js';

/** Builds (once, cached by package versions) the guest; its kernel and initrd. */
export function testGuest(): { kernel: string; initrd: string; versions: string } {
  const dir = execFileSync(path.join(ROOT, 'scripts', 'build-test-guest.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop()!;
  return { kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd'), versions: readFileSync(path.join(dir, 'versions'), 'utf8').trim() };
}

/** Waits for the guest's init to say PW-READY in the console log; resolves to the guest's uptime then (seconds). */
export async function waitReady(consoleLog: string, timeoutMs = 90000, after = 0): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (existsSync(consoleLog)) {
      const text = readFileSync(consoleLog, 'utf8').slice(after);
      const m = /PW-READY ([0-9.]+)/.exec(text);
      if (m) return Number(m[1]);
    }
    if (Date.now() > deadline) throw new Error(`guest not ready after ${timeoutMs / 1000}s; console log:\n${existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8').slice(-2000) : '(none)'}`);
    await sleep(100);
  }
}

let seq = 0;

/**
 * A session on the guest's console socket (QEMU serves one client at a
 * time: close it before `patchwire console` attaches).
 */
export class GuestShell {
  private buf = '';
  private constructor(private readonly conn: net.Socket) {
    conn.on('data', (d: Buffer) => (this.buf += d.toString('latin1')));
    // A guest stopped under us (down, a killed QEMU) resets the socket: run() times out and says so.
    conn.on('error', () => undefined);
  }

  static async open(socket: string): Promise<GuestShell> {
    const conn = net.createConnection(socket);
    await new Promise<void>((resolve, reject) => {
      conn.once('connect', () => resolve());
      conn.once('error', reject);
    });
    const sh = new GuestShell(conn);
    // Quiet the line discipline: no echo of what we type (long lines), no CR;
    // and no prompt, which could otherwise land in the next command's output.
    await sh.run("PS1=''; stty -echo -onlcr 2>/dev/null; true");
    return sh;
  }

  /** Runs a shell command line in the guest; its output and exit status. */
  async run(cmd: string, timeoutMs = 30000): Promise<{ out: string; code: number }> {
    const n = ++seq;
    // The marker is split in what is typed, so an echo of the line never matches it.
    this.buf = '';
    this.conn.write(`${cmd}; echo "@@EN""D${n} $?"\n`);
    const re = new RegExp(`@@END${n} (\\d+)`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.buf);
      if (m) {
        const out = this.buf.slice(0, m.index);
        this.buf = this.buf.slice(m.index + m[0].length);
        return { out: out.replace(/\r/g, ''), code: Number(m[1]) };
      }
      if (Date.now() > deadline) throw new Error(`guest: '${cmd.slice(0, 80)}' did not finish in ${timeoutMs} ms; output so far: ${this.buf.slice(-500)}`);
      await sleep(20);
    }
  }

  async ok(cmd: string, timeoutMs?: number): Promise<string> {
    const r = await this.run(cmd, timeoutMs);
    if (r.code !== 0) throw new Error(`guest: '${cmd.slice(0, 80)}' exited ${r.code}: ${r.out.slice(-500)}`);
    return r.out;
  }

  /** Writes frames (hex, one per line) to a file in the guest, in pieces the tty takes (lines up to 4095 bytes). */
  async writeFrames(file: string, frames: Buffer[]): Promise<void> {
    await this.ok(`: > ${file}`);
    for (const f of frames) {
      const hex = f.toString('hex');
      for (let i = 0; i < hex.length; i += 2000) await this.ok(`printf %s ${hex.slice(i, i + 2000)} >> ${file}`);
      await this.ok(`echo >> ${file}`);
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.conn.once('close', () => resolve());
      this.conn.end();
      setTimeout(() => {
        this.conn.destroy();
        resolve();
      }, 1000).unref();
    });
  }
}

/** Hex lines (frames) in a text. */
export function hexFrames(text: string): Buffer[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^([0-9a-f]{2})+$/.test(l) && l.length >= 28)
    .map((l) => Buffer.from(l, 'hex'));
}
