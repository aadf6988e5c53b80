// `qnet host devices|vfio|sriov|vf`: the host side of device assignment, one command each for
// what is otherwise lspci + readlink + echo > sysfs + ip link set ... vf.
//
//   qnet host devices [--all] [--json]                     PCI NICs, groups, SR-IOV, assignability
//   qnet host vfio bind|unbind BDF [--group] [--dry-run]   hand a device to vfio-pci and back
//   qnet host sriov PF --vfs N [--dry-run]                  how many VFs a PF has
//   qnet host vf PF [INDEX --mac M --vlan V ...]           VF settings, through the PF
//
// Every command takes --sysfs DIR (default /sys), --procfs DIR and --devfs DIR, so it runs on
// a fixture tree as on the machine. These commands act on the host directly (they need root for
// anything but listing); the daemon is not involved.
import { parseArgs } from 'node:util';
import { Host } from '../host/pci/sysfs.ts';
import { deviceTitle, listDevices, resolveDevice, readDevice, type PciDevice } from '../host/pci/devices.ts';
import { DriverRecords, RefusedError, assess, executePlan, formatSteps, planBind, planUnbind, iommuProblem, vfioLoaded, type Assignability } from '../host/pci/vfio.ts';
import { executeNumVfs, planNumVfs, readVfStates, setVf, type VfSettings, type VfState } from '../host/pci/sriov.ts';
import { defaultStateDir } from '../common/paths.ts';
import { table, json } from './common.ts';

const USAGE = `usage: qnet host devices [--all] [--json]
       qnet host vfio bind|unbind BDF [--group] [--dry-run]
       qnet host sriov PF --vfs N [--dry-run]
       qnet host vf PF [INDEX [--mac MAC] [--vlan ID] [--qos PRIO] [--spoofchk on|off] [--trust on|off] [--dry-run]]

  devices      PCI network devices: address, names (pci.ids), driver, IOMMU group and its
               members, interface, MAC, link, NUMA node, SR-IOV, and whether it can be assigned
               (--all: every PCI device)
  vfio bind    give a device to vfio-pci (driver_override, unbind, probe) so QEMU can take it
               with -device vfio-pci,host=BDF; the driver it had is remembered. Refuses when
               another member of its IOMMU group has a host driver (--group moves them all),
               when the host uses it (an address, the default route), or without an IOMMU
  vfio unbind  give it back to the driver it had
  sriov        set the number of VFs of a PF (a PCI address or interface name); 0 removes them
  vf           set VF INDEX's MAC, VLAN (0: none), QoS, spoof checking and trust through the PF,
               as 'ip link set PF vf INDEX ...' does; with the PF alone, show every VF's settings

options:
  --dry-run        print the sysfs writes (or the ip command) instead of making them
  --json           machine-readable output
  --sysfs DIR      the sysfs tree to act on (default /sys; a fixture tree for tests)
  --procfs DIR     procfs (default /proc)     --devfs DIR   devfs (default /dev)
  --state-dir DIR  where original drivers are remembered (default: qnet's state directory)`;

export interface HostIo {
  /** the kernel to act on (tests: a fake one); default from --sysfs/--procfs/--devfs */
  host?: Host;
  out?: (s: string) => void;
  err?: (s: string) => void;
}

class UsageError extends Error {}

function onOff(name: string, v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'on') return true;
  if (v === 'off') return false;
  throw new UsageError(`--${name} takes on or off, not '${v}'`);
}

