// A fixture sysfs tree laid out as Linux lays it out, and a fake kernel that reacts to writes
// the way the PCI core, the drivers and SR-IOV do, so qnet's host code can be tested without a
// machine to break.
//
// The tree (under ROOT/sys):
//   devices/pci0000:00/0000:00:01.0/0000:01:00.0/       a device behind a root port
//     vendor device class subsystem_vendor subsystem_device numa_node driver_override
//     subsystem -> ../../../../bus/pci           iommu_group -> ../../../../kernel/iommu_groups/N
//     driver -> ../../../../bus/pci/drivers/igb  (while bound)
//     net/eth0/{address,operstate,ifindex}       (while a NIC driver is bound)
//     sriov_totalvfs sriov_numvfs sriov_offset sriov_stride sriov_vf_device virtfnK -> ../VF
//   bus/pci/devices/BDF -> ../../../devices/pci0000:00/.../BDF
//   bus/pci/drivers/NAME/{bind,unbind,new_id,remove_id,BDF -> device,module -> module/NAME}
//   bus/pci/drivers_probe  drivers_autoprobe
//   kernel/iommu_groups/N/devices/BDF -> ../../../../devices/...   kernel/iommu_groups/N/type
//   class/net/IF -> ../../devices/.../net/IF      class/iommu/dmar0 -> ../../devices/virtual/iommu/dmar0
//   module/NAME/                                  (loaded modules)
// plus ROOT/proc (cmdline, interrupts, PID/fd) and ROOT/dev (vfio/N nodes as plain files).
//
// Every write qnet makes arrives in write(): it is logged (file relative to sys/, value), the
// plain file is updated, and the kernel's reaction is applied to the tree (symlinks made and
// removed, VF devices created). Errors are thrown with the errno codes the kernel returns.
// `ip` is faked in ip(): addresses, default routes and the PF's VF settings live in memory.
import fs from 'node:fs';
import path from 'node:path';
import { makeTempDir } from '../helpers/cleanup.ts';
import { Host } from '../../src/host/pci/sysfs.ts';

export interface FixtureDevice {
  bdf: string;
  /** the bridge it sits behind (its BDF); none: on the root bus */
  parent?: string;
  vendor: string;
  device: string;
  /** six hex digits */
  class: string;
  subsystemVendor?: string;
  subsystemDevice?: string;
  /** bound at start */
  driver?: string;
  /** what drivers_probe binds without an override (the driver whose ID table matches) */
  defaultDriver?: string;
  /** IOMMU group; none: no IOMMU for it */
  group?: number;
  /** its interface while a NIC driver is bound */
  netdev?: string;
  mac?: string;
  operstate?: string;
  numa?: number;
  sriov?: { total: number; vfDevice: string; offset: number; stride: number; vfDriver: string };
}

export interface VfConfig { mac: string; vlan: number; qos: number; spoofchk: boolean; trust: boolean }

const NIC_DRIVERS = new Set(['igb', 'igbvf', 'e1000e', 'ixgbe', 'ixgbevf', 'virtio-pci']);

function errno(code: string, msg: string): Error {
  return Object.assign(new Error(`${code}: ${msg}`), { code });
}

/**
 * The target of a sysfs symlink in directory `from` pointing at `target` (both relative to the
 * sysfs root), as the kernel writes it (kernfs_get_target_path): up from `from` until reaching
 * an ancestor of the target's parent, then down. It differs from path.relative() when the target
 * is an ancestor of the link: `net/eth0/device` reads `../../../0000:01:00.0`, not `../..`.
 */
export function kernfsRelative(from: string, target: string): string {
  const within = (dir: string, p: string) => dir === '.' || p === dir || p.startsWith(dir + '/');
  let base = path.normalize(from);
  let up = '';
  while (base !== '.' && !within(base, path.dirname(target))) {
    base = path.dirname(base);
    up += '../';
  }
  return up + (base === '.' ? target : path.relative(base, target));
}

function bdfParts(bdf: string): { domain: string; bus: number; slot: number; fn: number } {
  const [domain, bus, sf] = bdf.split(':');
  const [slot, fn] = sf.split('.');
  return { domain, bus: parseInt(bus, 16), slot: parseInt(slot, 16), fn: Number(fn) };
}

