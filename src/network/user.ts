// `-netdev user` (QEMU's option string, validated by src/qemu/user-options.ts) as a qnet
// network: slirp's addressing and services, served by the generic Network.
import { Network } from './network.ts';
import type { UserNetdevConfig } from '../qemu/user-options.ts';
import type { GuestFwdRule } from '../services/guestfwd.ts';
import type { Upstream } from '../services/upstreams.ts';
import type { AttachSpec } from '../link/address.ts';
import { parseIp4 } from '../wire/addr.ts';

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

export const UserNetwork = {
  async start(o: UserNetworkOptions): Promise<Network> {
    const c = o.config;
    if (c.prefixLength === null) throw new Error(`net=${c.net}/${c.netmask}: the netmask must be contiguous`);
    return Network.start({
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
    });
  },
};
