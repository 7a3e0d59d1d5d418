#!/usr/bin/env bash
# Runs tap test files with every daemon on an AddressSanitizer + UBSan build of
# the addon, and fails on any sanitizer finding.
#   scripts/test-asan.sh [test files...]   (default: the data-plane tests below)
# The addon is built from wire/binding.gyp into wire/build-asan/ (never
# wire/build/, which other processes load). Node processes get the ASan runtime
# through LD_PRELOAD and PATCHWIRE_ADDON points src/native/wire.ts at the build.
# Sanitizer reports go to files in wire/build-asan/reports/, daemon logs to
# reports/logs/ (the test harness deletes its copies), which scripts/asan-scan.mjs
# reads at the end: any AddressSanitizer or UBSan report fails the run, and so
# does a leak the addon allocated. Leaks of Node/V8 itself at exit (V8's heap
# is not a root LeakSanitizer scans) are counted but not ours.
# Serialize it like any test run: flock /tmp/pw-test.lock npm run test:asan
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

out=$root/wire/build-asan
addon=$out/patchwire_wire.node
reports=$out/reports
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(test/dataplane.test.ts test/accounting.test.ts)

san_flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"

# --- build: binding.gyp copied into a directory of its own, sources linked --
gyp=$out/gyp
mkdir -p "$gyp"
stale=0
[ -f "$addon" ] || stale=1
if [ $stale = 0 ] && [ -n "$(find wire/src wire/binding.gyp -newer "$addon" -print -quit)" ]; then stale=1; fi
if [ $stale = 1 ]; then
  echo "test-asan: building $addon" >&2
  cp wire/binding.gyp "$gyp/binding.gyp"
  ln -sfn ../../src "$gyp/src"
  # node-gyp reads npm's nodedir only when npm runs it; find the headers next to this node.
  nodedir=${npm_config_nodedir:-}
  prefix=$(node -p "require('path').resolve(process.execPath, '../..')")
  if [ -z "$nodedir" ] && [ -f "$prefix/include/node/node_api.h" ]; then nodedir=$prefix; fi
  CFLAGS="$san_flags" CXXFLAGS="$san_flags" LDFLAGS="-fsanitize=address,undefined" \
    "$root/node_modules/.bin/node-gyp" rebuild --directory="$gyp" ${nodedir:+--nodedir="$nodedir"} --loglevel=warn >&2
  cp "$gyp/build/Release/patchwire_wire.node" "$addon.tmp"
  mv "$addon.tmp" "$addon"
fi
if ! ldd "$addon" | grep -q libasan; then
  echo "test-asan: $addon is not linked with ASan" >&2
  exit 1
fi

# --- sanitizer environment ------------------------------------------------
rm -rf "$reports"
mkdir -p "$reports"
libasan=$(gcc -print-file-name=libasan.so)
# Every process inherits LD_PRELOAD. procps tools (pkill, ps, ...) hang in
# textdomain() under the ASan runtime, so they run through wrappers without it.
bin=$out/bin
rm -rf "$bin"
mkdir -p "$bin"
for tool in kill ps pgrep pkill pidwait pmap pwdx skill snice sysctl top w watch free uptime vmstat slabtop tload; do
  real=$(type -P "$tool") || continue
  printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$real" >"$bin/$tool"
  chmod +x "$bin/$tool"
done
export PATH=$bin:$PATH
# Leak checking only in node processes: every process inherits LD_PRELOAD, and
# tools such as bash leak at exit by design. %b is the program's name.
echo "detect_leaks=1" >"$reports/asan-node.opts"
export LD_PRELOAD=$libasan
# exitcode=0: a leak report alone leaves the exit status alone (scanned below),
# while abort_on_error makes any memory error kill the process with SIGABRT.
export ASAN_OPTIONS="detect_leaks=0:include_if_exists=$reports/asan-%b.opts:halt_on_error=1:abort_on_error=1:exitcode=0:log_path=$reports/asan:log_exe_name=1:malloc_context_size=20"
export LSAN_OPTIONS="print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
export PATCHWIRE_ADDON=$addon
# Daemons are stopped with SIGTERM at teardown so they exit through exit() and
# LeakSanitizer looks at them, and their logs are kept: with gcc's separate
# UBSan runtime, UBSan reports ignore log_path and go to stderr (test/helpers/testnet.ts).
export PATCHWIRE_TEST_GRACEFUL_STOP=1
export PATCHWIRE_TEST_KEEP_LOGS=$reports/logs
mkdir -p "$PATCHWIRE_TEST_KEEP_LOGS"

# The daemons load dist/: make sure it honours PATCHWIRE_ADDON and the build loads.
loaded=$(node --input-type=module -e "const m = await import('$root/dist/src/native/wire.js'); console.log(m.ADDON_PATH, typeof m.wire.Port)")
if [ "$loaded" != "$addon function" ]; then
  echo "test-asan: dist/src/native/wire.js loads '$loaded', not $addon (run: npx tsc -p tsconfig.json)" >&2
  exit 1
fi

set +e
"$root/node_modules/.bin/tap" "${files[@]}"
rc=$?
set -e
unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS

# --- scan the reports -------------------------------------------------------
scan=0
node scripts/asan-scan.mjs "$reports" || scan=1
[ $scan = 0 ] || exit 1
exit $rc