function bdfOf(domain: string, bus: number, devfn: number): string {
  return `${domain}:${bus.toString(16).padStart(2, '0')}:${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;
}

export class FakeKernel {
  readonly root: string;
  readonly sys: string;
  readonly proc: string;
  readonly dev: string;
  /** every sysfs write, in order: file relative to sys/ (through symlinks as written) and value */
  readonly writes: { file: string; value: string }[] = [];
  readonly ipCalls: string[][] = [];
  readonly modprobes: string[] = [];
  readonly devices = new Map<string, FixtureDevice>();
  readonly addresses = new Map<string, { family: string; local: string; prefixlen: number; scope: string }[]>();
  routes: { family: 4 | 6; dev: string; gateway?: string }[] = [];
  readonly vfConfig = new Map<string, VfConfig[]>();
  private readonly remove: () => void;
  private nextIfindex = 2;
  private vfNetdevs = 0;

  constructor(o: { iommu?: boolean; vfio?: boolean; cmdline?: string; interrupts?: string } = {}) {
    const t = makeTempDir('fake-sysfs-');
    this.remove = t.remove;
    this.root = t.path;
    this.sys = path.join(this.root, 'sys');
    this.proc = path.join(this.root, 'proc');
    this.dev = path.join(this.root, 'dev');
    for (const d of ['devices/pci0000:00', 'devices/virtual/net', 'bus/pci/devices', 'bus/pci/drivers', 'kernel/iommu_groups', 'class/net', 'class/iommu', 'module']) {
      fs.mkdirSync(path.join(this.sys, d), { recursive: true });
    }
    for (const f of ['drivers_probe', 'drivers_autoprobe', 'rescan']) this.file(`bus/pci/${f}`, f === 'drivers_autoprobe' ? '1\n' : '');
    fs.mkdirSync(this.proc, { recursive: true });
    fs.mkdirSync(path.join(this.dev, 'vfio'), { recursive: true });
    fs.writeFileSync(path.join(this.proc, 'cmdline'), (o.cmdline ?? 'BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro intel_iommu=on iommu=pt') + '\n');
    fs.writeFileSync(path.join(this.proc, 'interrupts'), o.interrupts ?? '           CPU0\n 24:          0  IR-PCI-MSI 65536-edge      eth0\n');
    if (o.iommu !== false) {
      fs.mkdirSync(path.join(this.sys, 'devices/virtual/iommu/dmar0/intel-iommu'), { recursive: true });
      this.link('class/iommu/dmar0', 'devices/virtual/iommu/dmar0');
    }
    for (const d of ['pcieport', 'igb', 'igbvf', 'e1000e', 'virtio-pci', 'pci-stub']) this.addDriver(d);
    if (o.vfio) this.loadVfio();
  }

  cleanup(): void { this.remove(); }

  host(): Host {
    return new Host({
      sysfs: this.sys, procfs: this.proc, devfs: this.dev,
      write: (f, v) => this.write(f, v),
      ip: (a) => this.ip(a),
      modprobe: async (m) => this.modprobe(m),
    });
  }

  // ---- building the tree ----------------------------------------------------------------------

  private abs(rel: string): string { return path.join(this.sys, rel); }
  private file(rel: string, content: string, mode = 0o644): void {
    fs.mkdirSync(path.dirname(this.abs(rel)), { recursive: true });
    fs.writeFileSync(this.abs(rel), content, { mode });
  }
  /** a relative symlink at `rel` pointing at `target` (both relative to sys/), as sysfs makes them */
  private link(rel: string, target: string): void {
    const p = this.abs(rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.rmSync(p, { force: true });
    fs.symlinkSync(kernfsRelative(path.dirname(rel), target), p);
  }
  private unlink(rel: string): void { fs.rmSync(this.abs(rel), { force: true, recursive: false }); }

  devicePath(bdf: string): string {
    const d = this.devices.get(bdf);
    if (!d) throw new Error(`fixture: no device ${bdf}`);
    return d.parent ? path.join(this.devicePath(d.parent), bdf) : path.join('devices/pci0000:00', bdf);
  }

  addDriver(name: string): void {
    const rel = `bus/pci/drivers/${name}`;
    for (const f of ['bind', 'unbind', 'new_id', 'remove_id']) this.file(`${rel}/${f}`, '', 0o200);
    this.file(`${rel}/uevent`, '', 0o200);
    fs.mkdirSync(this.abs(`module/${name.replace(/-/g, '_')}/drivers`), { recursive: true });
    this.link(`${rel}/module`, `module/${name.replace(/-/g, '_')}`);
  }

  loadVfio(): void {
    if (fs.existsSync(this.abs('bus/pci/drivers/vfio-pci'))) return;
    this.addDriver('vfio-pci');
    for (const m of ['vfio', 'vfio_iommu_type1', 'vfio_pci_core']) fs.mkdirSync(this.abs(`module/${m}/parameters`), { recursive: true });
    this.file('module/vfio_iommu_type1/parameters/allow_unsafe_interrupts', 'N\n');
    fs.writeFileSync(path.join(this.dev, 'vfio', 'vfio'), '');
  }

  private modprobe(m: string): void {
    this.modprobes.push(m);
    if (m === 'vfio-pci' || m === 'vfio_pci') this.loadVfio();
    else throw new Error(`modprobe: FATAL: Module ${m} not found`);
  }

  addDevice(d: FixtureDevice): void {
    this.devices.set(d.bdf, { ...d });
    const dp = this.devicePath(d.bdf);
    const attrs: Record<string, string> = {
      vendor: `0x${d.vendor}`, device: `0x${d.device}`, class: `0x${d.class}`,
      subsystem_vendor: `0x${d.subsystemVendor ?? d.vendor}`, subsystem_device: `0x${d.subsystemDevice ?? '0000'}`,
      numa_node: String(d.numa ?? -1), driver_override: '(null)', enable: '1', irq: '16', local_cpulist: '0-1',
    };
    for (const [k, v] of Object.entries(attrs)) this.file(`${dp}/${k}`, `${v}\n`);
    this.file(`${dp}/uevent`, `PCI_SLOT_NAME=${d.bdf}\n`);
    this.link(`${dp}/subsystem`, 'bus/pci');
    this.link(`bus/pci/devices/${d.bdf}`, dp);
    if (d.group !== undefined) this.joinGroup(d.bdf, d.group);
    if (d.sriov) {
      for (const [k, v] of Object.entries({ sriov_totalvfs: d.sriov.total, sriov_numvfs: 0, sriov_offset: d.sriov.offset, sriov_stride: d.sriov.stride, sriov_vf_device: d.sriov.vfDevice, sriov_drivers_autoprobe: 1 })) {
        this.file(`${dp}/${k}`, `${v}\n`);
      }
      this.vfConfig.set(d.bdf, []);
    }
    if (d.driver) this.bindDriver(d.bdf, d.driver);
  }

  private joinGroup(bdf: string, g: number): void {
    const grp = `kernel/iommu_groups/${g}`;
    if (!fs.existsSync(this.abs(grp))) this.file(`${grp}/type`, 'DMA\n');
    this.link(`${grp}/devices/${bdf}`, this.devicePath(bdf));
    this.link(`${this.devicePath(bdf)}/iommu_group`, grp);
  }

  private leaveGroup(bdf: string): void {
    const g = this.devices.get(bdf)?.group;
    if (g === undefined) return;
    const grp = `kernel/iommu_groups/${g}`;
    this.unlink(`${grp}/devices/${bdf}`);
    if (fs.readdirSync(this.abs(`${grp}/devices`)).length === 0) fs.rmSync(this.abs(grp), { recursive: true, force: true });
  }

  /** a bridge device (not PCI) with `ports` enslaved, like `ip link add br0 type bridge` */
  addBridge(name: string, ports: string[]): void {
    const rel = `devices/virtual/net/${name}`;
    this.file(`${rel}/address`, '02:00:00:00:00:ff\n');
    this.file(`${rel}/operstate`, 'up\n');
    fs.mkdirSync(this.abs(`${rel}/bridge`), { recursive: true });
    this.link(`class/net/${name}`, rel);
    for (const p of ports) {
      const target = fs.realpathSync(this.abs(`class/net/${p}`));
      this.link(`${path.relative(this.sys, target)}/master`, rel);
    }
  }

  /** a process holding /dev/vfio/GROUP open (for the unbind refusal) */
  addVfioUser(pid: number, comm: string, group: number): void {
    fs.mkdirSync(path.join(this.proc, String(pid), 'fd'), { recursive: true });
    fs.writeFileSync(path.join(this.proc, String(pid), 'comm'), `${comm}\n`);
    fs.symlinkSync(`/dev/vfio/${group}`, path.join(this.proc, String(pid), 'fd', '17'));
  }

  // ---- reading the tree back (for assertions) ------------------------------------------------------

  driverOf(bdf: string): string | undefined {
    try { return path.basename(fs.readlinkSync(this.abs(`bus/pci/devices/${bdf}/driver`))); } catch { return undefined; }
  }
  readAttr(bdf: string, attr: string): string { return fs.readFileSync(this.abs(`bus/pci/devices/${bdf}/${attr}`), 'utf8').trim(); }
  vfs(pf: string): string[] {
    return fs.readdirSync(this.abs(`bus/pci/devices/${pf}`)).filter((e) => /^virtfn\d+$/.test(e))
      .sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)))
      .map((e) => path.basename(fs.readlinkSync(this.abs(`bus/pci/devices/${pf}/${e}`))));
  }
  /** a snapshot of everything that changes when drivers move (for "changed nothing" checks) */
  snapshot(): string {
    const out: string[] = [];
    const walk = (rel: string): void => {
      for (const e of fs.readdirSync(this.abs(rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
        const r = path.join(rel, e.name);
        if (e.isSymbolicLink()) out.push(`${r} -> ${fs.readlinkSync(this.abs(r))}`);
        else if (e.isDirectory()) walk(r);
        else out.push(`${r} = ${fs.readFileSync(this.abs(r), 'utf8').trim()}`);
      }
    };
    walk('.');
    for (const e of fs.readdirSync(path.join(this.dev, 'vfio')).sort()) out.push(`dev/vfio/${e}`);
    return out.join('\n');
  }

  // ---- the kernel's reactions ------------------------------------------------------------------------

  private bindDriver(bdf: string, driver: string): void {
    const d = this.devices.get(bdf)!;
    const dp = this.devicePath(bdf);
    this.link(`${dp}/driver`, `bus/pci/drivers/${driver}`);
    this.link(`bus/pci/drivers/${driver}/${bdf}`, dp);
    if (NIC_DRIVERS.has(driver) && d.netdev) {
      const nd = `${dp}/net/${d.netdev}`;
      this.file(`${nd}/address`, `${d.mac ?? '00:00:00:00:00:00'}\n`);
      this.file(`${nd}/operstate`, `${d.operstate ?? 'down'}\n`);
      this.file(`${nd}/ifindex`, `${this.nextIfindex++}\n`);
      this.link(`${nd}/device`, dp);
      this.link(`${nd}/subsystem`, 'class/net');
      this.link(`class/net/${d.netdev}`, nd);
    }
    if (driver === 'vfio-pci' && d.group !== undefined) fs.writeFileSync(path.join(this.dev, 'vfio', String(d.group)), '');
  }

  private unbindDriver(bdf: string): void {
    const d = this.devices.get(bdf)!;
    const driver = this.driverOf(bdf);
    if (!driver) return;
    const dp = this.devicePath(bdf);
    if (d.sriov && this.vfs(bdf).length) this.setNumVfs(bdf, 0); // the PF driver's remove disables SR-IOV
    if (d.netdev && fs.existsSync(this.abs(`${dp}/net/${d.netdev}`))) {
      this.unlink(`class/net/${d.netdev}`);
      fs.rmSync(this.abs(`${dp}/net`), { recursive: true, force: true });
    }
    this.unlink(`bus/pci/drivers/${driver}/${bdf}`);
    this.unlink(`${dp}/driver`);
    if (driver === 'vfio-pci' && d.group !== undefined) {
      const still = [...this.devices.values()].some((x) => x.bdf !== bdf && x.group === d.group && this.driverOf(x.bdf) === 'vfio-pci');
      if (!still) fs.rmSync(path.join(this.dev, 'vfio', String(d.group)), { force: true });
    }
  }

  private override(bdf: string): string | undefined {
    const v = this.readAttr(bdf, 'driver_override');
    return v === '(null)' ? undefined : v;
  }

  private matches(bdf: string, driver: string): boolean {
    const ov = this.override(bdf);
    if (ov !== undefined) return ov === driver;
    return this.devices.get(bdf)!.defaultDriver === driver || (this.devices.get(bdf)!.defaultDriver === undefined && this.devices.get(bdf)!.driver === driver);
  }

  private probe(bdf: string): void {
    if (this.driverOf(bdf)) return;
    const d = this.devices.get(bdf)!;
    const want = this.override(bdf) ?? d.defaultDriver ?? d.driver;
    if (want && fs.existsSync(this.abs(`bus/pci/drivers/${want}`))) this.bindDriver(bdf, want);
  }

  private setNumVfs(pf: string, n: number): void {
    const d = this.devices.get(pf)!;
    const s = d.sriov!;
    const cur = this.vfs(pf);
    const dp = this.devicePath(pf);
    if (n === 0) {
      cur.forEach((vf, i) => {
        this.unbindDriver(vf);
        this.leaveGroup(vf);
        this.unlink(`bus/pci/devices/${vf}`);
        this.unlink(`${dp}/virtfn${i}`);
        fs.rmSync(this.abs(this.devicePath(vf)), { recursive: true, force: true });
        this.devices.delete(vf);
      });
      this.vfConfig.set(pf, []);
    } else {
      const { domain, bus, slot, fn } = bdfParts(pf);
      const rid = (bus << 8) | (slot << 3) | fn;
      const groups = () => fs.readdirSync(this.abs('kernel/iommu_groups')).map(Number);
      const cfg: VfConfig[] = [];
      for (let i = 0; i < n; i++) {
        const r = rid + s.offset + i * s.stride;
        const vf = bdfOf(domain, r >> 8, r & 0xff);
        const group = d.group === undefined ? undefined : Math.max(...groups(), 0) + 1;
        this.vfNetdevs++;
        this.addDevice({
          bdf: vf, ...(d.parent ? { parent: d.parent } : {}), vendor: d.vendor, device: s.vfDevice, class: d.class,
          defaultDriver: s.vfDriver, ...(group !== undefined ? { group } : {}), netdev: `${d.netdev ?? 'eth'}v${i}`,
          mac: `02:00:00:00:${this.vfNetdevs.toString(16).padStart(2, '0')}:01`, ...(d.numa !== undefined ? { numa: d.numa } : {}),
        });
        fs.rmSync(this.abs(`${this.devicePath(vf)}/sriov_totalvfs`), { force: true });
        this.link(`${this.devicePath(vf)}/physfn`, dp);
        this.link(`${dp}/virtfn${i}`, this.devicePath(vf));
        cfg.push({ mac: '00:00:00:00:00:00', vlan: 0, qos: 0, spoofchk: true, trust: false });
      }
      this.vfConfig.set(pf, cfg);
      // autoprobe: the VF driver binds each VF as it appears
      for (const vf of this.vfs(pf)) this.probe(vf);
    }
    fs.writeFileSync(this.abs(`${dp}/sriov_numvfs`), `${n}\n`);
  }

  /** the sysfs device a path inside it names (through symlinks), and the attribute */
  private target(file: string): { real: string; rel: string } {
    const real = path.join(fs.realpathSync(path.dirname(file)), path.basename(file));
    return { real, rel: path.relative(this.sys, real) };
  }

  write(file: string, value: string): void {
    const relWritten = path.relative(this.sys, file);
    if (relWritten.startsWith('..')) throw new Error(`fake kernel: write outside sysfs: ${file}`);
    if (!fs.existsSync(file)) throw errno('ENOENT', `${relWritten} does not exist`);
    this.writes.push({ file: relWritten, value });
    const { rel } = this.target(file);
    const v = value.trim();
    let m: RegExpExecArray | null;
    if ((m = /^bus\/pci\/drivers\/([^/]+)\/(bind|unbind)$/.exec(rel))) {
      const [, driver, op] = m;
      const d = this.devices.get(v);
      if (!d) throw errno('ENODEV', `no device ${v}`);
      if (op === 'unbind') {
        if (this.driverOf(v) !== driver) throw errno('ENODEV', `${v} is not bound to ${driver}`);
        this.unbindDriver(v);
      } else {
        if (this.driverOf(v)) throw errno('EBUSY', `${v} is bound to ${this.driverOf(v)}`);
        if (!this.matches(v, driver)) throw errno('ENODEV', `${driver} does not match ${v}`);
        this.bindDriver(v, driver);
      }
      return;
    }
    if (rel === 'bus/pci/drivers_probe') {
      if (!this.devices.has(v)) throw errno('ENODEV', `no device ${v}`);
      this.probe(v);
      return;
    }
    if ((m = /\/([^/]+)\/driver_override$/.exec('/' + rel))) {
      fs.writeFileSync(this.abs(rel), `${v === '' ? '(null)' : v}\n`);
      return;
    }
    if ((m = /\/([^/]+)\/sriov_numvfs$/.exec('/' + rel))) {
      const pf = m[1];
      const d = this.devices.get(pf)!;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw errno('EINVAL', `bad VF count ${v}`);
      if (n > d.sriov!.total) throw errno('ERANGE', `${n} > sriov_totalvfs ${d.sriov!.total}`);
      const cur = this.vfs(pf).length;
      if (n === cur) return;
      if (!this.driverOf(pf)) throw errno('ENOENT', 'no driver bound to configure SR-IOV');
      if (cur !== 0 && n !== 0) throw errno('EBUSY', `${cur} VFs already enabled. Disable before enabling ${n} VFs`);
      this.setNumVfs(pf, n);
      return;
    }
    fs.writeFileSync(this.abs(rel), value);
  }

  // ---- ip --------------------------------------------------------------------------------------------

  private pfByIf(ifname: string): string | undefined {
    for (const d of this.devices.values()) if (d.netdev === ifname && d.sriov && this.driverOf(d.bdf)) return d.bdf;
    return undefined;
  }
  private ifExists(ifname: string): boolean { return fs.existsSync(this.abs(`class/net/${ifname}`)); }

  async ip(args: string[]): Promise<string> {
    this.ipCalls.push([...args]);
    const a = [...args];
    const json = a[0] === '-json' ? (a.shift(), true) : false;
    const six = a[0] === '-6' ? (a.shift(), true) : false;
    const noDev = (n: string) => new Error(`ip ${args.join(' ')} failed: Device "${n}" does not exist.`);
    if (a[0] === 'addr' && a[1] === 'show' && a[2] === 'dev') {
      if (!this.ifExists(a[3])) throw noDev(a[3]);
      return JSON.stringify([{ ifname: a[3], addr_info: this.addresses.get(a[3]) ?? [] }]);
    }
    if (a[0] === 'route' && a[1] === 'show' && a[2] === 'default') {
      return JSON.stringify(this.routes.filter((r) => r.family === (six ? 6 : 4)).map((r) => ({ dst: 'default', ...(r.gateway ? { gateway: r.gateway } : {}), dev: r.dev })));
    }
    if (a[0] === 'link' && a[1] === 'show' && a[2] === 'dev' && json) {
      if (!this.ifExists(a[3])) throw noDev(a[3]);
      const pf = this.pfByIf(a[3]);
      const vfs = pf ? this.vfConfig.get(pf)! : [];
      return JSON.stringify([{
        ifname: a[3], address: fs.readFileSync(this.abs(`class/net/${a[3]}/address`), 'utf8').trim(),
        ...(pf ? { vfinfo_list: vfs.map((c, i) => ({ vf: i, link_type: 'ether', address: c.mac, vlan_list: [c.vlan ? { vlan: c.vlan, ...(c.qos ? { qos: c.qos } : {}) } : {}], spoofchk: c.spoofchk, trust: c.trust })) } : {}),
      }]);
    }
    if (a[0] === 'link' && a[1] === 'set' && a[2] === 'dev' && a[4] === 'vf') {
      const pf = this.pfByIf(a[3]);
      if (!pf) throw new Error(`ip ${args.join(' ')} failed: RTNETLINK answers: Operation not supported`);
      const idx = Number(a[5]);
      const c = this.vfConfig.get(pf)![idx];
      if (!c) throw new Error(`ip ${args.join(' ')} failed: RTNETLINK answers: Invalid argument`);
      for (let i = 6; i < a.length; i += 2) {
        const [k, val] = [a[i], a[i + 1]];
        if (k === 'mac') c.mac = val;
        else if (k === 'vlan') { c.vlan = Number(val); c.qos = 0; }
        else if (k === 'qos') c.qos = Number(val);
        else if (k === 'spoofchk') c.spoofchk = val === 'on';
        else if (k === 'trust') c.trust = val === 'on';
        else throw new Error(`ip: unknown vf option ${k}`);
      }
      return '';
    }
    throw new Error(`fake ip: unsupported: ip ${args.join(' ')}`);
  }

  /** ip's state as JSON, for test/host/fake-ip.mjs (the stand-in a `qnet` child process runs) */
  saveIpState(file: string): void {
    const ifs: Record<string, { address: string; addr_info: unknown[] }> = {};
    for (const n of fs.readdirSync(this.abs('class/net'))) {
      ifs[n] = { address: fs.readFileSync(this.abs(`class/net/${n}/address`), 'utf8').trim(), addr_info: this.addresses.get(n) ?? [] };
    }
    fs.writeFileSync(file, JSON.stringify({ ifs, routes: this.routes }));
  }
}

/**
 * The machine most tests use: an Intel 82576 (igb, SR-IOV with 7 VFs at offset 0x80 stride 2,
 * as QEMU's igb emulates it) behind a root port in its own group, the host's e1000e NIC in
 * another (carrying the default route), and a two-port NIC whose ports share one group.
 */
export function standardMachine(o: { iommu?: boolean; vfio?: boolean } = {}): FakeKernel {
  const k = new FakeKernel(o);
  const g = (n: number) => (o.iommu === false ? {} : { group: n });
  k.addDevice({ bdf: '0000:00:00.0', vendor: '8086', device: '29c0', class: '060000', ...g(0) });
  k.addDevice({ bdf: '0000:00:01.0', vendor: '1b36', device: '000c', class: '060400', driver: 'pcieport', ...g(1) });
  k.addDevice({ bdf: '0000:00:19.0', vendor: '8086', device: '10d3', class: '020000', driver: 'e1000e', netdev: 'eno1', mac: '52:54:00:00:00:01', operstate: 'up', ...g(2) });
  k.addDevice({
    bdf: '0000:01:00.0', parent: '0000:00:01.0', vendor: '8086', device: '10c9', class: '020000', subsystemVendor: '8086', subsystemDevice: '0000',
    driver: 'igb', netdev: 'enp1s0', mac: '52:54:00:12:34:56', operstate: 'down', numa: 0, ...g(3),
    sriov: { total: 7, vfDevice: '10ca', offset: 0x80, stride: 2, vfDriver: 'igbvf' },
  });
  k.addDevice({ bdf: '0000:02:00.0', vendor: '8086', device: '10d3', class: '020000', driver: 'e1000e', netdev: 'enp2s0f0', mac: '52:54:00:00:02:00', operstate: 'down', ...g(4) });
  k.addDevice({ bdf: '0000:02:00.1', vendor: '8086', device: '10d3', class: '020000', driver: 'e1000e', netdev: 'enp2s0f1', mac: '52:54:00:00:02:01', operstate: 'down', ...g(4) });
  k.addresses.set('eno1', [{ family: 'inet', local: '192.168.1.5', prefixlen: 24, scope: 'global' }, { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' }]);
  k.routes = [{ family: 4, dev: 'eno1', gateway: '192.168.1.1' }];
  return k;
}
