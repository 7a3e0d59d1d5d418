#!/bin/bash
# npm run bench:floor: ping RTT over bench/floor/relay.c between two emulated
# nodes, then over the same relay done in Node (node-relay.ts), against a
# direct veth pair, with the bench's ping settings (500
# pings, one per 10 ms idle; one per 20 ms beside an iperf3 TCP stream for
# the loaded figures). Everything it creates is named pwfloor-* and removed
# on exit, also on failure.
set -euo pipefail
PINGS=${PINGS:-500}
SECONDS_TCP=${SECONDS_TCP:-8}
DIR=$(mktemp -d /tmp/pwfloor.XXXXXX)
NS="pwfloor-pa pwfloor-na pwfloor-nb pwfloor-pb pwfloor-va pwfloor-vb"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NODE_RELAY="$ROOT/dist/bench/floor/node-relay.js"
[ -f "$NODE_RELAY" ] || { echo "bench:floor: $NODE_RELAY is missing: run 'npm run build' first" >&2; exit 1; }
stop_relays() {
  pkill -f "$DIR/relay pwfl-h" 2>/dev/null || true
  pkill -f "$NODE_RELAY pwfl-h" 2>/dev/null || true
  sleep 0.3
}
cleanup() {
  stop_relays
  pkill -f "iperf3 -(s -1 -B|c) 10\.255\." 2>/dev/null || true
  for n in $NS; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
cc -O2 -Wall -o "$DIR/relay" "$(dirname "$0")/relay.c"
for n in $NS; do ip netns add "$n"; ip -n "$n" link set lo up; done
# pod a -- node a (relay) == underlay == node b (relay) -- pod b
ip link add pwfl-pa netns pwfloor-pa type veth peer name pwfl-ha netns pwfloor-na
ip link add pwfl-pb netns pwfloor-pb type veth peer name pwfl-hb netns pwfloor-nb
ip link add pwfl-ua netns pwfloor-na type veth peer name pwfl-ub netns pwfloor-nb
ip link add pwfl-va netns pwfloor-va type veth peer name pwfl-vb netns pwfloor-vb
ip -n pwfloor-na addr add 198.19.255.1/30 dev pwfl-ua
ip -n pwfloor-nb addr add 198.19.255.2/30 dev pwfl-ub
ip -n pwfloor-pa addr add 10.255.0.1/24 dev pwfl-pa
ip -n pwfloor-pb addr add 10.255.0.2/24 dev pwfl-pb
ip -n pwfloor-va addr add 10.255.1.1/24 dev pwfl-va
ip -n pwfloor-vb addr add 10.255.1.2/24 dev pwfl-vb
for l in pa:pwfl-pa pb:pwfl-pb na:pwfl-ha nb:pwfl-hb na:pwfl-ua nb:pwfl-ub va:pwfl-va vb:pwfl-vb; do
  ip -n "pwfloor-${l%%:*}" link set "${l#*:}" up
done
start_relays() { # command... : one relay per node, joined by TCP
  ip netns exec pwfloor-nb "$@" pwfl-hb listen 7999 &
  sleep 0.5
  ip netns exec pwfloor-na "$@" pwfl-ha connect 198.19.255.2 7999 &
  # Until frames cross: a relay that never connects must not read as empty figures.
  for _ in $(seq 50); do
    ip netns exec pwfloor-pa ping -c 1 -W 0.2 10.255.0.2 >/dev/null 2>&1 && return 0
  done
  echo "bench:floor: no ping crossed the relays ($*) within 10 s" >&2
  exit 1
}
rtts() { # ns ip -> "p50 p99" in ms
  ip netns exec "$1" ping -c 3 -i 0.2 "$2" >/dev/null
  ip netns exec "$1" ping -c "$PINGS" -i 0.01 -W 1 "$2" | grep -oP 'time=\K[\d.]+' | sort -n |
    awk '{a[NR]=$1} END {if (NR == 0) exit 1; print a[int(NR*0.5)+1], a[int(NR*0.99)]}'
}
loaded() { # client-ns server-ns server-ip -> "gbps p50 p99" with a 20 ms ping beside iperf3
  ip netns exec "$2" iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
  sleep 0.5
  ip netns exec "$1" iperf3 -c "$3" -t "$SECONDS_TCP" -J >"$DIR/iperf.json" &
  local ip_pid=$!
  sleep 1
  ip netns exec "$1" ping -c $(((SECONDS_TCP - 2) * 50)) -i 0.02 -W 1 "$3" | grep -oP 'time=\K[\d.]+' | sort -n >"$DIR/loaded.txt" || true
  wait "$ip_pid"
  wait
  local gbps
  gbps=$(grep -m1 -A8 '"sum_received"' "$DIR/iperf.json" | grep -oP '"bits_per_second":\s*\K[\d.e+]+' | awk '{printf "%.2f", $1 / 1e9}')
  awk -v g="$gbps" '{a[NR]=$1} END {if (NR == 0) exit 1; print g, a[int(NR*0.5)+1], a[int(NR*0.99)]}' "$DIR/loaded.txt"
}
read -r v50 v99 < <(rtts pwfloor-va 10.255.1.2)
read -r vg vl50 vl99 < <(loaded pwfloor-va pwfloor-vb 10.255.1.2)
start_relays "$DIR/relay"
read -r r50 r99 < <(rtts pwfloor-pa 10.255.0.2)
read -r rg rl50 rl99 < <(loaded pwfloor-pa pwfloor-pb 10.255.0.2)
stop_relays
start_relays node "$NODE_RELAY"
read -r n50 n99 < <(rtts pwfloor-pa 10.255.0.2)
read -r ng nl50 nl99 < <(loaded pwfloor-pa pwfloor-pb 10.255.0.2)
stop_relays
printf '| path | RTT p50 ms | RTT p99 ms | TCP Gbit/s | loaded p50 ms | loaded p99 ms |\n|---|---:|---:|---:|---:|---:|\n'
printf '| veth | %s | %s | %s | %s | %s |\n' "$v50" "$v99" "$vg" "$vl50" "$vl99"
printf '| C relay, two processes over TCP | %s | %s | %s | %s | %s |\n' "$r50" "$r99" "$rg" "$rl50" "$rl99"
printf '| Node relay, two processes over TCP | %s | %s | %s | %s | %s |\n' "$n50" "$n99" "$ng" "$nl50" "$nl99"
