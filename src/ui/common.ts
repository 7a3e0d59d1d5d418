// What both places that serve the browser view share: `patchwire ui LAB`
// (src/ui/server.ts, lab mode) and a daemon's HTTP port in cluster mode
// (src/ui/daemon-page.ts). The page's files, the view's JSON shape, the
// bounds of the page's API and the checks of its request bodies.
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { impairmentFromArgs } from '../cli/impair.js';
import { endImpairFromPb, formatImpairment, type ImpairDir, type Impairment } from '../dataplane/impair.js';
import { InvalidArgument, ResourceExhausted } from '../errors.js';
import type { MapSnapshot, MapWireEnd } from '../map/model.js';
import { HttpFailure } from '../capture/http.js';

/** Limits of the page's API (SECURITY.md style: each is a bound on what a caller can make us hold). */
export const UI_LIMITS = {
  /** a POST body */
  maxBodyBytes: 16 << 10,
  /** open /api/events, /api/packets and live (follow) capture streams together */
  maxStreams: 16,
  /** bytes buffered for a view stream's client before views are skipped */
  maxBufferedBytes: 1 << 20,
  /** frames of the rings a packet list starts with (the newest) */
  packetBacklog: 300,
  /** summaries held for a slow page before the oldest are dropped */
  packetQueue: 2000,
  /** ends in one capture or packet list */
  maxEnds: 64,
} as const;

/** dist/ui, next to dist/src (where this module is compiled to dist/src/ui/common.js). */
/** A page server's open streams (events, packet lists, live captures), at most UI_LIMITS.maxStreams. */
export class StreamGate {
  private open = 0;

  /** One more stream, or ResourceExhausted; the function returned lets it go (once). */
  admit(): () => void {
    if (this.open >= UI_LIMITS.maxStreams) throw new ResourceExhausted(`at most ${UI_LIMITS.maxStreams} open streams (events and packet lists) at once`);
    this.open++;
    let done = false;
    return () => {
      if (!done) this.open--;
      done = true;
    };
  }
}

export const ASSETS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'ui');

const ASSET_TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png' };
const ASSETS = ['index.html', 'app.js', 'style.css', 'cytoscape.esm.min.mjs'];

/** The page's files, read once (a missing one is an error at start, not at the first request). */
export class PageAssets {
  private readonly files = new Map<string, Buffer>();

  constructor(dir = ASSETS_DIR) {
    for (const a of ASSETS) {
      try {
        this.files.set(a, readFileSync(path.join(dir, a)));
      } catch (err) {
        throw new Error(`the page's file ${a} is missing from ${dir} (run 'npm run build'): ${(err as Error).message}`);
      }
    }
  }

  /** Answers "" (the page) or "assets/NAME"; 404 for anything else, 405 for a method other than GET/HEAD. */
  serve(rel: string, method: string, res: http.ServerResponse): void {
    const name = rel === '' ? 'index.html' : rel.startsWith('assets/') ? rel.slice('assets/'.length) : '';
    const body = this.files.get(name);
    if (!body) throw new HttpFailure(404, `no such file ${JSON.stringify(rel.slice(0, 100))}`);
    if (method !== 'GET' && method !== 'HEAD') throw new HttpFailure(405, 'use GET', { allow: 'GET, HEAD' });
    res.writeHead(200, {
      'content-type': ASSET_TYPES[path.extname(name)] ?? 'application/octet-stream',
      'cache-control': 'no-cache',
      // The page loads nothing from anywhere else.
      'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'",
      'x-content-type-options': 'nosniff',
    });
    res.end(method === 'HEAD' ? undefined : body);
  }
}

/** A wire end as the page sees it: the map's end, with carrier, cable and impairments as words. */
export interface ViewEnd extends Partial<Omit<MapWireEnd, 'carrier' | 'cable' | 'impair'>> {
  name: string;
  pod: string;
  node: string;
  carrier: 'up' | 'down' | 'unknown';
  cable: 'plugged' | 'pulled' | 'unknown';
  impair_in: string;
  impair_out: string;
}

export interface ViewWire {
  uid: number;
  /** up, down, restoring, partial; 'missing' when no daemon reports it; in a cluster also pending or error (from a Topology's status) */
  state: string;
  message: string;
  ends: [ViewEnd, ViewEnd];
}

export interface View {
  version: 1;
  /** lab: `patchwire ui LAB`; cluster: a daemon's page */
  mode: 'lab' | 'cluster';
  lab: string;
  /** cluster mode: the node of the daemon serving the page ('' in lab mode) */
  node: string;
  time_ms: number;
  rate_window_ms: number;
  nodes: Array<{ name: string; reporting: boolean }>;
  pods: Array<{ name: string; node: string }>;
  peers: MapSnapshot['peers'];
  wires: ViewWire[];
  /** for the Wireshark command the page shows ('' in cluster mode: the caller brings a Kubernetes token) */
  token_file: string;
}

