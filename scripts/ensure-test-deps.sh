#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (run by `npm test` before the tests):
# QEMU, the cloud kernel and busybox for the guest test bed, tshark for pcap checks,
# iproute2/kmod/cpio, nftables for kernel networks' rules (tests run nft inside namespaces). As root it installs what is missing with apt-get; otherwise it names
# what is missing and stops.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || need+=(linux-image-cloud-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v tshark >/dev/null || need+=(tshark)
command -v cpio >/dev/null || need+=(cpio)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v modinfo >/dev/null || need+=(kmod)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "qnet tests need these Debian packages: ${need[*]}" >&2
  echo "install them (sudo apt-get install ${need[*]}) or run the tests as root" >&2
  exit 1
fi
echo "installing test dependencies: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
