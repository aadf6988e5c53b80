// `qnet leases [NET]`: DHCP leases (and static hosts) of one or all networks.
import type { LeaseInfo } from '../daemon/types.ts';
import { seg } from '../daemon/client.ts';
import { client, json, parse, runCommand, table, until, UsageError } from './common.ts';

const USAGE = `usage: qnet leases [NET] [--json]

Lists DHCP leases and static host entries, of network NET or of all networks.
  --json      print the daemon's answer as JSON
  --api PATH  the daemon's API socket (default: $QNET_API or the runtime directory)`;

type Lease = LeaseInfo & { network: string };

export function formatLeases(leases: Lease[]): string {
  if (leases.length === 0) return 'no leases\n';
  const sorted = [...leases].sort((a, b) => a.network.localeCompare(b.network) || ipKey(a.ip) - ipKey(b.ip));
  return table(['NETWORK', 'IP', 'MAC', 'HOSTNAME', 'TYPE', 'EXPIRES'],
    sorted.map((l) => [l.network, l.ip, l.mac, l.hostname ?? '-', l.static ? 'static' : 'dynamic', l.static ? '-' : until(l.expiresAt)]));
}

function ipKey(ip: string): number {
  const p = ip.split('.').map(Number);
  return p.length === 4 && p.every((x) => x >= 0 && x < 256) ? ((p[0] << 24) >>> 0) + (p[1] << 16) + (p[2] << 8) + p[3] : 0;
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('leases', USAGE, async () => {
    const { values, positionals } = parse(argv, {});
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    if (positionals.length > 1) throw new UsageError(`give at most one network, got ${positionals.length}`);
    const api = client(values.api);
    let leases: Lease[];
    if (positionals[0]) {
      const net = positionals[0];
      leases = (await api.get<(LeaseInfo & { network?: string })[]>(`/v1/networks/${seg(net)}/leases`)).map((l) => ({ ...l, network: l.network ?? net }));
    } else {
      leases = await api.get<Lease[]>('/v1/leases');
    }
    process.stdout.write(values.json ? json(leases) : formatLeases(leases));
    return 0;
  });
}
