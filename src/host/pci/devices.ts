// PCI devices as sysfs shows them, reduced to what device assignment needs: identity and
// names, the bound driver, the IOMMU group and its members, network interfaces, NUMA node,
// and SR-IOV relations (a PF's VFs, a VF's PF and index).
//
// Where it reads (relative to the sysfs root):
//   bus/pci/devices/BDF                 -> ../../../devices/pci0000:00/.../BDF (a symlink)
//   BDF/{vendor,device,class,subsystem_vendor,subsystem_device,numa_node,driver_override}
//   BDF/driver                          -> .../bus/pci/drivers/NAME (only while bound)
//   BDF/iommu_group                     -> .../kernel/iommu_groups/N (only with an IOMMU)
//   kernel/iommu_groups/N/devices/BDF   every member of group N
//   BDF/net/IFNAME/{address,operstate}  its network interfaces (while a NIC driver is bound)
//   BDF/sriov_totalvfs, sriov_numvfs, virtfnK -> ../VF_BDF   on a PF
//   BDF/physfn -> ../PF_BDF                                   on a VF
// Nothing here writes; every function takes the Host so it runs on fixtures alike.
import path from 'node:path';
import { normalizeBdf, type Host } from './sysfs.ts';
import { systemPciIds, type PciIds } from './pciids.ts';

export interface NetdevInfo {
  name: string;
  mac?: string;
  /** operstate: up, down, lowerlayerdown, unknown, ... */
  state?: string;
  /** the bridge or bond it is enslaved to */
  master?: string;
}

export interface GroupMember {
  bdf: string;
  driver?: string;
  classCode: string;
  /** a PCI bridge: its driver (pcieport) does not stand in the way of assignment */
  bridge: boolean;
}

export interface PciDevice {
  bdf: string;
  vendorId: string;
  deviceId: string;
  subsystemVendorId?: string;
  subsystemDeviceId?: string;
  /** six hex digits, e.g. 020000 */
  classCode: string;
  vendor?: string;
  device?: string;
  subsystem?: string;
  className?: string;
  driver?: string;
  /** driver_override when set */
  driverOverride?: string;
  iommuGroup?: number;
  /** every device of the group, this one included */
  groupMembers: GroupMember[];
  netdevs: NetdevInfo[];
  numaNode?: number;
  /** on a PF */
  sriov?: { totalVfs: number; numVfs: number; vfs: { index: number; bdf: string }[] };
  /** on a VF */
  physfn?: { pf: string; index: number };
}

/** A PCI network controller (class 02) or a VF of one. */
export function isNetworkClass(classCode: string): boolean { return classCode.startsWith('02'); }

const hex = (s: string | undefined): string | undefined => (s === undefined ? undefined : s.trim().replace(/^0x/i, '').toLowerCase());

export function devRel(bdf: string, rel = ''): string { return path.join('bus/pci/devices', bdf, rel); }

export function deviceExists(host: Host, bdf: string): boolean { return host.exists(devRel(bdf, 'vendor')); }

export function driverOf(host: Host, bdf: string): string | undefined { return host.linkName(devRel(bdf, 'driver')); }

export function iommuGroupOf(host: Host, bdf: string): number | undefined {
  const g = host.linkName(devRel(bdf, 'iommu_group'));
  return g === undefined ? undefined : Number(g);
}

export function groupDevices(host: Host, group: number): string[] {
  return host.list(`kernel/iommu_groups/${group}/devices`);
}

export function classOf(host: Host, bdf: string): string {
  return (hex(host.read(devRel(bdf, 'class'))) ?? '').padStart(6, '0');
}

function groupMember(host: Host, bdf: string): GroupMember {
  const classCode = classOf(host, bdf);
  const driver = driverOf(host, bdf);
  return { bdf, classCode, bridge: classCode.startsWith('0604'), ...(driver ? { driver } : {}) };
}

export function netdevsOf(host: Host, bdf: string): NetdevInfo[] {
  return host.list(devRel(bdf, 'net')).map((name) => {
    const rel = devRel(bdf, `net/${name}`);
    const mac = host.read(`${rel}/address`);
    const state = host.read(`${rel}/operstate`);
    const master = host.linkName(`${rel}/master`);
    return { name, ...(mac ? { mac } : {}), ...(state ? { state } : {}), ...(master ? { master } : {}) };
  });
}

/** The VFs of a PF, by index (virtfn0, virtfn1, ...). */
export function vfsOf(host: Host, pf: string): { index: number; bdf: string }[] {
  return host.list(devRel(pf))
    .map((e) => /^virtfn(\d+)$/.exec(e))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ index: Number(m[1]), bdf: host.linkName(devRel(pf, m[0]))! }))
    .filter((v) => v.bdf !== undefined)
    .sort((a, b) => a.index - b.index);
}

