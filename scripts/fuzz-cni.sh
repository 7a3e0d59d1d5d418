#!/usr/bin/env bash
# Fuzzes the CNI plugin's JSON reader and CNI_ARGS parser (cni/fuzz/json_fuzz.c,
# which includes cni/patchwire-cni.c) with libFuzzer, AddressSanitizer and
# UBSan for [seconds] (default 60), as scripts/fuzz.sh does for the engine's
# codec. Builds into cni/build-fuzz/ when the sources changed. New inputs go
# to cni/build-fuzz/corpus/ (the committed seeds in cni/fuzz/corpus/json/ are
# only read); a crash leaves cni/build-fuzz/crash-* and a non-zero exit.
# Replay: cni/build-fuzz/json_fuzz cni/build-fuzz/crash-<sha1>
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
out=cni/build-fuzz
bin=$out/json_fuzz
mkdir -p "$out/corpus"
CC=${FUZZ_CC:-clang}

stale=0
[ -f "$bin" ] || stale=1
for f in cni/fuzz/json_fuzz.c cni/patchwire-cni.c scripts/fuzz-cni.sh; do [ "$f" -nt "$bin" ] && stale=1; done
if [ $stale = 1 ]; then
  echo "fuzz-cni: building $bin" >&2
  "$CC" -std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Wno-unused-function -o "$bin.tmp" cni/fuzz/json_fuzz.c
  mv "$bin.tmp" "$bin"
fi

# -max_len: CNI configs are small, but nesting and long strings need room.
exec "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=1024 -max_len=65536 \
  -artifact_prefix="$out/" "$@" "$out/corpus" cni/fuzz/corpus/json
