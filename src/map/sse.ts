// GET /map/events: the live link map as server-sent events (docs/map.md).
// Every event is `event: map`, `id: SEQ` and one line of JSON (a MapEvent:
// first the full map, then changes); a comment line every 15 s keeps idle
// connections from being cut by proxies. The stream ends when the client
// goes (or the daemon stops).
import type http from 'node:http';

import { InvalidArgument } from '../errors.js';
import type { MapWatcher } from './hub.js';
import type { MapEvent } from './model.js';

export const SSE_HEARTBEAT_MS = 15_000;

export function sseFrame(ev: MapEvent): string {
  return `event: map\nid: ${ev.map.seq}\ndata: ${JSON.stringify(ev)}\n\n`;
}

export function serveMapEvents(
  d: { mapWatch(w: MapWatcher): { stop: () => void; resume: () => void } },
  q: URLSearchParams,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): void {
  if ([...q.keys()].length > 0) throw new InvalidArgument('/map/events takes no query parameters');
  // Taken before the head is written: past the watcher cap the client gets a 429, not an empty stream.
  let head = false;
  const w = d.mapWatch({
    send: (ev) => {
      if (!head) {
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
        head = true;
        if (req.method === 'HEAD') return true;
      }
      return res.write(sseFrame(ev));
    },
  });
  if (req.method === 'HEAD') {
    w.stop();
    res.end();
    return;
  }
  const beat = setInterval(() => res.write(': keepalive\n\n'), SSE_HEARTBEAT_MS);
  beat.unref();
  res.on('drain', () => w.resume());
  res.on('close', () => {
    clearInterval(beat);
    w.stop();
  });
}
