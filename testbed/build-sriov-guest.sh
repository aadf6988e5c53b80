#!/usr/bin/env bash
# Build the SR-IOV test bed for the device-assignment tests (test/e2e/hostdev-guest.test.ts):
#
#   - QEMU >= 8.0, which emulates an SR-IOV NIC (the `igb` device, an 82576 with 7 VFs). This
#     machine's QEMU (bookworm's 7.2) has none, so the .debs of qemu-system-x86 and
#     qemu-system-data are fetched from bookworm-backports with `apt-get download` through a
#     private apt directory (sources list, lists and cache under the cache dir; the machine's
#     apt sources and its installed QEMU are left alone) and unpacked with `dpkg -x`.
#   - Debian's generic kernel (linux-image-amd64: igb, igbvf, vfio-pci, 9p; the cloud kernel
#     the rest of the suite boots has no igb), fetched the same way from the machine's own
#     apt sources and unpacked, never installed (nothing in /boot changes).
#   - A busybox initramfs whose /init loads virtio/9p and the NIC drivers, mounts the host's
#     root file system read-only over virtio-9p (mount tag `hostroot`) at /host, puts its own
#     proc/sys/dev, tmpfs dirs and the guest kernel's modules over it, and chroots there to run
#     /test.sh. qnet, node and the inner QEMU are the host's own, seen read-only; the host's
#     root is also at /run/hostroot with nothing mounted over it.
#
# Output under ${QNET_CACHE:-$HOME/.cache/qnet}/sriov/:
#   qemu-system-x86_64   a wrapper running the unpacked QEMU (its own firmware dir, no modules)
#   guest/vmlinuz, guest/initramfs.cpio.gz
# and on stdout the lines `qemu PATH`, `kernel PATH`, `initrd PATH`.
#
# --no-fetch: never download; fail (exit 3) naming what is missing. The tests use it, so only
# the test setup (scripts/ensure-test-deps.sh) talks to deb.debian.org. Idempotent and safe to
# run concurrently (flock); QNET_SRIOV_FORCE=1 rebuilds the initramfs.
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
cache_root="${QNET_CACHE:-${HOME:-/root}/.cache/qnet}"
dir="$cache_root/sriov"
fetch=1
[ "${1:-}" = "--no-fetch" ] && fetch=0

log() { echo "build-sriov-guest: $*" >&2; }
die() { echo "build-sriov-guest: error: $*" >&2; exit "${2:-1}"; }

mkdir -p "$dir/debs" "$dir/guest"
exec 9>"$dir/.lock"
flock 9

for t in dpkg-deb cpio gzip depmod modinfo sha256sum; do command -v "$t" >/dev/null || die "missing tool: $t"; done

# ---- fetch ----------------------------------------------------------------------------------
# A private apt directory that knows bookworm-backports only: `apt-get download` needs lists,
# and these lists must not become the machine's (so `apt-get install` keeps bookworm's QEMU).
apt_dir="$dir/apt"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=$(id -un)")

find_deb() { ls -1 "$dir/debs/"$1_*.deb 2>/dev/null | sort -V | tail -n 1 || true; }

download() {   # download PKG[/SUITE] [apt options...]: into $dir/debs
  local what="$1"; shift
  (cd "$dir/debs" && apt-get -q "$@" download "$what" >/dev/null 2>"$dir/debs/.apt.err") ||
    die "apt-get download $what failed: $(tail -n 3 "$dir/debs/.apt.err")"
}

qemu_deb="$(find_deb qemu-system-x86)"
data_deb="$(find_deb qemu-system-data)"
if [ -z "$qemu_deb" ] || [ -z "$data_deb" ]; then
  [ $fetch = 1 ] || die "QEMU from bookworm-backports is not in $dir/debs (run scripts/ensure-test-deps.sh)" 3
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" >"$apt_dir/sources.list"
  log "fetching qemu-system-x86 and qemu-system-data from bookworm-backports"
  apt-get -q "${apt_opts[@]}" update >/dev/null 2>"$dir/debs/.apt.err" || die "apt-get update (bookworm-backports) failed: $(tail -n 3 "$dir/debs/.apt.err")"
  download qemu-system-x86/bookworm-backports "${apt_opts[@]}"
  download qemu-system-data/bookworm-backports "${apt_opts[@]}"
  qemu_deb="$(find_deb qemu-system-x86)"
  data_deb="$(find_deb qemu-system-data)"
fi

kernel_deb="$(find_deb 'linux-image-*-amd64')"
if [ -z "$kernel_deb" ]; then
  [ $fetch = 1 ] || die "Debian's generic kernel (linux-image-amd64) is not in $dir/debs (run scripts/ensure-test-deps.sh)" 3
  kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-amd64$/ { print $2; exit }'; }
  kpkg="$(kpkg)"
  if [ -z "$kpkg" ] && [ "$(id -u)" -eq 0 ]; then apt-get update -qq && kpkg="$(kpkg)"; fi
  [ -n "$kpkg" ] || die "apt knows no linux-image-amd64 (run apt-get update)"
  log "fetching $kpkg"
  download "$kpkg"
  kernel_deb="$(find_deb 'linux-image-*-amd64')"
fi

# ---- QEMU -----------------------------------------------------------------------------------
qemu_root="$dir/qemu"
qemu_stamp="$(basename "$qemu_deb") $(basename "$data_deb")"
if [ "$(cat "$qemu_root/.stamp" 2>/dev/null || true)" != "$qemu_stamp" ]; then
  rm -rf "$qemu_root" && mkdir -p "$qemu_root"
  dpkg-deb -x "$qemu_deb" "$qemu_root"
  dpkg-deb -x "$data_deb" "$qemu_root"
  mkdir -p "$qemu_root/modules"   # empty: keeps the unpacked QEMU from loading 7.2's modules
  echo "$qemu_stamp" >"$qemu_root/.stamp"
