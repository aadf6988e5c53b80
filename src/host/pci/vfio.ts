// Binding PCI devices to vfio-pci and back, the driver_override way:
//
//   bind:    echo vfio-pci > devices/BDF/driver_override   (only vfio-pci may take it now)
//            echo BDF > drivers/ORIG/unbind                 (the host driver lets go)
//            echo BDF > drivers_probe                       (the kernel binds the override)
//   unbind:  echo BDF > drivers/vfio-pci/unbind
//            echo > devices/BDF/driver_override             (a lone newline clears it)
//            echo BDF > drivers/ORIG/bind                   (the remembered driver), or
//            echo BDF > drivers_probe                       (none remembered: the kernel picks)
//
// driver_override (rather than vfio-pci's new_id) touches this one device only: new_id would
// make vfio-pci claim every device with that vendor:device pair, including the host's other
// ports of the same NIC.
//
// A plan is computed first and changes nothing; `--dry-run` prints it, and every refusal
// happens while planning, so a refused bind leaves the machine exactly as it was. Refusals:
//   - no IOMMU (no /sys/kernel/iommu_groups entries, or the device is in none);
//   - another member of the IOMMU group is bound to a host driver (vfio owns groups, not
//     devices: the kernel would refuse to open the group), named; `--group` moves all of them;
//   - the device's interface (or its bridge) carries an address or the default route, named;
//   - a PF with VFs enabled (unbinding its driver would tear the VFs down);
//   - unbind while a process holds the group's /dev/vfio/N open (vfio-pci's remove would block
//     until it lets go), naming the process.
// The original driver is remembered in STATE/vfio/BDF.json before the first write, so
// `unbind` restores it even after a crash or a reboot of qnet.
import fs from 'node:fs';
import path from 'node:path';
import type { Host } from './sysfs.ts';
import {
  classOf, describe, devRel, deviceExists, driverOf, groupDevices, iommuGroupOf, netdevsOf, readDevice,
} from './devices.ts';
import { defaultRoutes, netdevInUse } from './netuse.ts';

/** Drivers that leave a device's DMA to its owner: they do not stand in the way of vfio. */
export function dmaSafeDriver(driver: string | undefined): boolean {
  return driver === undefined || driver === 'pci-stub' || driver === 'pcieport' || driver === 'vfio-pci' || /^vfio[-_]/.test(driver);
}

export interface Step {
  /** absolute path of the sysfs attribute */
  file: string;
  value: string;
  why: string;
}

/** `to` undefined on an unbind: the kernel's choice (no driver remembered) */
export interface DeviceChange { bdf: string; from?: string; to?: string }

export interface VfioPlan {
  action: 'bind' | 'unbind';
  /** the devices that change driver, in order */
  changes: DeviceChange[];
  /** a module to load first (vfio-pci when its driver directory is missing) */
  modprobe?: string;
  steps: Step[];
  /** things worth saying that are not refusals (already bound, nothing remembered, ...) */
  notes: string[];
}

/** A refusal: what stands in the way, and what to do. Nothing was changed. */
export class RefusedError extends Error {}

// ---- remembered drivers -----------------------------------------------------------------------

export interface DriverRecord {
  bdf: string;
  /** the driver it had before vfio-pci ('' when it had none) */
  driver: string;
  /** ms since the epoch */
  at: number;
  /** who bound it: 'qnet host vfio bind', 'network NET for VM' */
  by: string;
}

/** STATE/vfio/BDF.json, one file per device (written atomically). */
export class DriverRecords {
  readonly dir: string;
  constructor(stateDir: string) { this.dir = path.join(stateDir, 'vfio'); }
  private file(bdf: string): string { return path.join(this.dir, `${bdf}.json`); }
  get(bdf: string): DriverRecord | undefined {
    try {
      const r = JSON.parse(fs.readFileSync(this.file(bdf), 'utf8')) as DriverRecord;
      return typeof r.driver === 'string' ? r : undefined;
    } catch { return undefined; }
  }
  put(r: DriverRecord): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file(r.bdf)}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(r, null, 1) + '\n', { mode: 0o600 });
    fs.renameSync(tmp, this.file(r.bdf));
  }
  remove(bdf: string): void { try { fs.unlinkSync(this.file(bdf)); } catch { /* gone */ } }
  all(): DriverRecord[] {
    let names: string[] = [];
    try { names = fs.readdirSync(this.dir); } catch { return []; }
    return names.filter((n) => n.endsWith('.json')).map((n) => this.get(n.slice(0, -5))).filter((r): r is DriverRecord => r !== undefined);
  }
}

