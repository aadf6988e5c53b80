// A network of a given mode: switch + gateway + services, composed.
//   user      QEMU's -netdev user semantics (slirp addressing, NAT unless restrict=on)
//   nat       a shared segment for many VMs with DHCP, DNS by hostname, NAT to the outside
//             and the host reachable at the gateway address (like libvirt's NAT network)
//   isolated  guests, DHCP and DNS, and no way out (libvirt's isolated network)
// Attach points (where QEMU connects) are part of the network; the daemon and the CLI only
// build the options and read the state.
//
// IPv6 (when `ipv6` is given): the gateway answers NDP on the prefix and its link-local
// address, router advertisements configure guests (SLAAC; DHCPv6 for addresses when a range
// is set, else for DNS and boot information only), DNS answers on the IPv6 DNS address too,
// and the NATs carry IPv6 to the host's IPv6 sockets, the router address meaning the host's
// ::1 as the IPv4 gateway means 127.0.0.1.
import { Switch, type SwitchPort } from '../switch/switch.ts';
import { Gateway } from '../stack/gateway.ts';
import { TcpStack } from '../stack/tcp/stack.ts';
import type { TcpConn } from '../stack/tcp/conn.ts';
import { DhcpServer, type StaticHost, type Lease, type LeaseEvent } from '../services/dhcp.ts';
import { TcpNat } from '../services/tcp-nat.ts';
import { UdpNat } from '../services/udp-nat.ts';
import { HostForwarder, type ActiveHostFwd } from '../services/hostfwd.ts';
import type { ForwardRule, NetworkMode } from '../common/types.ts';
import { GuestForwarder, type GuestFwdRule } from '../services/guestfwd.ts';
import { DnsForwarder } from '../services/dns.ts';
import { TYPE_A, TYPE_AAAA } from '../services/dns-codec.ts';
import { RouterAdvertiser } from '../services/router-adv.ts';
import { Dhcp6Server, type Lease6, type LeaseEvent6 } from '../services/dhcp6.ts';
import type { HostAddrs } from '../services/host-target.ts';
import { V6_BASE, inPrefix6, parseAddr } from '../stack/addr.ts';
import { serveDnsStream } from '../services/dns-tcp.ts';
import { TftpServer } from '../services/tftp.ts';
import { IcmpNat } from '../services/icmp-nat.ts';
import { readResolvConf, type Upstream } from '../services/upstreams.ts';
import { ip4ToString, macKey, macKeyToString, parseIp4, parseIp6 } from '../wire/addr.ts';

import { StreamConnector, type StreamAddress } from '../link/stream.ts';
import { connectAttachPoint, listenAttachPoint, type AttachSpec } from './attach.ts';
import type { Port } from '../link/port.ts';
import { logger } from '../util/log.ts';
import { BridgeUdpHost, GatewaySockets } from './bridge-services.ts';

export interface DnsRecord { name: string; ip: number }

/** IPv6 on a network (text addresses; the network interns them). */
export interface Ipv6Options {
  /** the network's prefix, e.g. 'fec0::' with prefixLen 64 */
  prefix: string;
  prefixLen: number;
  /** the router address (the guests' default router; in NAT modes also the host's ::1) */
  router: string;
  /** the DNS server address (may be the router's) */
  dns: string;
  /** the router's link-local address; default fe80::1 (user mode: fe80::2, as slirp) */
  linkLocal?: string;
  /** DHCPv6 stateful pool; absent: SLAAC only (DHCPv6 still answers information requests) */
  dhcpRange?: { start: string; end: string };
  /** static IPv6 hosts (DHCPv6 hands the address to the MAC; DNS answers AAAA by name) */
  hosts?: { mac: string; ip: string; hostname?: string }[];
}

