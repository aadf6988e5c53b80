// The daemon's model as the control API and the CLI see it. The HTTP API (api.ts) maps
// routes onto DaemonControl; the daemon (daemon.ts) implements it.

import type { PortCounters } from '../link/port.ts';
import type { PcapWriter } from '../switch/pcap.ts';
import type { ForwardRule, NetworkMode } from '../common/types.ts';
import type { PoolInfo } from '../host/pci/vfpool.ts';
import type { PeerCred } from '../host/native.ts';

export type { ForwardRule, NetworkMode, PeerCred };

/** A forward as asked for: hostAddr defaults to 127.0.0.1 (never every address unless asked). */
export type ForwardRequest = Omit<ForwardRule, 'hostAddr'> & { hostAddr?: string };

export interface PortInfo extends PortCounters {
  id: number;
  name: string;
  kind: string;
  peer: string;
  /** MACs learned on this port */
  macs: string[];
  /** addresses of those MACs (leases, ARP, NDP on the prefix) and what the port may send from (the source guard) */
  addresses: string[];
  hostnames: string[];
  /** the VM this port belongs to, when qnet started or attached it */
  vm?: string;
  drops: Record<string, number>;
  /** kernel networks: the bridge port (tap) and the uid it was made for */
  ifname?: string;
  uid?: number;
}

/** A kernel network's host side, for `qnet net show`. */
export interface KernelInfo {
  bridge: string;
  exists: boolean;
  /** qnet made the bridge (and removes it on stop) */
  createdBridge: boolean;
  uplink?: string;
  mac?: string;
  stp?: boolean;
  /** the nftables table `ip qnet-NET`: chains, rule count, packets counted per chain */
  rules: { table: string; chains: string[]; rules: number; packets: Record<string, number> } | null;
  /** net.ipv4.ip_forward now */
  forwarding: string;
  /** who may attach VMs besides root */
  allow: string[];
}

export interface LeaseInfo {
  mac: string;
  ip: string;
  hostname?: string;
  /** ms since the epoch */
  expiresAt: number;
  static: boolean;
}

export interface ForwardInfo extends ForwardRule {
  /** `proto:hostAddr:hostPort`, the handle for removal */
  id: string;
  connections: number;
  source: 'config' | 'runtime';
}

export interface NetworkInfo {
  name: string;
  mode: NetworkMode;
  subnet: string;
  gateway: string;
  domain?: string;
  mtu: number;
  /** IPv6 on the network: its prefix and router address */
  subnet6?: string;
  gateway6?: string;
  /** where QEMU attaches: unix:PATH, udp:HOST:PORT, ... */
  attach: string[];
  ports: PortInfo[];
  leases: LeaseInfo[];
  forwards: ForwardInfo[];
  /** MACs seen on more than one port of this network */
  duplicateMacs: string[];
  counters: Record<string, unknown>;
  /** kernel networks (bridge:) only */
  kernel?: KernelInfo;
  /** mode hostdev: the VF pool (no subnet, ports or leases: VMs drive their VFs) */
  pool?: PoolInfo;
}

export interface VmRecord {
  name: string;
  network: string;
  mac: string;
  model: string;
  /** QEMU's pid (the `qnet run` child) */
  pid: number;
  /** QMP unix socket */
  qmp: string;
  /** QEMU's stream server socket that the daemon connects to (userspace networks; none on
   *  kernel and hostdev networks) */
  sock?: string;
  /** kernel networks: the VM's tap */
  tap?: string;
  /** who started it (peer credentials of the registering client) */
  uid?: number;
  startedAt: number;
  /** hostdev network: the VF (PCI address) the VM has */
  hostdev?: string;
}

export interface AttachResult {
  network: string;
  name: string;
  mac: string;
  model: string;
  /** QEMU arguments that put a NIC on the network */
  args: string[];
  /** 'stream': QEMU joins an attach point; 'kernel': a tap on the network's bridge; 'hostdev': a VF */
  kind?: 'stream' | 'kernel' | 'hostdev';
  bridge?: string;
  /** hostdev network: the VF given to the VM (bound to vfio-pci, MAC and VLAN set) */
  hostdev?: { bdf: string; pf: string; index: number; vlan: number };
}

