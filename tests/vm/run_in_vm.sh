#!/usr/bin/env bash
# run_in_vm.sh: runs one binary under Debian 12's packaged kernel (6.1, which ships the `tls`
# module for kTLS) in qemu with software emulation (TCG), and exits with the binary's status.
# See usage() and tests/vm/README.md.
set -euo pipefail
shopt -s lastpipe nullglob extglob

readonly timeout_s_default=600
readonly memory_mb_default=1024
readonly cpu_count=2
# A guest that ignores SIGTERM gets SIGKILL this long after the timeout.
readonly kill_grace_s=10
readonly kernel_meta_package=linux-image-amd64
readonly busybox_package=busybox-static
# Loaded in the guest before the binary: the `tls` ULP and the kernel ciphers of the TLS 1.3
# suites ringmux offers (AES-GCM, ChaCha20-Poly1305), so kTLS needs no module on demand.
readonly guest_modules=(tls gcm ctr ghash-generic ghash-clmulni-intel aesni-intel chacha20poly1305
  chacha-x86_64 poly1305-x86_64)
readonly kernel_command_line="console=ttyS0 panic=-1 quiet"
# Exit codes of the harness itself (anything else is the binary's own status).
readonly exit_timeout=124
readonly exit_harness=125
readonly exit_no_start=126
readonly exit_no_status=127