export function physfnOf(host: Host, vf: string): { pf: string; index: number } | undefined {
  const pf = host.linkName(devRel(vf, 'physfn'));
  if (!pf) return undefined;
  const v = vfsOf(host, pf).find((x) => x.bdf === vf);
  return { pf, index: v ? v.index : -1 };
}

export function readDevice(host: Host, bdf: string, ids: PciIds = systemPciIds()): PciDevice {
  if (!deviceExists(host, bdf)) throw new Error(`no PCI device ${bdf} in ${host.path('bus/pci/devices')}`);
  const vendorId = hex(host.read(devRel(bdf, 'vendor')))!.padStart(4, '0');
  const deviceId = (hex(host.read(devRel(bdf, 'device'))) ?? '').padStart(4, '0');
  const sv = hex(host.read(devRel(bdf, 'subsystem_vendor')));
  const sd = hex(host.read(devRel(bdf, 'subsystem_device')));
  const classCode = classOf(host, bdf);
  const driver = driverOf(host, bdf);
  const ov = host.read(devRel(bdf, 'driver_override'));
  const group = iommuGroupOf(host, bdf);
  const numa = host.readInt(devRel(bdf, 'numa_node'));
  const total = host.readInt(devRel(bdf, 'sriov_totalvfs'));
  const physfn = physfnOf(host, bdf);
  const vendor = ids.vendor(vendorId);
  const device = ids.device(vendorId, deviceId);
  const subsystem = sv && sd ? ids.subsystem(vendorId, deviceId, sv, sd) : undefined;
  const className = ids.className(classCode);
  return {
    bdf, vendorId, deviceId,
    ...(sv ? { subsystemVendorId: sv.padStart(4, '0') } : {}), ...(sd ? { subsystemDeviceId: sd.padStart(4, '0') } : {}),
    classCode,
    ...(vendor ? { vendor } : {}), ...(device ? { device } : {}), ...(subsystem ? { subsystem } : {}), ...(className ? { className } : {}),
    ...(driver ? { driver } : {}),
    ...(ov && ov !== '(null)' ? { driverOverride: ov } : {}),
    ...(group !== undefined ? { iommuGroup: group } : {}),
    groupMembers: group === undefined ? [] : groupDevices(host, group).map((m) => groupMember(host, m)),
    netdevs: netdevsOf(host, bdf),
    ...(numa !== undefined && numa >= 0 ? { numaNode: numa } : {}),
    ...(total !== undefined && total > 0 ? { sriov: { totalVfs: total, numVfs: host.readInt(devRel(bdf, 'sriov_numvfs')) ?? 0, vfs: vfsOf(host, bdf) } } : {}),
    ...(physfn ? { physfn } : {}),
  };
}

/** Every PCI device's address, sorted. */
export function allBdfs(host: Host): string[] {
  return host.list('bus/pci/devices').filter((b) => normalizeBdf(b) === b);
}

/** PCI devices: network controllers (and their VFs) unless `all`. */
export function listDevices(host: Host, o: { all?: boolean; ids?: PciIds } = {}): PciDevice[] {
  const ids = o.ids ?? systemPciIds();
  return allBdfs(host).filter((b) => o.all || isNetworkClass(classOf(host, b))).map((b) => readDevice(host, b, ids));
}

/** 'Intel Corporation 82576 Virtual Function', else the IDs. */
export function deviceTitle(d: PciDevice): string {
  if (d.vendor && d.device) return `${d.vendor} ${d.device}`;
  return `${d.vendor ?? `vendor ${d.vendorId}`} device ${d.deviceId}`;
}

/** A short name for messages: '0000:01:00.0 (eth0, Intel Corporation 82576 ..., driver igb)' */
export function describe(host: Host, bdf: string): string {
  if (!deviceExists(host, bdf)) return bdf;
  const d = readDevice(host, bdf);
  const bits = [...d.netdevs.map((n) => n.name), deviceTitle(d), d.driver ? `driver ${d.driver}` : 'no driver'];
  return `${bdf} (${bits.join(', ')})`;
}

/**
 * A PCI address, or a network interface name, to the device's address. Errors name what was
 * looked for and what exists.
 */
export function resolveDevice(host: Host, what: string): string {
  const bdf = normalizeBdf(what);
  if (bdf) {
    if (!deviceExists(host, bdf)) throw new Error(`no PCI device ${bdf} (see qnet host devices --all)`);
    return bdf;
  }
  const dev = host.link(`class/net/${what}/device`);
  if (dev) return path.basename(dev);
  if (host.exists(`class/net/${what}`)) throw new Error(`${what} is not a PCI network interface (it has no device/ in sysfs)`);
  const names = host.list('class/net').filter((n) => host.link(`class/net/${n}/device`));
  throw new Error(`'${what}' is neither a PCI address (like 0000:01:00.0) nor a PCI network interface${names.length ? ` (PCI interfaces: ${names.join(', ')})` : ''}`);
}