/** A tap handed over by the daemon (its descriptor travels with the reply). */
export interface TapResult {
  network: string;
  vm: string;
  tap: string;
  bridge: string;
  mac: string;
  mtu: number;
  /** the tap has a virtio-net header (IFF_VNET_HDR) */
  vnetHdr: boolean;
  /** a /dev/vhost-net descriptor follows the tap's */
  vhost: boolean;
}

export interface TapRequest {
  /** the network by name, or by its bridge's name (QEMU's br=) */
  network?: string;
  bridge?: string;
  vm: string;
  /** ask for IFF_VNET_HDR (the bridge helper's --use-vnet); default when the kernel has it */
  vnetHdr?: boolean;
  /** also pass /dev/vhost-net when it exists */
  vhost?: boolean;
}

/** The caller is not allowed to do this (the API answers 403). */
export class ForbiddenError extends Error {}

export interface StatusInfo {
  version: string;
  pid: number;
  uptimeSec: number;
  configPath: string | null;
  stateDir: string;
  runtimeDir: string;
  apiSocket: string;
  networks: { name: string; mode: NetworkMode; subnet: string; ports: number; leases: number; duplicateMacs: string[]; bridge?: string; pool?: { pfs: string[]; total: number; free: number; assigned: number } }[];
  warnings: string[];
}

/** Thrown for a missing network/forward/VM: the API answers 404. */
export class NotFoundError extends Error {}
/** Thrown for a bad request (bad spec, conflict): the API answers 400 (or 409). */
export class BadRequestError extends Error {
  constructor(message: string, readonly status = 400) { super(message); }
}

export interface DaemonControl {
  status(): StatusInfo | Promise<StatusInfo>;
  networks(): NetworkInfo[] | Promise<NetworkInfo[]>;
  network(name: string): NetworkInfo | Promise<NetworkInfo>;
  leases(network?: string): (LeaseInfo & { network: string })[];
  forwards(network?: string): (ForwardInfo & { network: string })[];
  addForward(network: string, spec: ForwardRequest): Promise<ForwardInfo>;
  /** by id (`proto:hostAddr:hostPort`) or by `proto:hostPort`; returns what was removed */
  removeForward(network: string, id: string): ForwardInfo[];
  /**
   * Capture a network (or one port, by id or VM name) into `out` until stop() is called or
   * the network or port goes (then `out` is closed). The daemon opens no file: the API
   * streams what `out` produces to its client.
   */
  startCapture(network: string, out: PcapWriter, port?: string): { stop(): void };
  /** Prometheus text exposition */
  metrics(): string;
  /** A MAC for this VM name (or the given one): stable across calls, unique on the network. Recorded in state. */
  attach(network: string, name: string, model?: string, mac?: string, who?: PeerCred | null): AttachResult;
  /**
   * On a hostdev network (else undefined): the VM's MAC and a VF with it, bound to vfio-pci,
   * held by `pid` (qnet run) until the VM registers; `mac` instead of the one kept for the name.
   */
  attachHostdev?(network: string, name: string, pid?: number, opts?: { mac?: string; who?: PeerCred | null }): Promise<AttachResult> | undefined;
  /** Join a VM whose QEMU runs a stream server (`qnet run`): the daemon connects and reconnects. */
  connectVm(vm: VmRecord, who?: PeerCred | null): void;
  /** Forget a VM (on a hostdev network: give its VF back). */
  disconnectVm(name: string, who?: PeerCred | null): void | Promise<void>;
  vms(who?: PeerCred | null): VmRecord[];
  // ---- kernel networks (optional: a daemon without them answers 404) ----
  /** A tap on a kernel network's bridge for a VM; the descriptors (tap, then vhost) are the caller's. */
  createTap?(req: TapRequest, who: PeerCred | null): Promise<{ info: TapResult; fds: number[] }>;
  /** `qnet ifup`: put an existing tap on a kernel network (the only one, or 'default', when network is not given). */
  addPort?(ifname: string, network: string | undefined, vm: string | undefined, who: PeerCred | null): Promise<{ network: string; ifname: string; bridge: string }>;
  /** `qnet ifdown` */
  removePort?(ifname: string, network: string | undefined, who: PeerCred | null): Promise<{ network: string; ifname: string; removed: boolean }>;
  /**
   * May this caller use a route at all? Throws ForbiddenError. Callers other than root and the
   * daemon's own user reach only the routes marked for users (attach, taps, their own VMs).
   */
  authorize?(who: PeerCred | null, route: { method: string; pattern: string; userRoute: boolean }): void;
}