export interface NetworkOptions {
  name: string;
  mode: NetworkMode;
  net: number;
  prefix: number;
  /** the router address (and, in user/nat mode, the host's loopback as the guest sees it) */
  gateway: number;
  /** DNS server address (slirp: .3; shared networks: the gateway) */
  dns: number;
  /** first DHCP address and pool size (undefined size: to the end of the subnet) */
  dhcpStart: number;
  dhcpSize?: number;
  leaseTime?: number;
  staticHosts?: StaticHost[];
  domain?: string;
  dnsSearch?: string[];
  /** DHCP hostname option for every guest (QEMU hostname=) */
  hostname?: string;
  records?: DnsRecord[];
  /** DNS upstreams; undefined: the host's /etc/resolv.conf */
  upstreams?: Upstream[];
  mtu?: number;
  tftp?: string;
  tftpServerName?: string;
  bootfile?: string;
  /** user mode restrict=on: no NAT at all */
  restrict?: boolean;
  forwards?: ForwardRule[];
  guestfwd?: GuestFwdRule[];
  listen?: AttachSpec[];
  connect?: AttachSpec[];
  pcap?: string;
  maxConnsPerGuest?: number;
  onLease?: (lease: Lease, event: LeaseEvent) => void;
  onLease6?: (lease: Lease6, event: LeaseEvent6) => void;
  /**
   * A kernel network: the guests are on this Linux bridge, which routes and NATs for them
   * (src/host). The network then only serves DHCP and DNS there (bridge-services.ts), with the
   * bridge's MAC as the gateway's; no attach points, no userspace NAT or forwards.
   */
  bridge?: { name: string; mac: Buffer };
  /** IPv6 on the segment; absent: IPv4 only */
  ipv6?: Ipv6Options;
}

/** The first `len` bits of an address, the rest zero. */
function maskPrefix(b: Buffer, len: number): Buffer {
  const out = Buffer.from(b);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, len - 8 * i));
    out[i] &= bits === 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
  }
  return out;
}

function addr(s: string, what: string): number {
  const a = parseAddr(s);
  if (a === null || a < V6_BASE) throw new Error(`${what} '${s}' is not an IPv6 address`);
  return a;
}

/** slirp-style gateway MAC: 52:55 followed by the gateway address. */
function gatewayMac(addr: number): Buffer {
  const m = Buffer.alloc(6);
  m[0] = 0x52; m[1] = 0x55;
  m.writeUInt32BE(addr >>> 0, 2);
  return m;
}

export class Network {
  readonly log;
  readonly sw: Switch;
  readonly gw: Gateway;
  readonly tcp: TcpStack;
  readonly dhcp: DhcpServer;
  readonly dns: DnsForwarder;
  readonly tftp: TftpServer | null;
  readonly tftp6: TftpServer | null;
  readonly tcpNat: TcpNat | null;
  readonly udpNat: UdpNat | null;
  readonly icmpNat: IcmpNat | null;
  readonly hostfwd: HostForwarder;
  readonly guestfwd: GuestForwarder;
  readonly ra: RouterAdvertiser | null;
  readonly dhcp6: Dhcp6Server | null;
  /** the gateway's addresses that stand for the host, per family */
  readonly hostAddrs: HostAddrs;
  /** the IPv6 prefix (masked) and the DNS address id, when the network has IPv6 */
  readonly prefix6: { prefix: Buffer; len: number; dns: number; router: number } | null;
  /** NAT to the outside and the gateway address reaching host loopback */
  readonly nat: boolean;
  /** MACs seen on two live ports at once */
  readonly duplicateMacs = new Map<string, { ports: string[]; at: number }>();
  private readonly closers: (() => void)[] = [];
  private readonly connectors = new Map<string, StreamConnector>();
  /** port -> VM name, for ports qnet knows the owner of */
  readonly portOwners = new Map<Port, string>();
  /** VM name -> MAC for VMs attached through qnet: their names resolve even if the guest sends none */
  readonly vmMacs = new Map<string, string>();
  /** a kernel network: the DHCP server's host on the bridge, and the DNS sockets */
  readonly bridgeHost: BridgeUdpHost | null;
  bridgeSockets: GatewaySockets | null = null;

