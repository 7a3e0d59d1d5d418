// The Kubernetes API requests cluster mode makes (list, watch, merge-patch of
// status), each with a deadline. client-node's own Watch drops its timeout
// (it overwrites the abort signal that carries it) and its generated clients
// have none, so an API server that stops answering on an open connection
// would stall the daemon for good. Credentials and TLS still come from
// client-node's KubeConfig.
import http from 'node:http';
import https from 'node:https';
import { createInterface } from 'node:readline';

import * as k8s from '@kubernetes/client-node';

/** An API request that failed: HTTP status (0 when none came) and the Status reason. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly statusCode: number,
    readonly reason = '',
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** client-node's ListWatch looks at `code` and `statusCode` for 410 Gone. */
  get code(): number {
    return this.statusCode;
  }
}

export interface ApiTiming {
  /** a request (or a watch's response headers) must come within this, ms */
  requestMs: number;
  /** watches ask the server to end them after this many seconds */
  watchSeconds: number;
}

type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;
type WatchDone = (err: unknown) => void;

export class ApiClient {
  constructor(
    readonly kc: k8s.KubeConfig,
    readonly timing: ApiTiming,
  ) {}

  private async start(method: string, path: string, query: Record<string, string>, signal: AbortSignal, contentType?: string): Promise<http.ClientRequest> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new ApiError('no API server configured', 0);
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const opts: https.RequestOptions = {};
    // Bearer tokens, client certificates, CA, exec plugins: as client-node applies them.
    await this.kc.applyToHTTPSOptions(opts);
    const headers: http.OutgoingHttpHeaders = { accept: 'application/json', ...(opts.headers as http.OutgoingHttpHeaders | undefined) };
    if (contentType) headers['content-type'] = contentType;
    const mod = url.protocol === 'https:' ? https : http;
    return mod.request(url, { method, agent: opts.agent, auth: opts.auth, headers, signal });
  }

  /** One request with a JSON answer; rejects with ApiError, also when no answer comes in time. */
  async request(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<unknown> {
    const abort = new AbortController();
    const ms = this.timing.requestMs;
    const timer = setTimeout(() => abort.abort(), ms);
    try {
      const req = await this.start(method, path, {}, abort.signal, body === undefined ? undefined : contentType);
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        req.on('response', resolve);
        req.on('error', reject);
        req.end(body === undefined ? undefined : JSON.stringify(body));
      });
      const text = await new Promise<string>((resolve, reject) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        res.on('error', reject);
      });
      const status = res.statusCode ?? 0;
      let json: unknown = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        if (status < 300) throw new ApiError(`${method} ${path}: answer is not JSON`, status);
      }
      if (status >= 300) throw statusError(`${method} ${path}`, status, json);
      return json;
    } catch (err) {
      if (abort.signal.aborted) throw new ApiError(`${method} ${path}: no answer within ${ms} ms`, 0, 'Timeout');
      if (err instanceof ApiError) throw err;
      throw new ApiError(`${method} ${path}: ${(err as Error).message}`, 0);
    } finally {
      clearTimeout(timer);
    }
  }

  list<T extends k8s.KubernetesObject>(path: string): Promise<k8s.KubernetesListObject<T>> {
    return this.request('GET', path) as Promise<k8s.KubernetesListObject<T>>;
  }

  /** A Watch for client-node's ListWatch, with deadlines (see DeadlineWatch). */
  watcher(): k8s.Watch {
    return new DeadlineWatch(this);
  }

  /** Used by DeadlineWatch. */
  openWatch(path: string, query: Record<string, string>, signal: AbortSignal): Promise<http.ClientRequest> {
    return this.start('GET', path, query, signal);
  }
}

function statusError(what: string, status: number, body: unknown): ApiError {
  const s = (typeof body === 'object' && body !== null ? body : {}) as { message?: string; reason?: string };
  return new ApiError(`${what}: HTTP ${status}${s.message ? `: ${s.message}` : ''}`, status, s.reason ?? '');
}

