// `qnet net ls` and `qnet net show NAME`: the daemon's networks.
import type { NetworkInfo } from '../daemon/types.ts';
import { seg } from '../daemon/client.ts';
import { bytes, client, json, parse, runCommand, table, until, UsageError } from './common.ts';

const USAGE = `usage: qnet net ls [--json]
       qnet net show NAME [--json]

  ls          list networks (name, mode, subnet, gateway, ports, leases, forwards)
  show NAME   one network: attach points, ports with traffic counters, leases, forwards
              (a kernel network: its bridge, uplink, nftables table and counters, and taps;
              a VF pool, mode hostdev: its PFs and every VF with the VM that has it)
  --json      print the daemon's answer as JSON
  --api PATH  the daemon's API socket (default: $QNET_API or the runtime directory)`;

export function formatNetworks(nets: NetworkInfo[]): string {
  if (nets.length === 0) return 'no networks (define some in the config file and restart `qnet up`)\n';
  return table(['NAME', 'MODE', 'SUBNET', 'GATEWAY', 'PORTS', 'LEASES', 'FORWARDS', 'ATTACH'],
    nets.map((n) => n.pool
      ? [n.name, n.mode, `VFs of ${n.pool.pfs.join(',')}`, '-', `${n.pool.total - n.pool.free}/${n.pool.total} VFs`, '-', '-', '-']
      : [n.name, n.mode, n.subnet, n.gateway || '-', n.ports.length, n.leases.length, n.forwards.length, n.kernel ? `bridge ${n.kernel.bridge}` : n.attach.join(' ') || '-']));
}

/** A hostdev network: its PFs and VLAN, and each VF with its state and VM. */
export function formatPool(n: NetworkInfo): string {
  const p = n.pool!;
  let out = `name:  ${n.name}\nmode:  hostdev (a VF pool: each VM gets a VF, bound to vfio-pci)\npf:    ${p.pfs.join(', ')}\nvlan:  ${p.vlan ?? 'none (untagged)'}\n`;
  if (p.error) out += `\nERROR: ${p.error}\n`;
  out += `\nVFs (${p.free} free of ${p.total}):\n`;
  if (p.members.length) {
    out += indent(table(['VF', 'PF', 'INDEX', 'DRIVER', 'GROUP', 'STATE', 'VM', 'MAC', 'VLAN'],
      p.members.map((m) => [m.bdf, m.pf, m.index, m.driver ?? '-', m.iommuGroup ?? '-', m.state === 'unavailable' ? `unavailable: ${m.why}` : m.state, m.vm ?? '-', m.mac ?? '-', m.vlan ? m.vlan : '-'])));
  } else out += `  none: create VFs with qnet host sriov ${p.pfs[0]} --vfs N\n`;
  return out;
}

