#!/usr/bin/env bash
# Installs what ringmux needs on Debian 12, from Debian's packages only. Run as root.
set -euo pipefail
packages=(
  g++ meson ninja-build pkg-config cmake python3   # toolchain (cmake: finds mimalloc and doctest)
  groff-base                                       # renders the man pages in tests/check_man.py
  prometheus                                       # promtool checks ringmux-serve --metrics (tests/check_metrics.py)
  liburing-dev libxxhash-dev libmimalloc-dev        # the library's dependencies
  libssl-dev openssl                                 # TLS 1.3 (mux/link/tls.h); tests make certificates
  doctest-dev libbenchmark-dev                       # tests and micro-benchmarks
  clang libclang-rt-14-dev                           # libFuzzer and sanitizer runtimes
  fio                                                # its json+ readers check the loadgen's output
  qemu-system-x86                                    # kTLS tests under Debian's kernel (tests/vm/run_in_vm.sh)
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: all ${#packages[@]} packages present"