  private constructor(readonly opts: NetworkOptions) {
    this.log = logger(`net/${opts.name}`);
    const guestfwdRules = opts.guestfwd ?? [];
    const addrs = [opts.gateway, ...(opts.dns !== opts.gateway ? [opts.dns] : []), ...guestfwdRules.map((r) => r.server).filter((a) => a !== 0)];
    this.nat = !opts.bridge && (opts.mode === 'nat' || (opts.mode === 'user' && !opts.restrict));
    this.sw = new Switch();
    let ipv6;
    if (opts.ipv6) {
      const o6 = opts.ipv6;
      const raw = parseIp6(o6.prefix);
      if (!raw || !(o6.prefixLen >= 8 && o6.prefixLen <= 128)) throw new Error(`ipv6 prefix '${o6.prefix}/${o6.prefixLen}' is not an IPv6 prefix`);
      const prefix = maskPrefix(raw, o6.prefixLen);
      const router = addr(o6.router, 'ipv6 router');
      const dns = addr(o6.dns, 'ipv6 dns');
      if (!inPrefix6(router, prefix, o6.prefixLen) || !inPrefix6(dns, prefix, o6.prefixLen)) throw new Error(`the IPv6 router ${o6.router} and DNS ${o6.dns} must be inside ${o6.prefix}/${o6.prefixLen}`);
      this.prefix6 = { prefix, len: o6.prefixLen, dns, router };
      ipv6 = { prefix, prefixLen: o6.prefixLen, addrs: router === dns ? [router] : [router, dns], linkLocal: addr(o6.linkLocal ?? 'fe80::1', 'ipv6 link-local') };
    } else {
      this.prefix6 = null;
    }
    this.hostAddrs = { v4: opts.gateway, v6: this.prefix6?.router ?? -1 };
    this.gw = new Gateway({ mac: gatewayMac(opts.gateway), net: opts.net, prefix: opts.prefix, addrs, mtu: opts.mtu ?? 1500, ipv6 });
    // a kernel network: DHCP and DNS are served on the bridge; the switch and gateway stay empty
    this.bridgeHost = opts.bridge ? new BridgeUdpHost(opts.bridge.name, opts.bridge.mac, opts.gateway, opts.net, opts.prefix, opts.mtu ?? 1500, this.gw.timers) : null;
    const udpHost = this.bridgeHost ?? this.gw;
    this.sw.attach(this.gw);
    this.sw.onMacMove = (mac, from, to) => this.macMoved(mac, from, to);
    this.tcp = new TcpStack(this.gw, this.gw.timers, { maxConnsPerGuest: opts.maxConnsPerGuest });
    this.gw.onTcp = (p) => this.tcp.input(p.src, p.dst, p.buf, p.l4, p.l4End, p.pseudo);
    this.dhcp = new DhcpServer(udpHost, {
      serverIp: opts.gateway,
      router: opts.gateway,
      poolStart: opts.dhcpStart,
      poolSize: opts.dhcpSize,
      leaseTime: opts.leaseTime,
      dns: [opts.dns],
      domainName: opts.domain,
      dnsSearch: opts.dnsSearch?.length ? opts.dnsSearch : undefined,
      hostname: opts.hostname,
      mtu: opts.mtu && opts.mtu !== 1500 ? opts.mtu : undefined,
      tftpServerName: opts.tftpServerName,
      bootfile: opts.bootfile,
      staticHosts: opts.staticHosts,
      onLease: opts.onLease,
    });
    const shared = opts.mode !== 'user';
    this.dns = new DnsForwarder(udpHost, {
      listenIp: opts.dns,
      listenIps: this.prefix6 ? [this.prefix6.dns] : [],
      // an isolated network has no way out, not even for DNS
      upstreams: opts.mode === 'isolated' ? [] : opts.upstreams ?? readResolvConf(),
      resolveLocal: shared ? (name, type) => this.resolveLocal(name, type) : undefined,
    });
    this.tftp = opts.tftp ? new TftpServer(this.gw, { root: opts.tftp, listenIp: opts.gateway }) : null;
    // slirp serves TFTP on its IPv6 host address too
    this.tftp6 = opts.tftp && this.prefix6 ? new TftpServer(this.gw, { root: opts.tftp, listenIp: this.prefix6.router }) : null;
    this.tcpNat = this.nat ? new TcpNat(this.tcp, this.gw, this.hostAddrs) : null;
    this.udpNat = this.nat ? new UdpNat(this.gw, this.hostAddrs) : null;
    this.icmpNat = this.nat ? new IcmpNat(this.gw, this.hostAddrs) : null;
    if (this.prefix6 && ipv6) {
      const o6 = opts.ipv6!;
      const search = opts.dnsSearch?.length ? opts.dnsSearch : opts.domain ? [opts.domain] : undefined;
      // DHCPv6: stateful addresses from the range (and static hosts), always DNS/search/boot info
      this.dhcp6 = new Dhcp6Server(this.gw, {
        serverMac: this.gw.mac, serverAddr: ipv6.linkLocal, prefix: this.prefix6.prefix, prefixLen: this.prefix6.len,
        range: o6.dhcpRange, dns: [this.prefix6.dns], search, validLifetime: opts.leaseTime,
        bootfileUrl: opts.tftp && opts.bootfile ? `tftp://[${o6.router}]/${opts.bootfile}` : undefined,
        staticHosts: o6.hosts?.map((h) => ({ mac: h.mac, ip: h.ip, hostname: h.hostname })),
        onLease: opts.onLease6,
      });
      const ra = new RouterAdvertiser(this.gw, {
        prefix: this.prefix6.prefix, prefixLen: this.prefix6.len, linkLocal: ipv6.linkLocal, mtu: opts.mtu ?? 1500,
        dns: [this.prefix6.dns], search, managed: this.dhcp6.managed, other: true,
      });
      this.ra = ra;
      this.gw.onRouterSolicit = (p) => ra.solicited(p);
    } else {
      this.ra = null;
      this.dhcp6 = null;
    }
    this.guestfwd = new GuestForwarder(guestfwdRules);
    this.hostfwd = new HostForwarder(this.gw, this.tcp, this.hostAddrs, () => opts.dhcpStart, shared ? (n) => this.addressOf(n) : undefined);
    if (this.nat) {
      this.gw.natAddrs.add(opts.gateway);
      if (this.prefix6) this.gw.natAddrs.add(this.prefix6.router);
      const udp = this.udpNat!;
      const icmp = this.icmpNat!;
      this.gw.onUdp = (p, u) => udp.input(p, u);
      this.gw.onIcmp = (p, h) => icmp.input(p, h);
    }
    this.tcp.opener = (conn) => this.openTcp(conn);
  }

