// `qnet info network`: what QEMU itself says about each VM's network devices (the HMP
// `info network` output over QMP), grouped by qnet network.
import type { VmRecord } from '../daemon/types.ts';
import { QmpClient } from '../qemu/qmp.ts';
import { client, json, parse, runCommand, UsageError } from './common.ts';

const USAGE = `usage: qnet info network [--json]

For every VM started by \`qnet run\`, QEMU's own \`info network\` (NICs, netdevs, hubs), grouped
by qnet network.
  --json      print [{network, vms: [{name, pid, output | error}]}] as JSON
  --api PATH  the daemon's API socket (default: $QNET_API or the runtime directory)`;

export interface VmNetworkInfo { name: string; pid: number; output?: string; error?: string }
export interface NetworkGroup { network: string; vms: VmNetworkInfo[] }

export async function infoNetwork(vms: VmRecord[], timeoutMs = 2000): Promise<NetworkGroup[]> {
  const results = await Promise.all(vms.map(async (vm): Promise<VmNetworkInfo & { network: string }> => {
    let q: QmpClient | undefined;
    try {
      q = await QmpClient.connect(vm.qmp, { timeoutMs });
      const output = (await q.hmp('info network')).replace(/\r\n/g, '\n');
      return { network: vm.network, name: vm.name, pid: vm.pid, output };
    } catch (e) {
      return { network: vm.network, name: vm.name, pid: vm.pid, error: (e as Error).message };
    } finally {
      q?.close();
    }
  }));
  const groups = new Map<string, VmNetworkInfo[]>();
  for (const { network, ...r } of results) {
    if (!groups.has(network)) groups.set(network, []);
    groups.get(network)!.push(r);
  }
  return [...groups.entries()].sort((a, b) => a[0].localeCompare(b[0]))
    .map(([network, list]) => ({ network, vms: list.sort((a, b) => a.name.localeCompare(b.name)) }));
}

export function formatInfoNetwork(groups: NetworkGroup[]): string {
  if (groups.length === 0) return 'no VMs (start one with `qnet run NET -- qemu-system-x86_64 ...`)\n';
  let out = '';
  for (const g of groups) {
    out += `network ${g.network}:\n`;
    for (const v of g.vms) {
      out += `  ${v.name} (pid ${v.pid}):\n`;
      const text = v.error ? `error: ${v.error}` : (v.output ?? '').trimEnd();
      for (const line of text.split('\n')) out += `    ${line}\n`;
    }
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('info', USAGE, async () => {
    const { values, positionals } = parse(argv, {});
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    if (positionals[0] !== 'network' || positionals.length !== 1) {
      throw new UsageError(positionals.length ? `unknown info topic '${positionals.join(' ')}' (expected: network)` : 'expected: qnet info network');
    }
    const groups = await infoNetwork(await client(values.api).get<VmRecord[]>('/v1/vms'));
    process.stdout.write(values.json ? json(groups) : formatInfoNetwork(groups));
    return 0;
  });
}
