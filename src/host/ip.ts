// Links, addresses and routes as `ip -json` reports them, and the few `ip` commands the host
// modules build on. Reading is always fresh (no cache): the kernel is the source of truth,
// and other tools (NetworkManager, a user with `ip`) may change things under us.
import { hostError, must, mustJson, type Runner } from './run.ts';

export interface LinkInfo {
  ifindex: number;
  ifname: string;
  mtu: number;
  /** the bridge this link is a port of */
  master?: string;
  address?: string;
  operstate?: string;
  flags: string[];
  /** `ip link set DEV alias TEXT`: qnet marks what it created with `qnet:NETWORK` */
  ifalias?: string;
  /** 'bridge', 'tun', 'veth', ... (undefined for a plain NIC) */
  kind?: string;
  /** from linkinfo.info_data (bridge: stp_state, forward_delay; tun: type, pi, vnet_hdr, owner, group) */
  data: Record<string, unknown>;
  /** the device's counters (`ip -s`): rx is what the host received on it */
  stats?: { rxPackets: number; rxBytes: number; rxDropped: number; txPackets: number; txBytes: number; txDropped: number };
}

interface RawLink {
  ifindex: number; ifname: string; mtu: number; master?: string; address?: string; operstate?: string; flags?: string[]; ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown>; info_slave_kind?: string };
  stats64?: { rx?: { packets?: number; bytes?: number; dropped?: number }; tx?: { packets?: number; bytes?: number; dropped?: number } };
}

function toLink(l: RawLink): LinkInfo {
  return {
    ifindex: l.ifindex, ifname: l.ifname, mtu: l.mtu, master: l.master, address: l.address, operstate: l.operstate,
    flags: l.flags ?? [], ifalias: l.ifalias, kind: l.linkinfo?.info_kind, data: l.linkinfo?.info_data ?? {},
    stats: l.stats64 ? {
      rxPackets: l.stats64.rx?.packets ?? 0, rxBytes: l.stats64.rx?.bytes ?? 0, rxDropped: l.stats64.rx?.dropped ?? 0,
      txPackets: l.stats64.tx?.packets ?? 0, txBytes: l.stats64.tx?.bytes ?? 0, txDropped: l.stats64.tx?.dropped ?? 0,
    } : undefined,
  };
}

/** Every link, with details (kind, bridge/tun data, alias) and counters. */
export async function links(r: Runner): Promise<LinkInfo[]> {
  return (await mustJson<RawLink[]>(r, ['ip', '-json', '-details', '-stats', 'link', 'show'])).map(toLink);
}

/** One link, or null when there is none of that name. */
export async function link(r: Runner, name: string): Promise<LinkInfo | null> {
  const res = await r.exec(['ip', '-json', '-details', 'link', 'show', 'dev', name]);
  if (res.code !== 0) {
    if (/does not exist|Cannot find device/i.test(res.stderr)) return null;
    await must(r, ['ip', '-json', '-details', 'link', 'show', 'dev', name]); // throws the explained error
  }
  const list = JSON.parse(res.stdout || '[]') as RawLink[];
  return list.length ? toLink(list[0]) : null;
}

export interface AddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
  broadcast?: string;
  scope?: string;
  /** seconds; 4294967295 = forever */
  valid_life_time?: number;
  preferred_life_time?: number;
  dynamic?: boolean;
  noprefixroute?: boolean;
}

/** Addresses on a device (both families). */
export async function addrs(r: Runner, dev: string): Promise<AddrInfo[]> {
  const out = await mustJson<{ addr_info?: AddrInfo[] }[]>(r, ['ip', '-json', 'addr', 'show', 'dev', dev]);
  return out.flatMap((l) => l.addr_info ?? []).filter((a) => a.family === 'inet' || a.family === 'inet6');
}

export interface RouteInfo {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  prefsrc?: string;
  metric?: number;
  flags?: string[];
  type?: string;
}

/** Routes of the main table through a device, for one family. */
export async function routes(r: Runner, dev: string, family: 4 | 6 = 4): Promise<RouteInfo[]> {
  return mustJson<RouteInfo[]>(r, ['ip', `-${family}`, '-json', 'route', 'show', 'dev', dev]);
}

/** All IPv4 routes of the main table. */
export async function allRoutes(r: Runner): Promise<RouteInfo[]> {
  return mustJson<RouteInfo[]>(r, ['ip', '-4', '-json', 'route', 'show']);
}

/** Run several `ip` commands in one process (`ip -batch -`); stops at the first failure. */
export async function ipBatch(r: Runner, lines: string[][]): Promise<void> {
  if (lines.length === 0) return;
  if (lines.length === 1) { await must(r, ['ip', ...lines[0]]); return; }
  const res = await r.exec(['ip', '-batch', '-'], lines.map((l) => l.map(quoteBatch).join(' ')).join('\n') + '\n');
  if (res.code === 0) return;
  // name the command that failed ("Command failed -:N"), not the batch
  const n = Number(/Command failed -:(\d+)/.exec(res.stderr)?.[1] ?? 0);
  const stderr = res.stderr.split('\n').filter((l) => !/^Command failed -:/.test(l)).join('\n');
  throw hostError(r, n > 0 && n <= lines.length ? ['ip', ...lines[n - 1]] : ['ip', '-batch', '-'], { ...res, stderr });
}

function quoteBatch(a: string): string {
  if (/^[\w@%+=:,./-]+$/.test(a)) return a;
  return `"${a.replace(/(["\\])/g, '\\$1')}"`;
}

/** `ip addr add` arguments (batch style: no -4/-6, the address says) that re-create an address as it was (lifetimes kept when finite). */
export function addrArgs(a: AddrInfo, dev: string): string[] {
  const args = ['addr', 'add', `${a.local}/${a.prefixlen}`];
  if (a.broadcast) args.push('broadcast', a.broadcast);
  if (a.scope && a.scope !== 'global') args.push('scope', a.scope);
  if (a.noprefixroute) args.push('noprefixroute');
  const forever = 4294967295;
  if (a.valid_life_time !== undefined && a.valid_life_time < forever) {
    args.push('valid_lft', String(a.valid_life_time), 'preferred_lft', String(Math.min(a.preferred_life_time ?? a.valid_life_time, a.valid_life_time)));
  }
  args.push('dev', dev);
  return args;
}

/** `ip route replace` arguments (batch style) for a route moved to another device. */
export function routeArgs(rt: RouteInfo, dev: string, family: 4 | 6 = 4): string[] {
  const args = ['route', 'replace'];
  if (rt.type && rt.type !== 'unicast') args.push(rt.type);
  args.push(rt.dst === 'default' && family === 6 ? '::/0' : rt.dst);
  if (rt.gateway) args.push('via', rt.gateway);
  args.push('dev', dev);
  if (rt.protocol && rt.protocol !== 'kernel') args.push('proto', rt.protocol);
  if (rt.scope && rt.scope !== 'global' && !rt.gateway) args.push('scope', rt.scope);
  if (rt.prefsrc) args.push('src', rt.prefsrc);
  if (rt.metric !== undefined) args.push('metric', String(rt.metric));
  if (rt.flags?.includes('onlink')) args.push('onlink');
  return args;
}
