// What QEMU 7.2+ (x86_64) knows about networking: the backends that -netdev,
// -net and -nic accept with their options, and the NIC devices with their
// buses and properties. Kept in source so lint never has to run QEMU.

export type OptType =
  | 'str'
  | 'bool'
  | 'int'
  | 'size'
  | 'hostport' // host:port, host may be empty (socket backend)
  | 'fd' // number or a name passed with the monitor's getfd
  | 'fds' // fd list separated by ':'
  | 'path';

export interface OptSpec {
  name: string;
  type: OptType;
  desc: string;
  /** The key may repeat, building a list (hostfwd, guestfwd, dnssearch). */
  list?: boolean;
  min?: number;
  max?: number;
  required?: boolean;
}

export interface BackendSpec {
  name: string;
  desc: string;
  options: OptSpec[];
  /** Allowed with -net (legacy) and -nic; hubport, vhost-user... differ. */
  legacy: boolean;
  nic: boolean;
  /** Parsed with keyval (nested addr.type=... options): stream and dgram. */
  keyval?: boolean;
  /** Needs root, a host device or an existing host service to start. */
  privileged?: boolean;
}

const o = (name: string, type: OptType, desc: string, extra: Partial<OptSpec> = {}): OptSpec => ({ name, type, desc, ...extra });

