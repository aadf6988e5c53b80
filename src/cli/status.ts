// `qnet status [--api PATH] [--json]`: the daemon's health at a glance.
import type { StatusInfo } from '../daemon/types.ts';
import { client, duration, json, parse, runCommand, table, UsageError } from './common.ts';

const USAGE = `usage: qnet status [--json] [--api PATH]

Shows the running daemon: version, pid, uptime, directories, networks and warnings.
  --json       print the daemon's answer as JSON
  --api PATH   the daemon's API socket (default: $QNET_API or the runtime directory)`;

export function formatStatus(s: StatusInfo): string {
  let out = '';
  const kv: [string, string][] = [
    ['daemon', `qnet ${s.version}, pid ${s.pid}, up ${duration(s.uptimeSec)}`],
    ['config', s.configPath ?? '(none: built-in defaults)'],
    ['state', s.stateDir],
    ['runtime', s.runtimeDir],
    ['api', s.apiSocket],
  ];
  const w = Math.max(...kv.map(([k]) => k.length)) + 1;
  for (const [k, v] of kv) out += `${(k + ':').padEnd(w)} ${v}\n`;
  out += '\n';
  if (s.networks.length === 0) out += 'no networks\n';
  else {
    const bridges = s.networks.some((n) => n.bridge);
    out += table(['NETWORK', 'MODE', 'SUBNET', 'PORTS', 'LEASES', 'DUPLICATE MACS', ...(bridges ? ['BRIDGE'] : [])],
      s.networks.map((n) => [n.name, n.mode, n.pool ? `VFs of ${n.pool.pfs.join(',')}` : n.subnet, n.ports, n.leases, n.duplicateMacs.join(',') || '-', ...(bridges ? [n.bridge ?? '-'] : [])]));
    const pools = s.networks.filter((n) => n.pool);
    if (pools.length) {
      out += '\nVF pools:\n';
      for (const n of pools) out += `  ${n.name}: ${n.pool!.assigned} assigned, ${n.pool!.free} free of ${n.pool!.total} VFs (qnet net show ${n.name})\n`;
    }
  }
  if (s.warnings.length) {
    out += '\nwarnings:\n';
    for (const w of s.warnings) out += `  - ${w}\n`;
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('status', USAGE, async () => {
    const { values, positionals } = parse(argv, {});
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const s = await client(values.api).get<StatusInfo>('/v1/status');
    process.stdout.write(values.json ? json(s) : formatStatus(s));
    return 0;
  });
}
