// The network model of a QEMU command line, as src/qemu/analyze.ts reads it: NICs, netdevs
// (backends), host devices, diagnostics. Types only, shared by lint, explain, convert and adopt.
import type { Token } from './args.ts';
import type { MachineInfo } from './model.ts';
import type { OptEntry } from './opts.ts';
import type { UserNetdevConfig } from './user-options.ts';

export type Severity = 'error' | 'warning' | 'note';

export interface Diagnostic {
  severity: Severity;
  /** Stable identifier of the check, e.g. 'unknown-option'. */
  code: string;
  /** The option as written, e.g. '-netdev user,id=n0,foo=1'. */
  option?: string;
  message: string;
  /** How to fix it. */
  hint?: string;
}

export type Origin = '-netdev' | '-net' | '-nic';

export interface Netdev {
  id: string;
  type: string;
  /** Backend options without type and id. */
  entries: OptEntry[];
  origin: Origin;
  source: string;
  /** Hub this legacy -net backend sits on (its old vlan). */
  hub?: number;
  /** For hubport netdevs. */
  hubid?: number;
  /** hubport's netdev= */
  link?: string;
  user?: UserNetdevConfig;
  json?: boolean;
  /** The -netdev argument as written. */
  raw?: string;
  /** Position of the option among the command line's tokens. */
  pos: number;
  /** Auto-generated id (legacy -net/-nic without id). */
  autoId?: boolean;
}

export interface Nic {
  /** Display name: device id, or model.N as QEMU names it. */
  name: string;
  /** Device id= if any. */
  id?: string;
  model: string;
  /** Model as written (alias or 'virtio'), when different. */
  writtenModel?: string;
  mac?: string;
  addr?: string;
  bus?: string;
  vectors?: string;
  /** Other device properties, as written. */
  props: OptEntry[];
  netdev?: string;
  hub?: number;
  origin: '-device' | '-net' | '-nic';
  source: string;
  json?: boolean;
  /** The -device argument as written. */
  raw?: string;
  pos: number;
}

export interface Hostdev {
  driver: string;
  host?: string;
  sysfsdev?: string;
  id?: string;
  addr?: string;
  props: OptEntry[];
  source: string;
}

export interface Analysis {
  tokens: Token[];
  machine: MachineInfo;
  machineType?: string;
  nodefaults: boolean;
  netdevs: Netdev[];
  nics: Nic[];
  hostdevs: Hostdev[];
  /** -net none / -nic none seen. */
  noneNet: boolean;
  /** No network option at all: QEMU adds its default NIC on user networking. */
  defaultNet: boolean;
  diagnostics: Diagnostic[];
  /** Per-token: index into tokens of network items handled. */
  help?: string;
}

export interface AnalyzeOptions {
  /** Override machine type (otherwise from -M/-machine, default pc). */
  machine?: string;
}

export function errorCount(a: Analysis): number {
  return a.diagnostics.filter((d) => d.severity === 'error').length;
}
