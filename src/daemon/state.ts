// The daemon's persistent state: leases, runtime forwards, MAC assignments per network, the
// VMs it joined, and the host objects of kernel networks (so a restart adopts them). Written atomically (temp file, fsync, rename) after changes, debounced,
// so a crash leaves either the old or the new file, never half of one.
import fs from 'node:fs';
import path from 'node:path';
import type { LeaseRecord } from '../services/dhcp.ts';
import type { LeaseRecord6 } from '../services/dhcp6-leases.ts';
import type { ForwardRule, VmRecord } from './types.ts';
import type { VfAssignment } from '../host/pci/vfpool.ts';
import type { HostRecord } from '../host/kernel-network.ts';
import { logger } from '../util/log.ts';

const log = logger('state');

export interface NetworkState {
  leases: LeaseRecord[];
  /** DHCPv6 leases (absent in state files written before IPv6) */
  leases6?: LeaseRecord6[];
  forwards: ForwardRule[];
  /** VM name -> MAC */
  macs: Record<string, string>;
  /** mode hostdev: the VFs assigned to VMs */
  vfs?: VfAssignment[];
}

export interface State {
  version: 1;
  networks: Record<string, NetworkState>;
  vms: VmRecord[];
  /** kernel networks: what qnet made on the host (bridges, moved uplinks, tables, forwarding) */
  host?: HostRecord;
}

export function emptyNetworkState(): NetworkState { return { leases: [], forwards: [], macs: {} }; }

export class StateStore {
  state: State = { version: 1, networks: {}, vms: [] };
  private timer: NodeJS.Timeout | null = null;
  readonly file: string;

  /** dir '' keeps the state in memory only (a one-off `qnet user`). */
  constructor(readonly dir: string) {
    if (dir) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = dir ? path.join(dir, 'state.json') : '';
  }

  load(): State {
    if (!this.file) return this.state;
    try {
      const s = JSON.parse(fs.readFileSync(this.file, 'utf8')) as Partial<State>;
      if (s && s.version === 1 && typeof s.networks === 'object' && Array.isArray(s.vms)) this.state = s as State;
      else log.warn('state file has an unknown format; starting fresh', { file: this.file });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('state file unreadable; starting fresh', { file: this.file, error: (e as Error).message });
    }
    return this.state;
  }

  net(name: string): NetworkState {
    return (this.state.networks[name] ??= emptyNetworkState());
  }

  /** Save soon (changes come in bursts, e.g. several leases at start-up). */
  changed(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.save(); }, 100);
  }

  save(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (!this.file) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      const fd = fs.openSync(tmp, 'w', 0o600);
      fs.writeSync(fd, JSON.stringify(this.state, null, 1));
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(tmp, this.file);
    } catch (e) {
      log.error('cannot save state', { file: this.file, error: (e as Error).message });
    }
  }
}
