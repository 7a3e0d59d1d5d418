#!/usr/bin/env bash
# Installs what building the native addon needs, when it is missing: a C++
# compiler, make, and nghttp2's headers (the engine speaks HTTP/2 through
# Debian's libnghttp2; its runtime library is on every Debian machine, the
# -dev package only at build time). Runs before node-gyp in `npm install`.
set -euo pipefail
need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
[ -f /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "build-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  echo "build-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
