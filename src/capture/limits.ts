// What one capture caller may make a daemon hold. A session holds a copy of
// the rings it reads (taken when it starts) and up to READER_QUEUE_BYTES of
// live frames its reader has not taken yet; without bounds, one small request
// naming a wire end many times, or many follow sessions, could take a node's
// memory. Both HTTP and the control API's Capture go through one gate.
import { InvalidArgument, ResourceExhausted } from '../errors.js';

/** distinct wire ends one request may name */
export const MAX_WIRES_PER_REQUEST = 16;
/** open sessions per caller, and on the daemon as a whole */
export const MAX_SESSIONS_PER_CALLER = 4;
export const MAX_SESSIONS = 32;
/** ring copies + live queues one caller's sessions may hold, and all callers' together */
export const MAX_BYTES_PER_CALLER = 128 << 20;
export const MAX_BYTES = 512 << 20;

/** The named wire ends without repeats, in first-asked order; too many is an error. */
export function foldWires(names: string[]): string[] {
  const out = [...new Set(names)];
  if (out.length > MAX_WIRES_PER_REQUEST) throw new InvalidArgument(`a capture may name at most ${MAX_WIRES_PER_REQUEST} wire ends (got ${out.length})`);
  return out;
}

interface Held {
  sessions: number;
  bytes: number;
}

export class CaptureGate {
  private readonly callers = new Map<string, Held>();
  private sessions = 0;
  private bytes = 0;

  /**
   * Admits a session of `caller` that holds `bytes`; returns its release
   * (idempotent). Throws ResourceExhausted when a cap would be passed.
   */
  admit(caller: string, bytes: number): () => void {
    const h = this.callers.get(caller) ?? { sessions: 0, bytes: 0 };
    if (h.sessions >= MAX_SESSIONS_PER_CALLER) throw new ResourceExhausted(`at most ${MAX_SESSIONS_PER_CALLER} capture sessions per caller at once`);
    if (this.sessions >= MAX_SESSIONS) throw new ResourceExhausted(`at most ${MAX_SESSIONS} capture sessions on this daemon at once`);
    if (h.bytes + bytes > MAX_BYTES_PER_CALLER) throw new ResourceExhausted(`this capture would hold ${h.bytes + bytes} bytes for one caller (at most ${MAX_BYTES_PER_CALLER}); name fewer wire ends or end other sessions`);
    if (this.bytes + bytes > MAX_BYTES) throw new ResourceExhausted(`capture sessions on this daemon would hold more than ${MAX_BYTES} bytes`);
    h.sessions++;
    h.bytes += bytes;
    this.callers.set(caller, h);
    this.sessions++;
    this.bytes += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      h.sessions--;
      h.bytes -= bytes;
      this.sessions--;
      this.bytes -= bytes;
      if (h.sessions === 0) this.callers.delete(caller);
    };
  }

  /** open sessions (of one caller, or all) */
  open(caller?: string): number {
    return caller === undefined ? this.sessions : (this.callers.get(caller)?.sessions ?? 0);
  }
}
