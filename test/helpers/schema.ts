// Structural-schema checks as the API server applies them to custom
// resources (for the stand-in API server): type errors, required fields,
// enums and bounds are reported; unknown fields are pruned, except under
// x-kubernetes-preserve-unknown-fields.
export interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: Schema | boolean;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  nullable?: boolean;
  description?: string;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

export function pruneAndValidate(s: Schema, v: unknown, at: string, problems: string[], root = false): unknown {
  const where = at || '<root>';
  if (v === null) {
    if (!s.nullable && !root) problems.push(`${where}: Invalid value: null`);
    return v;
  }
  const t = typeOf(v);
  if (s.type && !(s.type === t || (s.type === 'number' && t === 'integer'))) {
    problems.push(`${where}: Invalid value: "${t}": ${where} in body must be of type ${s.type}`);
    return v;
  }
  if (s.enum && !s.enum.includes(v)) problems.push(`${where}: Unsupported value: ${JSON.stringify(v)}: supported values: ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) problems.push(`${where}: Invalid value: ${v}: should be greater than or equal to ${s.minimum}`);
    if (s.maximum !== undefined && v > s.maximum) problems.push(`${where}: Invalid value: ${v}: should be less than or equal to ${s.maximum}`);
  }
  if (typeof v === 'string') {
    if (s.minLength !== undefined && v.length < s.minLength) problems.push(`${where}: Invalid value: "${v}": should be at least ${s.minLength} chars long`);
    if (s.maxLength !== undefined && v.length > s.maxLength) problems.push(`${where}: Too long: may not be longer than ${s.maxLength}`);
    if (s.pattern && !new RegExp(s.pattern).test(v)) problems.push(`${where}: Invalid value: "${v}": should match '${s.pattern}'`);
  }
  if (Array.isArray(v)) return s.items ? v.map((x, i) => pruneAndValidate(s.items!, x, `${at}[${i}]`, problems)) : v;
  if (t === 'object') {
    const o = v as Record<string, unknown>;
    for (const r of s.required ?? []) if (o[r] === undefined) problems.push(`${at ? `${at}.` : ''}${r}: Required value`);
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) {
      const sub = s.properties?.[k] ?? (typeof s.additionalProperties === 'object' ? s.additionalProperties : undefined);
      const path = at ? `${at}.${k}` : k;
      if (sub) out[k] = pruneAndValidate(sub, x, path, problems);
      else if (s['x-kubernetes-preserve-unknown-fields'] || s.additionalProperties === true) out[k] = x;
      // else: pruned, as the API server drops unknown fields of structural schemas
    }
    return out;
  }
  return v;
}
