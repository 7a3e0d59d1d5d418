// Who may capture which wire ends. The HTTP port is reachable from the
// network, so every capture (and /healthz detail) request there names its
// caller with `Authorization: Bearer TOKEN`:
//  - lab mode: one random token per lab, written by `patchwire up` into the
//    lab's directory (mode 0600); a lab's daemons hold only that lab's wires,
//    so the token's holder may capture all of them;
//  - cluster mode: the token is whatever the API server accepts (a
//    ServiceAccount token, an OIDC token...). A TokenReview says who it is, a
//    SubjectAccessReview whether that user may `get` the subresource
//    `pods/capture` of the pod a wire end belongs to (wire ends are named
//    NAMESPACE/POD/INTF), as the kubelet asks about `nodes/proxy` for its own
//    endpoints. Answers are cached briefly, in a bounded cache.
//  - the control socket (root only): local root is trusted (`localRoot`).
// Errors name only what the caller asked for, never other wire ends.
import { createHash, timingSafeEqual } from 'node:crypto';
import { chmodSync, chownSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

import { InvalidArgument, PermissionDenied, Unauthenticated, Unavailable } from '../errors.js';

export interface Caller {
  /** stable id for per-caller limits, e.g. 'lab' or 'user:alice' */
  id: string;
  /** whether errors may list every wire end on this daemon to this caller */
  seesAll: boolean;
}

export interface CaptureAuth {
  /** The caller behind an Authorization header value; throws Unauthenticated (or Unavailable). */
  authenticate(authorization: string | undefined): Promise<Caller>;
  /** Throws PermissionDenied unless the caller may capture every named wire end. */
  authorize(caller: Caller, wires: string[]): Promise<void>;
  /**
   * Throws PermissionDenied unless the caller may read this daemon's
   * metrics and link map (every wire end of node `node`: names, state, counters).
   */
  authorizeNode(caller: Caller, node: string): Promise<void>;
  /**
   * Throws PermissionDenied unless the caller may pull or plug the cable of,
   * or set the impairments of, the wire end `end` (the browser view's
   * actions on a daemon).
   */
  authorizeLinkChange(caller: Caller, end: string): Promise<void>;
  /** Whether the caller may see the links of every pod of `namespace` (the browser view's whole lab). */
  maySeeLinks(caller: Caller, namespace: string): Promise<boolean>;
}

/** Local root on the control socket: the socket's mode is the boundary. */
export const localRoot: Caller = { id: 'local-root', seesAll: true };

function bearer(authorization: string | undefined): string {
  const m = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(authorization ?? '');
  if (!m) throw new Unauthenticated('send the capture token as Authorization: Bearer TOKEN');
  return m[1]!;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Where a lab keeps its capture token, in the lab's directory. */
export const LAB_TOKEN_FILE = 'capture.token';

/**
 * Writes a new random token to `file` unless it exists: mode 0600, owned by
 * the user who ran `sudo patchwire up` (SUDO_UID) or else by root, so only
 * the lab's owner can read it.
 */
export function ensureTokenFile(file: string): void {
  try {
    writeFileSync(file, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw err;
  }
  chmodSync(file, 0o600);
  const uid = Number(process.env.SUDO_UID);
  const gid = Number(process.env.SUDO_GID);
  if (Number.isInteger(uid) && uid > 0) chownSync(file, uid, Number.isInteger(gid) && gid >= 0 ? gid : -1);
}

/** The lab's token, as `patchwire up` wrote it; throws with the reason when it cannot be read. */
export function readTokenFile(file: string): string {
  const token = readFileSync(file, 'utf8').trim();
  if (token.length < 16) throw new Error(`capture token file ${file} holds no token`);
  return token;
}

/** Lab mode: one shared secret per lab. */
export class LabTokenAuth implements CaptureAuth {
  private readonly digest: Buffer;

  constructor(token: string) {
    this.digest = sha256(token);
  }

  async authenticate(authorization: string | undefined): Promise<Caller> {
    // Digests of equal length: the comparison takes the same time whatever the token.
    if (!timingSafeEqual(sha256(bearer(authorization)), this.digest)) throw new Unauthenticated('wrong capture token for this lab');
    return { id: 'lab', seesAll: true };
  }

  async authorize(): Promise<void> {
    // A lab's daemons hold nothing but that lab's wires.
  }

  async authorizeNode(): Promise<void> {
    // The same: the token's holder may see the whole lab.
  }

  async authorizeLinkChange(): Promise<void> {
    // The token's holder owns the lab (patchwire ui and link down do the same with it).
  }

  async maySeeLinks(): Promise<boolean> {
    return true;
  }
}

/** A small cache whose entries expire, holding at most `max` (the oldest go first). */
export class TtlCache<V> {
  private readonly m = new Map<string, { v: V; until: number }>();
  constructor(private readonly max: number) {}

  get(k: string): V | undefined {
    const e = this.m.get(k);
    if (!e) return undefined;
    if (e.until < Date.now()) {
      this.m.delete(k);
      return undefined;
    }
    return e.v;
  }

  set(k: string, v: V, ttlMs: number): void {
    this.m.delete(k);
    this.m.set(k, { v, until: Date.now() + ttlMs });
    while (this.m.size > this.max) this.m.delete(this.m.keys().next().value as string);
  }

  get size(): number {
    return this.m.size;
  }
}

/** POSTs a review object to the API server and returns the answer (ApiClient.request in the daemon). */
export type ReviewPoster = (path: string, body: unknown) => Promise<unknown>;

export interface KubeUser {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

interface KubeCaller extends Caller {
  user: KubeUser;
}

/** How long answers are kept (as the kubelet's webhook authn/authz caches do, but shorter). */
export const REVIEW_TTL_MS = { allowed: 30_000, denied: 10_000 };
export const REVIEW_CACHE_ENTRIES = 1024;

/** The verb and resource a capture is authorized as (SECURITY.md says why). */
export const CAPTURE_ATTRIBUTES = { verb: 'get', group: '', resource: 'pods', subresource: 'capture' } as const;

/**
 * What /metrics and /map are authorized as: `get nodes/metrics` on the
 * daemon's node, as the kubelet authorizes its own /metrics. One scrape shows
 * every wire end of the node, whatever its namespace, and Prometheus' usual
 * ClusterRole already grants exactly this.
 */
export const NODE_METRICS_ATTRIBUTES = { verb: 'get', group: '', resource: 'nodes', subresource: 'metrics' } as const;

/**
 * What the browser view's cable pulls and impairments are authorized as:
 * `patch` on the Topology object of the end's pod (group networkop.co.uk).
 * Whoever may patch it can already pull that cable or impair that end by
 * editing the link's `patchwire` block (state: down, impairments), so the
 * page grants nothing new; `get pods/capture` (a viewer's right) is not enough.
 */
export const LINK_CHANGE_ATTRIBUTES = { verb: 'patch', group: 'networkop.co.uk', resource: 'topologies', subresource: '' } as const;

/**
 * What the browser view's whole-lab drawing is authorized as: `list` of the
 * Topology objects of a namespace, whose links and status it shows. Without
 * it the page shows only the daemon's own wire ends (as /map does).
 */
export const LINK_VIEW_ATTRIBUTES = { verb: 'list', group: 'networkop.co.uk', resource: 'topologies', subresource: '' } as const;

/** Cluster mode: the API server decides, through TokenReview and SubjectAccessReview. */
export class KubeAuth implements CaptureAuth {
  private readonly users = new TtlCache<KubeUser | null>(REVIEW_CACHE_ENTRIES);
  private readonly access = new TtlCache<boolean>(REVIEW_CACHE_ENTRIES);
  /** reviews sent to the API server (tests and status read it) */
  reviews = 0;

  constructor(private readonly post: ReviewPoster) {}

  async authenticate(authorization: string | undefined): Promise<Caller> {
    const token = bearer(authorization);
    const key = sha256(token).toString('hex');
    let user = this.users.get(key);
    if (user === undefined) {
      let answer: { status?: { authenticated?: boolean; user?: KubeUser } };
      try {
        this.reviews++;
        answer = (await this.post('/apis/authentication.k8s.io/v1/tokenreviews', {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenReview',
          spec: { token },
        })) as typeof answer;
      } catch (err) {
        throw new Unavailable(`cannot check the token with the API server: ${(err as Error).message}`);
      }
      user = answer?.status?.authenticated && answer.status.user?.username ? answer.status.user : null;
      this.users.set(key, user, user ? REVIEW_TTL_MS.allowed : REVIEW_TTL_MS.denied);
    }
    if (!user) throw new Unauthenticated('the API server does not accept this token');
    return { id: `user:${user.username}`, seesAll: false, user } as KubeCaller;
  }

  async authorize(caller: Caller, wires: string[]): Promise<void> {
    const user = (caller as KubeCaller).user;
    if (!user) throw new PermissionDenied('unknown caller');
    const pods = new Map<string, { namespace: string; pod: string }>();
    for (const w of wires) {
      const parts = w.split('/');
      if (parts.length !== 3 || parts.some((p) => p === '')) throw new InvalidArgument(`wire end '${w}': in a cluster, name wire ends NAMESPACE/POD/INTF`);
      pods.set(`${parts[0]}/${parts[1]}`, { namespace: parts[0]!, pod: parts[1]! });
    }
    const denied: string[] = [];
    for (const [name, p] of pods) if (!(await this.allowed(user, { namespace: p.namespace, name: p.pod, ...CAPTURE_ATTRIBUTES }))) denied.push(name);
    if (denied.length) {
      const { verb, resource, subresource } = CAPTURE_ATTRIBUTES;
      throw new PermissionDenied(`user "${user.username}" may not ${verb} ${resource}/${subresource} of ${denied.map((d) => `pod ${d}`).join(', ')}`);
    }
  }

  async authorizeNode(caller: Caller, node: string): Promise<void> {
    const user = (caller as KubeCaller).user;
    if (!user) throw new PermissionDenied('unknown caller');
    if (!(await this.allowed(user, { name: node, ...NODE_METRICS_ATTRIBUTES }))) {
      const { verb, resource, subresource } = NODE_METRICS_ATTRIBUTES;
      throw new PermissionDenied(`user "${user.username}" may not ${verb} ${resource}/${subresource} of node ${node}`);
    }
  }

  async authorizeLinkChange(caller: Caller, end: string): Promise<void> {
    const user = (caller as KubeCaller).user;
    if (!user) throw new PermissionDenied('unknown caller');
    const parts = end.split('/');
    if (parts.length !== 3 || parts.some((p) => p === '')) throw new InvalidArgument(`wire end '${end.slice(0, 100)}': in a cluster, name wire ends NAMESPACE/POD/INTF`);
    if (!(await this.allowed(user, { namespace: parts[0]!, name: parts[1]!, ...LINK_CHANGE_ATTRIBUTES }))) {
      const { verb, resource, group } = LINK_CHANGE_ATTRIBUTES;
      throw new PermissionDenied(`user "${user.username}" may not ${verb} ${resource}.${group} ${parts[0]}/${parts[1]}, which pulling a cable or setting impairments at ${end} needs`);
    }
  }

  async maySeeLinks(caller: Caller, namespace: string): Promise<boolean> {
    const user = (caller as KubeCaller).user;
    if (!user) return false;
    return this.allowed(user, { namespace, name: '', ...LINK_VIEW_ATTRIBUTES });
  }

  private async allowed(user: KubeUser, attrs: { namespace?: string; name: string; verb: string; group: string; resource: string; subresource: string }): Promise<boolean> {
    const key = JSON.stringify([user.username, user.uid ?? '', [...(user.groups ?? [])].sort(), attrs]);
    const hit = this.access.get(key);
    if (hit !== undefined) return hit;
    let answer: { status?: { allowed?: boolean; denied?: boolean } };
    try {
      this.reviews++;
      answer = (await this.post('/apis/authorization.k8s.io/v1/subjectaccessreviews', {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        spec: {
          user: user.username,
          ...(user.uid ? { uid: user.uid } : {}),
          groups: user.groups ?? [],
          ...(user.extra ? { extra: user.extra } : {}),
          resourceAttributes: attrs,
        },
      })) as typeof answer;
    } catch (err) {
      throw new Unavailable(`cannot check access with the API server: ${(err as Error).message}`);
    }
    const ok = answer?.status?.allowed === true && answer.status.denied !== true;
    this.access.set(key, ok, ok ? REVIEW_TTL_MS.allowed : REVIEW_TTL_MS.denied);
    return ok;
  }
}
