// containerlab's environment expansion and interface aliases, without root.
import t from 'tap';

import { aliasFor } from '../../src/topology/aliases.js';
import { expandEnv } from '../../src/topology/envsubst.js';

t.test('every form containerlab documents', async (t) => {
  const env = { SET: 'v', EMPTY: '', D: 'dflt' };
  const cases: Array<[string, string]> = [
    ['$SET and ${SET}', 'v and v'],
    ['${UNSET}', ''],
    ['${UNSET-x}|${EMPTY-x}|${SET-x}', 'x||v'],
    ['${UNSET:-x}|${EMPTY:-x}|${SET:-x}', 'x|x|v'],
    ['${UNSET=x}|${EMPTY=x}|${SET=x}', 'x||v'],
    ['${UNSET:=x}|${EMPTY:=x}|${SET:=x}', 'x|x|v'],
    ['${UNSET+o}|${EMPTY+o}|${SET+o}', '|o|o'],
    ['${UNSET:+o}|${EMPTY:+o}|${SET:+o}', '||o'],
    ['${UNSET:=$D}', 'dflt'],
    ['${UNSET:=${ALSO_UNSET:=deep}}', 'deep'],
    ['$$SET costs $5', '$SET costs $5'],
    ['${unterminated', '${unterminated'],
  ];
  for (const [input, want] of cases) t.equal(expandEnv(input, env), want, input);
  const used: string[] = [];
  expandEnv('${host_link:=ens3}', {}, used);
  t.same(used, ['host_link unset or empty: default ens3'], 'what was expanded is reported');
});

t.test('interface aliases per kind, as containerlab documents them', async (t) => {
  const cases: Array<[string, string, string | null]> = [
    ['nokia_srlinux', 'ethernet-1/1', 'e1-1'],
    ['srl', 'ethernet-1/3/1', 'e1-3-1'],
    ['nokia_srlinux', 'e1-1', null],
    ['nokia_srsim', '1/1/c1/1', 'e1-1-c1-1'],
    ['nokia_srsim', '1/x2/3/4', 'e1-x2-3-4'],
    ['juniper_vsrx', 'ge-0/0/1', 'eth2'],
    ['cisco_csr1000v', 'Gi5', 'eth4'],
    ['arista_veos', 'Ethernet1/1', 'eth1'],
    ['nvidia_cumulusvx', 'swp3', 'eth3'],
    ['linux', 'ethernet-1/1', null],
    [undefined as unknown as string, 'ethernet-1/1', null],
  ];
  for (const [kind, name, want] of cases) t.equal(aliasFor(kind, name), want, `${kind}: ${name}`);
});
