// Small types shared across layers (the bottom of the layer order: anything may import them).
// Each is one idea used by the engine, the config, the daemon and the QEMU tooling alike.

/**
 * What a network gives its guests:
 *   user      QEMU's -netdev user semantics (slirp addressing, NAT unless restrict=on)
 *   nat       a shared segment for many VMs: DHCP, DNS by name, NAT out, the host at the gateway
 *   isolated  guests, DHCP and DNS, and no way out
 *   hostdev   a pool of SR-IOV VFs, one assigned to each VM with vfio-pci (no qnet data path;
 *             root for sysfs, but no bridge:, so not one of the kernel-only modes below)
 * and only on a kernel bridge (a network with `bridge:`, src/host):
 *   routed    forwarding without NAT (the upstream routes the subnet to the host)
 *   open      forwarding, no firewall rules at all
 *   bridge    VMs on the host's LAN (the bridge enslaves an uplink NIC); the LAN's own DHCP
 */
export type NetworkMode = 'user' | 'nat' | 'isolated' | 'hostdev' | 'routed' | 'open' | 'bridge';

/** Modes that exist only on a kernel bridge (hostdev is not one: a VF pool takes no bridge:). */
export const KERNEL_ONLY_MODES: readonly NetworkMode[] = ['routed', 'open', 'bridge'];

/**
 * A port forward from the host into a guest: QEMU's `hostfwd=`, a config `forwards:` entry and
 * `qnet forward add` are all this.
 */
export interface ForwardRule {
  proto: 'tcp' | 'udp';
  /** host address to listen on; '' or '0.0.0.0' = every address (QEMU's hostfwd default) */
  hostAddr: string;
  /** 0 = let the kernel pick */
  hostPort: number;
  /** '' = the network's default guest (user mode: dhcpstart); an IPv4 address; or a VM name */
  guest: string;
  guestPort: number;
}
