// Optional capture of a wire end to pcapng files on disk, rotated by size and
// count. A write error (disk full) stops file capture for that end with a
// logged reason; forwarding goes on.
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';

import { CaptureWriter, type CaptureInterface } from './format.js';
import type { RingSource } from './ring.js';
import { CaptureSession } from './session.js';

export interface FileCaptureOptions {
  dir: string;
  /** rotate when the current file reaches this size */
  maxBytes: number;
  /** keep at most this many files per wire end */
  maxFiles: number;
  /** lab and node the files are named after (the daemon's) */
  lab?: string;
  node?: string;
}

/**
 * A name as one file-name component: letters, digits and '-' as they are,
 * every other byte as '_' and two hex digits. Reversible, so two wire ends
 * never share files ('a_b/c' is a_5fb_2fc, 'a/b_c' a_2fb_5fc), and free of
 * '.', so 'eth1' can never be a prefix of 'eth1.10' (eth1_2e10).
 */
export function fileComponent(name: string): string {
  return [...Buffer.from(name, 'utf8')].map((b) => (/[A-Za-z0-9-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `_${b.toString(16).padStart(2, '0')}`)).join('');
}

/** The file name stem of a wire end's capture files: LAB.NODE.POD/INTF, each part encoded. */
export function captureFileBase(lab: string, node: string, end: string): string {
  return [lab, node, end].map(fileComponent).join('.');
}

export class FileCapture {
  /** "" while writing; the reason once stopped */
  stopped = '';
  current = '';
  private stream: WriteStream | null = null;
  private written = 0;
  private seq = 0;
  private session: CaptureSession | null = null;
  private readonly base: string;
  private writer: CaptureWriter;

  constructor(
    private readonly ring: RingSource,
    private readonly iface: CaptureInterface,
    private readonly o: FileCaptureOptions,
    private readonly log: (msg: string) => void,
  ) {
    this.base = captureFileBase(o.lab ?? '', o.node ?? '', iface.name);
    this.writer = new CaptureWriter('pcapng', [{ ...iface, id: 0 }]);
  }

  async start(): Promise<void> {
    await mkdir(this.o.dir, { recursive: true });
    // Only this end's files: BASE.NNNNNN.pcapng exactly.
    const existing = (await readdir(this.o.dir)).filter((f) => f.startsWith(`${this.base}.`) && /^\d+\.pcapng$/.test(f.slice(this.base.length + 1)));
    const seqOf = (f: string): number => Number(f.slice(this.base.length + 1, -7)) || 0;
    this.seq = existing.reduce((m, f) => Math.max(m, seqOf(f)), 0);
    // A restarted daemon continues the numbering and keeps the count.
    for (const f of existing) if (seqOf(f) <= this.seq + 1 - this.o.maxFiles) await rm(path.join(this.o.dir, f), { force: true });
    this.open();
    this.session = new CaptureSession([{ ring: this.ring, iface: 0 }], { follow: true, count: 0, durationMs: 0, maxQueueBytes: 8 << 20 }, {
      write: (recs) => {
        if (recs.length === 0 || !this.stream) return true;
        const buf = this.writer.records(recs);
        this.written += buf.length;
        const ok = this.stream.write(buf);
        if (this.written >= this.o.maxBytes) {
          this.open();
          return true;
        }
        return ok;
      },
      end: () => undefined,
    });
    this.session.start();
  }

  private open(): void {
    this.stream?.end();
    this.seq++;
    this.current = this.fileName(this.seq);
    // The file that falls out of the count, by number: no directory listing
    // to race with files still being opened.
    if (this.seq > this.o.maxFiles) void rm(this.fileName(this.seq - this.o.maxFiles), { force: true });
    this.writer = new CaptureWriter('pcapng', [{ ...this.iface, id: 0 }]);
    const s = createWriteStream(this.current);
    s.on('error', (err) => this.fail(err));
    s.on('drain', () => this.session?.resume());
    const head = this.writer.header();
    s.write(head);
    this.written = head.length;
    this.stream = s;
  }

  private fileName(seq: number): string {
    return path.join(this.o.dir, `${this.base}.${String(seq).padStart(6, '0')}.pcapng`);
  }

  private fail(err: Error): void {
    if (this.stopped) return;
    this.stopped = `${(err as NodeJS.ErrnoException).code ?? 'error'}: ${err.message}`;
    this.log(`file capture of ${this.iface.name} stopped: ${this.stopped}; forwarding goes on`);
    this.stop();
  }

  stop(): void {
    this.session?.stop();
    this.session = null;
    this.stream?.destroy();
    this.stream = null;
  }
}
