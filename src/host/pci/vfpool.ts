// A VF pool: the VFs of one or more SR-IOV PFs, handed to VMs one each (libvirt's
// `<forward mode='hostdev'>` network). A network of `mode: hostdev` is one pool.
//
// Taking a VF for a VM (allocate):
//   1. the first free VF, PF by PF, index by index. Free: not assigned, not bound to vfio-pci
//      by someone else (another tool's VM), its IOMMU group viable;
//   2. its settings before, read from the PF (restored on release);
//   3. through the PF: the VM's stable MAC, the pool's VLAN (0: untagged), spoof checking on
//      (the guest can only send as that MAC);
//   4. bound to vfio-pci (vfio.ts; its driver remembered in STATE/vfio/BDF.json).
// Giving it back (release): the old settings through the PF, then the remembered driver.
// A failure half-way puts back what was done.
//
// The assignments (VM, VF, owning pid, old settings) live in an array the caller persists
// (the daemon's state file), so a daemon restart keeps a running VM's VF and a VF whose VM
// died while the daemon was down is given back at start (reap). Allocation and release are
// serialised: two VMs starting at once never get the same VF.
import type { Host } from './sysfs.ts';
import { deviceExists, driverOf, iommuGroupOf, resolveDevice, vfsOf } from './devices.ts';
import { DriverRecords, executePlan, groupBlockers, planBind, planUnbind, RefusedError } from './vfio.ts';
import { pfInterface, readVfStates, setVf, type VfSettings } from './sriov.ts';

export interface PoolSpec {
  /** the network's name (in messages and records) */
  network: string;
  /** PFs: PCI addresses or interface names */
  pfs: string[];
  /** 802.1Q VLAN for every VF (the PF tags and untags); none: untagged */
  vlan?: number;
}

export interface VfAssignment {
  vm: string;
  bdf: string;
  pf: string;
  index: number;
  mac: string;
  vlan: number;
  /** who holds it: `qnet run` until QEMU is registered, then QEMU */
  pid: number;
  since: number;
  /** the VF's settings before it was taken */
  prev: VfSettings;
}

export interface PoolMember {
  bdf: string;
  pf: string;
  index: number;
  driver?: string;
  iommuGroup?: number;
  state: 'free' | 'assigned' | 'unavailable';
  vm?: string;
  mac?: string;
  vlan?: number;
  /** why it is unavailable */
  why?: string;
}

export interface PoolInfo {
  pfs: string[];
  vlan?: number;
  total: number;
  free: number;
  members: PoolMember[];
  /** the pool could not be read (a PF is gone, ...) */
  error?: string;
}

export class VfPool {
  private queue: Promise<unknown> = Promise.resolve();

  /**
   * `assignments` is the pool's persisted list: the pool changes it in place and calls
   * `changed()` after every change.
   */
  constructor(
    readonly spec: PoolSpec,
    private readonly host: Host,
    private readonly records: DriverRecords,
    readonly assignments: VfAssignment[],
    private readonly changed: () => void = () => {},
  ) {}

