#!/usr/bin/env bash
# Fuzzes what patchwire parses from others with libFuzzer, AddressSanitizer
# and UBSan:
#   scripts/fuzz.sh [codec|cni|csr] [seconds] [libFuzzer args...]
#   codec  the engine's wire codec: frames from peer daemons (wire/fuzz/codec_fuzz.cc)
#   cni    the CNI plugin's JSON reader and CNI_ARGS parser (cni/fuzz/json_fuzz.c)
#   csr    certificate requests the signer reads from the API (wire/fuzz/csr_fuzz.cc)
# Default: codec for 60 s. Each target builds into its build-fuzz/ directory
# when its sources changed. New inputs libFuzzer finds go to
# build-fuzz/corpus-<target>/ (the committed seeds are only read); a crash
# leaves build-fuzz/crash-* and a non-zero exit. To replay a crash, run the
# target's binary (printed when it builds) on the crash file.
set -euo pipefail
cd "$(dirname "$0")/.."

target=codec
case "${1:-}" in codec | cni | csr) target=$1; shift ;; esac
secs=${1:-60}
shift || true

case $target in
  codec)
    out=wire/build-fuzz bin=wire/build-fuzz/codec_fuzz seeds=wire/fuzz/corpus/codec
    deps=(wire/fuzz/codec_fuzz.cc wire/src/engine/codec.cc wire/src/engine/codec.h)
    build() { "${FUZZ_CXX:-clang++}" -std=c++17 $flags -o "$1" wire/fuzz/codec_fuzz.cc wire/src/engine/codec.cc; }
    extra=()
    ;;
  cni)
    out=cni/build-fuzz bin=cni/build-fuzz/json_fuzz seeds=cni/fuzz/corpus/json
    deps=(cni/fuzz/json_fuzz.c cni/patchwire-cni.c)
    # json_fuzz.c includes the plugin's source, to reach its static parsers.
    build() { "${FUZZ_CC:-clang}" -std=gnu11 $flags -Wall -Wextra -Wno-unused-function -o "$1" cni/fuzz/json_fuzz.c; }
    # CNI configs are small, but nesting and long strings need room.
    extra=(-max_len=65536)
    ;;
  csr)
    out=wire/build-fuzz bin=wire/build-fuzz/csr_fuzz seeds=wire/fuzz/corpus/csr
    deps=(wire/fuzz/csr_fuzz.cc wire/src/x509_parse.cc wire/src/x509_parse.h)
    # The system's OpenSSL 3.0 (libssl-dev), the same API as the copy inside Node the addon uses.
    build() { "${FUZZ_CXX:-clang++}" -std=c++17 $flags -o "$1" wire/fuzz/csr_fuzz.cc wire/src/x509_parse.cc -lcrypto; }
    extra=(-max_len=8192)
    ;;
esac
flags="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
corpus=$out/corpus-$target
mkdir -p "$corpus"

stale=0
[ -f "$bin" ] || stale=1
for f in "${deps[@]}" scripts/fuzz.sh; do [ "$f" -nt "$bin" ] && stale=1; done
if [ $stale = 1 ]; then
  echo "fuzz: building $bin" >&2
  build "$bin.tmp"
  mv "$bin.tmp" "$bin"
fi

# -timeout: one input never takes long; -rss_limit_mb: a leak or runaway buffer is a finding.
exec "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=1024 "${extra[@]}" \
  -artifact_prefix="$out/" "$@" "$corpus" "$seeds"
