// One progress line on stderr: rewritten in place on a terminal, a line per
// phase (and at most every two seconds) otherwise.
export class Progress {
  private last = 0;
  private readonly tty = process.stderr.isTTY === true;
  private shown = false;

  constructor(private readonly quiet = false) {}

  update(msg: string, force = false): void {
    if (this.quiet) return;
    if (this.tty) {
      process.stderr.write(`\r\x1b[2K${msg}`);
      this.shown = true;
      return;
    }
    const now = Date.now();
    if (force || now - this.last > 2000) {
      process.stderr.write(`${msg}\n`);
      this.last = now;
    }
  }

  done(): void {
    if (this.tty && this.shown) process.stderr.write('\r\x1b[2K');
    this.shown = false;
  }
}

export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T>(items: T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown = null;
  const worker = async (): Promise<void> => {
    while (failed === null && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== null) throw failed;
}
