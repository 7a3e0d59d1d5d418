// A QMP client just big enough for set_link: QMP is JSON lines over a unix
// socket (a greeting, qmp_capabilities, then commands, each answered by
// {"return":...} or {"error":...}; events may arrive in between).
import net from 'node:net';

export class QmpError extends Error {}

/** Runs `commands` in order on a fresh QMP session; resolves to their returns. Bounded by `timeoutMs` in all. */
export function qmpRun(socket: string, commands: Array<{ execute: string; arguments?: Record<string, unknown> }>, timeoutMs = 3000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socket);
    const results: unknown[] = [];
    // The greeting, then qmp_capabilities' return, then one return per command.
    const queue = [{ execute: 'qmp_capabilities' }, ...commands];
    let greeted = false;
    let pending = 0;
    let returns = 0;
    let buf = '';
    let done = false;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.destroy();
      if (err) reject(err);
      else resolve(results);
    };
    const timer = setTimeout(() => finish(new QmpError(`QMP ${socket}: no answer in ${timeoutMs} ms`)), timeoutMs);
    const sendNext = (): void => {
      const cmd = queue.shift();
      if (!cmd) return finish(null);
      pending++;
      conn.write(`${JSON.stringify(cmd)}\n`);
    };
    conn.on('error', (err) => finish(new QmpError(`QMP ${socket}: ${err.message}`)));
    conn.on('close', () => finish(new QmpError(`QMP ${socket}: closed by QEMU`)));
    conn.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (buf.length > 1 << 20) return finish(new QmpError(`QMP ${socket}: answer too long`));
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return finish(new QmpError(`QMP ${socket}: not JSON: ${line.slice(0, 80)}`));
        }
        if (!greeted) {
          if (!('QMP' in msg)) return finish(new QmpError(`QMP ${socket}: no greeting`));
          greeted = true;
          sendNext();
          continue;
        }
        if ('event' in msg) continue;
        if (pending === 0) continue;
        pending--;
        if ('error' in msg) {
          const e = msg.error as { class?: string; desc?: string };
          return finish(new QmpError(`QMP ${socket}: ${e.desc ?? e.class ?? 'error'}`));
        }
        // The first return is qmp_capabilities'.
        if (returns++ > 0) results.push(msg.return);
        sendNext();
      }
    });
  });
}

/** Sets a guest NIC's link (QMP set_link on its netdev id): the guest sees carrier go or come. */
export async function qmpSetLink(socket: string, netdev: string, up: boolean): Promise<void> {
  await qmpRun(socket, [{ execute: 'set_link', arguments: { name: netdev, up } }]);
}
