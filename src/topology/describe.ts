// What a topology file was understood to say, for `patchwire validate`
// (text or JSON) and `patchwire graph` (Mermaid or DOT). Pure.
import type { LabModel, LinkEnd } from './model.js';
import { formatImpairment } from '../dataplane/impair.js';

function endText(e: LinkEnd): string {
  const attrs = [e.ip, e.ip6, e.kind !== 'veth' ? e.kind : undefined, e.mtu ? `mtu ${e.mtu}` : undefined, e.mac].filter(Boolean);
  return `${e.pod}:${e.intf}${attrs.length ? ` (${attrs.join(', ')})` : ''}`;
}

/** The validate report: a summary line, then pods, links, segments, what was skipped and expanded. */
export function describeModel(m: LabModel, file: string): string {
  const lines = [`${file}: ok (${m.format} format, ${m.pods.length} pods, ${m.links.length} links${m.segments.length ? `, ${m.segments.length} segments` : ''})`];
  lines.push(`pods: ${m.pods.map((p) => (p.node ? `${p.name} (on ${p.node})` : p.name)).join(', ')}`);
  for (const p of m.pods) for (const c of p.exec ?? []) lines.push(`exec on ${p.name} once its links are up: ${c}`);
  if (m.links.length) {
    lines.push('links:');
    for (const l of m.links) {
      const imp = l.impairments ? `  [impairments: ${Object.entries(l.impairments).map(([k, v]) => `${k} ${v}`).join(', ')}]` : '';
      lines.push(`  ${l.uid}: ${endText(l.a)} <-> ${endText(l.b)}${imp}`);
      for (const side of ['a', 'b'] as const) {
        for (const dir of ['out', 'in'] as const) {
          const f = formatImpairment(l.impair?.[side]?.[dir]);
          if (f) lines.push(`     ${l[side].pod}:${l[side].intf} ${dir}: ${f}`);
        }
      }
    }
  }
  if (m.segments.length) {
    lines.push('segments (shared, more than two members):');
    for (const s of m.segments) lines.push(`  ${s.name}: ${s.members.map(endText).join(', ')}`);
  }
  if (m.skipped.length) {
    lines.push('skipped (not part of the topology):');
    for (const s of m.skipped) lines.push(`  ${s}`);
  }
  if (m.expanded.length) {
    lines.push('expanded:');
    for (const s of m.expanded) lines.push(`  ${s}`);
  }
  return lines.join('\n') + '\n';
}

const ID_RE = /[^A-Za-z0-9_]/g;
const ident = (s: string): string => `n_${s.replace(ID_RE, '_')}`;
const quote = (s: string): string => s.replace(/"/g, '\\"');

/** The topology as a Mermaid flowchart or a DOT graph: pods as boxes, links as edges labelled with interfaces, segments as circles. */
export function graphModel(m: LabModel, format: 'mermaid' | 'dot'): string {
  const out: string[] = [];
  if (format === 'mermaid') {
    out.push('graph LR');
    for (const p of m.pods) out.push(`  ${ident(p.name)}["${quote(p.name)}"]`);
    for (const s of m.segments) out.push(`  ${ident(`seg ${s.name}`)}(("${quote(s.name)}"))`);
    for (const l of m.links) out.push(`  ${ident(l.a.pod)} ---|"${quote(`${l.a.intf} - ${l.b.intf}`)}"| ${ident(l.b.pod)}`);
    for (const s of m.segments) for (const e of s.members) out.push(`  ${ident(e.pod)} ---|"${quote(e.intf)}"| ${ident(`seg ${s.name}`)}`);
  } else {
    out.push(`graph "${quote(m.name ?? 'topology')}" {`);
    for (const p of m.pods) out.push(`  "${quote(p.name)}" [shape=box];`);
    for (const s of m.segments) out.push(`  "${quote(`segment ${s.name}`)}" [shape=circle, label="${quote(s.name)}"];`);
    for (const l of m.links) out.push(`  "${quote(l.a.pod)}" -- "${quote(l.b.pod)}" [taillabel="${quote(l.a.intf)}", headlabel="${quote(l.b.intf)}"];`);
    for (const s of m.segments) for (const e of s.members) out.push(`  "${quote(e.pod)}" -- "${quote(`segment ${s.name}`)}" [taillabel="${quote(e.intf)}"];`);
    out.push('}');
  }
  return out.join('\n') + '\n';
}