// ---- checks -------------------------------------------------------------------------------------

/** Why vfio cannot work on this host at all, or undefined. */
export function iommuProblem(host: Host): string | undefined {
  if (host.list('kernel/iommu_groups').length === 0) {
    return `no IOMMU is active (${host.path('kernel/iommu_groups')} is empty): enable VT-d (Intel) or AMD-Vi in the firmware and boot with intel_iommu=on (Intel); qnet doctor checks the rest`;
  }
  return undefined;
}

export function vfioLoaded(host: Host): boolean { return host.exists('bus/pci/drivers/vfio-pci'); }

/** Members of bdf's group (other than bdf) that keep the group from being viable. */
export function groupBlockers(host: Host, bdf: string): string[] {
  const g = iommuGroupOf(host, bdf);
  if (g === undefined) return [];
  return groupDevices(host, g).filter((m) => m !== bdf && !classOf(host, m).startsWith('0604') && !dmaSafeDriver(driverOf(host, m)));
}

/** Processes that hold /dev/vfio/GROUP open: 'pid 1234 (qemu-system-x86)'. Reads PROC/[pid]/fd. */
export function vfioGroupUsers(host: Host, group: number): string[] {
  const target = path.join('/dev/vfio', String(group));
  const out: string[] = [];
  let pids: string[] = [];
  try { pids = fs.readdirSync(host.proc).filter((p) => /^\d+$/.test(p)); } catch { return []; }
  for (const pid of pids) {
    let fds: string[] = [];
    try { fds = fs.readdirSync(path.join(host.proc, pid, 'fd')); } catch { continue; }
    for (const fd of fds) {
      let t = '';
      try { t = fs.readlinkSync(path.join(host.proc, pid, 'fd', fd)); } catch { continue; }
      if (t === target) {
        let comm = '';
        try { comm = fs.readFileSync(path.join(host.proc, pid, 'comm'), 'utf8').trim(); } catch { /* gone */ }
        out.push(`pid ${pid}${comm ? ` (${comm})` : ''}`);
        break;
      }
    }
  }
  return out;
}

async function inUseReasons(host: Host, bdf: string): Promise<string[]> {
  const nds = netdevsOf(host, bdf);
  if (nds.length === 0) return [];
  const routes = await defaultRoutes(host);
  const out: string[] = [];
  for (const n of nds) out.push(...(await netdevInUse(host, n.name, n.master, routes)));
  return out;
}

// ---- planning -------------------------------------------------------------------------------------

function driverFile(host: Host, driver: string, file: 'bind' | 'unbind'): string { return host.path(`bus/pci/drivers/${driver}/${file}`); }

/**
 * The writes that bind `bdf` (and with `group`, every member of its IOMMU group bound to a host
 * driver) to vfio-pci. Throws RefusedError, changing nothing, when it must not be done.
 */
