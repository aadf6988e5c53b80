// The daemon's hostdev networks: each is a VF pool (host/pci/vfpool.ts) with no switch, no
// gateway and no qnet data path. The daemon (root) does the privileged steps for `qnet run`:
//
//   qnet run NET --name VM -- qemu...
//     POST /v1/networks/NET/attach {name, pid}   -> a VF, its MAC/VLAN set, bound to vfio-pci;
//                                                   answered with -device vfio-pci,host=BDF
//     POST /v1/vms {name, pid: QEMU's, ...}       -> the VF's holder is QEMU now
//     DELETE /v1/vms/VM (QEMU exited)              -> the VF back: settings and driver restored
//
// Assignments are part of the daemon's state (networks.NET.vfs in state.json), so a restart
// keeps the VFs of VMs that still run. A VF whose holder died without a DELETE (qnet run was
// killed, QEMU crashed before registering) is given back by the reaper, which runs at start,
// when `GET /v1/vms` finds a VM gone, and every REAP_MS while a pool exists (it only looks at
// pids until it finds a dead one). Holders are known by pid, as the daemon's VMs are.
import { Host } from '../host/pci/sysfs.ts';
import { DriverRecords, RefusedError } from '../host/pci/vfio.ts';
import { VfPool, type VfAssignment } from '../host/pci/vfpool.ts';
import type { NetworkConfig } from '../config/config.ts';
import type { StateStore } from './state.ts';
import { BadRequestError, type AttachResult, type NetworkInfo, type StatusInfo, type VmRecord } from './types.ts';
import { logger } from '../util/log.ts';

const log = logger('hostdev');
const REAP_MS = 2000;

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

export class HostdevNetworks {
  private readonly pools = new Map<string, { cfg: NetworkConfig; key: string; pool: VfPool }>();
  private timer: NodeJS.Timeout | null = null;
  private host?: Host;

  constructor(private readonly store: StateStore, stateDir: string, private readonly makeHost: () => Host = () => new Host()) {
    this.records = new DriverRecords(stateDir);
  }
  private readonly records: DriverRecords;

  has(name: string): boolean { return this.pools.has(name); }
  names(): string[] { return [...this.pools.keys()]; }
  static isHostdev(cfg: NetworkConfig): boolean { return cfg.mode === 'hostdev'; }

  private pool(name: string): VfPool { return this.pools.get(name)!.pool; }

  /** Start (or restart with a new config) a pool; its assignments carry over. */
  async start(cfg: NetworkConfig): Promise<void> {
    this.host ??= this.makeHost();
    const st = this.store.net(cfg.name) as ReturnType<StateStore['net']> & { vfs?: VfAssignment[] };
    st.vfs ??= [];
    const pool = new VfPool({ network: cfg.name, pfs: cfg.hostdev!.pfs, ...(cfg.hostdev!.vlan !== undefined ? { vlan: cfg.hostdev!.vlan } : {}) }, this.host, this.records, st.vfs, () => this.store.changed());
    try {
      pool.pfBdfs();
    } catch (e) {
      throw new Error(`network '${cfg.name}' (${cfg.where.pf ?? 'pf'}): ${(e as Error).message}`);
    }
    this.pools.set(cfg.name, { cfg, key: JSON.stringify({ ...cfg, where: undefined }), pool });
    const released = await pool.reap(pidAlive, (vm, e) => log.warn('VF of a gone VM not fully restored', { network: cfg.name, vm, error: e.message }));
    for (const vm of released) log.info('VF of a gone VM given back', { network: cfg.name, vm });
    const info = pool.info();
    log.info('network up', { network: cfg.name, mode: 'hostdev', pf: cfg.hostdev!.pfs.join(','), vfs: info.total, free: info.free, kept: pool.assignments.map((a) => `${a.vm}=${a.bdf}`).join(',') || undefined });
    this.arm();
  }

  /** Whether a reload must restart this network. */
  changed(cfg: NetworkConfig): boolean {
    const cur = this.pools.get(cfg.name);
    return !cur || cur.key !== JSON.stringify({ ...cfg, where: undefined });
  }

