#!/usr/bin/env bash
# Builds the small QEMU guest the VM tests boot, from Debian packages only:
# the kernel image package is downloaded with apt-get and unpacked (never
# installed) for vmlinuz and its virtio modules; busybox-static is the whole
# userland; test/tools/l2frames.c (compiled -static here) sends and receives
# raw frames; iperf3 comes with the shared libraries ldd names.
#
# The result is cached under $PW_GUEST_CACHE (default
# /var/cache/patchwire-test-guest)/KEY, KEY a hash of the package versions
# and of this script and the tool's source, so the suite builds it once.
# Prints the directory holding vmlinuz and initrd.
#
# Usage: scripts/build-test-guest.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${PW_GUEST_CACHE:-/var/cache/patchwire-test-guest}"

# The kernel package linux-image-amd64 points at today.
kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
[ -n "$kpkg" ] || { echo "build-test-guest: apt knows no linux-image-amd64 (apt-get update?)" >&2; exit 1; }
kver="$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')"
bbver="$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true)"
[ -n "$bbver" ] || { echo "build-test-guest: busybox-static is not installed (scripts/setup-host.sh installs it)" >&2; exit 1; }
ipver="$(dpkg-query -W -f='${Version}' iperf3 2>/dev/null || echo none)"
key="$( { echo "$kpkg $kver $bbver $ipver"; cat "$0" "$root/test/tools/l2frames.c"; } | sha256sum | cut -c1-16)"
out="$cache/$key"
if [ -f "$out/initrd" ] && [ -f "$out/vmlinuz" ]; then echo "$out"; exit 0; fi

echo "build-test-guest: building $out ($kpkg $kver, busybox $bbver, iperf3 $ipver)" >&2
mkdir -p "$cache"
work="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$kpkg=$kver" >/dev/null 2>&1) || { echo "build-test-guest: apt-get download $kpkg failed" >&2; exit 1; }
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
kdir="$(ls -d "$work"/k/lib/modules/*)"
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,sbin,proc,sys,dev,tmp,etc,lib/modules,usr/bin,run}
cp /bin/busybox "$rootfs/bin/busybox"
# virtio and the NIC; 8021q for VLAN tests in the guest. Loaded in this order.
mods=""
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net 8021q; do
  f="$(find "$kdir" -name "$m.ko*" | head -1)"
  if [ -z "$f" ]; then
    # built into this kernel: nothing to load
    continue
  fi
  case "$f" in
    *.ko.xz) xz -dc "$f" >"$rootfs/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$rootfs/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$rootfs/lib/modules/$m.ko" ;;
    *) cp "$f" "$rootfs/lib/modules/$m.ko" ;;
  esac
  mods="$mods $m"
done
# 8021q needs garp/mrp/stp/llc; the tests do not need VLAN interfaces in the guest, drop it.
rm -f "$rootfs/lib/modules/8021q.ko"; mods="${mods/ 8021q/}"
echo "$mods" >"$rootfs/etc/modules"
gcc -static -O2 -o "$rootfs/bin/l2frames" "$root/test/tools/l2frames.c"
if command -v iperf3 >/dev/null; then
  cp "$(command -v iperf3)" "$rootfs/usr/bin/iperf3"
  for lib in $(ldd "$(command -v iperf3)" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  # ld.so's own path from the binary's interpreter
  mkdir -p "$rootfs/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$rootfs/lib64/"
fi
cat >"$rootfs/init" <<'INIT'
#!/bin/busybox sh
# The test guest's init: loads virtio, names each NIC as patchwire declared it
# (pw.if=NAME,MAC on the kernel command line), sets addresses (pw.ip=NAME,CIDR)
# and MTUs (pw.mtu=NAME,MTU), says PW-READY on the console, and keeps a root
# shell on ttyS0 for the tests and `patchwire console`.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko; done
ip link set lo up
# Frames taken from the NIC in one NAPI poll reach the stack as a list (up to
# gro_normal_batch, 8 by default), and on that path an ETH_P_ALL socket gets a
# frame some protocol handles (IPv4, a VLAN tag) at once, but frames no
# protocol handles only when their run ends: the tests' receiver saw frames
# swapped that QEMU had handed the NIC in order. One frame per list keeps the
# receiver's order the wire's.
echo 1 > /proc/sys/net/core/gro_normal_batch
# Two passes: every NIC first gets a temporary name, so declared names that
# are the kernel's names of other NICs (eth1 on the NIC the kernel called eth0
# while another is eth1) never collide.
i=0
for d in /sys/class/net/*; do
  n="${d##*/}"; [ "$n" = lo ] && continue
  ip link set "$n" name "pwtmp$i"; i=$((i+1))
done
for a in $(cat /proc/cmdline); do
  case "$a" in
    pw.if=*) v="${a#pw.if=}"; name="${v%%,*}"; mac="${v#*,}"
      for d in /sys/class/net/pwtmp*; do
        [ -e "$d" ] && [ "$(cat $d/address)" = "$mac" ] && ip link set "${d##*/}" name "$name"
      done
      ip link set "$name" up ;;
  esac
done
for a in $(cat /proc/cmdline); do
  case "$a" in
    pw.ip=*) v="${a#pw.ip=}"; ip addr add "${v#*,}" dev "${v%%,*}" ;;
    pw.mtu=*) v="${a#pw.mtu=}"; ip link set "${v%%,*}" mtu "${v#*,}" ;;
  esac
done
echo "PW-READY $(cut -d' ' -f1 /proc/uptime)"
while true; do setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'; done
INIT
chmod +x "$rootfs/init"
(cd "$rootfs" && find . | /bin/busybox cpio -o -H newc 2>/dev/null) >"$work/initrd"
cp "$work"/k/boot/vmlinuz-* "$work/vmlinuz"
cp "$work"/k/boot/config-* "$work/config"
mkdir -p "$out.tmp"
mv "$work/vmlinuz" "$work/initrd" "$work/config" "$out.tmp/"
echo "$kpkg $kver busybox-static $bbver iperf3 $ipver" >"$out.tmp/versions"
rm -rf "$out"; mv "$out.tmp" "$out"
# Guests of older package versions (or of an older script) are not used again.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name '.build.*' -exec rm -rf {} +
echo "$out"
