// Environment variable expansion as containerlab documents it for topology
// files (bash-like): $var, ${var}, ${var-d}, ${var:-d}, ${var=d}, ${var:=d},
// ${var+o}, ${var:+o}, and $$ for a literal $. Defaults are expanded too.
export type Env = Record<string, string | undefined>;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

/** Expands `text`; `used` collects "VAR=value" (or "VAR default value") for validate's report. */
export function expandEnv(text: string, env: Env, used: string[] = []): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c !== '$') {
      out += c;
      i++;
      continue;
    }
    const next = text[i + 1];
    if (next === '$') {
      out += '$';
      i += 2;
      continue;
    }
    if (next === '{') {
      const close = matchingBrace(text, i + 1);
      if (close < 0) {
        out += text.slice(i); // unterminated: left as written
        break;
      }
      out += expandBraced(text.slice(i + 2, close), env, used);
      i = close + 1;
      continue;
    }
    const m = NAME.exec(text.slice(i + 1));
    if (!m) {
      out += '$';
      i++;
      continue;
    }
    const v = env[m[0]] ?? '';
    used.push(`${m[0]}=${v}`);
    out += v;
    i += 1 + m[0].length;
  }
  return out;
}

function matchingBrace(text: string, open: number): number {
  let depth = 0;
  for (let j = open; j < text.length; j++) {
    if (text[j] === '{') depth++;
    else if (text[j] === '}' && --depth === 0) return j;
  }
  return -1;
}

function expandBraced(inner: string, env: Env, used: string[]): string {
  const m = NAME.exec(inner);
  if (!m) return `\${${inner}}`;
  const name = m[0];
  const rest = inner.slice(name.length);
  const value = env[name];
  const set = value !== undefined;
  const nonEmpty = set && value !== '';
  const op = /^(:?[-=+])/.exec(rest)?.[1];
  if (!op) {
    used.push(`${name}=${value ?? ''}`);
    return value ?? '';
  }
  const arg = rest.slice(op.length);
  const colon = op.startsWith(':');
  if (op.endsWith('+')) {
    const on = colon ? nonEmpty : set;
    used.push(`${name} ${on ? 'is set' : 'is not set'}`);
    return on ? expandEnv(arg, env, used) : '';
  }
  const useDefault = colon ? !nonEmpty : !set;
  if (!useDefault) {
    used.push(`${name}=${value}`);
    return value!;
  }
  const d = expandEnv(arg, env, used);
  used.push(`${name} ${colon ? "unset or empty" : "unset"}: default ${d}`);
  return d;
}
