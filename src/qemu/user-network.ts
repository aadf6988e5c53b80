// `-netdev user` (QEMU's option string, validated by src/qemu/user-options.ts) as a qnet
// network: slirp's addressing and services, served by the generic Network. IPv6 is on by
// default, as in QEMU 7.2 (fec0::/64, router fec0::2, DNS fec0::3, link-local fe80::2).
import { Network, type NetworkOptions } from '../network/network.ts';
import type { HostFwd, UserNetdevConfig } from './user-options.ts';
import type { GuestFwdRule } from '../services/guestfwd.ts';
import type { Upstream } from '../services/upstreams.ts';
import type { AttachSpec } from '../network/attach.ts';
import { parseIp4, parseIp6 } from '../wire/addr.ts';
import { parseQemuOpts, formatQemuOpts } from './opts.ts';
import { parseHostFwdExtended, parseUserNetdev } from './user-options.ts';

/** A -netdev user option string plus qnet's own keys (dnsupstream=, mtu=) and IPv6 hostfwd. */
export interface UserCliOptions { config: UserNetdevConfig; dnsUpstreams?: { host: string; port: number }[]; mtu?: number }

/** Split qnet's extra keys out of a -netdev user option string and validate the rest as QEMU would. */
export function parseUserCliOptions(optstr: string): UserCliOptions {
  const parsed = parseQemuOpts(optstr);
  if (parsed.error) throw new Error(parsed.error);
  const rest: [string, string][] = [];
  const dnsUpstreams: { host: string; port: number }[] = [];
  const extraFwd: HostFwd[] = [];
  let mtu: number | undefined;
  for (const e of parsed.entries) {
    if (e.key === 'dnsupstream') {
      const m = /^(?:(\d+\.\d+\.\d+\.\d+)|\[([0-9a-fA-F:.]+)\])(?::(\d+))?$/.exec(e.value);
      const ok = m && (m[1] ? parseIp4(m[1]) !== null : parseIp6(m[2]) !== null) && (m[3] === undefined || (Number(m[3]) > 0 && Number(m[3]) < 65536));
      if (!m || !ok) throw new Error(`Parameter 'dnsupstream' expects an IPv4 address or [IPv6 address], then :port if not 53, got '${e.value}'`);
      dnsUpstreams.push({ host: m[1] ?? m[2], port: m[3] ? Number(m[3]) : 53 });
    } else if (e.key === 'hostfwd' && e.value.includes('[')) {
      const r = parseHostFwdExtended(e.value)!;
      if (!r.ok) throw new Error(`hostfwd: ${r.error}`);
      extraFwd.push(r.fwd);
    } else if (e.key === 'mtu') {
      mtu = Number(e.value);
      if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65521) throw new Error(`Parameter 'mtu' expects an integer 576-65521, got '${e.value}'`);
    } else if (e.shortBool) {
      rest.push([e.key, e.value === 'on' ? 'on' : 'off']);
    } else {
      rest.push([e.key, e.value]);
    }
  }
  const r = parseUserNetdev(formatQemuOpts(rest));
  if (!r.ok) throw new Error(r.error);
  // Options QEMU accepts that qnet does not serve: refuse or say so, never ignore silently.
  if (r.config.smb !== undefined) {
    throw new Error(`Parameter 'smb' is not supported by qnet (QEMU runs the host's smbd for it); share the directory another way: a guestfwd to an SMB server you run, or tftp=`);
  }
  if (!r.config.ipv4) throw new Error(`ipv4=off: qnet serves IPv6 beside IPv4 (ipv6=on, the default), not IPv6 alone; drop ipv4=off`);
  r.config.hostfwd.push(...extraFwd);
  return { config: r.config, dnsUpstreams: dnsUpstreams.length ? dnsUpstreams : undefined, mtu };
}

export interface UserNetworkOptions {
  config: UserNetdevConfig;
  /** DNS upstreams; default: the host's /etc/resolv.conf */
  dnsUpstreams?: Upstream[];
  listen?: AttachSpec[];
  connect?: AttachSpec[];
  mtu?: number;
  pcap?: string;
  maxConnsPerGuest?: number;
  name?: string;
}

function ip(s: string, what: string): number {
  const v = parseIp4(s);
  if (v === null) throw new Error(`${what} '${s}' is not an IPv4 address`);
  return v;
}

export function guestfwdRules(c: UserNetdevConfig): GuestFwdRule[] {
  return c.guestfwd.map((g) => {
    const t = g.target;
    if (t.kind === 'chardev') throw new Error(`guestfwd ${g.raw}: target '${t.spec}' is not supported by qnet (use cmd:, tcp: or unix:)`);
    const target = t.kind === 'cmd' ? t : t.kind === 'unix' ? { kind: 'unix' as const, path: t.path } : { kind: 'tcp' as const, host: t.host, port: Number(t.port) };
    if (target.kind === 'tcp' && !(target.port > 0 && target.port < 65536)) throw new Error(`guestfwd ${g.raw}: bad target port`);
    return { server: g.server ? ip(g.server, 'guestfwd server') : 0, port: g.port, target, text: g.raw };
  });
}

/** The generic network's options for a -netdev user configuration. */
export function userNetworkOptions(o: UserNetworkOptions): NetworkOptions {
    const c = o.config;
    if (c.prefixLength === null) throw new Error(`net=${c.net}/${c.netmask}: the netmask must be contiguous`);
    return {
      name: o.name ?? 'user',
      mode: 'user',
      net: ip(c.net, 'net'),
      prefix: c.prefixLength,
      gateway: ip(c.host, 'host'),
      dns: ip(c.dns, 'dns'),
      dhcpStart: ip(c.dhcpstart, 'dhcpstart'),
      domain: c.domainname,
      dnsSearch: c.dnssearch,
      hostname: c.hostname,
      upstreams: o.dnsUpstreams,
      mtu: o.mtu,
      tftp: c.tftp,
      tftpServerName: c.tftpServerName,
      bootfile: c.bootfile,
      restrict: c.restrict,
      forwards: c.hostfwd,
      guestfwd: guestfwdRules(c),
      listen: o.listen,
      connect: o.connect,
      pcap: o.pcap,
      maxConnsPerGuest: o.maxConnsPerGuest,
      // slirp's IPv6: the prefix (fec0::/64), the host and DNS addresses, router fe80::2
      ipv6: c.ipv6 ? { prefix: c.ipv6Prefix, prefixLen: c.ipv6PrefixLength, router: c.ipv6Host, dns: c.ipv6Dns, linkLocal: 'fe80::2' } : undefined,
    };
}

export const UserNetwork = {
  start(o: UserNetworkOptions): Promise<Network> { return Network.start(userNetworkOptions(o)); },
};
