// `qnet doctor`'s device-assignment checks: can this host give a VM a PCI NIC or an SR-IOV VF?
//
//   iommu            an IOMMU is on: /sys/class/iommu has units, /sys/kernel/iommu_groups has groups
//   iommu-cmdline    the kernel command line (/proc/cmdline): intel_iommu=on on Intel (AMD-Vi is
//                    on by default), not =off; iommu=pt is recommended (host DMA untranslated)
//   irq-remapping    interrupt remapping is active (/proc/interrupts shows IR-* chips): without
//                    it a device's MSIs could be forged, and vfio refuses the device unless
//                    vfio_iommu_type1.allow_unsafe_interrupts=1 (which is then flagged)
//   vfio             the vfio, vfio_iommu_type1 and vfio-pci modules and /dev/vfio/vfio
//   sriov            which NICs are SR-IOV capable, and how many VFs each has enabled
//   nic-groups       NICs sharing an IOMMU group with another device (assigning one means all)
//
// Each check gives one finding; `qnet doctor` prints them with the other checks' findings and
// exits non-zero on `fail`.
// Nothing here writes or loads anything.
import fs from 'node:fs';
import type { Finding, Status } from '../doctor.ts';
import type { Host } from './sysfs.ts';
import { deviceTitle, listDevices, type PciDevice } from './devices.ts';
import { dmaSafeDriver } from './vfio.ts';

// The findings are the doctor framework's (src/host/doctor.ts: check, status, summary, detail,
// fix); src/cli/doctor.ts runs these as one more check function, in the same report as the
// kernel-network checks.
export type CheckStatus = Status;
export type PciFinding = Finding;

function cpuVendor(host: Host): 'intel' | 'amd' | undefined {
  const c = host.procRead('cpuinfo') ?? '';
  if (/GenuineIntel/.test(c)) return 'intel';
  if (/AuthenticAMD/.test(c)) return 'amd';
  return undefined;
}

