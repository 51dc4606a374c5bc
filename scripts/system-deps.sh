#!/usr/bin/env bash
# Installs the Debian packages coroscope needs and makes bcc usable on this kernel.
#
# Run as root (make does it for you); a no-op when everything is already in place, so the
# second `make test` is quick. Without root it says what is missing and carries on: the
# tests that need a missing tool skip with a reason (and fail under CI=true).
set -euo pipefail

PACKAGES=(bpfcc-tools python3-bpfcc libbpfcc linux-headers-amd64 gdb binutils wrk strace tmux chromium procps prometheus golang-go protobuf-compiler golang-github-google-pprof-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "coroscope: not root, cannot install Debian packages: ${missing[*]}" >&2
    exit 0
  fi
  echo "coroscope: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bcc compiles its programs against the running kernel's headers. Kernels built outside Debian
# (cloud VMs, firecracker) have BTF and the syscall tracepoints but no headers package; the
# Debian headers serve for tracepoint programs, so link them where bcc looks.
kernel_dir="/lib/modules/$(uname -r)"
if [ ! -e "$kernel_dir/build" ] && [ "$(id -u)" -eq 0 ]; then
  headers=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$headers" ]; then
    mkdir -p "$kernel_dir"
    ln -sfn "$headers" "$kernel_dir/build"
    common="${headers%-amd64}-common"
    [ -d "$common" ] && ln -sfn "$common" "$kernel_dir/source" || ln -sfn "$headers" "$kernel_dir/source"
    echo "coroscope: linked $headers under $kernel_dir for bcc"
  else
    echo "coroscope: no kernel headers found; eBPF backends will be unavailable" >&2
  fi
fi

# bcc attaches to tracepoints through tracefs; minimal machines boot without it mounted.
if [ "$(id -u)" -eq 0 ] && [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
if [ "$(id -u)" -eq 0 ] && [ -d /sys/kernel/debug ] && [ -z "$(ls -A /sys/kernel/debug 2>/dev/null)" ]; then
  mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi
