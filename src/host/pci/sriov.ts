// SR-IOV: how many VFs a PF has, and each VF's MAC, VLAN, QoS, spoof checking and trust.
//
// The VF count is sysfs: PF/sriov_numvfs (bounded by PF/sriov_totalvfs). The kernel refuses to
// go from one non-zero count to another (EBUSY), so a change goes through 0; going to 0
// destroys every VF, so it is refused while a VF is bound to vfio-pci (a VM may be using it)
// and the refusal names it. The kernel creates the VFs' devices before the write returns.
//
// A VF's MAC and VLAN are not sysfs attributes: the PF's driver sets them on the VF's behalf
// (the VF's own driver, or the guest's, is not trusted with them), through netlink on the PF's
// interface: `ip link set dev PF vf N mac M vlan V qos Q spoofchk on|off trust on|off`, the
// same request iproute2 sends. They are read back from `ip -json link show dev PF` (vfinfo_list).
import { describe, devRel, driverOf, netdevsOf, readDevice, resolveDevice, vfsOf } from './devices.ts';
import { RefusedError, type Step } from './vfio.ts';
import type { Host } from './sysfs.ts';

export interface NumVfsPlan {
  pf: string;
  from: number;
  to: number;
  steps: Step[];
}

export function planNumVfs(host: Host, pfName: string, n: number): NumVfsPlan {
  const pf = resolveDevice(host, pfName);
  const d = readDevice(host, pf);
  const total = host.readInt(devRel(pf, 'sriov_totalvfs'));
  if (total === undefined || total === 0) {
    throw new RefusedError(`${describe(host, pf)} is not SR-IOV capable (no sriov_totalvfs${d.physfn ? `; it is VF ${d.physfn.index} of ${d.physfn.pf}` : ''})`);
  }
  if (!Number.isInteger(n) || n < 0 || n > total) throw new RefusedError(`${pf} supports 0 to ${total} VFs, not ${n}`);
  const from = host.readInt(devRel(pf, 'sriov_numvfs')) ?? 0;
  const plan: NumVfsPlan = { pf, from, to: n, steps: [] };
  if (from === n) return plan;
  if (from !== 0) {
    const busy = vfsOf(host, pf).filter((v) => driverOf(host, v.bdf) === 'vfio-pci');
    if (busy.length) {
      throw new RefusedError(`changing the VF count destroys ${pf}'s VFs, and ${busy.map((v) => `VF ${v.index} (${v.bdf})`).join(', ')} ${busy.length === 1 ? 'is' : 'are'} bound to vfio-pci (a VM may be using ${busy.length === 1 ? 'it' : 'them'}); give ${busy.length === 1 ? 'it' : 'them'} back first: qnet host vfio unbind BDF`);
    }
    plan.steps.push({ file: host.path(devRel(pf, 'sriov_numvfs')), value: '0', why: `remove ${pf}'s ${from} VFs (the kernel changes a non-zero count only through 0)` });
  }
  if (n > 0) {
    if (!driverOf(host, pf)) throw new RefusedError(`${pf} has no driver bound; its driver creates the VFs (bind it first, e.g. echo ${pf} > ${host.path('bus/pci/drivers_probe')})`);
    plan.steps.push({ file: host.path(devRel(pf, 'sriov_numvfs')), value: String(n), why: `create ${n} VFs on ${pf}` });
  }
  return plan;
}

export function executeNumVfs(host: Host, plan: NumVfsPlan): void {
  for (const s of plan.steps) host.write(s.file, s.value);
  const now = host.readInt(devRel(plan.pf, 'sriov_numvfs')) ?? 0;
  if (now !== plan.to) throw new Error(`${plan.pf} has ${now} VFs after the writes, not ${plan.to}`);
}

export interface VfSettings {
  mac?: string;
  /** 0 = no VLAN tag */
  vlan?: number;
  qos?: number;
  spoofchk?: boolean;
  trust?: boolean;
}