function intArg(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} takes a number, not '${v}'`);
  return Number(v);
}

function sriovText(d: PciDevice): string {
  if (d.sriov) return `PF ${d.sriov.numVfs}/${d.sriov.totalVfs} VFs`;
  if (d.physfn) return `VF ${d.physfn.index} of ${d.physfn.pf}`;
  return '-';
}

function assignText(a: Assignability): string {
  if (a.ready) return 'yes (vfio-pci)';
  if (a.bindable) return 'after vfio bind';
  return 'no';
}

export function formatDevices(devs: (PciDevice & { assignable: Assignability })[], o: { iommu: string | undefined; vfio: boolean }): string {
  let out = '';
  if (devs.length === 0) out += 'no PCI network devices\n';
  else {
    out += table(['ADDRESS', 'DEVICE', 'DRIVER', 'GROUP', 'NETDEV', 'MAC', 'LINK', 'NUMA', 'SR-IOV', 'ASSIGNABLE'],
      devs.map((d) => [d.bdf, deviceTitle(d), d.driver ?? '-', d.iommuGroup ?? '-', d.netdevs.map((n) => n.name).join(',') || '-',
        d.netdevs[0]?.mac ?? '-', d.netdevs[0]?.state ?? '-', d.numaNode ?? '-', sriovText(d), assignText(d.assignable)]));
    const groups = new Map<number, PciDevice['groupMembers']>();
    for (const d of devs) if (d.iommuGroup !== undefined) groups.set(d.iommuGroup, d.groupMembers);
    if (groups.size) {
      out += '\nIOMMU groups:\n';
      for (const [g, ms] of [...groups].sort((a, b) => a[0] - b[0])) out += `  ${g}: ${ms.map((m) => `${m.bdf} (${m.driver ?? 'no driver'}${m.bridge ? ', bridge' : ''})`).join(', ')}\n`;
    }
    // (no IOMMU is said once, below)
    const why = devs.filter((d) => !d.assignable.ready && d.assignable.reason && d.assignable.reason !== o.iommu);
    if (why.length) {
      out += '\nassignment:\n';
      for (const d of why) out += `  ${d.bdf}: ${d.assignable.bindable ? `run ${d.assignable.reason}` : d.assignable.reason}\n`;
    }
  }
  if (o.iommu) out += `\nwarning: ${o.iommu}\n`;
  else if (!o.vfio) out += '\nnote: vfio-pci is not loaded; qnet host vfio bind loads it (modprobe vfio-pci)\n';
  return out;
}

function formatVf(pf: string, v: VfState): string {
  return `${pf} VF ${v.index}${v.bdf ? ` (${v.bdf}, ${v.driver ?? 'no driver'})` : ''}: mac ${v.mac}, vlan ${v.vlan || 'none'}${v.qos ? ` qos ${v.qos}` : ''}, spoofchk ${v.spoofchk === undefined ? '?' : v.spoofchk ? 'on' : 'off'}, trust ${v.trust === undefined ? '?' : v.trust ? 'on' : 'off'}\n`;
}

export async function main(argv: string[], io: HostIo = {}): Promise<number> {
  const out = io.out ?? ((s: string) => { process.stdout.write(s); });
  const err = io.err ?? ((s: string) => { process.stderr.write(s); });
  const [sub, ...rest] = argv;
  if (!sub || sub === 'help' || sub === '--help' || sub === '-h') { out(USAGE + '\n'); return sub ? 0 : 2; }
  try {
    const { values, positionals } = parseArgs({
      args: rest, allowPositionals: true, strict: true,
      options: {
        all: { type: 'boolean' }, json: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, group: { type: 'boolean' },
        sysfs: { type: 'string' }, procfs: { type: 'string' }, devfs: { type: 'string' }, 'state-dir': { type: 'string' },
        vfs: { type: 'string' }, mac: { type: 'string' }, vlan: { type: 'string' }, qos: { type: 'string' },
        spoofchk: { type: 'string' }, trust: { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) { out(USAGE + '\n'); return 0; }
    const host = io.host ?? new Host({ sysfs: values.sysfs, procfs: values.procfs, devfs: values.devfs });
    const records = new DriverRecords(values['state-dir'] ?? defaultStateDir());
    const dry = values['dry-run'] ?? false;

    switch (sub) {
      case 'devices': {
        if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
        const devs = [];
        for (const d of listDevices(host, { all: values.all })) devs.push({ ...d, assignable: await assess(host, d.bdf) });
        const iommu = iommuProblem(host);
        const vfio = vfioLoaded(host);
        out(values.json ? json({ sysfs: host.sys, iommu: !iommu, vfioLoaded: vfio, devices: devs }) : formatDevices(devs, { iommu, vfio }));
        return 0;
      }
      case 'vfio': {
        const [op, target, ...extra] = positionals;
        if (op !== 'bind' && op !== 'unbind') throw new UsageError(`qnet host vfio takes bind or unbind, not '${op ?? ''}'`);
        if (!target || extra.length) throw new UsageError(`give one device: qnet host vfio ${op} BDF`);
        const bdf = resolveDevice(host, target);
        const plan = op === 'bind' ? await planBind(host, bdf, { group: values.group }) : planUnbind(host, bdf, records, { group: values.group });
        if (values.json && dry) { out(json(plan)); return 0; }
        for (const n of plan.notes) err(`note: ${n}\n`);
        if (plan.steps.length === 0) { out(`nothing to do\n`); return 0; }
        if (dry) {
          out(`# qnet host vfio ${op} ${bdf} would run:\n${formatSteps(plan).join('\n')}\n`);
          if (op === 'bind') out(`# and remember ${plan.changes.map((c) => `${c.bdf}'s driver ${c.from ?? '(none)'}`).join(', ')} in ${records.dir}\n`);
          return 0;
        }
        await executePlan(host, plan, records, `qnet host vfio ${op}`);
        for (const c of plan.changes) {
          const d = readDevice(host, c.bdf);
          out(op === 'bind'
            ? `${c.bdf}: ${c.from ?? 'no driver'} -> vfio-pci (IOMMU group ${d.iommuGroup}, ${host.devPath(`vfio/${d.iommuGroup}`)}); QEMU: -device vfio-pci,host=${c.bdf}\n`
            : `${c.bdf}: vfio-pci -> ${d.driver ?? 'no driver'}${d.netdevs.length ? ` (${d.netdevs.map((n) => n.name).join(', ')})` : ''}\n`);
        }
        return 0;
      }
      case 'sriov': {
        if (positionals.length !== 1) throw new UsageError('give one PF: qnet host sriov PF --vfs N');
        const n = intArg('vfs', values.vfs);
        if (n === undefined) throw new UsageError('give the number of VFs: --vfs N');
        const plan = planNumVfs(host, positionals[0], n);
        if (plan.steps.length === 0) { out(`${plan.pf} already has ${n} VFs\n`); return 0; }
        if (dry) { out(`# qnet host sriov ${plan.pf} --vfs ${n} would run:\n${plan.steps.map((s) => `echo ${s.value} > ${s.file}    # ${s.why}`).join('\n')}\n`); return 0; }
        executeNumVfs(host, plan);
        const d = readDevice(host, plan.pf);
        out(`${plan.pf}: ${plan.from} -> ${n} VFs${d.sriov?.vfs.length ? `: ${d.sriov.vfs.map((v) => `${v.index}=${v.bdf}`).join(' ')}` : ''}\n`);
        return 0;
      }
      case 'vf': {
        if (positionals.length === 1) { // just the PF: every VF's settings
          const pf = resolveDevice(host, positionals[0]);
          const st = await readVfStates(host, pf);
          out(values.json ? json(st) : st.length ? st.map((v) => formatVf(pf, v)).join('') : `${pf} has no VFs\n`);
          return 0;
        }
        if (positionals.length !== 2) throw new UsageError('give the PF and the VF index: qnet host vf PF INDEX --mac ... --vlan ...');
        const index = intArg('index', positionals[1]);
        const s: VfSettings = {};
        if (values.mac !== undefined) s.mac = values.mac;
        const vlan = intArg('vlan', values.vlan);
        if (vlan !== undefined) s.vlan = vlan;
        const qos = intArg('qos', values.qos);
        if (qos !== undefined) s.qos = qos;
        const sp = onOff('spoofchk', values.spoofchk);
        if (sp !== undefined) s.spoofchk = sp;
        const tr = onOff('trust', values.trust);
        if (tr !== undefined) s.trust = tr;
        const r = await setVf(host, positionals[0], index!, s, { dryRun: dry });
        if (dry) { out(`# qnet host vf would run:\nip ${r.args.join(' ')}\n`); return 0; }
        if (values.json) out(json(r));
        else if (r.state) out(formatVf(r.pf, r.state));
        else out(`ip ${r.args.join(' ')}: done (the PF reports no VF ${index})\n`);
        return 0;
      }
      default:
        throw new UsageError(`unknown subcommand '${sub}' (devices, vfio, sriov, vf)`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      err(`qnet host: ${(e as Error).message}\n${USAGE}\n`);
      return 2;
    }
    err(`qnet host ${sub}: ${e instanceof RefusedError ? 'refused: ' : ''}${(e as Error).message}\n`);
    return e instanceof RefusedError ? 3 : 1;
  }
}