  get name(): string { return this.opts.name; }

  /** What a new guest TCP connection reaches. false = refused (RST). */
  private openTcp(conn: TcpConn): boolean {
    const g = this.guestfwd.match(conn.remoteIp, conn.remotePort);
    if (g) { this.guestfwd.open(conn, g); return true; }
    if ((conn.remoteIp === this.opts.dns || conn.remoteIp === this.prefix6?.dns) && conn.remotePort === 53) {
      conn.attach(serveDnsStream(this.dns));
      return true;
    }
    if (!this.tcpNat) return false;
    if ((this.gw.addrs.has(conn.remoteIp) || conn.remoteIp === this.gw.linkLocal) && !this.gw.natAddrs.has(conn.remoteIp)) return false;
    this.tcpNat.open(conn);
    return true;
  }

  // ---- names ----

  private shortName(name: string): string {
    let n = name.toLowerCase().replace(/\.$/, '');
    const d = this.opts.domain?.toLowerCase();
    if (d && n.endsWith(`.${d}`)) n = n.slice(0, -d.length - 1);
    return n;
  }

  /** A VM's current address by hostname (static hosts first, then leases). */
  addressOf(name: string): number | null {
    const n = this.shortName(name);
    for (const h of this.opts.staticHosts ?? []) {
      if (h.hostname?.toLowerCase() === n) return typeof h.ip === 'number' ? h.ip : parseIp4(h.ip);
    }
    const vmMac = this.vmMacs.get(n);
    let best: Lease | null = null;
    for (const l of this.dhcp.leases()) {
      if ((l.hostname?.toLowerCase() === n || l.mac === vmMac) && (!best || l.expiresAt > best.expiresAt)) best = l;
    }
    return best ? best.ip : null;
  }

