// Pods the CNI plugin has handed to this node's daemon: which network
// namespace each one lives in. Kept in the daemon's state file, so a
// restarted daemon still knows where its pods are.
import type { StateSection } from '../daemon/daemon.js';

export interface RegisteredPod {
  namespace: string;
  pod: string;
  podUid: string;
  containerId: string;
  netns: string;
  /** CNI_IFNAME and network name of the ADD: with containerId they name the attachment GC keeps or drops */
  ifName?: string;
  network?: string;
}

export function podKey(namespace: string, pod: string): string {
  return `${namespace}/${pod}`;
}

export class PodRegistry implements StateSection {
  private readonly pods = new Map<string, RegisteredPod>();
  /** pods per network namespace: asked once per wire while plumbing a thousand */
  private readonly inNetns = new Map<string, number>();

  private put(key: string, p: RegisteredPod): void {
    this.drop(key);
    this.pods.set(key, p);
    this.inNetns.set(p.netns, (this.inNetns.get(p.netns) ?? 0) + 1);
  }

  private drop(key: string): void {
    const old = this.pods.get(key);
    if (!old) return;
    this.pods.delete(key);
    const n = (this.inNetns.get(old.netns) ?? 1) - 1;
    if (n > 0) this.inNetns.set(old.netns, n);
    else this.inNetns.delete(old.netns);
  }

  /** Whether some registered pod lives in this namespace. */
  hasNetns(netns: string): boolean {
    return this.inNetns.has(netns);
  }

  get(namespace: string, pod: string): RegisteredPod | undefined {
    return this.pods.get(podKey(namespace, pod));
  }

  /** Records (or replaces, for a new sandbox of the same pod) a pod; true when something changed. */
  add(p: RegisteredPod): boolean {
    const key = podKey(p.namespace, p.pod);
    const old = this.pods.get(key);
    if (old && old.containerId === p.containerId && old.netns === p.netns && old.podUid === p.podUid && old.ifName === p.ifName && old.network === p.network) return false;
    this.put(key, { ...p });
    return true;
  }

  /** Forgets the pod of this sandbox; DEL of an unknown or replaced sandbox changes nothing. */
  removeContainer(containerId: string): RegisteredPod | undefined {
    for (const [key, p] of this.pods) {
      if (p.containerId === containerId) {
        this.drop(key);
        return p;
      }
    }
    return undefined;
  }

  /** Drops pods whose object is gone from the API (missed DELs, daemon down). */
  retain(keep: (p: RegisteredPod) => boolean): RegisteredPod[] {
    const dropped: RegisteredPod[] = [];
    for (const [key, p] of this.pods) {
      if (!keep(p)) {
        this.drop(key);
        dropped.push(p);
      }
    }
    return dropped;
  }

  all(): RegisteredPod[] {
    return [...this.pods.values()];
  }

  save(): unknown {
    return this.all();
  }

  load(v: unknown): void {
    if (!Array.isArray(v)) return;
    for (const p of v as RegisteredPod[]) {
      if (p && typeof p.namespace === 'string' && typeof p.pod === 'string' && typeof p.netns === 'string' && typeof p.containerId === 'string') {
        this.put(podKey(p.namespace, p.pod), {
          namespace: p.namespace,
          pod: p.pod,
          podUid: p.podUid ?? '',
          containerId: p.containerId,
          netns: p.netns,
          ...(typeof p.ifName === 'string' ? { ifName: p.ifName } : {}),
          ...(typeof p.network === 'string' ? { network: p.network } : {}),
        });
      }
    }
  }
}