  /** one at a time: sysfs and the PF's settings are shared state */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => {});
    return p;
  }

  /** PF addresses (names resolved now: an interface name may move between boots) */
  pfBdfs(): string[] {
    return this.spec.pfs.map((p) => resolveDevice(this.host, p));
  }

  members(): PoolMember[] {
    const out: PoolMember[] = [];
    for (const pf of this.pfBdfs()) {
      for (const v of vfsOf(this.host, pf)) {
        const a = this.assignments.find((x) => x.bdf === v.bdf);
        const driver = driverOf(this.host, v.bdf);
        const g = iommuGroupOf(this.host, v.bdf);
        const base = { bdf: v.bdf, pf, index: v.index, ...(driver ? { driver } : {}), ...(g !== undefined ? { iommuGroup: g } : {}) };
        if (a) { out.push({ ...base, state: 'assigned', vm: a.vm, mac: a.mac, vlan: a.vlan }); continue; }
        const why = driver === 'vfio-pci' ? 'bound to vfio-pci outside this network (another VM?)'
          : g === undefined ? 'in no IOMMU group'
          : groupBlockers(this.host, v.bdf).length ? `IOMMU group ${g} also holds ${groupBlockers(this.host, v.bdf).join(', ')}` : undefined;
        out.push(why ? { ...base, state: 'unavailable', why } : { ...base, state: 'free' });
      }
    }
    return out;
  }

  info(): PoolInfo {
    let ms: PoolMember[] = [];
    let err: string | undefined;
    try { ms = this.members(); } catch (e) { err = (e as Error).message; }
    return {
      pfs: this.spec.pfs, ...(this.spec.vlan !== undefined ? { vlan: this.spec.vlan } : {}),
      total: ms.length, free: ms.filter((m) => m.state === 'free').length, members: ms,
      ...(err ? { error: err } : {}),
    };
  }

  assignmentOf(vm: string): VfAssignment | undefined { return this.assignments.find((a) => a.vm === vm); }

  /** Take a free VF for `vm`, give it `mac` (and the pool's VLAN), bind it to vfio-pci. */
  allocate(vm: string, mac: string, pid: number): Promise<VfAssignment> {
    return this.serial(async () => {
      const had = this.assignmentOf(vm);
      if (had) throw new RefusedError(`VM '${vm}' already has VF ${had.index} of ${had.pf} (${had.bdf}) on network '${this.spec.network}'`);
      const ms = this.members();
      const m = ms.find((x) => x.state === 'free');
      if (!m) {
        const busy = ms.filter((x) => x.state === 'assigned').map((x) => `${x.vm}: ${x.bdf}`);
        const un = ms.filter((x) => x.state === 'unavailable').map((x) => `${x.bdf}: ${x.why}`);
        throw new RefusedError(`network '${this.spec.network}' has no free VF (${ms.length} VFs on ${this.spec.pfs.join(', ')}${busy.length ? `; assigned: ${busy.join(', ')}` : ''}${un.length ? `; unavailable: ${un.join('; ')}` : ''})${ms.length === 0 ? `; create VFs with qnet host sriov ${this.spec.pfs[0]} --vfs N` : ''}`);
      }
      pfInterface(this.host, m.pf); // the PF must have its interface: the settings go through it
      const prevState = (await readVfStates(this.host, m.pf)).find((s) => s.index === m.index);
      const prev: VfSettings = prevState
        ? { mac: prevState.mac ?? '00:00:00:00:00:00', vlan: prevState.vlan ?? 0, ...(prevState.spoofchk !== undefined ? { spoofchk: prevState.spoofchk } : {}) }
        : { mac: '00:00:00:00:00:00', vlan: 0 };
      const vlan = this.spec.vlan ?? 0;
      await setVf(this.host, m.pf, m.index, { mac, vlan, spoofchk: true });
      try {
        await executePlan(this.host, await planBind(this.host, m.bdf), this.records, `network ${this.spec.network} for VM ${vm}`);
      } catch (e) {
        await setVf(this.host, m.pf, m.index, prev).catch(() => {});
        throw e;
      }
      const a: VfAssignment = { vm, bdf: m.bdf, pf: m.pf, index: m.index, mac, vlan, pid, since: Date.now(), prev };
      this.assignments.push(a);
      this.changed();
      return a;
    });
  }

  /** The VM's QEMU now holds the VF (its pid replaces qnet run's). */
  setOwner(vm: string, pid: number): void {
    const a = this.assignmentOf(vm);
    if (a && a.pid !== pid) { a.pid = pid; this.changed(); }
  }

  /**
   * Give `vm`'s VF back: old settings through the PF, the driver it had. Resolves false when
   * the VM has none. The assignment is dropped even when restoring fails (the error says what
   * is left to do by hand), so a broken VF never blocks the pool's bookkeeping.
   */
  release(vm: string): Promise<boolean> {
    return this.serial(async () => {
      const a = this.assignmentOf(vm);
      if (!a) return false;
      const problems: string[] = [];
      if (deviceExists(this.host, a.bdf)) {
        try { await setVf(this.host, a.pf, a.index, a.prev); } catch (e) { problems.push(`restoring its MAC/VLAN: ${(e as Error).message}`); }
        try {
          if (driverOf(this.host, a.bdf) === 'vfio-pci') await executePlan(this.host, planUnbind(this.host, a.bdf, this.records), this.records, `network ${this.spec.network}`);
        } catch (e) { problems.push(`giving it back to its driver: ${(e as Error).message}`); }
      }
      this.assignments.splice(this.assignments.indexOf(a), 1);
      this.changed();
      if (problems.length) throw new Error(`VF ${a.bdf} of VM '${vm}' is out of the pool, but ${problems.join('; ')}`);
      return true;
    });
  }

  /** Give back the VFs whose holder is gone; returns the VMs released (`onError` hears failures). */
  async reap(alive: (pid: number) => boolean, onError: (vm: string, e: Error) => void = () => {}): Promise<string[]> {
    const dead = this.assignments.filter((a) => !alive(a.pid)).map((a) => a.vm);
    const out: string[] = [];
    for (const vm of dead) {
      try { if (await this.release(vm)) out.push(vm); } catch (e) { out.push(vm); onError(vm, e as Error); }
    }
    return out;
  }
}
