// Names on a shared network: who a name belongs to, and what DNS answers for it.
//
// A name belongs to its static host, else to the VM registered under it (`qnet attach`/`qnet
// run` record VM name -> MAC in vmMacs), else to the first live lease that asked for it (then
// the first live DHCPv6 lease). Another MAC asking DHCP for a taken name gets an address but not
// the name (nameAllowed, asked by the DHCP server). DNS (resolveLocal) and forwards by name
// (addressOf) resolve to the owner only, never to whoever asked for the name last; a VM's IPv6
// addresses are those DHCPv6 gave its owner's MAC and those the gateway saw that MAC use.
import type { DhcpServer, StaticHost } from '../services/dhcp.ts';
import type { Dhcp6Server } from '../services/dhcp6.ts';
import { TYPE_A, TYPE_AAAA } from '../services/dns-codec.ts';
import { V6_BASE, inPrefix6, parseAddr } from '../stack/addr.ts';
import { macKey, macKeyToString, parseIp4 } from '../wire/addr.ts';
import type { DnsRecord, Ipv6Options } from './network.ts';

/** What the names are read from (the network's parts; read at each call, never copied). */
export interface NameSources {
  opts: { staticHosts?: StaticHost[]; ipv6?: Ipv6Options; domain?: string; records?: DnsRecord[]; gateway: number };
  dhcp: DhcpServer;
  dhcp6: Dhcp6Server | null;
  /** VM name -> MAC */
  vmMacs: Map<string, string>;
  prefix6: { prefix: Buffer; len: number; router: number } | null;
  /** the gateway's IPv6 neighbours */
  neighbours6: Map<number, { mac: Buffer }>;
}

export class Names {
  constructor(private readonly s: NameSources) {}

  private shortName(name: string): string {
    let n = name.toLowerCase().replace(/\.$/, '');
    const d = this.s.opts.domain?.toLowerCase();
    if (d && n.endsWith(`.${d}`)) n = n.slice(0, -d.length - 1);
    return n;
  }

  private staticIp(h: StaticHost): number | null { return typeof h.ip === 'number' ? h.ip : parseIp4(h.ip); }

  /**
   * Who `name` belongs to: its static host (IPv4, else IPv6), else the VM registered under it
   * (with that VM's address, or null while it has none), else the first live DHCP lease that
   * carries it, else the first live DHCPv6 lease. ip is the owner's IPv4 address (or null).
   */
  nameOwner(name: string): { mac: string; ip: number | null; by: 'static' | 'vm' | 'lease' } | null {
    const n = this.shortName(name);
    const statics = this.s.opts.staticHosts ?? [];
    for (const h of statics) {
      if (h.hostname?.toLowerCase() === n) return { mac: h.mac.toLowerCase(), ip: this.staticIp(h), by: 'static' };
    }
    const st6 = this.s.opts.ipv6?.hosts?.find((h) => h.hostname?.toLowerCase() === n);
    if (st6) {
      const mac = st6.mac.toLowerCase();
      const st4 = statics.find((h) => h.mac.toLowerCase() === mac);
      return { mac, ip: st4 ? this.staticIp(st4) : this.s.dhcp.leases().find((x) => x.mac === mac)?.ip ?? null, by: 'static' };
    }
    const leases = this.s.dhcp.leases();
    const vmMac = this.s.vmMacs.get(n);
    if (vmMac !== undefined) {
      const st = statics.find((h) => h.mac.toLowerCase() === vmMac);
      const ip = st ? this.staticIp(st) : leases.find((l) => l.mac === vmMac)?.ip ?? null;
      return { mac: vmMac, ip, by: 'vm' };
    }
    const l = leases.find((x) => x.hostname?.toLowerCase() === n);
    if (l) return { mac: l.mac, ip: l.ip, by: 'lease' };
    // else the first live DHCPv6 lease (FQDN) of that name (an owner without an IPv4 address)
    const l6 = this.s.dhcp6?.leases().find((x) => x.hostname !== undefined && this.shortName(x.hostname) === n);
    return l6 ? { mac: l6.mac, ip: null, by: 'lease' } : null;
  }

  /** A VM's current address by name: its owner's (see nameOwner). */
  addressOf(name: string): number | null {
    return this.nameOwner(name)?.ip ?? null;
  }

  /** DHCP asks before binding `mac` under `name`: only a free name or the owner's own (else: whose it is). */
  nameAllowed(mac: string, name: string): true | string {
    const owner = this.nameOwner(name);
    if (owner === null || owner.mac === mac) return true;
    return `${owner.by === 'static' ? 'static host' : owner.by === 'vm' ? 'VM' : 'lease of'} ${owner.mac}`;
  }

  /**
   * A VM's IPv6 addresses on the prefix (the ones it formed or was given, as the gateway has
   * seen them), for AAAA answers and forwards by name.
   */
  addresses6Of(name: string): number[] {
    const p6 = this.s.prefix6;
    if (!p6) return [];
    const n = this.shortName(name);
    const out: number[] = [];
    const add = (a: number | null): void => { if (a !== null && !out.includes(a)) out.push(a); };
    // a static IPv6 host of that name, and whatever DHCPv6 gave the name's owner (by its MAC:
    // never whoever answers ARP for the owner's IPv4 address or asks for the name later)
    const st = this.s.opts.ipv6?.hosts?.find((h) => h.hostname?.toLowerCase() === n);
    if (st) add(parseAddr(st.ip));
    const mac = this.nameOwner(n)?.mac;
    if (!mac) return out;
    for (const l of this.s.dhcp6?.leases() ?? []) if (l.mac === mac) add(parseAddr(l.ip));
    // then what it formed itself (SLAAC), as the gateway has seen it on the wire
    for (const [a, nb] of this.s.neighbours6) {
      if (inPrefix6(a, p6.prefix, p6.len) && macKeyToString(macKey(nb.mac, 0)) === mac) add(a);
    }
    return out;
  }

  /** DNS for shared networks: guests by hostname, the gateway by a fixed name, extra records. */
  resolveLocal(name: string, type: number): number[] | null | undefined {
    const full = name.toLowerCase().replace(/\.$/, '');
    const n = this.shortName(full);
    const inDomain = !this.s.opts.domain || full !== n || !full.includes('.');
    // records first: every record of the name, answered by family
    const recs = (this.s.opts.records ?? []).filter((r) => { const rn = r.name.toLowerCase().replace(/\.$/, ''); return rn === full || rn === n; });
    if (recs.length > 0) {
      if (type === TYPE_A) return recs.map((r) => r.ip).filter((a) => a < V6_BASE);
      if (type === TYPE_AAAA) return recs.map((r) => r.ip).filter((a) => a >= V6_BASE);
      return [];
    }
    const gatewayName = inDomain && (n === 'gateway' || n === 'host');
    const ip = !inDomain ? null : gatewayName ? this.s.opts.gateway : this.addressOf(n);
    const ip6s = !inDomain ? [] : gatewayName ? (this.s.prefix6 ? [this.s.prefix6.router] : []) : this.addresses6Of(n);
    if (ip === null && ip6s.length === 0) {
      // a name in our own domain that nobody has: authoritative NXDOMAIN, don't leak it upstream
      return this.s.opts.domain && full !== n ? null : undefined;
    }
    if (type === TYPE_A) return ip === null ? [] : [ip];
    if (type === TYPE_AAAA) return ip6s;
    return [];
  }
}
