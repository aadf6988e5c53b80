#!/usr/bin/env bash
# Build the tiny qnet test guest: a Debian cloud kernel plus a busybox initramfs
# with the virtio-net modules.  Output goes to ${QNET_CACHE:-$HOME/.cache/qnet}/guest/.
#
# Idempotent: nothing is rebuilt unless the kernel, the busybox binary or this
# script changed.  Safe to run concurrently (flock).  On success prints two lines
# on stdout:
#   kernel <path>
#   initrd <path>
# Everything else goes to stderr.
#
# The guest's /init mounts proc/sys/devtmpfs, insmods the modules, brings up lo,
# prints "QNET-INIT ready", runs /test.sh if present (append a second cpio
# archive to the initrd to provide it), prints "QNET-INIT test-exit <rc>" and
# powers off.  Set QNET_GUEST_FORCE=1 to force a rebuild.
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
cache_root="${QNET_CACHE:-${HOME:-/root}/.cache/qnet}"
out_dir="$cache_root/guest"
mkdir -p "$out_dir"

log() { echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

# ---- inputs ---------------------------------------------------------------
kernel_src="$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)"
[ -n "$kernel_src" ] || die "no /boot/vmlinuz-*-cloud-amd64 (install linux-image-cloud-amd64)"
kver="${kernel_src#/boot/vmlinuz-}"
moddir="/lib/modules/$kver"
[ -d "$moddir" ] || die "no $moddir for kernel $kver"

busybox_bin=""
for c in /bin/busybox /usr/bin/busybox; do
  if [ -x "$c" ] && { LC_ALL=C ldd "$(readlink -f "$c")" 2>&1 || true; } | grep -q 'not a dynamic executable'; then
    busybox_bin="$(readlink -f "$c")"; break
  fi
done
[ -n "$busybox_bin" ] || die "no statically linked busybox (install busybox-static)"

for t in cpio gzip modinfo sha256sum; do command -v "$t" >/dev/null || die "missing tool: $t"; done

stamp_value="$(
  {
    echo "kver=$kver"
    sha256sum "$kernel_src" "$busybox_bin" "$script_path" | cut -d' ' -f1
  } | sha256sum | cut -d' ' -f1
)"

kernel_out="$out_dir/vmlinuz"
initrd_out="$out_dir/initramfs.cpio.gz"
stamp_file="$out_dir/stamp"

emit() { echo "kernel $kernel_out"; echo "initrd $initrd_out"; }

up_to_date() {
  [ -z "${QNET_GUEST_FORCE:-}" ] && [ -f "$stamp_file" ] && [ -f "$kernel_out" ] && [ -f "$initrd_out" ] &&
    [ "$(cat "$stamp_file")" = "$stamp_value" ]
}

if up_to_date; then emit; exit 0; fi

exec 9>"$out_dir/.lock"
flock 9
if up_to_date; then emit; exit 0; fi   # somebody else built it while we waited

log "building guest for kernel $kver (busybox $busybox_bin) in $out_dir"
work="$(mktemp -d "$out_dir/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/share/udhcpc,etc,proc,sys,dev,tmp,run,root,var/run,lib/modules}

# ---- busybox ----------------------------------------------------------------
cp "$busybox_bin" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
# Install applet symlinks (busybox --list-full gives paths like usr/bin/wget).
"$busybox_bin" --list-full | while read -r applet; do
  [ "$applet" = "bin/busybox" ] && continue
  d="$(dirname "$applet")"
  mkdir -p "$root/$d"
  case "$d" in
    bin) target=busybox ;;
    sbin) target=../bin/busybox ;;
    usr/bin|usr/sbin) target=../../bin/busybox ;;
    *) target=/bin/busybox ;;
  esac
  [ -e "$root/$applet" ] || ln -s "$target" "$root/$applet"
done
[ -e "$root/bin/sh" ] || ln -s busybox "$root/bin/sh"

# ---- kernel modules ---------------------------------------------------------
wanted=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net af_packet)
declare -A seen=()
order=()

resolve() {   # depth-first: dependencies first
  local m="$1" fn deps d
  m="${m//-/_}"
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  fn="$(modinfo -k "$kver" -F filename "$m" 2>/dev/null | head -n 1 || true)"
  if [ -z "$fn" ]; then
    # Not known at all: builtin modules are reported as "(builtin)"; anything else is an error
    # unless it's optional (af_packet may be =y).
    if grep -qE "/${m}\.ko" "$moddir/modules.builtin" 2>/dev/null; then return 0; fi
    die "module $m not found for $kver"
  fi
  case "$fn" in "(builtin)"|"") return 0 ;; esac
  deps="$(modinfo -k "$kver" -F depends "$m" 2>/dev/null || true)"
  for d in ${deps//,/ }; do resolve "$d"; done
  order+=("$m:$fn")
}
for m in "${wanted[@]}"; do resolve "$m"; done