export async function planBind(host: Host, bdf: string, o: { group?: boolean } = {}): Promise<VfioPlan> {
  if (!deviceExists(host, bdf)) throw new RefusedError(`no PCI device ${bdf} (see qnet host devices)`);
  const noIommu = iommuProblem(host);
  if (noIommu) throw new RefusedError(noIommu);
  const group = iommuGroupOf(host, bdf);
  if (group === undefined) throw new RefusedError(`${describe(host, bdf)} is in no IOMMU group, so the IOMMU cannot isolate it; vfio-pci cannot take it`);
  const blockers = groupBlockers(host, bdf);
  if (blockers.length && !o.group) {
    throw new RefusedError(
      `IOMMU group ${group} of ${bdf} also holds ${blockers.map((b) => describe(host, b)).join(', ')}, bound to a host driver; ` +
      'vfio-pci can only hand over a whole group. Move the whole group with --group, or unbind ' +
      `${blockers.length === 1 ? 'that device' : 'those devices'} from ${blockers.length === 1 ? 'its' : 'their'} driver first`);
  }
  const targets = [bdf, ...(o.group ? blockers : [])];
  const reasons: string[] = [];
  for (const t of targets) {
    for (const r of await inUseReasons(host, t)) reasons.push(`${t}: ${r}`);
    const d = readDevice(host, t);
    if (d.sriov && d.sriov.numVfs > 0 && d.driver !== 'vfio-pci') {
      reasons.push(`${t} has ${d.sriov.numVfs} VFs enabled, and unbinding its driver removes them (disable them first: qnet host sriov ${t} --vfs 0)`);
    }
  }
  if (reasons.length) throw new RefusedError(`refusing to take ${targets.join(', ')} from the host: ${reasons.join('; ')}`);

  const plan: VfioPlan = { action: 'bind', changes: [], steps: [], notes: [] };
  if (!vfioLoaded(host)) {
    if (!host.canModprobe) throw new RefusedError(`vfio-pci is not loaded (no ${host.path('bus/pci/drivers/vfio-pci')}): load it with modprobe vfio-pci`);
    plan.modprobe = 'vfio-pci';
  }
  for (const t of targets) {
    const from = driverOf(host, t);
    if (from === 'vfio-pci') { plan.notes.push(`${t} is already bound to vfio-pci`); continue; }
    plan.changes.push({ bdf: t, ...(from ? { from } : {}), to: 'vfio-pci' });
    plan.steps.push({ file: host.path(devRel(t, 'driver_override')), value: 'vfio-pci', why: `only vfio-pci may bind ${t}` });
    if (from) plan.steps.push({ file: driverFile(host, from, 'unbind'), value: t, why: `${from} lets go of ${t}` });
    plan.steps.push({ file: host.path('bus/pci/drivers_probe'), value: t, why: `the kernel binds ${t} to vfio-pci` });
  }
  return plan;
}

/**
 * The writes that give `bdf` (with `group`: every member of its group bound to vfio-pci) back
 * to its remembered driver.
 */
export function planUnbind(host: Host, bdf: string, records: DriverRecords, o: { group?: boolean } = {}): VfioPlan {
  if (!deviceExists(host, bdf)) throw new RefusedError(`no PCI device ${bdf} (see qnet host devices)`);
  const group = iommuGroupOf(host, bdf);
  const targets = o.group && group !== undefined
    ? [bdf, ...groupDevices(host, group).filter((m) => m !== bdf && driverOf(host, m) === 'vfio-pci')]
    : [bdf];
  const plan: VfioPlan = { action: 'unbind', changes: [], steps: [], notes: [] };
  if (group !== undefined && targets.some((t) => driverOf(host, t) === 'vfio-pci')) {
    const users = vfioGroupUsers(host, group);
    if (users.length) throw new RefusedError(`IOMMU group ${group} (${path.join(host.dev, 'vfio', String(group))}) is open in ${users.join(', ')}: stop it before giving ${bdf} back to the host`);
  }
  for (const t of targets) {
    const cur = driverOf(host, t);
    const rec = records.get(t);
    if (cur !== 'vfio-pci') {
      plan.notes.push(`${t} is not bound to vfio-pci (${cur ? `driver ${cur}` : 'no driver'}); nothing to do`);
      continue;
    }
    const to = rec?.driver || undefined;
    plan.changes.push({ bdf: t, from: 'vfio-pci', ...(to ? { to } : {}) });
    plan.steps.push({ file: driverFile(host, 'vfio-pci', 'unbind'), value: t, why: `vfio-pci lets go of ${t}` });
    plan.steps.push({ file: host.path(devRel(t, 'driver_override')), value: '\n', why: `any driver may bind ${t} again` });
    if (to) plan.steps.push({ file: driverFile(host, to, 'bind'), value: t, why: `${t} goes back to ${to}, its driver before vfio-pci` });
    else if (rec) plan.notes.push(`${t} had no driver before vfio-pci; it stays unbound`);
    else {
      plan.notes.push(`qnet has no record of ${t}'s driver before vfio-pci; the kernel picks one`);
      plan.steps.push({ file: host.path('bus/pci/drivers_probe'), value: t, why: `the kernel binds ${t} to the driver that matches it` });
    }
  }
  return plan;
}

/** `echo VALUE > FILE` lines, as a user would type them. */
export function formatSteps(plan: VfioPlan): string[] {
  const out: string[] = [];
  if (plan.modprobe) out.push(`modprobe ${plan.modprobe}`);
  for (const s of plan.steps) out.push(`${s.value === '\n' ? 'echo' : `echo ${s.value}`} > ${s.file}    # ${s.why}`);
  return out;
}

