// `qnet doctor [--json]`: what on this host stands in the way of qnet's features. For now the
// device-assignment checks (host/pci/doctor-checks.ts: IOMMU, kernel parameters, interrupt
// remapping, vfio modules, SR-IOV NICs, NIC IOMMU groups); the findings have the shape the
// kernel-network checks use, so both print as one report. Exit status 1 when a check fails.
import { parseArgs } from 'node:util';
import { Host } from '../host/pci/sysfs.ts';
import { pciDoctorChecks, type CheckStatus, type PciFinding } from '../host/pci/doctor-checks.ts';
import { json } from './common.ts';

const USAGE = `usage: qnet doctor [--json] [--sysfs DIR] [--procfs DIR] [--devfs DIR]

Checks this host for device assignment (VT-d/AMD-Vi IOMMU, kernel parameters, interrupt
remapping, vfio modules, SR-IOV NICs) and says what to fix. Exit status 1 if a check fails.
  --sysfs DIR, --procfs DIR, --devfs DIR   inspect another tree than /sys, /proc, /dev`;

const MARK: Record<CheckStatus, string> = { ok: 'ok  ', info: 'info', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

export function formatFindings(findings: PciFinding[]): string {
  const lines: string[] = [];
  for (const f of findings) {
    lines.push(`${MARK[f.status]}  ${f.summary}`);
    for (const d of f.detail ?? []) lines.push(`        ${d}`);
    if (f.fix && f.status !== 'ok') lines.push(`        fix: ${f.fix}`);
  }
  const n = (s: CheckStatus) => findings.filter((f) => f.status === s).length;
  lines.push(`${n('fail')} problem${n('fail') === 1 ? '' : 's'}, ${n('warn')} warning${n('warn') === 1 ? '' : 's'}`);
  return lines.join('\n') + '\n';
}

export async function main(argv: string[], io: { host?: Host; out?: (s: string) => void; err?: (s: string) => void } = {}): Promise<number> {
  const out = io.out ?? ((s: string) => { process.stdout.write(s); });
  const err = io.err ?? ((s: string) => { process.stderr.write(s); });
  let values;
  try {
    ({ values } = parseArgs({ args: argv, strict: true, options: { json: { type: 'boolean' }, sysfs: { type: 'string' }, procfs: { type: 'string' }, devfs: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    err(`qnet doctor: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) { out(USAGE + '\n'); return 0; }
  const host = io.host ?? new Host({ sysfs: values.sysfs, procfs: values.procfs, devfs: values.devfs });
  const findings = pciDoctorChecks(host);
  out(values.json ? json(findings) : formatFindings(findings));
  return findings.some((f) => f.status === 'fail') ? 1 : 0;
}
