// STAND-IN Kubernetes API server, for tests only. No real API server can run
// on these machines, so this small HTTP server speaks the parts of the real
// protocol that patchwire's cluster mode uses, as the API server does:
//  - list: GET .../pods, .../topologies (cluster-wide and per namespace),
//    returning a List with metadata.resourceVersion;
//  - watch: ?watch=true&resourceVersion=N, a chunked stream of
//    {"type":"ADDED|MODIFIED|DELETED|ERROR","object":...} lines; a resume point
//    older than the retained history gets an ERROR event with a 410 Status
//    ("too old resource version"), as etcd compaction causes;
//  - get, create (POST, 409 on conflict), replace (PUT), merge-patch, delete;
//  - the status subresource (.../NAME/status): only status changes there, and
//    status is ignored on the main resource; metadata.generation counts spec
//    changes;
//  - Topology objects are checked against the CRD's openAPIV3Schema (422 on
//    violations) and pruned of unknown fields, like a structural schema.
// It is not a Kubernetes API server: no auth, no discovery, no field selectors.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { rmSync } from 'node:fs';

import { pruneAndValidate, type Schema } from './schema.js';

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    [k: string]: unknown;
  };
  spec?: unknown;
  status?: unknown;
  [k: string]: unknown;
}

interface Resource {
  /** URL prefix without namespace, e.g. /api/v1 or /apis/networkop.co.uk/v1beta1 */
  prefix: string;
  plural: string;
  kind: string;
  apiVersion: string;
  schema?: Schema;
}

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
}

interface Watcher {
  res: http.ServerResponse;
  resource: Resource;
  namespace: string | null;
}