export function pciDoctorChecks(host: Host): PciFinding[] {
  const found: { id: string; title: string; status: CheckStatus; detail: string; fix?: string }[] = [];
  const units = host.list('class/iommu');
  const groups = host.list('kernel/iommu_groups');
  const cmdline = (host.procRead('cmdline') ?? '').trim();
  const params = new Map(cmdline.split(/\s+/).filter(Boolean).map((p) => { const i = p.indexOf('='); return i < 0 ? [p, ''] as const : [p.slice(0, i), p.slice(i + 1)] as const; }));
  const vendor = cpuVendor(host) ?? (units.some((u) => u.startsWith('dmar')) ? 'intel' : units.some((u) => u.startsWith('ivhd')) ? 'amd' : undefined);
  const intelParam = params.get('intel_iommu');
  const amdParam = params.get('amd_iommu');

  // ---- IOMMU on
  if (groups.length > 0) {
    found.push({ id: 'iommu', title: 'IOMMU (VT-d / AMD-Vi)', status: 'ok', detail: `on: ${units.length ? units.join(', ') : 'IOMMU'}, ${groups.length} IOMMU group${groups.length === 1 ? '' : 's'}` });
  } else {
    found.push({
      id: 'iommu', title: 'IOMMU (VT-d / AMD-Vi)', status: 'fail',
      detail: units.length ? `${units.join(', ')} present but no IOMMU groups (the IOMMU is not in use)` : 'off: no IOMMU units in /sys/class/iommu, no IOMMU groups',
      fix: `enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup${vendor !== 'amd' ? ' and add intel_iommu=on to the kernel command line' : ''}, then reboot`,
    });
  }

  // ---- kernel command line
  if (intelParam === 'off' || amdParam === 'off' || params.get('iommu') === 'off') {
    found.push({ id: 'iommu-cmdline', title: 'kernel parameters', status: 'fail', detail: `the IOMMU is switched off on the command line (${[...params].filter(([k, v]) => /iommu/.test(k) && v === 'off').map(([k, v]) => `${k}=${v}`).join(' ')})`, fix: 'remove it (and add intel_iommu=on on Intel), then reboot' });
  } else {
    const have = [...params].filter(([k]) => /iommu|vfio/.test(k)).map(([k, v]) => (v ? `${k}=${v}` : k));
    const missing: string[] = [];
    if (vendor === 'intel' && intelParam !== 'on' && groups.length === 0) missing.push('intel_iommu=on');
    if (params.get('iommu') !== 'pt') missing.push('iommu=pt');
    if (missing.includes('intel_iommu=on')) {
      found.push({ id: 'iommu-cmdline', title: 'kernel parameters', status: 'warn', detail: have.length ? have.join(' ') : 'no IOMMU parameters', fix: `add ${missing.join(' ')} to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot` });
    } else {
      found.push({ id: 'iommu-cmdline', title: 'kernel parameters', status: missing.length ? 'info' : 'ok', detail: `${have.length ? have.join(' ') : 'no IOMMU parameters'}${missing.length ? ` (iommu=pt would leave the host's own DMA untranslated, which is faster)` : ''}` });
    }
  }

  // ---- interrupt remapping
  const irqs = host.procRead('interrupts') ?? '';
  const ir = /\bIR-[A-Z]/.test(irqs);
  const unsafe = host.read('module/vfio_iommu_type1/parameters/allow_unsafe_interrupts');
  if (ir) {
    found.push({ id: 'irq-remapping', title: 'interrupt remapping', status: unsafe === 'Y' ? 'warn' : 'ok', detail: `on (IR-${[...new Set(irqs.match(/\bIR-[A-Z-]+/g) ?? [])].map((s) => s.slice(3)).join(', IR-')})${unsafe === 'Y' ? '; but vfio_iommu_type1.allow_unsafe_interrupts=Y is set, which is not needed' : ''}`, ...(unsafe === 'Y' ? { fix: 'drop allow_unsafe_interrupts (it lets a device forge interrupts)' } : {}) });
  } else if (groups.length === 0) {
    found.push({ id: 'irq-remapping', title: 'interrupt remapping', status: 'info', detail: 'not in use (no IOMMU)' });
  } else {
    found.push({
      id: 'irq-remapping', title: 'interrupt remapping', status: unsafe === 'Y' ? 'warn' : 'fail',
      detail: unsafe === 'Y' ? 'off, and vfio_iommu_type1.allow_unsafe_interrupts=Y lets vfio assign devices anyway (a guest could forge interrupts)' : 'off: vfio refuses to assign devices without it',
      fix: 'enable interrupt remapping in the firmware (x2APIC / "Interrupt Remapping"); as a last resort on a trusted host: options vfio_iommu_type1 allow_unsafe_interrupts=1',
    });
  }

  // ---- vfio
  const mods = ['vfio', 'vfio_iommu_type1', 'vfio_pci'].map((m) => [m, host.exists(`module/${m}`)] as const);
  const drv = host.exists('bus/pci/drivers/vfio-pci');
  const node = host.devPath('vfio/vfio');
  let nodeOk = false;
  // a character device on the machine; a fixture tree has plain files
  try { nodeOk = fs.statSync(node).isCharacterDevice() || !host.live; } catch { nodeOk = false; }
  const missingMods = mods.filter(([, ok]) => !ok).map(([m]) => m);
  if (drv && missingMods.length === 0 && nodeOk) found.push({ id: 'vfio', title: 'vfio modules', status: 'ok', detail: `vfio, vfio_iommu_type1, vfio-pci loaded; ${node}` });
  else {
    found.push({
      id: 'vfio', title: 'vfio modules', status: 'warn',
      detail: `${missingMods.length ? `not loaded: ${missingMods.join(', ')}` : 'loaded'}${drv ? '' : '; no vfio-pci driver'}${nodeOk ? '' : `; no ${node}`}`,
      fix: 'modprobe vfio-pci (qnet host vfio bind does it); to load it at boot: echo vfio-pci > /etc/modules-load.d/vfio.conf',
    });
  }

  // ---- SR-IOV NICs and IOMMU groups of NICs
  let nics: PciDevice[] = [];
  try { nics = listDevices(host); } catch { nics = []; }
  const pfs = nics.filter((d) => d.sriov);
  found.push(pfs.length
    ? { id: 'sriov', title: 'SR-IOV NICs', status: 'ok', detail: pfs.map((d) => `${d.netdevs[0]?.name ?? d.bdf} (${d.bdf}, ${deviceTitle(d)}, ${d.driver ?? 'no driver'}): ${d.sriov!.numVfs} of ${d.sriov!.totalVfs} VFs`).join('; ') }
    : { id: 'sriov', title: 'SR-IOV NICs', status: 'info', detail: nics.length ? `none of the ${nics.length} PCI NIC${nics.length === 1 ? '' : 's'} is SR-IOV capable (whole NICs can still be assigned)` : 'no PCI NICs' });
  const others = (d: PciDevice) => d.groupMembers.filter((m) => m.bdf !== d.bdf && !m.bridge);
  const shared = nics.filter((d) => !d.physfn && others(d).length > 0);
  if (shared.length) {
    found.push({
      id: 'nic-groups', title: 'IOMMU groups of NICs', status: 'info',
      detail: shared.map((d) => `${d.bdf} shares group ${d.iommuGroup} with ${others(d).map((m) => `${m.bdf} (${m.driver ?? 'no driver'}${dmaSafeDriver(m.driver) ? '' : ', a host driver'})`).join(', ')}`).join('; '),
      fix: 'assign such a NIC with qnet host vfio bind --group (all of the group goes to vfio-pci), or put it in a slot with ACS',
    });
  }
  return found.map((f) => ({ check: f.id, status: f.status, summary: `${f.title}: ${f.detail}`, ...(f.fix ? { fix: f.fix } : {}) }));
}
