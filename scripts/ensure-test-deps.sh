#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (run by `npm test` before the tests):
# QEMU, the cloud kernel and busybox for the guest test bed, tshark for pcap checks,
# iproute2/kmod/cpio, nftables for kernel networks' rules (tests run nft inside namespaces),
# pci.ids (PCI names for `qnet host devices`). As root it installs what is missing with
# apt-get; otherwise it names what is missing and stops. Then it fetches the SR-IOV test bed
# (testbed/build-sriov-guest.sh: QEMU from bookworm-backports and Debian's generic kernel,
# downloaded and unpacked into the cache dir, never installed).
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
[ -f /usr/share/misc/pci.ids ] || [ -f /usr/share/hwdata/pci.ids ] || need+=(pci.ids)
sriov() {
  bash "$(dirname "$0")/../testbed/build-sriov-guest.sh" >/dev/null ||
    { echo "the SR-IOV test bed could not be prepared (see above); the device-assignment guest test needs it" >&2; exit 1; }
}
[ ${#need[@]} -eq 0 ] && { sriov; exit 0; }
if [ "$(id -u)" -ne 0 ]; then
  echo "qnet tests need these Debian packages: ${need[*]}" >&2
  echo "install them (sudo apt-get install ${need[*]}) or run the tests as root" >&2
  exit 1
fi
echo "installing test dependencies: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
sriov