usage() {
  cat <<EOF
Usage: $0 [OPTIONS] -- BINARY [ARGS...]

Boots Debian 12's packaged kernel ($kernel_meta_package, 6.1.x, with the kTLS module \`tls\`)
under qemu-system-x86_64 with TCG (no KVM needed), $cpu_count CPUs, loopback network only,
and runs BINARY with ARGS as root in an initramfs. The guest console streams to stdout.

The initramfs holds busybox ($busybox_package), BINARY and the shared libraries \`ldd\` lists
for it, and the modules ${guest_modules[*]}
(with their modules.dep dependencies). The guest mounts /proc, /sys, /dev, a tmpfs on /tmp
(the binary's working directory, also HOME and TMPDIR), brings lo up at 127.0.0.1, loads the
modules, prints 'run_in_vm: tls module loaded' (or NOT loaded), runs BINARY, prints
'run_in_vm: exit=N' and powers off. BINARY sits at its absolute host path in the guest.

Options:
  --timeout=SECONDS    kill the guest after this long, boot included (default $timeout_s_default)
  --cache=DIR          where the kernel and busybox packages are kept
                       (default \${XDG_CACHE_HOME:-\$HOME/.cache}/ringmux-vm; ~400 MB)
  --file=HOST[:GUEST]  copy a file or directory into the guest (default GUEST: HOST's
                       absolute path); an ELF file brings its shared libraries; repeatable
  --env=NAME=VALUE     set NAME in BINARY's environment (repeatable); besides these it
                       has PATH, HOME, TMPDIR and what the kernel and shell set (TERM, PWD)
  --memory=MB          guest memory (default $memory_mb_default)
  -h, --help           this text

The first run downloads the packages with 'apt-get download' (Debian's registry, no
install) and unpacks them into the cache; later runs reuse it (delete DIR to refresh).
Needs qemu-system-x86_64 (apt-get install -y --no-install-recommends qemu-system-x86),
apt-get, dpkg-deb and coreutils' timeout.

Exit status: BINARY's status; $exit_timeout on timeout; $exit_harness when the harness fails on the host
(bad usage, missing binary or tool, download failure); $exit_no_start when the guest ended
before starting BINARY (boot failure, panic); $exit_no_status when the guest ended while
BINARY ran without reporting its status (kernel panic).
EOF
}

say() { printf 'run_in_vm.sh: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit "$exit_harness"
}

timeout_s=$timeout_s_default
memory_mb=$memory_mb_default
cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/ringmux-vm
extra_files=()
environment=()
while (($# > 0)); do
  case $1 in
    --timeout=*) timeout_s=${1#*=} ;;
    --cache=*) cache_dir=${1#*=} ;;
    --file=*) extra_files+=("${1#*=}") ;;
    --env=*) environment+=("${1#*=}") ;;
    --memory=*) memory_mb=${1#*=} ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) break ;;
  esac
  shift
done
(($# > 0)) || { usage >&2; die "no BINARY given"; }
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "--timeout wants a whole number of seconds, not '$timeout_s'"
[[ $memory_mb =~ ^[1-9][0-9]*$ ]] || die "--memory wants a whole number of MB, not '$memory_mb'"
binary=$1
shift
[[ -f $binary && -x $binary ]] || die "BINARY '$binary' is not an executable file"
for tool in qemu-system-x86_64 timeout ldd realpath; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (qemu: apt-get install -y --no-install-recommends qemu-system-x86)"
done
binary_guest=$(realpath -s -- "$binary")

# --- the cache: Debian's kernel and busybox, unpacked -------------------------------------

# Unpacks Debian package $1 into directory $2 unless a previous run did.
fetch_package() {
  local package=$1 destination=$2 download
  [[ -f $destination/.package ]] && return 0
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "apt-get and dpkg-deb are needed to fetch $package"
  mkdir -p "$cache_dir" || die "cannot create the cache '$cache_dir'"
  download=$(mktemp -d "$cache_dir/download.XXXXXX")
  say "downloading $package into $cache_dir (once)"
  # As root, apt would try and fail to drop to its sandbox user in a private directory.
  local sandbox=()
  ((EUID == 0)) && sandbox=(-o APT::Sandbox::User=root)
  (cd "$download" && apt-get -q "${sandbox[@]}" download "$package" >&2) ||
    { rm -rf "$download"; die "'apt-get download $package' failed (run apt-get update?)"; }
  rm -rf "$destination"
  dpkg-deb -x "$download"/*.deb "$destination" || { rm -rf "$download"; die "cannot unpack $package"; }
  rm -rf "$download"
  echo "$package" >"$destination/.package"
}

busybox_root=$cache_dir/busybox
fetch_package "$busybox_package" "$busybox_root"
busybox=$busybox_root/bin/busybox
[[ -x $busybox ]] || die "$busybox_package has no bin/busybox (delete $busybox_root)"

kernel_root=$cache_dir/kernel
if [[ ! -f $kernel_root/.package ]]; then
  kernel_package=$(apt-cache depends "$kernel_meta_package" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
  [[ -n $kernel_package ]] || die "cannot tell which kernel $kernel_meta_package depends on (run apt-get update?)"
  fetch_package "$kernel_package" "$kernel_root"
  rm -f "$kernel_root/.package"  # ready only once the modules are unpacked and indexed
  for module_dir in "$kernel_root"/lib/modules/* "$kernel_root"/usr/lib/modules/*; do
    [[ -d $module_dir ]] || continue
    # busybox insmod wants plain .ko files: unpack compressed modules once, here.
    find "$module_dir" -name '*.ko.xz' -exec xz -d {} + &&
      find "$module_dir" -name '*.ko.zst' -exec zstd -q -d --rm {} + &&
      find "$module_dir" -name '*.ko.gz' -exec gzip -d {} + || die "cannot decompress the modules in $module_dir"
    "$busybox" depmod -b "${module_dir%/lib/modules/*}" "${module_dir##*/}" || die "depmod failed in $module_dir"
  done
  echo "$kernel_package" >"$kernel_root/.package"
fi
module_dirs=("$kernel_root"/lib/modules/* "$kernel_root"/usr/lib/modules/*)
kernel_module_dir=${module_dirs[0]:-}
[[ -n $kernel_module_dir && -f $kernel_module_dir/modules.dep ]] || die "no indexed modules under $kernel_root (delete it)"
kernel_version=${kernel_module_dir##*/}
kernel_image=$kernel_root/boot/vmlinuz-$kernel_version
[[ -f $kernel_image ]] || die "no $kernel_image (delete $kernel_root)"

# --- the initramfs ---------------------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/run_in_vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/root
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,etc,root,lib/modules/"$kernel_version"}
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"
printf 'hosts: files\n' >"$stage/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"

# Copies host file $1 to guest path $2; an ELF file brings the shared libraries ldd names.
add_file() {
  local host=$1 guest=$2 library
  mkdir -p "$stage/$(dirname -- "$guest")"
  cp -rL -- "$host" "$stage/$guest" || die "cannot copy '$host' into the guest"
  [[ -f $host && $(head -c 4 -- "$host" | tr -d '\0') == $'\x7fELF' ]] || return 0
  { ldd -- "$host" 2>/dev/null || true; } | awk '/=> not found/ { print "!" $1; next } /=> \// { print $3; next } $1 ~ /^\// { print $1 }' |
    while IFS= read -r library; do
      [[ $library != !* ]] || die "'$host' needs ${library#!}, which ldd cannot find"
      [[ -e $stage/$library ]] && continue
      mkdir -p "$stage/$(dirname -- "$library")"
      cp -L -- "$library" "$stage/$library" || die "cannot copy $library into the guest"
    done
}

add_file "$binary" "$binary_guest"
for entry in "${extra_files[@]}"; do
  host=${entry%%:*}
  guest=${entry#"$host"}
  guest=${guest#:}
  [[ -e $host ]] || die "--file '$host' does not exist"
  [[ -n $guest ]] || guest=$(realpath -s -- "$host")
  [[ $guest == /* ]] || die "--file '$entry': the guest path must be absolute"
  add_file "$host" "$guest"
done

# The modules and their dependencies (modules.dep lists them transitively), re-indexed.
declare -A module_paths=()
for module in "${guest_modules[@]}"; do
  name=${module//-/_}
  line=$(awk -v name="$name" -F: '{ base = $1; sub(/.*\//, "", base); sub(/\.ko$/, "", base); gsub(/-/, "_", base)
    if (base == name) { print $1 $2; exit } }' "$kernel_module_dir/modules.dep")
  [[ -n $line ]] || { say "warning: kernel $kernel_version has no module $module"; continue; }
  for path in $line; do module_paths[$path]=1; done
done
for path in "${!module_paths[@]}"; do
  mkdir -p "$stage/lib/modules/$kernel_version/$(dirname -- "$path")"
  cp -- "$kernel_module_dir/$path" "$stage/lib/modules/$kernel_version/$path"
done
"$busybox" depmod -b "$stage" "$kernel_version" || die "depmod failed on the guest's modules"

# Single-quotes $1 for the guest's shell.
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
exports=""
for assignment in "${environment[@]}"; do
  [[ $assignment =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, not '$assignment'"
  exports+="export $(quote "$assignment")"$'\n'
done
command_line=$(quote "$binary_guest")
for argument in "$@"; do command_line+=" $(quote "$argument")"; done

cat >"$stage/init" <<EOF
#!/bin/sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Files staged under /tmp move onto the tmpfs that hides them.
mkdir /.tmp-staged && cp -a /tmp/. /.tmp-staged/
mount -t tmpfs -o mode=1777 tmpfs /tmp
cp -a /.tmp-staged/. /tmp/ && rm -rf /.tmp-staged
chmod 1777 /tmp
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts devpts /dev/pts
ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null
for module in ${guest_modules[*]}; do
  modprobe \$module || echo "run_in_vm: cannot load module \$module"
done
if grep -q '^tls ' /proc/modules; then echo 'run_in_vm: tls module loaded'; else echo 'run_in_vm: tls module NOT loaded'; fi
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp
${exports}
ulimit -n $(ulimit -n)
cd /tmp
echo "run_in_vm: kernel \$(uname -r), \$(nproc) cpus, running $binary_guest"
$command_line
echo "run_in_vm: exit=\$?"
poweroff -f
EOF
chmod 755 "$stage/init"
(cd "$stage" && find . | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) >"$work/initramfs.cpio" || die "cannot pack the initramfs"
say "kernel $kernel_version ($(<"$kernel_root/.package")), initramfs $(($(stat -c %s "$work/initramfs.cpio") / 1024 / 1024)) MiB, timeout ${timeout_s}s"

# --- the run ----------------------------------------------------------------------------------

started_us=${EPOCHREALTIME/./}
running_us=""
status=""
set +e
timeout -k "$kill_grace_s" "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -smp "$cpu_count" -m "$memory_mb" \
  -nodefaults -nographic -serial stdio -monitor none -no-reboot \
  -kernel "$kernel_image" -initrd "$work/initramfs.cpio" -append "$kernel_command_line" </dev/null 2>&1 |
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    line=${line//$'\e'c/}  # the firmware's terminal resets and escape sequences
    line=${line//$'\e'\[*([0-9;?])[a-zA-Z]/}
    printf '%s\n' "$line"
    case $line in
      "run_in_vm: kernel "*", running "*) running_us=${EPOCHREALTIME/./} ;;
      run_in_vm:\ exit=*) [[ ${line#*=} =~ ^[0-9]+$ ]] && status=${line#*=} ;;
    esac
  done
qemu_status=${PIPESTATUS[0]}
set -e
ended_us=${EPOCHREALTIME/./}
seconds() { printf '%d.%d' $(($1 / 1000000)) $(($1 % 1000000 / 100000)); }
if [[ -n $running_us ]]; then
  say "boot $(seconds $((running_us - started_us)))s, binary $(seconds $((ended_us - running_us)))s, total $(seconds $((ended_us - started_us)))s"
fi
if ((qemu_status == 124 || qemu_status == 137)); then
  say "timeout: the guest was killed after ${timeout_s}s$([[ -n $running_us ]] && echo ', while the binary ran' || echo ' before the binary started')"
  exit "$exit_timeout"
fi
if [[ -z $running_us ]]; then
  say "the guest ended (qemu status $qemu_status) before it ran the binary: see the console above"
  exit "$exit_no_start"
fi
if [[ -z $status ]]; then
  say "the guest ended (qemu status $qemu_status) while the binary ran, without its exit status (kernel panic?)"
  exit "$exit_no_status"
fi
say "the binary exited with status $status"
exit "$status"