export const BACKENDS: Record<string, BackendSpec> = {
  user: {
    name: 'user', desc: 'user-mode network stack (slirp): NAT, DHCP, DNS, TFTP, SMB inside QEMU', legacy: true, nic: true,
    options: [
      o('hostname', 'str', 'host name DHCP hands to the guest'),
      o('restrict', 'bool', 'isolate the guest from the host and the outside'),
      o('ipv4', 'bool', 'enable IPv4'),
      o('ipv6', 'bool', 'enable IPv6'),
      o('ip', 'str', 'legacy: network address, /24 implied (use net=)'),
      o('net', 'str', 'network address[/mask or prefix length], default 10.0.2.0/24'),
      o('host', 'str', 'guest-visible address of the host, default net+.2'),
      o('tftp', 'path', 'directory served over TFTP'),
      o('bootfile', 'str', 'BOOTP file name'),
      o('dhcpstart', 'str', 'first address handed out by DHCP, default net+.15'),
      o('dns', 'str', 'guest-visible DNS server address, default net+.3'),
      o('dnssearch', 'str', 'DNS search domain (repeatable)', { list: true }),
      o('domainname', 'str', 'DNS domain name handed out by DHCP'),
      o('ipv6-prefix', 'str', 'IPv6 prefix, default fec0::'),
      o('ipv6-prefixlen', 'int', 'IPv6 prefix length, default 64', { min: 0, max: 126 }),
      o('ipv6-host', 'str', 'guest-visible IPv6 address of the host'),
      o('ipv6-dns', 'str', 'guest-visible IPv6 DNS server'),
      o('ipv6-net', 'str', 'IPv6 prefix/len in one option'),
      o('smb', 'path', 'directory exported to the guest over SMB (needs smbd)'),
      o('smbserver', 'str', 'guest-visible SMB server address'),
      o('hostfwd', 'str', 'forward a host port to the guest: [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport', { list: true }),
      o('guestfwd', 'str', 'forward a guest connection to a host command or chardev: [tcp]:server:port-dev', { list: true }),
      o('tftp-server-name', 'str', 'TFTP server name in DHCP option 66'),
    ],
  },
  tap: {
    name: 'tap', desc: 'host TAP interface', legacy: true, nic: true, privileged: true,
    options: [
      o('ifname', 'str', 'host TAP interface name'),
      o('fd', 'fd', 'already opened TAP file descriptor'),
      o('fds', 'fds', 'already opened multiqueue TAP file descriptors x:y:...'),
      o('script', 'path', "script run to configure the interface (default /etc/qemu-ifup, 'no' for none)"),
      o('downscript', 'path', "script run to deconfigure it (default /etc/qemu-ifdown, 'no' for none)"),
      o('br', 'str', 'bridge the helper adds the interface to'),
      o('helper', 'path', 'program that creates the TAP interface (e.g. qemu-bridge-helper)'),
      o('sndbuf', 'size', 'send buffer limit in bytes (0 = unlimited)'),
      o('vnet_hdr', 'bool', 'use IFF_VNET_HDR'),
      o('vhost', 'bool', 'in-kernel vhost-net acceleration'),
      o('vhostfd', 'fd', 'already opened vhost-net file descriptor'),
      o('vhostfds', 'fds', 'already opened vhost-net file descriptors x:y:...'),
      o('vhostforce', 'bool', 'force vhost even for non-MSI-X guests (deprecated)'),
      o('queues', 'int', 'number of queues for multiqueue TAP', { min: 1 }),
      o('poll-us', 'int', 'busy-poll time in microseconds', { min: 0 }),
    ],
  },
  bridge: {
    name: 'bridge', desc: 'TAP interface added to a host bridge by qemu-bridge-helper', legacy: true, nic: true, privileged: true,
    options: [
      o('br', 'str', 'host bridge (default br0)'),
      o('helper', 'path', 'bridge helper program (default qemu-bridge-helper)'),
    ],
  },
  socket: {
    name: 'socket', desc: 'Ethernet frames over a TCP connection, UDP unicast or UDP multicast', legacy: true, nic: true,
    options: [
      o('fd', 'fd', 'already opened socket'),
      o('listen', 'hostport', 'wait for a peer QEMU on [host]:port'),
      o('connect', 'hostport', 'connect to a peer QEMU listening on host:port'),
      o('mcast', 'hostport', 'join multicast group maddr:port'),
      o('localaddr', 'hostport', 'local address for mcast= or udp='),
      o('udp', 'hostport', 'send UDP to host:port (needs localaddr=)'),
    ],
  },
  stream: {
    name: 'stream', desc: 'Ethernet frames over a stream socket (TCP or UNIX)', legacy: false, nic: true, keyval: true,
    options: [
      o('addr', 'str', 'socket address: addr.type=inet|unix|fd with addr.host/addr.port, addr.path or addr.str', { required: true }),
      o('server', 'bool', 'listen (on) or connect (off)'),
    ],
  },
  dgram: {
    name: 'dgram', desc: 'Ethernet frames over datagram sockets (UDP or UNIX)', legacy: false, nic: true, keyval: true,
    options: [
      o('local', 'str', 'local socket address: local.type=inet|unix|fd ...', { required: true }),
      o('remote', 'str', 'remote socket address: remote.type=inet|unix ...'),
    ],
  },
  hubport: {
    name: 'hubport', desc: 'a port on one of QEMU\'s internal hubs (what -net\'s old vlans became)', legacy: false, nic: true,
    options: [
      o('hubid', 'int', 'hub number', { required: true, min: -2147483648, max: 2147483647 }),
      o('netdev', 'str', 'netdev this port is wired to'),
    ],
  },
  'vhost-user': {
    name: 'vhost-user', desc: 'virtio rings served by an external vhost-user process over a chardev socket', legacy: true, nic: false, privileged: true,
    options: [
      o('chardev', 'str', 'id of a -chardev socket', { required: true }),
      o('vhostforce', 'bool', 'force vhost for non-MSI-X guests (deprecated)'),
      o('queues', 'int', 'number of queues', { min: 1 }),
    ],
  },
  'vhost-vdpa': {
    name: 'vhost-vdpa', desc: 'vDPA device (/dev/vhost-vdpa-N)', legacy: true, nic: true, privileged: true,
    options: [
      o('vhostdev', 'path', 'vhost-vdpa character device'),
      o('vhostfd', 'fd', 'already opened vhost-vdpa device'),
      o('queues', 'int', 'number of queue pairs', { min: 1 }),
      o('x-svq', 'bool', 'shadow virtqueue (experimental)'),
    ],
  },
  l2tpv3: {
    name: 'l2tpv3', desc: 'static L2TPv3 pseudowire', legacy: true, nic: true, privileged: true,
    options: [
      o('src', 'str', 'source address', { required: true }),
      o('dst', 'str', 'destination address', { required: true }),
      o('srcport', 'str', 'source UDP port'),
      o('dstport', 'str', 'destination UDP port'),
      o('ipv6', 'bool', 'use IPv6'),
      o('udp', 'bool', 'UDP encapsulation instead of raw IP (which needs root)'),
      o('cookie64', 'bool', '64-bit cookies'),
      o('counter', 'bool', 'send sequence counter'),
      o('pincounter', 'bool', 'pin counter to 0'),
      o('txcookie', 'int', 'transmit cookie'),
      o('rxcookie', 'int', 'receive cookie'),
      o('txsession', 'int', 'transmit session id', { required: true }),
      o('rxsession', 'int', 'receive session id'),
      o('offset', 'int', 'offset of the payload'),
    ],
  },
  vde: {
    name: 'vde', desc: 'VDE switch', legacy: true, nic: true, privileged: true,
    options: [
      o('sock', 'path', 'VDE switch socket directory'),
      o('port', 'int', 'switch port', { min: 0, max: 65535 }),
      o('group', 'str', 'group owner of the port'),
      o('mode', 'int', 'octal permissions of the port', { min: 0, max: 65535 }),
    ],
  },
};

export const BACKEND_NAMES = Object.keys(BACKENDS);

