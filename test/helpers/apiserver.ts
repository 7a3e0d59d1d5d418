// STAND-IN Kubernetes API server, for tests only. No real API server can run
// on these machines, so this small HTTP server speaks the parts of the real
// protocol that patchwire's cluster mode depends on, as the API server does:
//  - authentication by bearer token, and RBAC authorization of every request
//    against Role/ClusterRole objects and their bindings (deploy/rbac.yaml):
//    401 without a known token, 403 Forbidden with the real message otherwise;
//  - list: GET .../pods, .../topologies (cluster-wide and per namespace),
//    returning a List with metadata.resourceVersion;
//  - watch: ?watch=true&resourceVersion=N, a chunked stream of
//    {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...} lines;
//    BOOKMARKs only to watches that asked (allowWatchBookmarks=true); the
//    watch ends after its timeoutSeconds; a resume point older than the
//    retained history gets 410 Gone ("too old resource version", as etcd
//    compaction causes), as an ERROR event or as an HTTP 410;
//  - get, create (POST, 409 on conflict), replace (PUT: 422 without
//    metadata.resourceVersion where the real server wants one, 409 when it is
//    stale), merge-patch (409 on a stale resourceVersion precondition);
//  - graceful deletion of pods on a node: DELETE sets deletionTimestamp and
//    deletionGracePeriodSeconds; the object goes on a DELETE with grace 0
//    (what the kubelet sends once the containers are gone);
//  - the status subresource (.../NAME/status): only status changes there, and
//    status is ignored on the main resource; metadata.generation counts spec
//    changes;
//  - Topology objects are checked against the CRD's openAPIV3Schema (422 on
//    violations) and pruned of unknown fields, like a structural schema;
//  - TokenReview (POST /apis/authentication.k8s.io/v1/tokenreviews) and
//    SubjectAccessReview (POST /apis/authorization.k8s.io/v1/subjectaccessreviews),
//    as webhook-style callers (the kubelet, patchwire's capture port) use
//    them: the caller needs `create` on them through RBAC; the answer (201)
//    says who a token is, and whether RBAC lets a user do a verb on a
//    resource (with subresource, namespace and name) or a non-resource path.
// Failure modes a test can turn on: injected HTTP errors, held requests, and
// silence (the daemons' connections stop getting any answer or event while
// staying open, as behind a stuck proxy).
// It is not a Kubernetes API server: no discovery, no field or label
// selectors, no admission beyond the above.
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
    deletionGracePeriodSeconds?: number;
    finalizers?: string[];
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
  /** PUT without metadata.resourceVersion is allowed (pods: yes; custom resources: no) */
  unconditionalUpdate?: boolean;
  /** DELETE of a scheduled object waits for a second DELETE with grace 0 (pods) */
  graceful?: boolean;
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
  bookmarks: boolean;
  record: RequestRecord;
  timer: NodeJS.Timeout | null;
  /** silenced: gets nothing more, is never ended */
  stuck: boolean;
}

export interface UserInfo {
  name: string;
  groups: string[];
}

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
  resourceVersion: string;
  /** HTTP status sent; 0 while none was (a held or silenced request) */
  status: number;
  /** who made it (by token), '' when unauthenticated */
  user: string;
  token: string;
  /** what RBAC was asked */
  verb: string;
  apiGroup: string;
  /** plural, with /status for the subresource; '' for a non-resource URL */
  resource: string;
  namespace: string;
  name: string;
  allowed: boolean;
  /** what a write sent (as parsed JSON), before any defaulting or pruning */
  body?: unknown;
  /** how a watch ended: 'timeout' (its timeoutSeconds), 'closed' (closeWatches or server close), 'client' */
  watchEnd?: 'timeout' | 'closed' | 'client';
  at: number;
}

interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

interface RbacObject {
  kind?: string;
  metadata?: { name?: string; namespace?: string };
  rules?: PolicyRule[];
  roleRef?: { kind?: string; name?: string };
  subjects?: Array<{ kind?: string; name?: string; namespace?: string }>;
}