  /**
   * A VM's IPv6 addresses on the prefix (the ones it formed or was given, as the gateway has
   * seen them), for AAAA answers and forwards by name.
   */
  addresses6Of(name: string): number[] {
    const p6 = this.prefix6;
    if (!p6) return [];
    const n = this.shortName(name);
    const out: number[] = [];
    const add = (a: number | null): void => { if (a !== null && !out.includes(a)) out.push(a); };
    // a static IPv6 host of that name, and whatever DHCPv6 gave the VM's MAC or the name
    const st = this.opts.ipv6?.hosts?.find((h) => h.hostname?.toLowerCase() === n);
    if (st) add(parseAddr(st.ip));
    const v4 = this.addressOf(n);
    let mac = this.vmMacs.get(n) ?? st?.mac.toLowerCase();
    if (!mac && v4 !== null) {
      const nb = this.gw.neighbours.get(v4);
      if (nb) mac = macKeyToString(macKey(nb.mac, 0));
    }
    for (const l of this.dhcp6?.leases() ?? []) {
      if (l.mac === mac || (!mac && l.hostname !== undefined && this.shortName(l.hostname) === n)) { mac ??= l.mac; add(parseAddr(l.ip)); }
    }
    if (!mac) return out;
    // then what it formed itself (SLAAC), as the gateway has seen it on the wire
    for (const [a, nb] of this.gw.neighbours6) {
      if (inPrefix6(a, p6.prefix, p6.len) && macKeyToString(macKey(nb.mac, 0)) === mac) add(a);
    }
    return out;
  }

  /** DNS for shared networks: guests by hostname, the gateway by a fixed name, extra records. */
  private resolveLocal(name: string, type: number): number[] | null | undefined {
    const full = name.toLowerCase().replace(/\.$/, '');
    const n = this.shortName(full);
    const inDomain = !this.opts.domain || full !== n || !full.includes('.');
    // records first: every record of the name, answered by family
    const recs = (this.opts.records ?? []).filter((r) => { const rn = r.name.toLowerCase().replace(/\.$/, ''); return rn === full || rn === n; });
    if (recs.length > 0) {
      if (type === TYPE_A) return recs.map((r) => r.ip).filter((a) => a < V6_BASE);
      if (type === TYPE_AAAA) return recs.map((r) => r.ip).filter((a) => a >= V6_BASE);
      return [];
    }
    const gatewayName = inDomain && (n === 'gateway' || n === 'host');
    const ip = !inDomain ? null : gatewayName ? this.opts.gateway : this.addressOf(n);
    const ip6s = !inDomain ? [] : gatewayName ? (this.prefix6 ? [this.prefix6.router] : []) : this.addresses6Of(n);
    if (ip === null && ip6s.length === 0) {
      // a name in our own domain that nobody has: authoritative NXDOMAIN, don't leak it upstream
      return this.opts.domain && full !== n ? null : undefined;
    }
    if (type === TYPE_A) return ip === null ? [] : [ip];
    if (type === TYPE_AAAA) return ip6s;
    return [];
  }

  // ---- ports ----

  private macMoved(mac: number, from: SwitchPort, to: SwitchPort): void {
    if (from.port.closed || from.port === this.gw) return;
    const m = macKeyToString(mac);
    const entry = { ports: [from.port.name, to.port.name], at: Date.now() };
    const first = !this.duplicateMacs.has(m);
    this.duplicateMacs.set(m, entry);
    if (first) this.log.warn('duplicate MAC on two ports: guests will lose traffic; give each NIC its own MAC', { mac: m, ports: entry.ports.join(' ') });
  }

  /** Duplicate MACs seen in the last 5 minutes. */
  duplicates(): string[] {
    const now = Date.now();
    for (const [m, e] of this.duplicateMacs) if (now - e.at > 300_000) this.duplicateMacs.delete(m);
    return [...this.duplicateMacs.keys()];
  }

  attachPort(p: Port, spec?: AttachSpec, owner?: string): void {
    // Registered before the switch's own close handler, so the port's MACs are still known.
    p.onClosed(() => this.portGone(p));
    this.sw.attach(p, spec?.port ?? {});
    if (owner) {
      this.portOwners.set(p, owner);
      p.onClosed(() => this.portOwners.delete(p));
    }
    this.log.info('guest port attached', { port: p.name, on: spec?.text ?? owner });
  }

