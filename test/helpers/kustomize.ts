// Renders a kustomization the way `kubectl kustomize` does, for the subset
// deploy/kustomization.yaml uses (resources, namespace, images), with the
// `yaml` package: stock Debian has no kubectl, and the deploy checks and the
// stand-in API server's RBAC must never depend on one. Any other key is an
// error, so the rendering cannot silently differ from kubectl's.
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

import { parse as parseYaml, parseAllDocuments } from 'yaml';

export type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const SUPPORTED = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'images']);

/** Kinds without a namespace (the built-in ones a deploy directory may hold). */
const CLUSTER_SCOPED = new Set(['Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding', 'PriorityClass', 'StorageClass', 'PersistentVolume', 'Node', 'APIService', 'MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration']);

interface ImageRule {
  name: string;
  newName?: string;
  newTag?: string;
  digest?: string;
}

function splitImage(image: string): { name: string; tag: string } {
  const at = image.indexOf('@');
  if (at >= 0) return { name: image.slice(0, at), tag: image.slice(at) };
  const slash = image.lastIndexOf('/');
  const colon = image.lastIndexOf(':');
  return colon > slash ? { name: image.slice(0, colon), tag: image.slice(colon) } : { name: image, tag: '' };
}

function podSpecs(o: Obj): Obj[] {
  if (o.kind === 'Pod') return [o.spec ?? {}];
  if (o.kind === 'CronJob') return [o.spec?.jobTemplate?.spec?.template?.spec ?? {}];
  if (['DaemonSet', 'Deployment', 'StatefulSet', 'ReplicaSet', 'Job'].includes(o.kind)) return [o.spec?.template?.spec ?? {}];
  return [];
}

export function renderKustomization(dir: string): Obj[] {
  const file = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'].map((n) => path.join(dir, n)).find((f) => existsSync(f));
  if (!file) throw new Error(`${dir} has no kustomization.yaml`);
  const k = parseYaml(readFileSync(file, 'utf8')) as Obj;
  for (const key of Object.keys(k)) if (!SUPPORTED.has(key)) throw new Error(`${file}: '${key}' is not supported by this renderer (test/helpers/kustomize.ts); extend it`);
  const docs: Obj[] = [];
  for (const r of (k.resources ?? []) as string[]) {
    const p = path.join(dir, r);
    if (statSync(p).isDirectory()) docs.push(...renderKustomization(p));
    else docs.push(...parseAllDocuments(readFileSync(p, 'utf8')).map((d) => d.toJSON() as Obj).filter((d) => d !== null));
  }
  if (typeof k.namespace === 'string') {
    const ns = k.namespace;
    // ServiceAccounts as they were named before the namespace changed.
    const accounts = new Set(docs.filter((d) => d.kind === 'ServiceAccount').map((d) => `${d.metadata?.namespace ?? ''}/${d.metadata?.name}`));
    for (const d of docs) {
      if (d.kind === 'Namespace') d.metadata.name = ns;
      else if (!CLUSTER_SCOPED.has(d.kind)) d.metadata = { ...d.metadata, namespace: ns };
      if (d.kind === 'RoleBinding' || d.kind === 'ClusterRoleBinding') {
        for (const s of (d.subjects ?? []) as Obj[]) {
          if (s.kind === 'ServiceAccount' && accounts.has(`${s.namespace ?? ''}/${s.name}`)) s.namespace = ns;
        }
      }
    }
  }
  for (const rule of (k.images ?? []) as ImageRule[]) {
    for (const d of docs) {
      for (const spec of podSpecs(d)) {
        for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])] as Obj[]) {
          const { name, tag } = splitImage(String(c.image ?? ''));
          if (name !== rule.name) continue;
          const newTag = rule.digest ? `@${rule.digest}` : rule.newTag !== undefined ? `:${rule.newTag}` : tag;
          c.image = `${rule.newName ?? name}${newTag}`;
        }
      }
    }
  }
  return docs;
}