  /** Forget a pool (reload without it, or daemon stop). VFs stay with their running VMs. */
  stop(name: string): void {
    if (this.pools.delete(name)) log.info('network down', { network: name });
    if (this.pools.size === 0 && this.timer) { clearInterval(this.timer); this.timer = null; }
  }

  stopAll(): void { for (const n of this.names()) this.stop(n); }

  private arm(): void {
    if (this.timer) return;
    this.timer = setInterval(() => { void this.reap(); }, REAP_MS);
    this.timer.unref();
  }

  /** Give back the VFs of holders that are gone. */
  async reap(): Promise<string[]> {
    const out: string[] = [];
    for (const [name, p] of this.pools) {
      for (const vm of await p.pool.reap(pidAlive, (v, e) => log.warn('VF of a gone VM not fully restored', { network: name, vm: v, error: e.message }))) {
        log.info('VF of a gone VM given back', { network: name, vm });
        this.store.state.vms = this.store.state.vms.filter((x) => x.name !== vm);
        this.store.changed();
        out.push(vm);
      }
    }
    return out;
  }

  info(name: string): NetworkInfo {
    const p = this.pools.get(name)!;
    const pool = p.pool.info();
    return {
      name, mode: 'hostdev', subnet: '', gateway: '', mtu: 1500, attach: [], ports: [], leases: [], forwards: [], duplicateMacs: [],
      counters: {}, pool,
    };
  }

  summary(name: string): StatusInfo['networks'][number] & { pool: NonNullable<StatusInfo['networks'][number]['pool']> } {
    const info = this.pool(name).info();
    return {
      name, mode: 'hostdev', subnet: '', ports: this.pool(name).assignments.length, leases: 0, duplicateMacs: [],
      pool: { pfs: info.pfs, total: info.total, free: info.free, assigned: this.pool(name).assignments.length },
    };
  }

  /** A VF for `vm` (holder `pid`, the qnet run process) with the VM's stable MAC. */
  async attach(network: string, vm: string, mac: string, pid: number | undefined): Promise<AttachResult> {
    if (pid === undefined || !pidAlive(pid)) {
      throw new BadRequestError(`network '${network}' hands out VFs to qnet run only (the VF comes back when QEMU exits): qnet run ${network} --name ${vm} -- qemu-system-x86_64 ...`);
    }
    let a: VfAssignment;
    try {
      a = await this.pool(network).allocate(vm, mac, pid);
    } catch (e) {
      throw new BadRequestError((e as Error).message, e instanceof RefusedError ? 409 : 400);
    }
    log.info('VF assigned', { network, vm, vf: a.bdf, pf: a.pf, index: a.index, mac, vlan: a.vlan || undefined });
    return {
      network, name: vm, mac, model: 'vfio-pci', kind: 'hostdev',
      args: ['-device', `vfio-pci,host=${a.bdf},id=qnet0`],
      hostdev: { bdf: a.bdf, pf: a.pf, index: a.index, vlan: a.vlan },
    };
  }

  /** The VM's QEMU is running: it holds the VF now. */
  connect(vm: VmRecord): void {
    const a = this.pool(vm.network).assignmentOf(vm.name);
    if (!a) throw new BadRequestError(`VM '${vm.name}' has no VF on network '${vm.network}' (attach first)`);
    this.pool(vm.network).setOwner(vm.name, vm.pid);
    this.store.state.vms = this.store.state.vms.filter((v) => v.name !== vm.name);
    this.store.state.vms.push({ ...vm, hostdev: a.bdf });
    this.store.changed();
    log.info('vm joined', { vm: vm.name, network: vm.network, vf: a.bdf });
  }

  /** Give the VM's VF back (if it has one on any pool); true when it had one. */
  async release(vm: string): Promise<boolean> {
    for (const [name, p] of this.pools) {
      if (!p.pool.assignmentOf(vm)) continue;
      await p.pool.release(vm);
      log.info('VF given back', { network: name, vm });
      return true;
    }
    return false;
  }

  ownerOf(vm: string): string | undefined {
    for (const [name, p] of this.pools) if (p.pool.assignmentOf(vm)) return name;
    return undefined;
  }
}
