// `qnet doctor`: what on this host blocks QEMU's networking and qnet's features
// (src/host/doctor.ts): devices (/dev/net/tun, /dev/vhost-net, /dev/kvm), QEMU's stock bridge
// helper (setuid/capabilities) and its ACL verdicts for the bridges that matter, forwarding,
// nftables and conflicting firewall tables (host/doctor-checks.ts); and device assignment
// (host/pci/doctor-checks.ts: IOMMU, kernel parameters, interrupt remapping, vfio modules,
// SR-IOV NICs, NICs sharing an IOMMU group), read from --sysfs/--procfs/--devfs (default
// /sys, /proc, /dev). Other parts of qnet add their checks to CHECKS.
import { parseArgs } from 'node:util';
import path from 'node:path';
import { loadConfig } from '../config/config.ts';
import { DEFAULT_ACL_FILE } from '../host/bridge-acl.ts';
import { doctorExitCode, formatFindings, runDoctor, type DoctorCheck, type DoctorContext } from '../host/doctor.ts';
import { kernelNetworkChecks } from '../host/doctor-checks.ts';
import { pciDoctorChecks } from '../host/pci/doctor-checks.ts';
import { Host } from '../host/pci/sysfs.ts';
import { localRunner, netnsRunner } from '../host/run.ts';
import { gidsOfUser, userById, userByName } from '../host/users.ts';
import { json } from './common.ts';

const dir = (v: DoctorContext['options'][string]): string | undefined => (typeof v === 'string' ? v : undefined);

/**
 * The device-assignment checks as one doctor check; the Host is the context's
 * --sysfs/--procfs/--devfs tree unless `hostOf` gives another (tests: a fake kernel).
 * Their failures count (exit status 1) when device assignment matters: the config has a
 * hostdev network, or a tree was named (ctx.options.hostdev). Otherwise a host without an
 * IOMMU, which kernel and userspace networks do not need, gets warnings, not a failed doctor.
 */
export function pciCheck(hostOf?: (ctx: DoctorContext) => Host): DoctorCheck {
  return {
    id: 'pci', title: 'device assignment',
    run: (ctx) => {
      const found = pciDoctorChecks(hostOf ? hostOf(ctx) : new Host({ sysfs: dir(ctx.options.sysfs), procfs: dir(ctx.options.procfs), devfs: dir(ctx.options.devfs) }));
      if (ctx.options.hostdev) return found;
      return found.map((f) => (f.status === 'fail'
        ? { ...f, status: 'warn' as const, detail: [...(f.detail ?? []), 'a warning, not a failure: no hostdev network is configured (-c FILE with one, or --sysfs, makes it count)'] }
        : f));
    },
  };
}

/** Every check `qnet doctor` runs, in order. */
export const CHECKS: DoctorCheck[] = [...kernelNetworkChecks, pciCheck()];

const USAGE = `usage: qnet doctor [-c FILE] [--bridge BR]... [--user U] [--netns NAME] [--acl FILE] [--json]
                   [--sysfs DIR] [--procfs DIR] [--devfs DIR]

Reports what blocks QEMU's networking and device assignment on this host, and how to fix it.
  -c FILE       also check the kernel networks of this qnet.yaml (default: $QNET_CONFIG);
                with a hostdev network in it, device-assignment failures count
  --bridge BR   a bridge to check QEMU's bridge-helper ACL for (repeatable)
  --user U      the user QEMU runs as (default: you)
  --netns NAME  look at network namespace NAME (sysctls, nftables)
  --acl FILE    the helper's ACL (default ${DEFAULT_ACL_FILE})
  --sysfs DIR, --procfs DIR, --devfs DIR
                device assignment (VT-d/AMD-Vi IOMMU, kernel parameters, interrupt
                remapping, vfio modules, SR-IOV NICs): inspect another tree than /sys, /proc,
                /dev (its failures count)
  --json        the findings as JSON
Exit status 1 when a check failed.`;

export interface DoctorIo {
  /** the checks to run (default CHECKS) */
  checks?: DoctorCheck[];
  /** the device-assignment checks read this Host instead of --sysfs/--procfs/--devfs */
  host?: Host;
  out?: (s: string) => void;
  err?: (s: string) => void;
}

export async function main(argv: string[], io: DoctorIo = {}): Promise<number> {
  const out = io.out ?? ((s: string) => { process.stdout.write(s); });
  const err = io.err ?? ((s: string) => { process.stderr.write(s); });
  let values;
  try {
    ({ values } = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: {
        config: { type: 'string', short: 'c' }, bridge: { type: 'string', multiple: true }, user: { type: 'string' },
        netns: { type: 'string' }, acl: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
        sysfs: { type: 'string' }, procfs: { type: 'string' }, devfs: { type: 'string' },
      },
    }));
  } catch (e) {
    err(`qnet doctor: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) { out(USAGE + '\n'); return 0; }
  const bridges: { name: string; network?: string }[] = (values.bridge ?? []).map((name) => ({ name }));
  // device assignment matters: a tree to inspect was named, or the config has a VF pool
  let hostdev = Boolean(values.sysfs || values.procfs || values.devfs || io.host);
  const file = values.config ?? process.env.QNET_CONFIG;
  if (file) {
    try {
      for (const n of loadConfig(path.resolve(file)).networks) {
        if (n.bridge) bridges.push({ name: n.bridge, network: n.name });
        if (n.mode === 'hostdev') hostdev = true;
      }
    } catch (e) {
      err(`qnet doctor: ${(e as Error).message}\n`);
      return 2;
    }
  }
  let uid = process.getuid?.() ?? 0;
  let gids = [process.getgid?.() ?? 0, ...(process.getgroups?.() ?? [])];
  if (values.user !== undefined) {
    const u = /^\d+$/.test(values.user) ? userById(Number(values.user)) : userByName(values.user);
    if (!u) { err(`qnet doctor: no user '${values.user}' in /etc/passwd\n`); return 2; }
    uid = u.uid;
    gids = gidsOfUser(u);
  }
  const host = io.host;
  const checks = (io.checks ?? CHECKS).map((c) => (host && c.id === 'pci' ? pciCheck(() => host) : c));
  const findings = await runDoctor(checks, {
    runner: values.netns ? netnsRunner(values.netns) : localRunner(), uid, gids, bridges,
    aclFile: values.acl ?? DEFAULT_ACL_FILE,
    options: { sysfs: values.sysfs, procfs: values.procfs, devfs: values.devfs, hostdev },
  });
  out(values.json ? json(findings) : formatFindings(findings));
  return doctorExitCode(findings);
}
