// GET /metrics: the daemon's state as Prometheus text (exposition format 0.0.4): per-port
// frame and drop counters, per-network gauges, every limit hit with its port, and the
// descriptor budget. Built on request from what the networks already count; nothing here is
// on the packet path.
import fs from 'node:fs';
import type { Network } from '../network/network.ts';
import type { LimitLog } from '../util/limits.ts';
import type { FdBudget } from '../util/fds.ts';
import type { PortInfo } from './types.ts';

export interface MetricsInput {
  /** running networks with a userspace part (ports: none for kernel networks) */
  networks: { name: string; net: Network; ports: PortInfo[] }[];
  /** limit hits outside any network (the API's) */
  limits: LimitLog;
  fdBudget: FdBudget;
}

type Row = [Record<string, string | number>, number];

export function renderMetrics(m: MetricsInput): string {
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, rows: Row[]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of rows) {
      const l = Object.entries(labels).map(([k, x]) => `${k}="${String(x).replace(/["\\\n]/g, '_')}"`).join(',');
      lines.push(l ? `${name}{${l}} ${v}` : `${name} ${v}`);
    }
  };
  const nets = m.networks;
  const ports = nets.flatMap((r) => r.ports.map((p) => ({ net: r.name, p })));
  const lbl = (x: { net: string; p: PortInfo }) => ({ network: x.net, port: String(x.p.id), vm: x.p.vm ?? '' });
  metric('qnet_port_rx_frames_total', 'counter', 'Frames received from the guest side of a port', ports.map((x) => [lbl(x), x.p.rxFrames]));
  metric('qnet_port_tx_frames_total', 'counter', 'Frames sent to a port', ports.map((x) => [lbl(x), x.p.txFrames]));
  metric('qnet_port_rx_bytes_total', 'counter', 'Bytes received from a port', ports.map((x) => [lbl(x), x.p.rxBytes]));
  metric('qnet_port_tx_bytes_total', 'counter', 'Bytes sent to a port', ports.map((x) => [lbl(x), x.p.txBytes]));
  metric('qnet_port_dropped_total', 'counter', 'Frames dropped on a port by reason',
    ports.flatMap((x) => [...Object.entries(x.p.drops), ['rx', x.p.rxDropped], ['tx', x.p.txDropped]].map(([k, v]): Row => [{ ...lbl(x), reason: String(k) }, Number(v)])));
  metric('qnet_leases', 'gauge', 'Active DHCP leases', nets.map((r) => [{ network: r.name }, r.net.dhcp.leases().length]));
  metric('qnet_tcp_connections', 'gauge', 'Guest TCP connections', nets.map((r) => [{ network: r.name }, r.net.tcp.size]));
  metric('qnet_tcp_retransmits_total', 'counter', 'TCP segments retransmitted towards guests', nets.map((r) => [{ network: r.name }, r.net.tcp.stats.retransmits]));
  metric('qnet_udp_flows', 'gauge', 'UDP NAT flows', nets.map((r) => [{ network: r.name }, r.net.udpNat?.size ?? 0]));
  metric('qnet_dns_queries_total', 'counter', 'DNS queries from guests', nets.map((r) => [{ network: r.name }, r.net.dns.stats.queries]));
  metric('qnet_duplicate_macs', 'gauge', 'MACs seen on two ports', nets.map((r) => [{ network: r.name }, r.net.duplicates().length]));
  const hits = [
    ...m.limits.snapshot().map((h) => ({ network: '', h })),
    ...nets.flatMap((r) => r.net.limits.snapshot().map((h) => ({ network: r.name, h }))),
  ];
  metric('qnet_limit_hits_total', 'counter', 'Times a limit refused something, by limit and port (or listener)', hits.map(({ network, h }): Row => [{ network, limit: h.limit, port: h.port }, h.count]));
  metric('qnet_limit', 'gauge', 'The value of each limit that was hit', hits.map(({ network, h }): Row => [{ network, limit: h.limit, port: h.port }, h.value]));
  let open = -1;
  try { open = fs.readdirSync('/proc/self/fd').length; } catch { /* not Linux */ }
  metric('qnet_open_fds', 'gauge', 'Descriptors the daemon holds', [[{}, open]]);
  const b = m.fdBudget;
  metric('qnet_fd_budget', 'gauge', 'The descriptor limit and its split: reserved for qnet, for guest flows, used by guest flows', [
    [{ part: 'limit' }, b.limit], [{ part: 'reserved' }, b.reserve], [{ part: 'flows' }, b.flows], [{ part: 'flowsUsed' }, b.used],
  ]);
  return lines.join('\n') + '\n';
}
