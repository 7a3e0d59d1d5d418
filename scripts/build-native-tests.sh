#!/usr/bin/env bash
# Builds the engine's native unit tests (wire/test/) with AddressSanitizer and
# UBSan into wire/build-native-tests/: codec_test, ring_test and impair_test (unit checks) and codec_cli
# (the driver test/codec-native.test.ts cross-checks against the TypeScript
# codec). Rebuilds only what is older than its sources. Never touches wire/build.
set -euo pipefail
cd "$(dirname "$0")/.."

out=wire/build-native-tests
mkdir -p "$out"
CXX=${CXX:-g++}
flags=(-std=c++17 -g -O1 -Wall -Wextra -Wno-unused-parameter -fno-omit-frame-pointer
  -fsanitize=address,undefined -fno-sanitize-recover=all)
lib=(wire/src/engine/codec.cc wire/src/engine/capture_ring.cc wire/src/engine/impair.cc)
deps=(wire/src/engine/codec.h wire/src/engine/capture_ring.h wire/src/engine/impair.h wire/src/engine/frame_port.h "${lib[@]}" scripts/build-native-tests.sh)

# Whether $1 is missing or older than any of the remaining arguments.
stale() {
  local target=$1
  shift
  [ -f "$target" ] || return 0
  for f in "$@"; do [ "$f" -nt "$target" ] && return 0; done
  return 1
}

for prog in codec_test codec_cli ring_test impair_test; do
  if stale "$out/$prog" "${deps[@]}" "wire/test/$prog.cc"; then
    echo "build-native-tests: $out/$prog" >&2
    "$CXX" "${flags[@]}" -o "$out/$prog.tmp" "wire/test/$prog.cc" "${lib[@]}"
    mv "$out/$prog.tmp" "$out/$prog"
  fi
done
