// Interface aliases: the names a network OS gives its ports, mapped to the
// Linux interface names inside the container the way containerlab documents
// it per kind (SR Linux ethernet-1/1 -> e1-1, SR-SIM 1/1/c1/1 -> e1-1-c1-1,
// VM-based kinds: the port's index -> ethN). Names that are already Linux
// names are left alone.

interface AliasRule {
  re: RegExp;
  map: (m: RegExpExecArray) => string;
}

/** ethN from a port number: N = port - offset + 1 (containerlab's first data interface is eth1). */
const ethFrom = (re: RegExp, offset: number): AliasRule => ({ re, map: (m) => `eth${Number(m.groups!.port) - offset + 1}` });

const JUNOS = ethFrom(/^(?:et|xe|ge)-0\/0\/(?<port>\d+)$/, 0);
const CSR = ethFrom(/^(?:Gi|GigabitEthernet)\s?(?<port>\d+)$/, 2);
const EOS_VM = ethFrom(/^(?:Et|Ethernet)1\/(?<port>\d+)$/, 1);

const RULES: Record<string, AliasRule[]> = {
  nokia_srlinux: [{ re: /^ethernet-(\d+)\/(\d+)(?:\/(\d+))?$/, map: (m) => `e${m[1]}-${m[2]}${m[3] ? `-${m[3]}` : ''}` }],
  nokia_srsim: [
    {
      re: /^(\d+)\/(?:x(\d+)\/)?(\d+)(?:\/c(\d+))?\/(\d+)$/,
      map: (m) => `e${m[1]}-${m[2] ? `x${m[2]}-` : ''}${m[3]}${m[4] ? `-c${m[4]}` : ''}-${m[5]}`,
    },
  ],
  nokia_sros: [ethFrom(/^1\/1\/(?<port>\d+)$/, 1)],
  juniper_vsrx: [JUNOS],
  juniper_vmx: [JUNOS],
  juniper_vqfx: [JUNOS],
  juniper_vjunosswitch: [JUNOS],
  juniper_vjunosrouter: [JUNOS],
  juniper_vjunosevolved: [JUNOS],
  cisco_csr1000v: [CSR],
  cisco_c8000v: [CSR],
  cisco_n9kv: [ethFrom(/^(?:Ethernet|Et)\s?1\/(?<port>\d+)$/, 1)],
  cisco_xrv: [ethFrom(/^(?:Gi|GigabitEthernet)\s?0\/0\/0\/(?<port>\d+)$/, 0)],
  arista_veos: [EOS_VM],
  nvidia_cumulusvx: [ethFrom(/^swp(?<port>\d+)$/, 1)],
  mikrotik_ros: [ethFrom(/^ether(?<port>\d+)$/, 2)],
};
RULES.srl = RULES.nokia_srlinux!;
for (const k of ['juniper_vsrx', 'juniper_vmx', 'juniper_vqfx', 'cisco_n9kv', 'arista_veos', 'cisco_xrv']) RULES[`vr-${k.split('_')[1]}`] = RULES[k]!;
RULES['vr-csr'] = RULES.cisco_csr1000v!;
RULES['vr-sros'] = RULES.nokia_sros!;

/** The Linux name for `name` on a node of `kind`, or null when it is no alias of that kind. */
export function aliasFor(kind: string | undefined, name: string): string | null {
  for (const rule of RULES[kind ?? ''] ?? []) {
    const m = rule.re.exec(name);
    if (m) return rule.map(m);
  }
  return null;
}
