// What the host says about a command line's `-device vfio-pci,host=BDF` devices: lint's host
// notes and the facts `convert --to libvirt` needs (is it an SR-IOV VF, with which MAC/VLAN).
//
// The analysis itself (analyze.ts) is about the command line and the same everywhere; these
// notes depend on the machine and are added by the CLI when it runs on one (or on --sysfs DIR).
// QEMU cannot open a device that is not bound to vfio-pci, whose IOMMU group still has a
// member on a host driver, or whose /dev/vfio/N the user cannot open, so those are warnings;
// a device that is ready gets a note saying so.
import fs from 'node:fs';
import path from 'node:path';
import type { Analysis, Diagnostic, Hostdev } from './analysis.ts';
import type { Host } from '../host/pci/sysfs.ts';
import { normalizeBdf } from '../host/pci/sysfs.ts';
import { describe, deviceExists, readDevice } from '../host/pci/devices.ts';
import { groupBlockers, iommuProblem } from '../host/pci/vfio.ts';
import { readVfStates } from '../host/pci/sriov.ts';

/** The host address a vfio-pci device names (host= or sysfsdev=), normalised. */
export function hostdevBdf(h: Hostdev): string | undefined {
  if (h.host) return normalizeBdf(h.host);
  if (h.sysfsdev) return normalizeBdf(path.basename(h.sysfsdev));
  return undefined;
}

function accessProblem(file: string): string | undefined {
  try {
    fs.accessSync(file, fs.constants.R_OK | fs.constants.W_OK);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `${file} does not exist`;
    let owner = '';
    try { const st = fs.statSync(file); owner = ` (owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`; } catch { /* gone */ }
    return `${file} is not readable and writable by uid ${process.getuid?.() ?? '?'}${owner}`;
  }
}

export function hostdevNotes(a: Analysis, host: Host): Diagnostic[] {
  const out: Diagnostic[] = [];
  const warn = (h: Hostdev, message: string, hint: string) => out.push({ severity: 'warning', code: 'vfio-host', option: h.source, message: `on this host: ${message}`, hint });
  for (const h of a.hostdevs) {
    const bdf = hostdevBdf(h);
    if (!bdf) continue; // analyze already said the address is malformed
    if (!deviceExists(host, bdf)) { warn(h, `there is no PCI device ${bdf}`, 'see qnet host devices (lspci -D) for the addresses'); continue; }
    const noIommu = iommuProblem(host);
    if (noIommu) { warn(h, noIommu, 'run qnet doctor'); continue; }
    const d = readDevice(host, bdf);
    const who = describe(host, bdf) + (d.physfn ? `, VF ${d.physfn.index} of ${d.physfn.pf}` : '');
    if (d.driver !== 'vfio-pci') {
      warn(h, `${who} is bound to ${d.driver ?? 'no driver'}, not vfio-pci, so QEMU cannot open it`, `qnet host vfio bind ${bdf}`);
      continue;
    }
    const blockers = groupBlockers(host, bdf);
    if (blockers.length) {
      warn(h, `IOMMU group ${d.iommuGroup} of ${bdf} is not viable: ${blockers.map((b) => describe(host, b)).join(', ')} ${blockers.length === 1 ? 'is' : 'are'} on a host driver`, `qnet host vfio bind ${bdf} --group`);
      continue;
    }
    const problems = [accessProblem(host.devPath(`vfio/${d.iommuGroup}`)), accessProblem(host.devPath('vfio/vfio'))].filter((p): p is string => p !== undefined);
    if (problems.length) {
      warn(h, `${problems.join('; ')}: QEMU running as this user cannot open the device`, `run QEMU as root, or give its user the group's device (chown USER ${host.devPath(`vfio/${d.iommuGroup}`)}, or a udev rule), and raise its locked-memory limit (ulimit -l) to the guest's RAM`);
      continue;
    }
    out.push({ severity: 'note', code: 'vfio-host', option: h.source, message: `on this host: ${who} is bound to vfio-pci, IOMMU group ${d.iommuGroup} is viable and ${host.devPath(`vfio/${d.iommuGroup}`)} is accessible: ready` });
  }
  return out;
}

/** What convert --to libvirt writes for a host device that is a VF: <interface type='hostdev'>. */
export interface HostdevFacts { vf?: { pf: string; index: number; mac?: string; vlan?: number } }

/** Facts for each vfio-pci device (keyed by host= as written); VF MAC/VLAN read from the PF. */
export async function hostdevFacts(a: Analysis, host: Host): Promise<Map<string, HostdevFacts>> {
  const out = new Map<string, HostdevFacts>();
  for (const h of a.hostdevs) {
    const bdf = hostdevBdf(h);
    if (!h.host || !bdf || !deviceExists(host, bdf)) continue;
    const d = readDevice(host, bdf);
    if (!d.physfn) { out.set(h.host, {}); continue; }
    let mac: string | undefined;
    let vlan: number | undefined;
    try {
      const st = (await readVfStates(host, d.physfn.pf)).find((v) => v.index === d.physfn!.index);
      if (st?.mac && st.mac !== '00:00:00:00:00:00') mac = st.mac;
      if (st?.vlan) vlan = st.vlan;
    } catch { /* no PF interface or no ip: the VF without its settings */ }
    out.set(h.host, { vf: { pf: d.physfn.pf, index: d.physfn.index, ...(mac ? { mac } : {}), ...(vlan ? { vlan } : {}) } });
  }
  return out;
}