export interface RequestRecord {
  method: string;
  path: string;
  watch: boolean;
  resourceVersion: string;
  status: number;
}

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export class StandInApiServer {
  private readonly server: http.Server;
  /** the same API on loopback TCP, for the test process itself */
  private readonly tcp: http.Server;
  url = '';
  private readonly resources: Resource[] = [];
  private readonly store = new Map<Resource, Map<string, KubeObject>>();
  private history: WatchEvent[] = [];
  /** resume points below this are gone ("compacted") */
  private oldestRv = 1;
  private rv = 1;
  private readonly watchers = new Set<Watcher>();
  readonly requests: RequestRecord[] = [];
  /** watches answered with 410 Gone (resume point compacted away) */
  expired = 0;
  /** the next requests matching a rule fail with its HTTP status */
  private readonly faults: Array<{ match: (method: string, path: string, watch: boolean) => boolean; status: number; times: number }> = [];

  constructor(readonly socketPath: string) {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.tcp = http.createServer((req, res) => this.handle(req, res));
  }

  addResource(r: Resource): void {
    this.resources.push(r);
    this.store.set(r, new Map());
  }

  async listen(): Promise<void> {
    rmSync(this.socketPath, { force: true });
    await new Promise<void>((resolve) => this.server.listen(this.socketPath, resolve));
    await new Promise<void>((resolve) => this.tcp.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.tcp.address() as { port: number }).port}`;
  }

  async close(): Promise<void> {
    this.closeWatches();
    for (const s of [this.server, this.tcp]) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    rmSync(this.socketPath, { force: true });
  }

  /** Ends every open watch, as an API server restart or a watch timeout does. */
  closeWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Drops the event history: watches resumed from any earlier point get 410 Gone. */
  compact(): void {
    this.history = [];
    this.rv += 1;
    this.oldestRv = this.rv;
  }

  failNext(match: (method: string, path: string, watch: boolean) => boolean, status: number, times = 1): void {
    this.faults.push({ match, status, times });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  /** Current objects of a resource (copies). */
  objects(plural: string): KubeObject[] {
    const r = this.resources.find((x) => x.plural === plural)!;
    return [...this.store.get(r)!.values()].map(clone);
  }

  get(plural: string, namespace: string, name: string): KubeObject | undefined {
    const r = this.resources.find((x) => x.plural === plural)!;
    const o = this.store.get(r)!.get(`${namespace}/${name}`);
    return o ? clone(o) : undefined;
  }

  private nextRv(): string {
    this.rv += 1;
    return String(this.rv);
  }

  private emit(resource: Resource, type: WatchEvent['type'], obj: KubeObject): void {
    const rv = Number(obj.metadata.resourceVersion);
    const ev = { rv, type, object: clone(obj) };
    this.history.push(ev);
    for (const w of this.watchers) {
      if (w.resource !== resource) continue;
      if (w.namespace !== null && obj.metadata.namespace !== w.namespace) continue;
      w.res.write(`${JSON.stringify({ type, object: ev.object })}\n`);
    }
  }

  private route(pathname: string): { resource: Resource; namespace: string | null; name: string | null; status: boolean } | null {
    for (const r of this.resources) {
      if (!pathname.startsWith(`${r.prefix}/`)) continue;
      const rest = pathname.slice(r.prefix.length + 1).split('/');
      let namespace: string | null = null;
      if (rest[0] === 'namespaces' && rest.length >= 3) {
        namespace = rest[1]!;
        rest.splice(0, 2);
      }
      if (rest[0] !== r.plural) continue;
      const name = rest[1] ?? null;
      const status = rest[2] === 'status';
      if (rest.length > 3 || (rest.length === 3 && !status)) return null;
      return { resource: r, namespace, name, status };
    }
    return null;
  }

  private send(res: http.ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private statusError(res: http.ServerResponse, code: number, reason: string, message: string): void {
    this.send(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
  }

  private readBody(req: http.IncomingMessage): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve(text ? JSON.parse(text) : {});
        } catch (err) {
          reject(err);
        }
      });
      req.on('error', reject);
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    const record: RequestRecord = { method: req.method ?? 'GET', path: url.pathname, watch, resourceVersion: url.searchParams.get('resourceVersion') ?? '', status: 200 };
    this.requests.push(record);
    const origWriteHead = res.writeHead.bind(res);
    res.writeHead = ((code: number, ...rest: unknown[]) => {
      record.status = code;
      return (origWriteHead as (...a: unknown[]) => http.ServerResponse)(code, ...rest);
    }) as typeof res.writeHead;
    const fault = this.faults.find((f) => f.times > 0 && f.match(record.method, url.pathname, watch));
    if (fault) {
      fault.times -= 1;
      return this.statusError(res, fault.status, 'InternalError', `stand-in: injected failure ${fault.status}`);
    }
    const route = this.route(url.pathname);
    if (!route) return this.statusError(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const { resource, namespace, name, status } = route;
    const objects = this.store.get(resource)!;
    const key = `${namespace}/${name}`;
    const method = req.method ?? 'GET';

    if (method === 'GET' && !name) {
      const list = [...objects.values()].filter((o) => namespace === null || o.metadata.namespace === namespace);
      if (!watch) {
        return this.send(res, 200, {
          apiVersion: resource.apiVersion,
          kind: `${resource.kind}List`,
          metadata: { resourceVersion: String(this.rv) },
          items: list.map(clone),
        });
      }
      return this.startWatch(res, resource, namespace, url.searchParams.get('resourceVersion') ?? '', list);
    }
    if (name && namespace === null) return this.statusError(res, 404, 'NotFound', 'namespaced resource needs a namespace in the path');
    if (method === 'GET') {
      const o = objects.get(key);
      if (!o) return this.statusError(res, 404, 'NotFound', `${resource.plural} "${name}" not found`);
      return this.send(res, 200, o);
    }
    if (method === 'DELETE') {
      const o = objects.get(key);
      if (!o) return this.statusError(res, 404, 'NotFound', `${resource.plural} "${name}" not found`);
      objects.delete(key);
      o.metadata.resourceVersion = this.nextRv();
      this.emit(resource, 'DELETED', o);
      return this.send(res, 200, o);
    }
    this.readBody(req).then(
      (body) => this.write(req, res, method, resource, namespace, name, status, body as KubeObject),
      (err: Error) => this.statusError(res, 400, 'BadRequest', `body is not JSON: ${err.message}`),
    );
  }

  private startWatch(res: http.ServerResponse, resource: Resource, namespace: string | null, fromRv: string, current: KubeObject[]): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { res, resource, namespace };
    if (fromRv === '' || fromRv === '0') {
      // No resume point: synthetic ADDED for everything, then live events.
      for (const o of current) res.write(`${JSON.stringify({ type: 'ADDED', object: o })}\n`);
    } else {
      const from = Number(fromRv);
      if (!Number.isInteger(from) || from < this.oldestRv) {
        this.expired += 1;
        res.end(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${fromRv} (${this.oldestRv})`, reason: 'Expired', code: 410 } })}\n`);
        return;
      }
      for (const ev of this.history) {
        if (ev.rv <= from || ev.object.kind !== resource.kind) continue;
        if (namespace !== null && ev.object.metadata.namespace !== namespace) continue;
        res.write(`${JSON.stringify({ type: ev.type, object: ev.object })}\n`);
      }
    }
    this.watchers.add(w);
    res.on('close', () => this.watchers.delete(w));
  }

  private write(req: http.IncomingMessage, res: http.ServerResponse, method: string, resource: Resource, namespace: string | null, name: string | null, status: boolean, body: KubeObject): void {
    const objects = this.store.get(resource)!;
    if (namespace === null) return this.statusError(res, 405, 'MethodNotAllowed', 'writes need a namespaced path');
    if (method === 'POST') {
      if (name) return this.statusError(res, 405, 'MethodNotAllowed', 'POST to the collection');
      if (!body.metadata?.name) return this.statusError(res, 422, 'Invalid', 'metadata.name: Required value');
      const key = `${namespace}/${body.metadata.name}`;
      if (objects.has(key)) return this.statusError(res, 409, 'AlreadyExists', `${resource.plural} "${body.metadata.name}" already exists`);
      const obj = clone(body);
      obj.apiVersion = resource.apiVersion;
      obj.kind = resource.kind;
      obj.metadata = { ...obj.metadata, namespace, uid: randomUUID(), generation: 1, creationTimestamp: new Date().toISOString() };
      // Status is set through the status subresource only.
      if (resource.schema) delete obj.status;
      const problems = this.check(resource, obj);
      if (problems.length) return this.statusError(res, 422, 'Invalid', `${resource.kind}.${resource.apiVersion.split('/')[0]} "${obj.metadata.name}" is invalid: ${problems.join('; ')}`);
      obj.metadata.resourceVersion = this.nextRv();
      objects.set(key, obj);
      this.emit(resource, 'ADDED', obj);
      return this.send(res, 201, obj);
    }
    if (!name) return this.statusError(res, 405, 'MethodNotAllowed', `${method} needs an object name`);
    const key = `${namespace}/${name}`;
    const old = objects.get(key);
    if (!old) return this.statusError(res, 404, 'NotFound', `${resource.plural} "${name}" not found`);
    let next: KubeObject;
    if (method === 'PUT') {
      if (body.metadata?.resourceVersion && body.metadata.resourceVersion !== old.metadata.resourceVersion) {
        return this.statusError(res, 409, 'Conflict', `Operation cannot be fulfilled on ${resource.plural} "${name}": the object has been modified`);
      }
      next = clone(body);
    } else if (method === 'PATCH') {
      const type = (req.headers['content-type'] ?? '').split(';')[0];
      if (type !== 'application/merge-patch+json') return this.statusError(res, 415, 'UnsupportedMediaType', `stand-in supports application/merge-patch+json only, not ${type}`);
      next = mergePatch(old, body) as KubeObject;
    } else {
      return this.statusError(res, 405, 'MethodNotAllowed', `${method} is not supported`);
    }
    // Only the subresource's part changes; identity fields stay.
    const merged: KubeObject = status ? { ...clone(old), status: next.status } : { ...next, status: resource.schema ? old.status : next.status };
    merged.apiVersion = resource.apiVersion;
    merged.kind = resource.kind;
    merged.metadata = { ...(status ? old.metadata : merged.metadata), name: old.metadata.name, namespace, uid: old.metadata.uid, creationTimestamp: old.metadata.creationTimestamp, generation: old.metadata.generation };
    if (!status && JSON.stringify(merged.spec) !== JSON.stringify(old.spec)) merged.metadata.generation = (old.metadata.generation ?? 1) + 1;
    const problems = this.check(resource, merged);
    if (problems.length) return this.statusError(res, 422, 'Invalid', problems.join('; '));
    if (JSON.stringify(merged) === JSON.stringify({ ...old })) return this.send(res, 200, old);
    merged.metadata.resourceVersion = this.nextRv();
    objects.set(key, merged);
    this.emit(resource, 'MODIFIED', merged);
    return this.send(res, 200, merged);
  }

  private check(resource: Resource, obj: KubeObject): string[] {
    if (!resource.schema) return [];
    const { apiVersion, kind, metadata, ...rest } = obj;
    const problems: string[] = [];
    const pruned = pruneAndValidate(resource.schema, rest, '', problems, true) as Record<string, unknown>;
    for (const k of Object.keys(obj)) if (!['apiVersion', 'kind', 'metadata'].includes(k)) delete obj[k];
    Object.assign(obj, pruned, { apiVersion, kind, metadata });
    return problems;
  }
}