/** A map end as the page shows it (unknown when no daemon reports the end). */
export function viewEnd(me: MapWireEnd | undefined, id: { name: string; pod: string; node: string }): ViewEnd {
  if (!me) return { ...id, carrier: 'unknown', cable: 'unknown', impair_in: '', impair_out: '' };
  const { carrier, cable, impair, ...rest } = me;
  const imp = endImpairFromPb(impair);
  return {
    ...rest,
    ...id,
    carrier: carrier ? 'up' : 'down',
    cable: cable === 'pulled' ? 'pulled' : 'plugged',
    impair_in: formatImpairment(imp?.in),
    impair_out: formatImpairment(imp?.out),
  };
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

/**
 * Sends a packet list's frames, in time order, unless the page is not
 * keeping up (then they are skipped, not queued for); whether it sent them.
 */
export function sendFrames(res: http.ServerResponse, frames: Array<{ ts_us: number }>, lost: number): boolean {
  if (res.writableLength >= UI_LIMITS.maxBufferedBytes) return false;
  frames.sort((a, b) => a.ts_us - b.ts_us);
  res.write(`event: frames\ndata: ${JSON.stringify({ frames, lost })}\n\n`);
  return true;
}

export function sseHead(res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
}

/** Reads a JSON object body of at most UI_LIMITS.maxBodyBytes; 413 past it, 400 when it is not a JSON object. */
export function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > UI_LIMITS.maxBodyBytes) return Promise.reject(new HttpFailure(413, `the body is ${declared} bytes; at most ${UI_LIMITS.maxBodyBytes}`, { connection: 'close' }));
  const type = String(req.headers['content-type'] ?? '');
  if (!/^application\/json\b/i.test(type)) return Promise.reject(new HttpFailure(415, 'send the body as Content-Type: application/json', { connection: 'close' }));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (size > UI_LIMITS.maxBodyBytes) return;
      size += c.length;
      if (size > UI_LIMITS.maxBodyBytes) {
        // Answered at once; the rest is not kept, and the connection closes after the answer.
        chunks.length = 0;
        reject(new HttpFailure(413, `the body is over ${UI_LIMITS.maxBodyBytes} bytes`, { connection: 'close' }));
        return;
      }
      chunks.push(c);
    });
    req.on('error', reject);
    // A client that goes mid-body leaves nothing waiting.
    req.on('close', () => reject(new InvalidArgument('the request ended before its body')));
    req.on('end', () => {
      if (size > UI_LIMITS.maxBodyBytes) return;
      let v: unknown;
      try {
        v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        reject(new InvalidArgument(`the body is not JSON: ${(err as Error).message}`));
        return;
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) reject(new InvalidArgument('the body must be a JSON object'));
      else resolve(v as Record<string, unknown>);
    });
  });
}

/** POST api/cable's body: {"end": "POD/INTF", "plugged": true|false}. */
export function parseCableBody(body: Record<string, unknown>): { end: string; plugged: boolean } {
  const unknown = Object.keys(body).filter((k) => k !== 'end' && k !== 'plugged');
  if (unknown.length) throw new InvalidArgument(`unknown field ${JSON.stringify(unknown[0]!.slice(0, 50))} (end, plugged)`);
  if (typeof body.end !== 'string') throw new InvalidArgument('"end" must be a string, POD/INTF');
  if (typeof body.plugged !== 'boolean') throw new InvalidArgument('"plugged" must be true (plug the cable in) or false (pull it)');
  return { end: body.end, plugged: body.plugged };
}

/** POST api/impair's body: {"end", "dir", "set": {...}} or {"end", "dir", "reset": true}; imp null for a reset. */
export function parseImpairBody(body: Record<string, unknown>): { end: string; dir: ImpairDir; imp: Impairment | null } {
  const unknown = Object.keys(body).filter((k) => !['end', 'dir', 'set', 'reset'].includes(k));
  if (unknown.length) throw new InvalidArgument(`unknown field ${JSON.stringify(unknown[0]!.slice(0, 50))} (end, dir, set, reset)`);
  if (typeof body.end !== 'string') throw new InvalidArgument('"end" must be a string, POD/INTF');
  const dir = body.dir ?? 'both';
  if (dir !== 'in' && dir !== 'out' && dir !== 'both') throw new InvalidArgument('"dir" must be "in", "out" or "both"');
  if (body.reset === true) {
    if (body.set !== undefined) throw new InvalidArgument('give "set" or "reset", not both');
    return { end: body.end, dir, imp: null };
  }
  const set = body.set;
  if (typeof set !== 'object' || set === null || Array.isArray(set)) throw new InvalidArgument('"set" must be an object like {"delay": "20ms", "loss": "1%"} (or send "reset": true)');
  const args: Record<string, string> = {};
  const keys = ['delay', 'jitter', 'jitter-dist', 'loss', 'loss-burst', 'duplicate', 'reorder', 'corrupt', 'rate', 'burst', 'limit'];
  for (const [k, v] of Object.entries(set)) {
    if (!keys.includes(k)) throw new InvalidArgument(`unknown impairment ${JSON.stringify(k.slice(0, 50))} (${keys.join(', ')})`);
    if (typeof v !== 'string') throw new InvalidArgument(`impairment ${k} must be a string like the CLI's --${k}`);
    if (v.trim() !== '') args[k] = v.trim();
  }
  try {
    return { end: body.end, dir, imp: impairmentFromArgs(args) };
  } catch (err) {
    throw new InvalidArgument((err as Error).message.replace(/^link: /, ''));
  }
}
