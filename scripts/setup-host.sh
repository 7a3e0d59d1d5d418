#!/usr/bin/env bash
# Installs the tools the test suite drives, when they are missing, and makes
# sure the project is built. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have tcpdump || need+=(tcpdump)
have tshark || need+=(tshark)
have lldpd || need+=(lldpd)
have iperf3 || need+=(iperf3)
have ping || need+=(iputils-ping)
have arping || need+=(arping)
have ethtool || need+=(ethtool)
have nsenter || need+=(util-linux)
have openssl || need+=(openssl)
# test/metrics.test.ts scrapes lab daemons with a real Prometheus (and promtool).
# It runs its own prometheus process; the package's service must not run.
have promtool || need+=(prometheus)
# test/frr-bfd.test.ts runs FRR's daemons in pods; the package's own service must not run.
[ -x /usr/lib/frr/ospfd ] || need+=(frr)
[ -x /usr/bin/python3 ] || need+=(python3)
# VM tests (test/vm-*.test.ts): QEMU runs the guest scripts/build-test-guest.sh
# builds from busybox-static and an unpacked Debian kernel package.
have qemu-system-x86_64 || need+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx cpio && ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' || need+=(busybox-static)
have gcc || need+=(gcc)
# test/ui.test.ts drives Debian's Chromium with playwright-core (never a downloaded browser).
[ -x /usr/bin/chromium ] || need+=(chromium)
# test/ui-firefox.test.ts drives Debian's Firefox ESR over WebDriver BiDi (built into Firefox).
[ -x /usr/bin/firefox-esr ] || need+=(firefox-esr)
# The native engine links nghttp2; the fuzz targets need clang with libFuzzer and
# the sanitizer runtimes, the request reader's the system's OpenSSL (npm run fuzz,
# test/fuzz.test.ts).
[ -f /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)
[ -f /usr/include/openssl/x509.h ] || need+=(libssl-dev)
have clang++ || need+=(clang)
compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a' >/dev/null || need+=(libclang-rt-14-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  for svc in prometheus frr; do
    if [[ " ${need[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi
if [ ! -f wire/build/Release/patchwire_wire.node ] || [ ! -f dist/src/cli/main.js ] || [ ! -f dist/ui/cytoscape.esm.min.mjs ]; then
  echo "setup: building" >&2
  npm run build --silent
fi
