#!/usr/bin/env bash
# The main job: bring up the triangle lab (3 pods on 2 emulated nodes, every
# link a patchwire wire), send traffic across every wire, show the counters,
# and tear it down again. KEEP=1 leaves the lab running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
pw() { node bin/patchwire.js "$@"; }
LAB=demo
if [ "${KEEP:-0}" != 1 ]; then trap 'pw down $LAB >/dev/null 2>&1 || true' EXIT; fi
pw down $LAB >/dev/null 2>&1 || true
pw up -f examples/triangle.yaml --name $LAB
echo
for hop in "r1 192.0.2.2" "r2 192.0.2.6" "r3 192.0.2.9"; do
  set -- $hop
  echo "== ping from $1 to $2"
  pw exec $LAB "$1" -- ping -c 3 -i 0.2 "$2" | tail -2
done
echo
echo "== a TCP stream (iperf3) from r1 to r2, across nodes:"
pw exec $LAB r2 -- iperf3 -s -1 -D
sleep 0.5
pw exec $LAB r1 -- iperf3 -c 192.0.2.2 -t 2 | grep -E "sender|receiver"
echo
pw status $LAB
if [ "${KEEP:-0}" = 1 ]; then echo; echo "lab $LAB left running; 'node bin/patchwire.js down $LAB' removes it"; fi