async function waitUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/**
 * Carry out a plan: load the module, remember original drivers (bind), write the steps in order,
 * and check that each device ended up where it should. If a step fails, the devices of the plan
 * are put back as they were (best effort) and the error names the step.
 */
export async function executePlan(host: Host, plan: VfioPlan, records: DriverRecords, by: string): Promise<void> {
  if (plan.modprobe) {
    await host.modprobe(plan.modprobe);
    if (!(await waitUntil(() => vfioLoaded(host), 5000))) throw new Error(`modprobe ${plan.modprobe} ran, but ${host.path('bus/pci/drivers/vfio-pci')} did not appear`);
  }
  if (plan.action === 'bind') {
    for (const c of plan.changes) if (!records.get(c.bdf)) records.put({ bdf: c.bdf, driver: c.from ?? '', at: Date.now(), by });
  }
  let done = 0;
  try {
    for (const s of plan.steps) {
      host.write(s.file, s.value);
      done++;
    }
    for (const c of plan.changes) {
      const now = driverOf(host, c.bdf);
      // no `to` on an unbind: whatever the kernel picks (or none) is what was asked for
      if (c.to !== undefined && now !== c.to) throw new Error(`${c.bdf} is bound to ${now ?? 'no driver'} after the writes, not ${c.to}`);
    }
  } catch (e) {
    const step = plan.steps[done];
    const undo = plan.action === 'bind' ? rollbackBind(host, plan) : [];
    throw new Error(`${plan.action} failed${step ? ` at '${formatSteps({ ...plan, modprobe: undefined, steps: [step] })[0]}'` : ''}: ${(e as Error).message}${undo.length ? `; put back: ${undo.join(', ')}` : ''}`);
  }
  if (plan.action === 'bind') {
    for (const c of plan.changes) {
      const g = iommuGroupOf(host, c.bdf);
      // devtmpfs creates the group's node right after the bind; QEMU needs it, so wait for it
      if (g !== undefined) await waitUntil(() => fs.existsSync(path.join(host.dev, 'vfio', String(g))), 5000);
    }
  } else {
    for (const c of plan.changes) records.remove(c.bdf);
  }
}

function rollbackBind(host: Host, plan: VfioPlan): string[] {
  const out: string[] = [];
  for (const c of plan.changes) {
    try {
      if (driverOf(host, c.bdf) === 'vfio-pci') host.write(driverFile(host, 'vfio-pci', 'unbind'), c.bdf);
      host.write(host.path(devRel(c.bdf, 'driver_override')), '\n');
      if (c.from && driverOf(host, c.bdf) === undefined) host.write(driverFile(host, c.from, 'bind'), c.bdf);
      out.push(`${c.bdf} -> ${driverOf(host, c.bdf) ?? 'no driver'}`);
    } catch (e) {
      out.push(`${c.bdf}: ${(e as Error).message}`);
    }
  }
  return out;
}

export interface Assignability {
  /** QEMU can open it now: bound to vfio-pci, its group viable, /dev/vfio/N there */
  ready: boolean;
  /** `qnet host vfio bind` would take it (false when ready: nothing to do) */
  bindable: boolean;
  /** why not (a refusal's text), or what to do */
  reason?: string;
}

/** Whether a device can be handed to a VM now, or after `qnet host vfio bind`, and why not. */
export async function assess(host: Host, bdf: string): Promise<Assignability> {
  if (driverOf(host, bdf) === 'vfio-pci') {
    const blockers = groupBlockers(host, bdf);
    const g = iommuGroupOf(host, bdf);
    if (blockers.length) return { ready: false, bindable: false, reason: `bound to vfio-pci, but IOMMU group ${g} also holds ${blockers.join(', ')} on a host driver` };
    if (g !== undefined && !fs.existsSync(path.join(host.dev, 'vfio', String(g)))) return { ready: false, bindable: false, reason: `bound to vfio-pci, but ${path.join(host.dev, 'vfio', String(g))} is missing` };
    return { ready: true, bindable: false };
  }
  try {
    await planBind(host, bdf);
    return { ready: false, bindable: true, reason: `qnet host vfio bind ${bdf}` };
  } catch (e) {
    if (e instanceof RefusedError) return { ready: false, bindable: false, reason: e.message };
    return { ready: false, bindable: false, reason: (e as Error).message };
  }
}