/** -net nic options (QEMU 7.2: vlan= and name= are gone). */
export const LEGACY_NIC_OPTIONS: OptSpec[] = [
  o('netdev', 'str', 'netdev to connect to (instead of hub 0)'),
  o('macaddr', 'str', 'MAC address'),
  o('model', 'str', 'NIC model'),
  o('addr', 'str', 'PCI address slot[.function]'),
  o('vectors', 'int', 'MSI-X vectors (virtio only)', { min: 0, max: 0x7ffffff }),
];

export interface NicModel {
  name: string;
  bus: 'PCI' | 'ISA' | 'usb-bus' | 'virtio-bus';
  desc: string;
  alias?: string;
  /** Accepted as -net nic,model= / -nic ...,model= */
  legacyModel: boolean;
  /** libvirt <model type=...> */
  libvirt?: string;
  virtio?: boolean;
  /** Has a netdev property (rocker and pvrdma do not). */
  netdev: boolean;
}

const nm = (name: string, bus: NicModel['bus'], desc: string, extra: Partial<NicModel> = {}): NicModel =>
  ({ name, bus, desc, legacyModel: bus === 'PCI', netdev: true, libvirt: name, ...extra });

/** `qemu-system-x86_64 -device help`, "Network devices". */
export const NIC_MODELS: NicModel[] = [
  nm('e1000', 'PCI', 'Intel Gigabit Ethernet (82540EM)', { alias: 'e1000-82540em' }),
  nm('e1000-82544gc', 'PCI', 'Intel Gigabit Ethernet (82544GC)'),
  nm('e1000-82545em', 'PCI', 'Intel Gigabit Ethernet (82545EM)'),
  nm('e1000e', 'PCI', 'Intel 82574L GbE Controller (PCIe)'),
  ...['i82550', 'i82551', 'i82557a', 'i82557b', 'i82557c', 'i82558a', 'i82558b', 'i82559a', 'i82559b', 'i82559c', 'i82559er', 'i82562', 'i82801']
    .map((n) => nm(n, 'PCI', `Intel ${n.slice(1).toUpperCase()} Ethernet (eepro100 family)`)),
  nm('ne2k_isa', 'ISA', 'NE2000 on the ISA bus', { legacyModel: true }),
  nm('ne2k_pci', 'PCI', 'NE2000 PCI (RTL8029)'),
  nm('pcnet', 'PCI', 'AMD PCnet-PCI II (Am79C970A)'),
  nm('pvrdma', 'PCI', 'paravirtual RDMA device (not an Ethernet NIC)', { netdev: false }),
  nm('rocker', 'PCI', 'Rocker switch (ports instead of a netdev)', { legacyModel: false, netdev: false }),
  nm('rtl8139', 'PCI', 'Realtek RTL8139 Fast Ethernet'),
  nm('tulip', 'PCI', 'DEC 21143 Tulip'),
  nm('usb-net', 'usb-bus', 'USB CDC Ethernet (needs a USB controller)'),
  nm('virtio-net-device', 'virtio-bus', 'virtio-net on a virtio-mmio bus (microvm, ARM virt; not on pc/q35)', { virtio: true, libvirt: 'virtio' }),
  nm('virtio-net-pci', 'PCI', 'virtio-net, paravirtual (fastest; needs guest drivers)', { alias: 'virtio-net', virtio: true, libvirt: 'virtio' }),
  nm('virtio-net-pci-non-transitional', 'PCI', 'virtio-net, virtio 1.0 only', { virtio: true, libvirt: 'virtio-non-transitional' }),
  nm('virtio-net-pci-transitional', 'PCI', 'virtio-net, legacy and 1.0', { virtio: true, libvirt: 'virtio-transitional' }),
  nm('vmxnet3', 'PCI', 'VMware paravirtual Ethernet v3'),
];

export function findNicModel(name: string): NicModel | undefined {
  return NIC_MODELS.find((m) => m.name === name || m.alias === name);
}

/** Models -net nic,model= and -nic model= accept ('virtio' is QEMU's shorthand for virtio-net-pci). */
export function legacyModelName(name: string): string | undefined {
  if (name === 'virtio') return 'virtio-net-pci';
  const m = NIC_MODELS.find((x) => x.name === name);
  return m && m.legacyModel ? m.name : undefined;
}

export const LEGACY_MODEL_LIST = NIC_MODELS.filter((m) => m.legacyModel).map((m) => m.name);