export interface VfState extends VfSettings {
  index: number;
  bdf?: string;
  driver?: string;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The PF's interface name (the netlink requests go to it). */
export function pfInterface(host: Host, pf: string): string {
  const nds = netdevsOf(host, pf);
  if (nds.length === 0) throw new RefusedError(`${describe(host, pf)} has no network interface, and VF settings go through it (is its driver loaded?)`);
  return nds[0].name;
}

/** `ip link set dev PF vf N ...` arguments; validates every value first. */
export function vfSetArgs(ifname: string, index: number, s: VfSettings): string[] {
  const args = ['link', 'set', 'dev', ifname, 'vf', String(index)];
  if (s.mac !== undefined) {
    const mac = s.mac.toLowerCase();
    if (!MAC_RE.test(mac)) throw new RefusedError(`'${s.mac}' is not a MAC address (aa:bb:cc:dd:ee:ff)`);
    if (parseInt(mac.slice(0, 2), 16) & 1) throw new RefusedError(`${mac} is a multicast MAC; a VF needs a unicast one`);
    args.push('mac', mac);
  }
  if (s.qos !== undefined && s.vlan === undefined) throw new RefusedError('--qos sets the priority of the VF\'s VLAN tag: give --vlan too');
  if (s.vlan !== undefined) {
    if (!Number.isInteger(s.vlan) || s.vlan < 0 || s.vlan > 4095) throw new RefusedError(`VLAN ${s.vlan} is out of range 0-4095 (0: untagged)`);
    args.push('vlan', String(s.vlan));
    if (s.qos !== undefined) {
      if (!Number.isInteger(s.qos) || s.qos < 0 || s.qos > 7) throw new RefusedError(`QoS ${s.qos} is out of range 0-7 (the 802.1p priority)`);
      args.push('qos', String(s.qos));
    }
  }
  if (s.spoofchk !== undefined) args.push('spoofchk', s.spoofchk ? 'on' : 'off');
  if (s.trust !== undefined) args.push('trust', s.trust ? 'on' : 'off');
  if (args.length === 6) throw new RefusedError('nothing to set: give --mac, --vlan, --qos, --spoofchk or --trust');
  return args;
}

interface IpVfInfo { vf?: number; address?: string; mac?: string; vlan_list?: { vlan?: number; qos?: number }[]; vlan?: number; qos?: number; spoofchk?: boolean; trust?: boolean }

/** Each VF's settings as the PF's driver reports them. */
export async function readVfStates(host: Host, pf: string): Promise<VfState[]> {
  const ifname = pfInterface(host, pf);
  const rows = await host.ipJson<{ vfinfo_list?: IpVfInfo[] }>(['link', 'show', 'dev', ifname]);
  const vfs = vfsOf(host, pf);
  return (rows[0]?.vfinfo_list ?? []).map((v, i) => {
    const index = v.vf ?? i;
    const vl = v.vlan_list?.[0] ?? { vlan: v.vlan, qos: v.qos };
    const bdf = vfs.find((x) => x.index === index)?.bdf;
    const driver = bdf ? driverOf(host, bdf) : undefined;
    return {
      index,
      ...(bdf ? { bdf } : {}),
      ...(driver ? { driver } : {}),
      mac: (v.address ?? v.mac ?? '').toLowerCase(),
      vlan: vl.vlan ?? 0,
      ...(vl.qos ? { qos: vl.qos } : {}),
      ...(v.spoofchk !== undefined ? { spoofchk: v.spoofchk } : {}),
      ...(v.trust !== undefined ? { trust: v.trust } : {}),
    };
  });
}

/**
 * Set VF `index` of `pfName` (a PCI address or interface name) through its PF, and read it
 * back. Refuses an index the PF does not have.
 */
export async function setVf(host: Host, pfName: string, index: number, s: VfSettings, o: { dryRun?: boolean } = {}): Promise<{ pf: string; ifname: string; args: string[]; state?: VfState }> {
  const pf = resolveDevice(host, pfName);
  const n = host.readInt(devRel(pf, 'sriov_numvfs'));
  if (n === undefined) throw new RefusedError(`${describe(host, pf)} is not an SR-IOV PF (no sriov_numvfs)`);
  if (!Number.isInteger(index) || index < 0 || index >= n) throw new RefusedError(`${pf} has ${n} VFs (${n ? `0-${n - 1}` : 'none; create some with qnet host sriov'}), so there is no VF ${index}`);
  const ifname = pfInterface(host, pf);
  const args = vfSetArgs(ifname, index, s);
  if (o.dryRun) return { pf, ifname, args };
  await host.ip(args);
  const state = (await readVfStates(host, pf)).find((v) => v.index === index);
  return { pf, ifname, args, ...(state ? { state } : {}) };
}
