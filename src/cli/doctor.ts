// `qnet doctor`: what on this host blocks QEMU's networking (src/host/doctor.ts): devices
// (/dev/net/tun, /dev/vhost-net, /dev/kvm), QEMU's stock bridge helper (setuid/capabilities)
// and its ACL verdicts for the bridges that matter, forwarding, nftables and conflicting
// firewall tables. Other parts of qnet add their checks to CHECKS.
import { parseArgs } from 'node:util';
import path from 'node:path';
import { loadConfig } from '../config/config.ts';
import { DEFAULT_ACL_FILE } from '../host/bridge-acl.ts';
import { doctorExitCode, formatFindings, runDoctor, type DoctorCheck } from '../host/doctor.ts';
import { kernelNetworkChecks } from '../host/doctor-checks.ts';
import { localRunner, netnsRunner } from '../host/run.ts';
import { gidsOfUser, userById, userByName } from '../host/users.ts';
import { json } from './common.ts';

/** Every check `qnet doctor` runs, in order. */
export const CHECKS: DoctorCheck[] = [...kernelNetworkChecks];

const USAGE = `usage: qnet doctor [-c FILE] [--bridge BR]... [--user U] [--netns NAME] [--acl FILE] [--json]

Reports what blocks QEMU's networking on this host, and how to fix it.
  -c FILE       also check the kernel networks of this qnet.yaml (default: $QNET_CONFIG)
  --bridge BR   a bridge to check QEMU's bridge-helper ACL for (repeatable)
  --user U      the user QEMU runs as (default: you)
  --netns NAME  look at network namespace NAME (sysctls, nftables)
  --acl FILE    the helper's ACL (default ${DEFAULT_ACL_FILE})
  --json        the findings as JSON
Exit status 1 when a check failed.`;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: {
        config: { type: 'string', short: 'c' }, bridge: { type: 'string', multiple: true }, user: { type: 'string' },
        netns: { type: 'string' }, acl: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`qnet doctor: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
  const bridges: { name: string; network?: string }[] = (values.bridge ?? []).map((name) => ({ name }));
  const file = values.config ?? process.env.QNET_CONFIG;
  if (file) {
    try {
      for (const n of loadConfig(path.resolve(file)).networks) if (n.bridge) bridges.push({ name: n.bridge, network: n.name });
    } catch (e) {
      process.stderr.write(`qnet doctor: ${(e as Error).message}\n`);
      return 2;
    }
  }
  let uid = process.getuid?.() ?? 0;
  let gids = [process.getgid?.() ?? 0, ...(process.getgroups?.() ?? [])];
  if (values.user !== undefined) {
    const u = /^\d+$/.test(values.user) ? userById(Number(values.user)) : userByName(values.user);
    if (!u) { process.stderr.write(`qnet doctor: no user '${values.user}' in /etc/passwd\n`); return 2; }
    uid = u.uid;
    gids = gidsOfUser(u);
  }
  const findings = await runDoctor(CHECKS, {
    runner: values.netns ? netnsRunner(values.netns) : localRunner(), uid, gids, bridges,
    aclFile: values.acl ?? DEFAULT_ACL_FILE, options: {},
  });
  process.stdout.write(values.json ? json(findings) : formatFindings(findings));
  return doctorExitCode(findings);
}
