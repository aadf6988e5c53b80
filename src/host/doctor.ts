// `qnet doctor`: what on this host stands between QEMU and its networking, as a list of
// findings. The framework is a list of check functions, each run on its own (one that throws
// becomes a `fail` finding naming it, the others still run), so other parts of qnet add
// their checks to the same report: the kernel-network checks are in doctor-checks.ts, PCI
// device assignment's in pci/doctor-checks.ts. A check gets a DoctorContext (where to look,
// for whom, which bridges matter) and returns findings; it never changes anything.
import type { Runner } from './run.ts';

export type Status = 'ok' | 'info' | 'warn' | 'fail' | 'skip';

export interface Finding {
  /** the check's id, e.g. 'tun' */
  check: string;
  status: Status;
  /** one line */
  summary: string;
  /** more lines, shown indented */
  detail?: string[];
  /** what to do about it */
  fix?: string;
}

export interface DoctorContext {
  /** the namespace to inspect (sysctls, links, nftables) */
  runner: Runner;
  /** the user QEMU would run as (default: the caller) */
  uid: number;
  gids: number[];
  /** bridges that matter: those of the config's kernel networks and --bridge */
  bridges: { name: string; network?: string }[];
  /** the QEMU bridge-helper ACL file */
  aclFile: string;
  /** anything else a check wants from the command line (e.g. PCI addresses) */
  options: Record<string, string | string[] | boolean | undefined>;
}

export interface DoctorCheck {
  id: string;
  title: string;
  run(ctx: DoctorContext): Finding[] | Promise<Finding[]>;
}

/** Run every check; a check that throws becomes one `fail` finding. Order is kept. */
export async function runDoctor(checks: DoctorCheck[], ctx: DoctorContext): Promise<Finding[]> {
  const out: Finding[] = [];
  for (const c of checks) {
    try {
      out.push(...(await c.run(ctx)));
    } catch (e) {
      out.push({ check: c.id, status: 'fail', summary: `${c.title}: the check itself failed: ${(e as Error).message}` });
    }
  }
  return out;
}

const MARK: Record<Status, string> = { ok: 'ok  ', info: 'info', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

export function formatFindings(findings: Finding[]): string {
  const lines: string[] = [];
  for (const f of findings) {
    lines.push(`${MARK[f.status]}  ${f.summary}`);
    for (const d of f.detail ?? []) lines.push(`        ${d}`);
    if (f.fix && f.status !== 'ok') lines.push(`        fix: ${f.fix}`);
  }
  const n = (s: Status) => findings.filter((f) => f.status === s).length;
  lines.push(`${n('fail')} problem${n('fail') === 1 ? '' : 's'}, ${n('warn')} warning${n('warn') === 1 ? '' : 's'}`);
  return lines.join('\n') + '\n';
}

/** 1 when anything failed, else 0. */
export function doctorExitCode(findings: Finding[]): number {
  return findings.some((f) => f.status === 'fail') ? 1 : 0;
}