const PCI_COMMON = ['acpi-index', 'addr', 'bootindex', 'failover_pair_id', 'mac', 'multifunction', 'netdev', 'rombar', 'romfile', 'romsize', 'x-pcie-extcap-init', 'x-pcie-lnksta-dllla'];
const VIRTIO_PCI = [
  ...PCI_COMMON, 'aer', 'any_layout', 'ats', 'csum', 'ctrl_guest_offloads', 'ctrl_mac_addr', 'ctrl_rx', 'ctrl_rx_extra', 'ctrl_vlan', 'ctrl_vq',
  'disable-legacy', 'disable-modern', 'duplex', 'event_idx', 'failover', 'gso', 'guest_announce', 'guest_csum', 'guest_ecn', 'guest_rsc_ext',
  'guest_tso4', 'guest_tso6', 'guest_ufo', 'hash', 'host_ecn', 'host_mtu', 'host_tso4', 'host_tso6', 'host_ufo', 'indirect_desc', 'ioeventfd',
  'iommu_platform', 'migrate-extra', 'modern-pio-notify', 'mq', 'mrg_rxbuf', 'notify_on_empty', 'packed', 'page-per-vq', 'queue_reset',
  'rsc_interval', 'rss', 'rx_queue_size', 'speed', 'status', 'tx', 'tx_queue_size', 'use-disabled-flag', 'use-started', 'vectors',
  'virtio-backend', 'virtio-pci-bus-master-bug-migration', 'x-ats-page-aligned', 'x-disable-legacy-check', 'x-disable-pcie',
  'x-ignore-backend-features', 'x-mtu-bypass-backend', 'x-pcie-deverr-init', 'x-pcie-flr-init', 'x-pcie-lnkctl-init', 'x-pcie-pm-init',
  'x-txburst', 'x-txtimer',
];

/** Properties each NIC device accepts (from `-device NAME,help`), besides the generic id= and bus=. */
export function deviceProperties(model: string): string[] {
  switch (model) {
    case 'e1000': case 'e1000-82544gc': case 'e1000-82545em':
      return [...PCI_COMMON, 'autonegotiation', 'extra_mac_registers', 'init-vet', 'migrate_tso_props', 'mitigation'];
    case 'e1000e':
      return [...PCI_COMMON, 'disable_vnet_hdr', 'init-vet', 'subsys', 'subsys_ven'];
    case 'vmxnet3':
      return [...PCI_COMMON, 'x-disable-pcie', 'x-old-msi-offsets'];
    case 'ne2k_isa':
      return ['bootindex', 'iobase', 'irq', 'mac', 'netdev'];
    case 'usb-net':
      return ['attached', 'bootindex', 'mac', 'msos-desc', 'netdev', 'pcap', 'port', 'serial'];
    case 'rocker':
      return ['acpi-index', 'addr', 'failover_pair_id', 'fp_start_macaddr', 'len-ports', 'multifunction', 'name', 'rombar', 'romfile', 'romsize', 'switch_id', 'world', 'x-pcie-extcap-init', 'x-pcie-lnksta-dllla'];
    case 'pvrdma':
      return [...PCI_COMMON.filter((p) => p !== 'mac' && p !== 'netdev'), 'netdev', 'ibdev', 'ibport', 'dev-caps-max-mr-size', 'dev-caps-max-qp', 'dev-caps-max-cq', 'dev-caps-max-mr', 'dev-caps-max-pd', 'dev-caps-qp-rd-atom', 'dev-caps-max-qp-init-rd-atom', 'dev-caps-max-ah', 'dev-caps-max-srq', 'mad-chardev'];
    case 'virtio-net-pci': case 'virtio-net-pci-non-transitional': case 'virtio-net-pci-transitional':
      return VIRTIO_PCI;
    case 'virtio-net-device':
      return VIRTIO_PCI.filter((p) => !PCI_COMMON.includes(p) || p === 'mac' || p === 'netdev' || p === 'bootindex');
    default:
      return PCI_COMMON;
  }
}

export interface MachineInfo {
  /** Canonical family. */
  family: 'pc' | 'q35' | 'microvm' | 'other';
  /** NIC a bare -net nic or -nic gets. */
  defaultNic: string;
  /** Root PCI bus id. */
  pciBus: string;
  /** slot.function pairs taken by the machine itself even with -nodefaults. */
  reserved: string[];
}

/** Machine facts for the x86 machine types. */
export function machineInfo(type: string | undefined): MachineInfo {
  const t = type ?? 'pc';
  if (/^(q35|pc-q35-.*)$/.test(t)) return { family: 'q35', defaultNic: 'e1000e', pciBus: 'pcie.0', reserved: ['0.0', '1f.0', '1f.2', '1f.3'] };
  if (/^(pc|pc-i440fx-.*|pc-\d.*)$/.test(t)) return { family: 'pc', defaultNic: 'e1000', pciBus: 'pci.0', reserved: ['0.0', '1.0', '1.1', '1.3'] };
  if (t === 'microvm') return { family: 'microvm', defaultNic: 'virtio-net-device', pciBus: '', reserved: [] };
  return { family: 'other', defaultNic: 'e1000', pciBus: 'pci.0', reserved: [] };
}

/** The MAC QEMU gives the first NIC without mac=; every VM started this way gets the same one. */
export const QEMU_DEFAULT_MAC = '52:54:00:12:34:56';