fi
wrapper="$dir/qemu-system-x86_64"
cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# QEMU $(basename "$qemu_deb" .deb), unpacked by testbed/build-sriov-guest.sh
QEMU_MODULE_DIR='$qemu_root/modules' exec '$qemu_root/usr/bin/qemu-system-x86_64' -L '$qemu_root/usr/share/qemu' -L /usr/share/seabios "\$@"
EOF
chmod 755 "$wrapper.tmp" && mv -f "$wrapper.tmp" "$wrapper"

# ---- guest ----------------------------------------------------------------------------------
busybox_bin=""
for c in /bin/busybox /usr/bin/busybox; do
  if [ -x "$c" ] && { LC_ALL=C ldd "$(readlink -f "$c")" 2>&1 || true; } | grep -q 'not a dynamic executable'; then
    busybox_bin="$(readlink -f "$c")"; break
  fi
done
[ -n "$busybox_bin" ] || die "no statically linked busybox (install busybox-static)"

kernel_out="$dir/guest/vmlinuz"
initrd_out="$dir/guest/initramfs.cpio.gz"
stamp_value="$(sha256sum "$kernel_deb" "$busybox_bin" "$script_path" | cut -d' ' -f1 | sha256sum | cut -d' ' -f1)"
emit() { echo "qemu $wrapper"; echo "kernel $kernel_out"; echo "initrd $initrd_out"; }
if [ -z "${QNET_SRIOV_FORCE:-}" ] && [ -f "$kernel_out" ] && [ -f "$initrd_out" ] &&
  [ "$(cat "$dir/guest/stamp" 2>/dev/null || true)" = "$stamp_value" ]; then
  emit; exit 0
fi

log "building the SR-IOV guest from $(basename "$kernel_deb")"
work="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$kernel_deb" "$work/k"
kver="$(ls "$work/k/lib/modules" | head -n 1)"
[ -n "$kver" ] || die "$kernel_deb has no /lib/modules"
depmod -b "$work/k" "$kver"

root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,host,root}
cp "$busybox_bin" "$root/bin/busybox"
"$busybox_bin" --list-full | while read -r applet; do
  [ "$applet" = "bin/busybox" ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

# Boot modules are loaded by /init; the others (vfio-pci and friends) are only put in the tree,
# so that qnet's own `modprobe vfio-pci` (from the host root, on this kernel's module tree) is
# what loads them.
boot_modules=(virtio_pci 9pnet_virtio 9p igb igbvf)
extra_modules=(vfio_pci vfio_iommu_type1)
declare -A seen=()
copy_module() {   # copy a module and its dependencies into the guest's module tree
  local m="${1//-/_}" fn d
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  fn="$(modinfo -b "$work/k" -k "$kver" -F filename "$m" 2>/dev/null | head -n 1 || true)"
  case "$fn" in "(builtin)") return 0 ;; "") die "module $m not found in $kver" ;; esac
  for d in $(modinfo -b "$work/k" -k "$kver" -F depends "$m" | tr ',' ' '); do copy_module "$d"; done
  mkdir -p "$root/$(dirname "${fn#"$work/k"}")"
  cp "$fn" "$root/${fn#"$work/k"}"
}
for m in "${boot_modules[@]}" "${extra_modules[@]}"; do copy_module "$m"; done
cp "$work/k/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
printf '%s\n' "${boot_modules[@]}" >"$root/etc/boot-modules"

cat >"$root/init" <<'EOF'
#!/bin/sh
# The SR-IOV test guest (testbed/build-sriov-guest.sh): the host's root, read-only, as /.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 >/proc/sys/kernel/printk
for m in $(cat /etc/boot-modules); do modprobe "$m" || echo "QNET-INIT modprobe-failed $m"; done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host; then
  echo "QNET-INIT no-hostroot"; poweroff -f
fi
# the guest's own kernel interfaces and writable places, over the host's
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /dev/pts && mount -t devpts devpts /host/dev/pts 2>/dev/null
for d in tmp run var/tmp var/lib root; do mount -t tmpfs tmpfs "/host/$d"; done
# the host's root once more, with nothing over it (its /tmp holds caches a test may copy): a
# non-recursive bind leaves the mounts above out
mkdir -p /host/run/hostroot && mount --bind /host /host/run/hostroot
mount --bind /lib/modules /host/lib/modules
# wait for the NICs the drivers probe
i=0
while [ $i -lt 50 ] && [ -z "$(ls /sys/class/net | grep -v '^lo$')" ]; do i=$((i + 1)); usleep 100000; done
echo "QNET-INIT ready uptime=$(cut -d' ' -f1 /proc/uptime) ifaces=$(ls /sys/class/net | tr '\n' ',')"
if [ -f /test.sh ]; then
  cp /test.sh /host/tmp/test.sh
  chroot /host /bin/sh -c 'cd /tmp && HOME=/root exec sh /tmp/test.sh' </dev/console >/dev/console 2>&1
  echo "QNET-INIT test-exit $?"
else
  echo "QNET-INIT no-test"
fi
sync
poweroff -f
EOF
chmod 755 "$root/init"

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6n >"$work/initramfs.cpio.gz"
cp "$work/k/boot/vmlinuz-$kver" "$work/vmlinuz"
mv -f "$work/vmlinuz" "$kernel_out"
mv -f "$work/initramfs.cpio.gz" "$initrd_out"
echo "$stamp_value" >"$dir/guest/stamp"
log "done: kernel $kver, $(du -h "$initrd_out" | cut -f1) initramfs, $("$wrapper" --version | head -n 1)"
emit