  /**
   * A guest's port went away (QEMU exited or restarted): its flows can never complete, so
   * the host sides are closed now rather than lingering until keepalives give up.
   */
  private portGone(p: Port): void {
    const macs = new Set(this.sw.macsOn(p));
    if (macs.size === 0) return;
    let flows = 0;
    for (const table of [this.gw.neighbours, this.gw.neighbours6]) {
      for (const [ip, n] of [...table]) {
        if (!macs.has(macKeyToString(macKey(n.mac, 0)))) continue;
        flows += this.tcp.abortGuest(ip);
        this.udpNat?.closeGuest(ip);
        this.icmpNat?.closeGuest(ip);
      }
    }
    if (flows > 0) this.log.info('guest port closed: its connections were reset on the host side', { port: p.name, connections: flows });
  }

  /** Connect to a QEMU stream server (qnet run) and keep reconnecting while it lives. */
  connectVm(name: string, addr: StreamAddress): void {
    this.connectors.get(name)?.close();
    const c = new StreamConnector(addr);
    c.onPort = (p) => this.attachPort(p, undefined, name);
    c.start();
    this.connectors.set(name, c);
  }

  disconnectVm(name: string): void {
    this.connectors.get(name)?.close();
    this.connectors.delete(name);
  }

  static async start(opts: NetworkOptions): Promise<Network> {
    const n = new Network(opts);
    try {
      for (const f of opts.forwards ?? []) await n.hostfwd.add(f);
      for (const spec of opts.listen ?? []) {
        const point = await listenAttachPoint(spec, (p) => n.attachPort(p, spec));
        n.closers.push(() => point.close());
      }
      for (const spec of opts.connect ?? []) {
        const point = connectAttachPoint(spec, (p) => n.attachPort(p, spec));
        n.closers.push(() => point.close());
      }
      if (opts.pcap) n.sw.startCapture(opts.pcap);
      if (n.bridgeHost) {
        const host = n.bridgeHost;
        n.closers.push(() => host.close());
        const socks = await GatewaySockets.start(opts.gateway, n.dns);
        n.bridgeSockets = socks;
        n.closers.push(() => socks.close());
      }
    } catch (err) {
      n.close();
      throw err;
    }
    return n;
  }

  /** Forwards currently active. */
  forwards(): ActiveHostFwd[] { return this.hostfwd.rules; }

  stats(): Record<string, unknown> {
    return {
      switch: this.sw.stats,
      gateway: this.gw.stats,
      tcp: { ...this.tcp.stats, connections: this.tcp.size },
      tcpNat: this.tcpNat?.stats ?? null,
      udpNat: this.udpNat ? { ...this.udpNat.stats, active: this.udpNat.size } : null,
      icmpNat: this.icmpNat ? { ...this.icmpNat.stats, mode4: this.icmpNat.mode(false), mode6: this.prefix6 ? this.icmpNat.mode(true) : null } : null,
      arp: this.gw.arp.stats,
      ndp: this.gw.ndp?.stats ?? null,
      ra: this.ra?.stats ?? null,
      dhcp: this.dhcp.stats,
      dns: this.dns.stats,
      tftp: this.tftp?.stats ?? null,
      tftp6: this.tftp6?.stats ?? null,
      bridge: this.bridgeHost ? { dhcp: this.bridgeHost.stats, sockets: this.bridgeSockets?.stats ?? null } : null,
      leases: this.dhcp.leases().map((l) => ({ ...l, ip: ip4ToString(l.ip) })),
      dhcp6: this.dhcp6?.stats ?? null,
      leases6: this.dhcp6?.leases() ?? [],
      hostfwd: this.hostfwd.rules.map((r) => ({ proto: r.proto, hostAddr: r.hostAddr, hostPort: r.boundPort, guest: r.guest, guestPort: r.guestPort, connections: r.connections })),
      ports: [...this.sw.ports.values()].map((sp) => ({ id: sp.port.id, name: sp.port.name, macs: this.sw.macsOn(sp.port), ...sp.port.counters, drops: sp.drops })),
      duplicateMacs: this.duplicates(),
    };
  }

  close(): void {
    for (const c of this.closers.splice(0)) c();
    for (const c of this.connectors.values()) c.close();
    this.connectors.clear();
    this.hostfwd.closeAll();
    this.ra?.close();
    this.dhcp6?.close();
    this.tcp.close();
    this.udpNat?.closeAll();
    this.icmpNat?.closeAll();
    this.dns.close();
    this.tftp?.close();
    this.tftp6?.close();
    this.dhcp.close();
    this.sw.close();
  }
}