/**
 * Watches that cannot hang: the server is asked to end each one after
 * `watchSeconds` (timeoutSeconds, as client-go does) and to send BOOKMARKs;
 * a watch whose headers do not come within `requestMs`, or that is still
 * open `requestMs` after the server should have ended it, is abandoned.
 * An abandoned open watch ends as a normal close (the informer resumes from
 * its last resourceVersion); unanswered headers end as an error (it backs off).
 */
class DeadlineWatch extends k8s.Watch {
  constructor(private readonly api: ApiClient) {
    super(api.kc);
  }

  override async watch(path: string, queryParams: Record<string, unknown>, callback: WatchCallback, done: WatchDone): Promise<AbortController> {
    const { requestMs, watchSeconds } = this.api.timing;
    const controller = new AbortController();
    const query: Record<string, string> = { watch: 'true', allowWatchBookmarks: 'true', timeoutSeconds: String(watchSeconds) };
    for (const [k, v] of Object.entries(queryParams ?? {})) if (v !== undefined && v !== '') query[k] = String(v);
    let finished = false;
    let why: 'headers' | 'deadline' | null = null;
    const timers: NodeJS.Timeout[] = [];
    const finish = (err: unknown): void => {
      if (finished) return;
      finished = true;
      for (const t of timers) clearTimeout(t);
      if (!controller.signal.aborted) controller.abort();
      done(err);
    };
    timers.push(
      setTimeout(() => {
        why = 'headers';
        controller.abort();
      }, requestMs),
      setTimeout(() => {
        why = 'deadline';
        controller.abort();
      }, watchSeconds * 1000 + requestMs),
    );
    let req: http.ClientRequest;
    try {
      req = await this.api.openWatch(path, query, controller.signal);
    } catch (err) {
      finish(err);
      return controller;
    }
    req.on('error', (err) => {
      if (why === 'headers') finish(new ApiError(`watch ${path}: no answer within ${requestMs} ms`, 0, 'Timeout'));
      else if (why === 'deadline') finish(null);
      else finish(err);
    });
    req.on('response', (res) => {
      clearTimeout(timers[0]);
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', () => undefined);
        res.on('end', () => {
          let body: unknown = null;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            /* not a Status */
          }
          finish(statusError(`watch ${path}`, status, body));
        });
        return;
      }
      // A reset or an abandoned stream ends like a close: the informer resumes from its last resourceVersion.
      res.on('error', () => undefined);
      res.on('close', () => finish(null));
      const lines = createInterface({ input: res });
      // readline re-emits the stream's errors; unhandled, one would kill the daemon.
      lines.on('error', () => undefined);
      lines.on('line', (line) => {
        if (finished || !line.trim()) return;
        let ev: { type?: string; object?: unknown };
        try {
          ev = JSON.parse(line) as typeof ev;
        } catch {
          return;
        }
        if (typeof ev.type === 'string' && ev.object) callback(ev.type, ev.object, ev);
      });
      lines.on('close', () => finish(null));
    });
    req.end();
    return controller;
  }
}

/** An ApiClient from a kubeconfig file (or $KUBECONFIG, ~/.kube/config, in-cluster); throws naming the file. */
export function apiClientFrom(kubeconfig: string | undefined, requestMs: number): ApiClient {
  const kc = new k8s.KubeConfig();
  try {
    if (kubeconfig) kc.loadFromFile(kubeconfig);
    else kc.loadFromDefault();
  } catch (err) {
    throw new Error(`kubeconfig ${kubeconfig ?? process.env.KUBECONFIG ?? '(default)'}: ${(err as Error).message}`);
  }
  if (!kc.getCurrentCluster()) throw new Error('no Kubernetes API server configured (give --kubeconfig, set KUBECONFIG, or run in a pod)');
  return new ApiClient(kc, { requestMs, watchSeconds: Math.max(1, Math.round((requestMs * 5) / 1000)) });
}