export function formatNetwork(n: NetworkInfo): string {
  if (n.pool) return formatPool(n);
  let out = '';
  const kv: [string, string][] = [
    ['name', n.name],
    ['mode', n.mode],
    ['subnet', n.subnet],
    ['gateway', n.gateway || '-'],
    ...(n.subnet6 ? [['subnet6', n.subnet6], ['gateway6', n.gateway6 ?? '-']] as [string, string][] : []),
    ['domain', n.domain ?? '-'],
    ['mtu', String(n.mtu)],
  ];
  for (const a of n.attach) kv.push(['attach', a]);
  const k = n.kernel;
  if (k) {
    kv.push(['bridge', `${k.bridge}${k.exists ? '' : ' (missing!)'}${k.createdBridge ? ', made by qnet' : ', the host\'s'}${k.mac ? `, MAC ${k.mac}` : ''}${k.stp ? ', STP on' : ''}`]);
    if (k.uplink) kv.push(['uplink', `${k.uplink} (its addresses and routes are on ${k.bridge} until qnet stops)`]);
    kv.push(['forwarding', k.forwarding === '1' ? 'on (net.ipv4.ip_forward = 1)' : `off (net.ipv4.ip_forward = ${k.forwarding})`]);
    kv.push(['rules', k.rules ? `nftables table ${k.rules.table}: ${k.rules.rules} rules; packets ${Object.entries(k.rules.packets).map(([c, p]) => `${c} ${p}`).join(', ') || 'none yet'}` : 'none (no nftables table in this mode)']);
    kv.push(['allow', k.allow.length ? `root, ${k.allow.join(', ')}` : 'root only']);
  }
  const w = Math.max(...kv.map(([key]) => key.length)) + 1;
  for (const [key, v] of kv) out += `${(key + ':').padEnd(w)} ${v}\n`;
  if (n.duplicateMacs.length) out += `\nWARNING: MACs seen on more than one port: ${n.duplicateMacs.join(', ')} (two VMs with the same MAC?)\n`;

  out += `\nports (${n.ports.length}):\n`;
  if (n.ports.length && k) {
    out += indent(table(['TAP', 'KIND', 'VM', 'UID', 'MACS', 'ADDRESSES', 'RX', 'TX'],
      n.ports.map((p) => [p.ifname ?? p.name, p.kind, p.vm ?? '-', p.uid ?? '-', p.macs.join(',') || '-', p.addresses.join(',') || '-',
        `${p.rxFrames} (${bytes(p.rxBytes)})`, `${p.txFrames} (${bytes(p.txBytes)})`])));
  } else if (n.ports.length) {
    out += indent(table(['ID', 'NAME', 'KIND', 'VM', 'PEER', 'MACS', 'ADDRESSES', 'RX', 'TX', 'DROPPED'],
      n.ports.map((p) => [p.id, p.name, p.kind, p.vm ?? '-', p.peer || '-', p.macs.join(',') || '-', p.addresses.join(',') || '-',
        `${p.rxFrames} (${bytes(p.rxBytes)})`, `${p.txFrames} (${bytes(p.txBytes)})`,
        p.rxDropped + p.txDropped + Object.values(p.drops).reduce((x, y) => x + y, 0)])));
    // why, for the ports that dropped anything (source.*: the source guard refused the sender)
    for (const p of n.ports) {
      const why = Object.entries(p.drops).filter(([, v]) => v > 0).map(([r, v]) => `${r} ${v}`);
      if (p.rxDropped) why.unshift(`rx ${p.rxDropped}`);
      if (p.txDropped) why.push(`tx ${p.txDropped}`);
      if (why.length) out += `  port ${p.id} dropped: ${why.join(', ')}\n`;
    }
  }
  out += `\nleases (${n.leases.length}):\n`;
  if (n.leases.length) {
    out += indent(table(['MAC', 'IP', 'HOSTNAME', 'EXPIRES'],
      n.leases.map((l) => [l.mac, l.ip, l.hostname ?? '-', l.static ? 'static' : until(l.expiresAt)])));
  }
  out += `\nforwards (${n.forwards.length}):\n`;
  if (n.forwards.length) {
    out += indent(table(['ID', 'PROTO', 'HOST', 'GUEST', 'CONNECTIONS', 'SOURCE'],
      n.forwards.map((f) => [f.id, f.proto, `${hostPort(f.hostAddr, f.hostPort)}`, `${f.guest}:${f.guestPort}`, f.connections, f.source])));
  }
  return out;
}

export function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

function indent(s: string): string {
  return s.split('\n').map((l) => (l ? '  ' + l : l)).join('\n');
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('net', USAGE, async () => {
    const { values, positionals } = parse(argv, {});
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    const [sub, ...rest] = positionals;
    const api = client(values.api);
    if (sub === 'ls' || sub === 'list' || sub === undefined) {
      if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
      const nets = await api.get<NetworkInfo[]>('/v1/networks');
      process.stdout.write(values.json ? json(nets) : formatNetworks(nets));
      return 0;
    }
    if (sub === 'show' || sub === 'info') {
      if (rest.length !== 1) throw new UsageError('give exactly one network name: qnet net show NAME');
      const n = await api.get<NetworkInfo>(`/v1/networks/${seg(rest[0])}`);
      process.stdout.write(values.json ? json(n) : formatNetwork(n));
      return 0;
    }
    throw new UsageError(`unknown subcommand '${sub}' (expected ls or show)`);
  });
}
