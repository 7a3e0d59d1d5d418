#!/usr/bin/env bash
# Builds wire/test/engine_stress.cc against the engine with a sanitizer and
# runs it: `asan` (AddressSanitizer + LeakSanitizer + UBSan) or `tsan`
# (ThreadSanitizer). Any finding fails the run.
# usage: scripts/engine-stress.sh asan|tsan [wire-cycles] [reconnects]
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-asan}
cycles=${2:-1000}
reconnects=${3:-100}
out=wire/build-stress
mkdir -p "$out"
case "$mode" in
  asan) san="-fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
  tsan) san="-fsanitize=thread" ;;
  *) echo "usage: $0 asan|tsan [cycles] [reconnects]" >&2; exit 2 ;;
esac
src="wire/test/engine_stress.cc wire/src/engine/engine.cc wire/src/engine/frame_port.cc wire/src/engine/capture_ring.cc wire/src/engine/carrier.cc wire/src/engine/codec.cc wire/src/engine/impair.cc"
# The engine uses OpenSSL through Node's headers in the addon; here Debian's
# libssl of the same 3.0 series stands in.
# shellcheck disable=SC2086
g++ -std=c++17 -g -O1 -fno-omit-frame-pointer $san -o "$out/engine_stress_$mode" $src -lnghttp2 -lssl -lcrypto -lpthread
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
"$out/engine_stress_$mode" "$cycles" "$reconnects"
