// The daemon's model as the control API and the CLI see it. The HTTP API (api.ts) maps
// routes onto DaemonControl; the daemon (daemon.ts) implements it.

import type { PortCounters } from '../link/port.ts';
import type { ForwardRule, NetworkMode } from '../common/types.ts';

export type { ForwardRule, NetworkMode };

/** A forward as asked for: hostAddr defaults to 127.0.0.1 (never every address unless asked). */
export type ForwardRequest = Omit<ForwardRule, 'hostAddr'> & { hostAddr?: string };

export interface PortInfo extends PortCounters {
  id: number;
  name: string;
  kind: string;
  peer: string;
  /** MACs learned on this port */
  macs: string[];
  /** addresses the gateway knows for those MACs (leases and ARP) */
  addresses: string[];
  hostnames: string[];
  /** the VM this port belongs to, when qnet started or attached it */
  vm?: string;
  drops: Record<string, number>;
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
  /** QEMU's stream server socket that the daemon connects to */
  sock: string;
  startedAt: number;
}

export interface AttachResult {
  network: string;
  name: string;
  mac: string;
  model: string;
  /** QEMU arguments that put a NIC on the network */
  args: string[];
}

export interface StatusInfo {
  version: string;
  pid: number;
  uptimeSec: number;
  configPath: string | null;
  stateDir: string;
  runtimeDir: string;
  apiSocket: string;
  networks: { name: string; mode: NetworkMode; subnet: string; ports: number; leases: number; duplicateMacs: string[] }[];
  warnings: string[];
}

/** Thrown for a missing network/forward/VM: the API answers 404. */
export class NotFoundError extends Error {}
/** Thrown for a bad request (bad spec, conflict): the API answers 400 (or 409). */
export class BadRequestError extends Error {
  constructor(message: string, readonly status = 400) { super(message); }
}

export interface DaemonControl {
  status(): StatusInfo;
  networks(): NetworkInfo[];
  network(name: string): NetworkInfo;
  leases(network?: string): (LeaseInfo & { network: string })[];
  forwards(network?: string): (ForwardInfo & { network: string })[];
  addForward(network: string, spec: ForwardRequest): Promise<ForwardInfo>;
  /** by id (`proto:hostAddr:hostPort`) or by `proto:hostPort`; returns what was removed */
  removeForward(network: string, id: string): ForwardInfo[];
  /**
   * Capture a network (or one port, by id or VM name) to a pcap file until stop() is called.
   */
  startCapture(network: string, path: string, port?: string): { stop(): { frames: number } };
  /** Prometheus text exposition */
  metrics(): string;
  /** A MAC for this VM name: stable across calls, unique on the network. Recorded in state. */
  attach(network: string, name: string, model?: string): AttachResult;
  /** Join a VM whose QEMU runs a stream server (`qnet run`): the daemon connects and reconnects. */
  connectVm(vm: VmRecord): void;
  disconnectVm(name: string): void;
  vms(): VmRecord[];
}