export const ADMIN: UserInfo = { name: 'stand-in-admin', groups: ['system:masters', 'system:authenticated'] };

/** The identity a pod running as a ServiceAccount has. */
export function serviceAccountUser(namespace: string, name: string): UserInfo {
  return { name: `system:serviceaccount:${namespace}:${name}`, groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'] };
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

/** The review APIs: cluster-scoped, create only, nothing stored. */
const REVIEWS: Record<string, { group: string; version: string; resource: string; kind: string }> = {
  '/apis/authentication.k8s.io/v1/tokenreviews': { group: 'authentication.k8s.io', version: 'v1', resource: 'tokenreviews', kind: 'TokenReview' },
  '/apis/authorization.k8s.io/v1/subjectaccessreviews': { group: 'authorization.k8s.io', version: 'v1', resource: 'subjectaccessreviews', kind: 'SubjectAccessReview' },
};

const VERBS_BY_METHOD: Record<string, string> = { POST: 'create', PUT: 'update', PATCH: 'patch' };

export class StandInApiServer {
  /** the daemons' way in (through the relays in the node namespaces) */
  private readonly server: http.Server;
  /** the same API on loopback TCP, for the test process itself; never silenced */
  private readonly tcp: http.Server;
  url = '';
  private readonly resources: Resource[] = [];
  private readonly store = new Map<Resource, Map<string, KubeObject>>();
  private history: WatchEvent[] = [];
  /** every event ever emitted, never compacted (tests read what was written) */
  readonly events: Array<{ rv: number; type: string; resource: string; object: KubeObject }> = [];
  /** resume points below this are gone ("compacted") */
  private oldestRv = 1;
  private rv = 1;
  private readonly watchers = new Set<Watcher>();
  readonly requests: RequestRecord[] = [];
  /** watches answered with 410 Gone (resume point compacted away) */
  expired = 0;
  /** how a watch from a compacted resume point is told: an ERROR event in a 200 stream, or an HTTP 410 */
  goneAs: 'event' | 'status' = 'event';
  /** the next requests matching a rule fail with its HTTP status */
  private readonly faults: Array<{ match: (method: string, path: string, watch: boolean) => boolean; status: number; times: number }> = [];
  /** requests matching a rule wait until it is released */
  private readonly holds: Array<{ match: (r: RequestRecord) => boolean; queue: Array<() => void> }> = [];
  private silent = false;
  /** responses on the daemons' socket (silence affects only those) */
  private readonly fromSocket = new WeakSet<http.ServerResponse>();
  private readonly tokens = new Map<string, UserInfo>();
  private rbac: RbacObject[] = [];

  constructor(readonly socketPath: string) {
    this.server = http.createServer((req, res) => this.handle(req, res, 'socket'));
    this.tcp = http.createServer((req, res) => this.handle(req, res, 'tcp'));
  }

  addResource(r: Resource): void {
    this.resources.push(r);
    this.store.set(r, new Map());
  }

  /** A bearer token and whom it authenticates. */
  addToken(token: string, user: UserInfo): void {
    this.tokens.set(token, user);
  }

  /** More Roles, ClusterRoles and bindings, beside those already set. */
  addRbac(objects: RbacObject[]): void {
    this.rbac.push(...objects.filter((o) => ['Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding'].includes(o.kind ?? '')));
  }

  /** Roles, ClusterRoles and their bindings, as `kubectl apply` would create them. */
  setRbac(objects: RbacObject[]): void {
    this.rbac = objects.filter((o) => ['Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding'].includes(o.kind ?? ''));
  }

  /** Requests that RBAC refused, with who made them. */
  get forbidden(): RequestRecord[] {
    return this.requests.filter((r) => r.status === 403 || (r.user !== '' && !r.allowed));
  }

  get resourceVersion(): number {
    return this.rv;
  }

  async listen(): Promise<void> {
    rmSync(this.socketPath, { force: true });
    await new Promise<void>((resolve) => this.server.listen(this.socketPath, resolve));
    await new Promise<void>((resolve) => this.tcp.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.tcp.address() as { port: number }).port}`;
  }

  async close(): Promise<void> {
    this.silent = false;
    for (const h of this.holds) h.queue.length = 0;
    this.closeWatches();
    for (const s of [this.server, this.tcp]) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    rmSync(this.socketPath, { force: true });
  }

  /** Ends every open watch, as an API server restart does. */
  closeWatches(): void {
    for (const w of this.watchers) this.endWatch(w, 'closed');
  }

  /**
   * Drops the event history up to `atRv` (default: everything up to now and
   * the current resourceVersion itself): watches resumed from an earlier point get 410 Gone.
   */
  compact(atRv?: number): void {
    if (atRv === undefined) {
      this.history = [];
      this.rv += 1;
      this.oldestRv = this.rv;
      return;
    }
    this.history = this.history.filter((e) => e.rv > atRv);
    this.oldestRv = Math.max(this.oldestRv, atRv);
  }

  /** Sends a BOOKMARK with the current resourceVersion to every watch that asked for them; returns it. */
  bookmark(): number {
    for (const w of this.watchers) {
      if (!w.bookmarks || w.stuck) continue;
      w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { kind: w.resource.kind, apiVersion: w.resource.apiVersion, metadata: { resourceVersion: String(this.rv) } } })}\n`);
    }
    return this.rv;
  }

  failNext(match: (method: string, path: string, watch: boolean) => boolean, status: number, times = 1): void {
    this.faults.push({ match, status, times });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  /** Requests matching `match` wait (unanswered) until the returned function is called. */
  hold(match: (r: RequestRecord) => boolean): () => void {
    const h = { match, queue: [] as Array<() => void> };
    this.holds.push(h);
    return () => {
      this.holds.splice(this.holds.indexOf(h), 1);
      for (const go of h.queue.splice(0)) go();
    };
  }

  /**
   * The daemons' side goes silent: open watches get nothing more and are
   * never ended, and new requests are read but never answered (their
   * connections stay open). speak() answers new requests again; what went
   * silent stays silent, as a connection stuck in a dead proxy does.
   * Returns the watches it left stuck.
   */
  silence(): RequestRecord[] {
    this.silent = true;
    const stuck: RequestRecord[] = [];
    for (const w of this.watchers) {
      if (!this.fromSocket.has(w.res)) continue;
      w.stuck = true;
      if (w.timer) clearTimeout(w.timer);
      stuck.push(w.record);
    }
    return stuck;
  }

  speak(): void {
    this.silent = false;
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
    this.events.push({ rv, type, resource: resource.plural, object: ev.object });
    for (const w of this.watchers) {
      if (w.resource !== resource || w.stuck) continue;
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

  private statusError(res: http.ServerResponse, code: number, reason: string, message: string, details?: unknown): void {
    this.send(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code });
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

  /** RBAC as the API server's authorizer decides it: any matching rule of any role bound to the user. */
  authorize(user: UserInfo, verb: string, apiGroup: string, resource: string, namespace: string, name: string, nonResourcePath = ''): boolean {
    if (user.groups.includes('system:masters')) return true;
    const bound = (b: RbacObject): boolean =>
      (b.subjects ?? []).some((s) => {
        if (s.kind === 'ServiceAccount') return user.name === `system:serviceaccount:${s.namespace ?? b.metadata?.namespace}:${s.name}`;
        if (s.kind === 'User') return user.name === s.name;
        if (s.kind === 'Group') return user.groups.includes(s.name ?? '');
        return false;
      });
    const has = (list: string[] | undefined, v: string): boolean => !!list && (list.includes('*') || list.includes(v));
    const allows = (r: PolicyRule): boolean => {
      if (nonResourcePath) return has(r.verbs, verb) && (r.nonResourceURLs ?? []).some((u) => u === '*' || u === nonResourcePath || (u.endsWith('*') && nonResourcePath.startsWith(u.slice(0, -1))));
      return has(r.verbs, verb) && has(r.apiGroups, apiGroup) && has(r.resources, resource) && (!r.resourceNames?.length || r.resourceNames.includes(name));
    };
    const role = (kind: string | undefined, roleName: string | undefined, ns: string | undefined): RbacObject | undefined =>
      this.rbac.find((o) => o.kind === kind && o.metadata?.name === roleName && (kind === 'ClusterRole' || o.metadata?.namespace === ns));
    for (const b of this.rbac) {
      if (b.kind !== 'ClusterRoleBinding' && b.kind !== 'RoleBinding') continue;
      if (!bound(b)) continue;
      // A RoleBinding grants only inside its namespace, whatever role it names.
      if (b.kind === 'RoleBinding' && (nonResourcePath || namespace !== b.metadata?.namespace)) continue;
      const r = role(b.roleRef?.kind, b.roleRef?.name, b.metadata?.namespace);
      if (r?.rules?.some(allows)) return true;
    }
    return false;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, via: 'socket' | 'tcp'): void {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    const method = req.method ?? 'GET';
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const token = auth?.[1] ?? '';
    const user = this.tokens.get(token);
    const review = REVIEWS[url.pathname];
    const route = this.route(url.pathname);
    const group = review ? review.group : route ? (route.resource.apiVersion.includes('/') ? route.resource.apiVersion.split('/')[0]! : '') : '';
    const verb = review
      ? (VERBS_BY_METHOD[method] ?? method.toLowerCase())
      : !route
      ? (method === 'GET' ? 'get' : method.toLowerCase())
      : method === 'GET'
        ? route.name
          ? 'get'
          : watch
            ? 'watch'
            : 'list'
        : method === 'DELETE'
          ? route.name
            ? 'delete'
            : 'deletecollection'
          : (VERBS_BY_METHOD[method] ?? method.toLowerCase());
    const record: RequestRecord = {
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      watch,
      resourceVersion: url.searchParams.get('resourceVersion') ?? '',
      status: 0,
      user: user?.name ?? '',
      token: user ? token : '',
      verb,
      apiGroup: group,
      resource: review ? review.resource : route ? `${route.resource.plural}${route.status ? '/status' : ''}` : '',
      namespace: route?.namespace ?? '',
      name: route?.name ?? '',
      allowed: false,
      at: Date.now(),
    };
    this.requests.push(record);
    if (via === 'socket') this.fromSocket.add(res);
    const origWriteHead = res.writeHead.bind(res);
    res.writeHead = ((code: number, ...rest: unknown[]) => {
      record.status = code;
      return (origWriteHead as (...a: unknown[]) => http.ServerResponse)(code, ...rest);
    }) as typeof res.writeHead;
    record.allowed = !!user && this.authorize(user, verb, group, record.resource, record.namespace, record.name, route || review ? '' : url.pathname);
    // Silence: the request is read and never answered; its connection stays open.
    if (this.silent && via === 'socket') {
      req.resume();
      return;
    }
    if (!user) return this.statusError(res, 401, 'Unauthorized', 'Unauthorized');
    if (!record.allowed) {
      if (review) return this.statusError(res, 403, 'Forbidden', `${review.resource}.${review.group} is forbidden: User "${user.name}" cannot ${verb} resource "${review.resource}" in API group "${review.group}" at the cluster scope`);
      const what = route ? `${route.resource.plural}${group ? `.${group}` : ''}${route.name ? ` "${route.name}"` : ''}` : '';
      const scope = route?.namespace ? `in the namespace "${route.namespace}"` : 'at the cluster scope';
      const message = route
        ? `${what} is forbidden: User "${user.name}" cannot ${verb} resource "${record.resource}" in API group "${group}" ${scope}`
        : `forbidden: User "${user.name}" cannot ${verb} path "${url.pathname}"`;
      return this.statusError(res, 403, 'Forbidden', message, route ? { name: route.name ?? '', group, kind: route.resource.plural } : undefined);
    }
    const hold = this.holds.find((h) => h.match(record));
    if (hold) {
      hold.queue.push(() => this.serve(req, res, url, record, route, watch));
      return;
    }
    this.serve(req, res, url, record, route, watch);
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse, url: URL, record: RequestRecord, route: ReturnType<StandInApiServer['route']>, watch: boolean): void {
    const method = record.method;
    const fault = this.faults.find((f) => f.times > 0 && f.match(method, url.pathname, watch));
    if (fault) {
      fault.times -= 1;
      return this.statusError(res, fault.status, 'InternalError', `stand-in: injected failure ${fault.status}`);
    }
    const review = REVIEWS[url.pathname];
    if (review) return this.review(req, res, record, review);
    if (!route) return this.statusError(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const { resource, namespace, name, status } = route;
    const objects = this.store.get(resource)!;
    const key = `${namespace}/${name}`;

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
      return this.startWatch(res, record, resource, namespace, url, list);
    }
    if (name && namespace === null) return this.statusError(res, 404, 'NotFound', 'namespaced resource needs a namespace in the path');
    if (method === 'GET') {
      const o = objects.get(key);
      if (!o) return this.statusError(res, 404, 'NotFound', `${resource.plural} "${name}" not found`);
      return this.send(res, 200, o);
    }
    this.readBody(req).then(
      (body) => {
        record.body = body;
        if (method === 'DELETE') this.remove(res, url, resource, key, name!, body as { gracePeriodSeconds?: number });
        else this.write(req, res, method, resource, namespace, name, status, body as KubeObject);
      },
      (err: Error) => this.statusError(res, 400, 'BadRequest', `body is not JSON: ${err.message}`),
    );
  }

  /** TokenReview and SubjectAccessReview: answered from the stand-in's tokens and RBAC, nothing stored. */
  private review(req: http.IncomingMessage, res: http.ServerResponse, record: RequestRecord, kind: (typeof REVIEWS)[string]): void {
    if (record.method !== 'POST') return this.statusError(res, 405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
    this.readBody(req).then(
      (raw) => {
        record.body = raw;
        const body = raw as { apiVersion?: string; kind?: string; spec?: Record<string, unknown> };
        const spec = body.spec ?? {};
        const reply = (status: unknown): void => this.send(res, 201, { apiVersion: `${kind.group}/${kind.version}`, kind: kind.kind, metadata: { creationTimestamp: null }, spec, status });
        if (body.kind !== kind.kind || body.apiVersion !== `${kind.group}/${kind.version}`) {
          return this.statusError(res, 400, 'BadRequest', `the body must be a ${kind.group}/${kind.version} ${kind.kind}`);
        }
        if (kind.kind === 'TokenReview') {
          const token = typeof spec.token === 'string' ? spec.token : '';
          const who = token ? this.tokens.get(token) : undefined;
          if (!who) return reply({ authenticated: false, user: {}, error: 'invalid bearer token' });
          return reply({ authenticated: true, user: { username: who.name, uid: `stand-in-uid-${who.name}`, groups: who.groups } });
        }
        const ra = spec.resourceAttributes as Record<string, string> | undefined;
        const nra = spec.nonResourceAttributes as Record<string, string> | undefined;
        const userName = typeof spec.user === 'string' ? spec.user : '';
        const groups = Array.isArray(spec.groups) ? (spec.groups as string[]) : [];
        if (!userName && groups.length === 0) return this.statusError(res, 422, 'Invalid', 'SubjectAccessReview.authorization.k8s.io is invalid: spec.user: Invalid value: "": at least one of user or group must be specified');
        if (!!ra === !!nra) return this.statusError(res, 422, 'Invalid', 'SubjectAccessReview.authorization.k8s.io is invalid: spec.resourceAttributes: exactly one of nonResourceAttributes or resourceAttributes must be specified');
        const u: UserInfo = { name: userName, groups };
        const allowed = ra
          ? this.authorize(u, ra.verb ?? '', ra.group ?? '', ra.subresource ? `${ra.resource}/${ra.subresource}` : (ra.resource ?? ''), ra.namespace ?? '', ra.name ?? '')
          : this.authorize(u, nra!.verb ?? '', '', '', '', '', nra!.path ?? '/');
        return reply(allowed ? { allowed: true, reason: 'RBAC: allowed by the stand-in' } : { allowed: false });
      },
      (err: Error) => this.statusError(res, 400, 'BadRequest', `body is not JSON: ${err.message}`),
    );
  }

  private remove(res: http.ServerResponse, url: URL, resource: Resource, key: string, name: string, body: { gracePeriodSeconds?: number }): void {
    const objects = this.store.get(resource)!;
    const o = objects.get(key);
    if (!o) return this.statusError(res, 404, 'NotFound', `${resource.plural} "${name}" not found`);
    const q = url.searchParams.get('gracePeriodSeconds');
    const asked = q !== null ? Number(q) : typeof body?.gracePeriodSeconds === 'number' ? body.gracePeriodSeconds : undefined;
    const spec = (o.spec ?? {}) as { nodeName?: string; terminationGracePeriodSeconds?: number };
    // Pods on a node are deleted gracefully: marked now, removed when the
    // kubelet confirms with grace 0. Unscheduled pods go at once.
    const grace = resource.graceful && spec.nodeName ? (asked ?? spec.terminationGracePeriodSeconds ?? 30) : 0;
    const mark = (seconds: number): void => {
      o.metadata.deletionTimestamp = new Date(Date.now() + seconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
      o.metadata.deletionGracePeriodSeconds = seconds;
      o.metadata.resourceVersion = this.nextRv();
      this.emit(resource, 'MODIFIED', o);
    };
    if (grace > 0) {
      // A second graceful DELETE may shorten the grace period, never lengthen it.
      if (!o.metadata.deletionTimestamp || grace < (o.metadata.deletionGracePeriodSeconds ?? Infinity)) mark(grace);
      return this.send(res, 200, o);
    }
    if ((o.metadata.finalizers ?? []).length) {
      // Finalizers hold the object (marked) until they are all removed.
      if (!o.metadata.deletionTimestamp) mark(0);
      return this.send(res, 200, o);
    }
    objects.delete(key);
    o.metadata.resourceVersion = this.nextRv();
    this.emit(resource, 'DELETED', o);
    return this.send(res, 200, o);
  }

  private startWatch(res: http.ServerResponse, record: RequestRecord, resource: Resource, namespace: string | null, url: URL, current: KubeObject[]): void {
    const fromRv = url.searchParams.get('resourceVersion') ?? '';
    if (fromRv !== '' && fromRv !== '0') {
      const from = Number(fromRv);
      if (!Number.isInteger(from) || from < this.oldestRv) {
        this.expired += 1;
        const gone = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${fromRv} (${this.oldestRv})`, reason: 'Expired', code: 410 };
        if (this.goneAs === 'status') return this.send(res, 410, { ...gone, reason: 'Gone' });
        res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
        res.end(`${JSON.stringify({ type: 'ERROR', object: gone })}\n`);
        return;
      }
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { res, resource, namespace, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', record, timer: null, stuck: false };
    if (fromRv === '' || fromRv === '0') {
      // No resume point: synthetic ADDED for everything, then live events.
      for (const o of current) res.write(`${JSON.stringify({ type: 'ADDED', object: o })}\n`);
    } else {
      const from = Number(fromRv);
      for (const ev of this.history) {
        if (ev.rv <= from || ev.object.kind !== resource.kind) continue;
        if (namespace !== null && ev.object.metadata.namespace !== namespace) continue;
        res.write(`${JSON.stringify({ type: ev.type, object: ev.object })}\n`);
      }
    }
    // The server ends a watch after the timeoutSeconds the client asked for.
    const timeout = Number(url.searchParams.get('timeoutSeconds') ?? '');
    if (Number.isFinite(timeout) && timeout > 0) w.timer = setTimeout(() => this.endWatch(w, 'timeout'), timeout * 1000);
    this.watchers.add(w);
    res.on('close', () => {
      if (w.timer) clearTimeout(w.timer);
      w.record.watchEnd ??= 'client';
      this.watchers.delete(w);
    });
  }

  private endWatch(w: Watcher, why: 'timeout' | 'closed'): void {
    if (w.timer) clearTimeout(w.timer);
    w.record.watchEnd ??= why;
    this.watchers.delete(w);
    w.res.end();
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
      obj.metadata = { ...obj.metadata, namespace, uid: randomUUID(), generation: 1, creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
      delete obj.metadata.resourceVersion;
      delete obj.metadata.deletionTimestamp;
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
    const conflict = (): void =>
      this.statusError(res, 409, 'Conflict', `Operation cannot be fulfilled on ${resource.plural}${resource.apiVersion.includes('/') ? `.${resource.apiVersion.split('/')[0]}` : ''} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    let next: KubeObject;
    if (method === 'PUT') {
      const rv = body.metadata?.resourceVersion;
      // Custom resources (and most kinds) refuse an unconditional update; pods allow it.
      if (!rv && !resource.unconditionalUpdate) {
        return this.statusError(res, 422, 'Invalid', `${resource.kind}.${resource.apiVersion.split('/')[0]} "${name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update`);
      }
      if (rv && rv !== old.metadata.resourceVersion) return conflict();
      next = clone(body);
    } else if (method === 'PATCH') {
      const type = (req.headers['content-type'] ?? '').split(';')[0];
      if (type !== 'application/merge-patch+json') return this.statusError(res, 415, 'UnsupportedMediaType', `stand-in supports application/merge-patch+json only, not ${type}`);
      // A resourceVersion in a patch is a precondition.
      const rv = (body as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
      if (rv && rv !== old.metadata.resourceVersion) return conflict();
      next = mergePatch(old, body) as KubeObject;
    } else {
      return this.statusError(res, 405, 'MethodNotAllowed', `${method} is not supported`);
    }
    // Only the subresource's part changes; identity fields stay.
    const merged: KubeObject = status ? { ...clone(old), status: next.status } : { ...next, status: resource.schema ? old.status : next.status };
    if (merged.status === undefined) delete merged.status;
    merged.apiVersion = resource.apiVersion;
    merged.kind = resource.kind;
    const meta = status ? old.metadata : (merged.metadata ?? old.metadata);
    merged.metadata = {
      ...meta,
      name: old.metadata.name,
      namespace,
      uid: old.metadata.uid,
      creationTimestamp: old.metadata.creationTimestamp,
      generation: old.metadata.generation,
    };
    // Deletion marks are the server's: an update can neither set nor clear them.
    for (const k of ['deletionTimestamp', 'deletionGracePeriodSeconds'] as const) {
      if (old.metadata[k] !== undefined) merged.metadata[k] = old.metadata[k] as never;
      else delete merged.metadata[k];
    }
    if (!status && JSON.stringify(merged.spec) !== JSON.stringify(old.spec)) merged.metadata.generation = (old.metadata.generation ?? 1) + 1;
    const problems = this.check(resource, merged);
    if (problems.length) return this.statusError(res, 422, 'Invalid', problems.join('; '));
    merged.metadata.resourceVersion = old.metadata.resourceVersion;
    if (JSON.stringify(merged) === JSON.stringify(old)) return this.send(res, 200, old);
    merged.metadata.resourceVersion = this.nextRv();
    // The last finalizer removed from an object being deleted: it goes now.
    if (merged.metadata.deletionTimestamp && !(merged.metadata.finalizers ?? []).length && !(resource.graceful && (merged.spec as { nodeName?: string } | undefined)?.nodeName)) {
      objects.delete(key);
      this.emit(resource, 'DELETED', merged);
      return this.send(res, 200, merged);
    }
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