mkdir -p "$root/lib/modules"
: >"$root/etc/modules.order"
for entry in "${order[@]}"; do
  m="${entry%%:*}"; fn="${entry#*:}"
  dst="$root/lib/modules/$m.ko"
  case "$fn" in
    *.ko) cp "$fn" "$dst" ;;
    *.ko.xz) xz -dc "$fn" >"$dst" ;;
    *.ko.zst) zstd -qdc "$fn" >"$dst" ;;
    *.ko.gz) gzip -dc "$fn" >"$dst" ;;
    *) die "unknown module file type: $fn" ;;
  esac
  echo "$m" >>"$root/etc/modules.order"
done
log "modules: $(tr '\n' ' ' <"$root/etc/modules.order")"

# ---- /etc ----------------------------------------------------------------------
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
echo "qnet-guest" >"$root/etc/hostname"

# ---- udhcpc script --------------------------------------------------------------
cat >"$root/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# busybox udhcpc event script for the qnet test guest.
# Configures the interface and prints the lease as "QNET dhcp-<field> <value>" lines.
RESOLV=/etc/resolv.conf
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface" 2>/dev/null
    ip link set dev "$interface" up
    echo "QNET dhcp-event deconfig $interface"
    ;;
  leasefail|nak)
    echo "QNET dhcp-event $1 $interface ${message:-}"
    ;;
  bound|renew)
    if [ -n "$mtu" ]; then ip link set dev "$interface" mtu "$mtu" || echo "QNET dhcp-error mtu $mtu"; fi
    ip -4 addr flush dev "$interface" 2>/dev/null
    ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    ip link set dev "$interface" up
    if [ -n "$router" ]; then
      while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    : >"$RESOLV"
    [ -n "$domain" ] && echo "search $domain" >>"$RESOLV"
    for d in $dns; do echo "nameserver $d" >>"$RESOLV"; done
    [ -n "$hostname" ] && hostname "$hostname" 2>/dev/null
    echo "QNET dhcp-event $1 $interface"
    echo "QNET dhcp-ip $ip"
    echo "QNET dhcp-mask ${mask:-}"
    echo "QNET dhcp-subnet ${subnet:-}"
    echo "QNET dhcp-broadcast ${broadcast:-}"
    echo "QNET dhcp-router ${router:-}"
    echo "QNET dhcp-dns ${dns:-}"
    echo "QNET dhcp-domain ${domain:-}"
    echo "QNET dhcp-search ${search:-}"
    echo "QNET dhcp-hostname ${hostname:-}"
    echo "QNET dhcp-mtu ${mtu:-}"
    echo "QNET dhcp-lease ${lease:-}"
    echo "QNET dhcp-serverid ${serverid:-}"
    echo "QNET dhcp-siaddr ${siaddr:-}"
    echo "QNET dhcp-sname ${sname:-}"
    echo "QNET dhcp-tftp ${tftp:-}"
    echo "QNET dhcp-bootfile ${bootfile:-}"
    echo "QNET dhcp-boot_file ${boot_file:-}"
    echo "QNET dhcp-ntpsrv ${ntpsrv:-}"
    echo "QNET dhcp-staticroutes ${staticroutes:-}"
    echo "QNET dhcp-done $1"
    ;;
esac
exit 0
EOF
chmod 755 "$root/usr/share/udhcpc/default.script"
mkdir -p "$root/etc/udhcpc"
ln -s ../../usr/share/udhcpc/default.script "$root/etc/udhcpc/default.script"

# ---- /init ----------------------------------------------------------------------
cat >"$root/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# keep kernel chatter off the console so result lines stay intact
echo 1 >/proc/sys/kernel/printk
for m in $(cat /etc/modules.order); do
  insmod "/lib/modules/$m.ko" || echo "QNET-INIT insmod-failed $m"
done
hostname -F /etc/hostname
ip link set lo up
# wait briefly for NICs probed by the modules to show up
i=0
while [ $i -lt 20 ]; do
  [ -n "$(ls /sys/class/net | grep -v '^lo$')" ] && break
  [ -z "$(ls /sys/bus/virtio/devices 2>/dev/null)" ] && break
  i=$((i + 1)); usleep 50000
done
echo "QNET-INIT ready uptime=$(cut -d' ' -f1 /proc/uptime) ifaces=$(ls /sys/class/net | tr '\n' ',')"
if [ -f /test.sh ]; then
  cd /root
  sh /test.sh </dev/console >/dev/console 2>&1
  rc=$?
  echo "QNET-INIT test-exit $rc"
else
  echo "QNET-INIT no-test"
fi
sync
poweroff -f
EOF
chmod 755 "$root/init"

# ---- pack ----------------------------------------------------------------------
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$work/initramfs.cpio.gz"
cp "$kernel_src" "$work/vmlinuz"
mv -f "$work/vmlinuz" "$kernel_out"
mv -f "$work/initramfs.cpio.gz" "$initrd_out"
echo "$stamp_value" >"$stamp_file.tmp" && mv -f "$stamp_file.tmp" "$stamp_file"
log "done: $(du -h "$initrd_out" | cut -f1) initramfs"
emit
