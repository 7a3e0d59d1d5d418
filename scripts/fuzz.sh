#!/usr/bin/env bash
# Fuzzes the engine's wire codec (wire/fuzz/codec_fuzz.cc) with libFuzzer,
# AddressSanitizer and UBSan for [seconds] (default 60). Builds into
# wire/build-fuzz/ when the sources changed. New inputs libFuzzer finds go to
# wire/build-fuzz/corpus/ (the committed seeds in wire/fuzz/corpus/codec/ are
# only read); a crash leaves wire/build-fuzz/crash-* and a non-zero exit.
# Further arguments go to libFuzzer; to replay a crash:
#   wire/build-fuzz/codec_fuzz wire/build-fuzz/crash-<sha1>
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
out=wire/build-fuzz
bin=$out/codec_fuzz
mkdir -p "$out/corpus"
CXX=${FUZZ_CXX:-clang++}
srcs=(wire/fuzz/codec_fuzz.cc wire/src/engine/codec.cc)

stale=0
[ -f "$bin" ] || stale=1
for f in "${srcs[@]}" wire/src/engine/codec.h scripts/fuzz.sh; do [ "$f" -nt "$bin" ] && stale=1; done
if [ $stale = 1 ]; then
  echo "fuzz: building $bin" >&2
  "$CXX" -std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -o "$bin.tmp" "${srcs[@]}"
  mv "$bin.tmp" "$bin"
fi

# -timeout: one input never takes long; -rss_limit_mb: a leak or runaway buffer is a finding.
exec "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=1024 \
  -artifact_prefix="$out/" "$@" "$out/corpus" wire/fuzz/corpus/codec
