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
//
// Names (shared networks, names.ts): a name belongs to its static host, else to the VM
// registered under it (vmMacs), else to the first live lease that asked for it; another MAC
// asking for it gets an address without the name (the `dhcp.nameTaken` limit).
//
// Limits: every limit hit by a guest of this network (DHCP leases per port, names, stream
// listener caps, ...) is reported to `limits`, which counts it for /metrics and logs it at
// most once per interval per port. DHCP learns which switch port a message came from through
// portOf(): the port the switch learned the frame's source MAC on.
//
// Sources (userspace networks): every guest port sends only from addresses it holds
// (source-guard.ts: its leases and static hosts, else what it used first, a few per port),
// and the NATs count flows per port, not per address, through `ownerOf` (so inventing
// addresses buys a guest nothing). Each host socket a guest flow opens takes a descriptor from
// the process's budget (`fdBudget`). When a port goes, every flow counted under it goes too.
// A port attached with `trusted` (a router guest, a segment of many guests) is not checked.
import { DEFAULT_VLAN, Switch, type SwitchPort } from '../switch/switch.ts';
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
import { RouterAdvertiser } from '../services/router-adv.ts';
import { Dhcp6Server, type Lease6, type LeaseEvent6 } from '../services/dhcp6.ts';
import type { HostAddrs } from '../services/host-target.ts';
import { V6_BASE, addrToString, inPrefix6, parseAddr } from '../stack/addr.ts';
import { serveDnsStream } from '../services/dns-tcp.ts';
import { TftpServer } from '../services/tftp.ts';
import { IcmpNat } from '../services/icmp-nat.ts';
import { readResolvConf, type Upstream } from '../services/upstreams.ts';
import { ip4ToString, macKey, macKeyToString, parseIp6 } from '../wire/addr.ts';
import { LimitLog } from '../util/limits.ts';
import type { FdBudget } from '../util/fds.ts';
import { SourceGuard } from './source-guard.ts';
import { Names } from './names.ts';
import { addrToBig } from '../services/dhcp6-leases.ts';

import { StreamConnector, type StreamAddress } from '../link/stream.ts';
import { connectAttachPoint, listenAttachPoint, type AttachSpec, type OpenAttachPoint } from './attach.ts';
import type { Port } from '../link/port.ts';
import { logger } from '../util/log.ts';
import { BridgeUdpHost, GatewaySockets } from './bridge-services.ts';

export interface DnsRecord { name: string; ip: number }

/** Owner keys of ports in the NATs' flow limits: above every address id (see ownerOf). */
const PORT_OWNER = 2 ** 48;

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
  /** TCP connections per guest port (per address where nothing holds it); default 4096, 0: no limit */
  maxConnsPerGuest?: number;
  /** of those, half-open (the host side still connecting) per guest port; default 256, 0: no limit */
  maxHalfOpenPerPort?: number;
  /** UDP NAT flows per guest port; default 512, 0: no limit */
  maxUdpFlowsPerPort?: number;
  /** ICMP echo flows per guest port; default 64, 0: no limit */
  maxPingFlowsPerPort?: number;
  /** addresses a port may use without a lease or static host: IPv4 (default 4) and IPv6 (default 16) */
  maxAddrsPerPort?: number;
  maxAddrs6PerPort?: number;
  /** false: no source validation on any port (default: on, userspace networks) */
  sourceGuard?: boolean;
  /** pool addresses one switch port may hold (DHCP); default 8, 0: no limit */
  maxLeasesPerPort?: number;
  /** the process's descriptor budget for guest flows (host sockets); none: unbounded */
  fdBudget?: FdBudget;
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
  private readonly attachPoints: OpenAttachPoint[] = [];
  private readonly connectors = new Map<string, StreamConnector>();
  /** port -> VM name, for ports qnet knows the owner of */
  readonly portOwners = new Map<Port, string>();
  /** VM name -> MAC for VMs attached through qnet: their names resolve even if the guest sends none */
  readonly vmMacs = new Map<string, string>();
  /** limit hits of this network's guests: counted for /metrics, logged once per interval */
  readonly limits: LimitLog;
  /**
   * Descriptors guest flows may hold (shared by every network of the process). The NAT
   * services are to tryAcquire() one per host socket they open for a guest and release() it
   * when it closes, refusing the flow (and reporting a limit hit) when it says no.
   */
  readonly fdBudget: FdBudget | null;
  /** which port may send from which address (null: kernel networks, or turned off) */
  readonly guard: SourceGuard | null;
  /** who a name belongs to, and what DNS answers for it */
  readonly names: Names;
  /** a kernel network: the DHCP server's host on the bridge, and the DNS sockets */
  readonly bridgeHost: BridgeUdpHost | null;
  bridgeSockets: GatewaySockets | null = null;

  private constructor(readonly opts: NetworkOptions) {
    this.log = logger(`net/${opts.name}`);
    this.limits = new LimitLog(this.log);
    this.fdBudget = opts.fdBudget ?? null;
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
    this.tcp = new TcpStack(this.gw, this.gw.timers, { maxConnsPerGuest: opts.maxConnsPerGuest, maxOpeningPerGuest: opts.maxHalfOpenPerPort });
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
      maxLeasesPerPort: opts.maxLeasesPerPort,
      // on a kernel network DHCP arrives from the bridge, not through the switch: no port is
      // known there (yet), so no per-port limit rather than one shared by every guest
      portOf: opts.bridge ? undefined : (mac) => this.sw.portOf(mac)?.name,
      limits: this.limits,
      nameAllowed: opts.mode !== 'user' ? (mac, name) => this.names.nameAllowed(mac, name) : undefined,
    });
    const shared = opts.mode !== 'user';
    this.dns = new DnsForwarder(udpHost, {
      listenIp: opts.dns,
      listenIps: this.prefix6 ? [this.prefix6.dns] : [],
      // an isolated network has no way out, not even for DNS
      upstreams: opts.mode === 'isolated' ? [] : opts.upstreams ?? readResolvConf(),
      resolveLocal: shared ? (name, type) => this.names.resolveLocal(name, type) : undefined,
      limits: this.limits,
    });
    this.tftp = opts.tftp ? new TftpServer(this.gw, { root: opts.tftp, listenIp: opts.gateway, limits: this.limits }) : null;
    // slirp serves TFTP on its IPv6 host address too
    this.tftp6 = opts.tftp && this.prefix6 ? new TftpServer(this.gw, { root: opts.tftp, listenIp: this.prefix6.router, limits: this.limits }) : null;
    this.tcpNat = this.nat ? new TcpNat(this.tcp, this.gw, this.hostAddrs, this.fdBudget) : null;
    this.udpNat = this.nat ? new UdpNat(this.gw, this.hostAddrs, { maxFlowsPerGuest: opts.maxUdpFlowsPerPort, fdBudget: this.fdBudget }) : null;
    this.icmpNat = this.nat ? new IcmpNat(this.gw, this.hostAddrs, { maxFlowsPerGuest: opts.maxPingFlowsPerPort, fdBudget: this.fdBudget }) : null;
    this.guard = opts.bridge || opts.sourceGuard === false ? null : new SourceGuard({
      net: opts.net, prefix: opts.prefix,
      gatewayOwns: (a) => this.gw.addrs.has(a) || a === this.gw.linkLocal,
      prefix6: this.prefix6 ? { prefix: this.prefix6.prefix, len: this.prefix6.len } : null,
      owner4: (ip) => this.dhcp.store.ownerOf(ip),
      owner6: (b, o) => this.dhcp6?.store.ownerOf(addrToBig(b, o)) ?? null,
      portOfMac: (b, o) => this.sw.portOf(b, o),
      max4: opts.maxAddrsPerPort, max6: opts.maxAddrs6PerPort,
      clock: this.gw.timers,
      onRelease: (a, from, why) => this.addressLeft(a, from, why),
      onTooMany: (port, max, v6) => this.limits.hit(v6 ? 'source.addresses6PerPort' : 'source.addressesPerPort', max, port.name,
        `a guest port sent from more ${v6 ? 'IPv6 ' : ''}addresses than it may hold without a lease; frames from new ones are dropped. A port that carries several guests needs limits.${v6 ? 'addresses6PerPort' : 'addressesPerPort'} raised (or the port attached with ,trusted)`),
    });
    // flows are counted per port, whatever addresses a guest invents (see ownerOf)
    const ownerOf = (ip: number): number => this.ownerOf(ip);
    this.tcp.limit.ownerOf = ownerOf;
    this.tcp.opening.ownerOf = ownerOf;
    this.tcp.onLimit = (ip, max, which) => {
      if (which === 'connections') {
        this.limits.hit('tcp.connectionsPerPort', max, this.portNameOf(ip),
          'a guest port has as many TCP connections as it may; new ones get ICMP administratively prohibited. Raise limits.connectionsPerPort if the guest needs more');
      } else {
        this.limits.hit('tcp.halfOpenPerPort', max, this.portNameOf(ip),
          'a guest port has as many connections still being connected on the host as it may (a SYN flood, or many slow destinations); new ones get ICMP administratively prohibited until some finish. Raise limits.halfOpenPerPort if the guest needs more');
      }
    };
    if (this.udpNat) {
      this.udpNat.limit.ownerOf = ownerOf;
      this.udpNat.onLimit = (ip, which, max) => this.flowLimit('udp', which, ip, max);
    }
    if (this.icmpNat) {
      this.icmpNat.limit.ownerOf = ownerOf;
      this.icmpNat.onLimit = (ip, which, max) => this.flowLimit('icmp', which, ip, max);
    }
    if (this.tcpNat) this.tcpNat.onLimit = (ip, max) => this.flowLimit('tcp', 'descriptors', ip, max);
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
    this.names = new Names({ opts, dhcp: this.dhcp, dhcp6: this.dhcp6, vmMacs: this.vmMacs, prefix6: this.prefix6, neighbours6: this.gw.neighbours6 });
  }

  get name(): string { return this.opts.name; }

  /** Whom a guest address's flows count against: the port holding it, else the address. */
  ownerOf(ip: number): number {
    const p = this.guard?.holderOf(ip);
    return p ? PORT_OWNER + p.id : ip;
  }

  /** A guest address's port for limit reports (else the address). */
  private portNameOf(ip: number): string {
    return this.guard?.holderOf(ip)?.name ?? addrToString(ip);
  }

  private flowLimit(proto: 'udp' | 'icmp' | 'tcp', which: string, ip: number, max: number): void {
    if (which === 'descriptors') {
      this.limits.hit('flows.descriptors', max, this.portNameOf(ip),
        'guest flows hold every descriptor the process set aside for them; new ones are refused. Raise the hard descriptor limit (ulimit -Hn, LimitNOFILE=)');
    } else if (which === 'flows') {
      this.limits.hit(`${proto}.flows`, max, this.portNameOf(ip), `the network has as many ${proto === 'icmp' ? 'ping' : proto.toUpperCase()} flows as it may; new ones are refused until some expire`);
    } else {
      const key = proto === 'udp' ? 'udpFlowsPerPort' : 'pingFlowsPerPort';
      this.limits.hit(`${proto}.${key}`, max, this.portNameOf(ip), `a guest port has as many ${proto === 'icmp' ? 'ping' : 'UDP'} flows as it may; new ones are refused until some expire. Raise limits.${key} if the guest needs more`);
    }
  }

  /** An address changed hands (a lease elsewhere, or its port's cap): what its old port ran from it goes. */
  private addressLeft(a: number, from: Port, why: string): void {
    const flows = this.tcp.abortGuest(a);
    this.udpNat?.closeGuest(a);
    this.icmpNat?.closeGuest(a);
    this.log.info('guest address left its port: its flows were closed', { address: addrToString(a), port: from.name, why, connections: flows });
  }

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

  // ---- names (names.ts) ----

  /** Who a name belongs to (see names.ts). */
  nameOwner(name: string): ReturnType<Names['nameOwner']> { return this.names.nameOwner(name); }

  /** A VM's current address by name: its owner's. */
  addressOf(name: string): number | null { return this.names.addressOf(name); }

  /** A VM's IPv6 addresses on the prefix. */
  addresses6Of(name: string): number[] { return this.names.addresses6Of(name); }

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
    const sp = this.sw.attach(p, spec?.port ?? {});
    if (this.guard && !spec?.trusted) sp.guard = this.guard.add(p, DEFAULT_VLAN).check;
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
    this.dhcp.forgetPort(p.name);
    this.guard?.remove(p);
    const owner = PORT_OWNER + p.id;
    let flows = this.tcp.abortOwner(owner, 'the guest port closed');
    this.udpNat?.closeOwner(owner);
    this.icmpNat?.closeOwner(owner);
    const macs = new Set(this.sw.macsOn(p));
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
        const point = await listenAttachPoint(spec, (p) => n.attachPort(p, spec), { limits: n.limits });
        n.closers.push(() => point.close());
        n.attachPoints.push(point);
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
      ports: [...this.sw.ports.values()].map((sp) => ({ id: sp.port.id, name: sp.port.name, macs: this.sw.macsOn(sp.port), ...sp.port.counters, drops: this.portDrops(sp) })),
      sourceGuard: this.guard ? { drops: this.guard.drops } : null,
      duplicateMacs: this.duplicates(),
      attachPoints: this.attachPoints.map((a) => a.stats()),
      limits: this.limits.snapshot(),
    };
  }

  /** A port's drops: the switch's reasons, and the source guard's as `source.<reason>`. */
  portDrops(sp: SwitchPort): Record<string, number> {
    const out: Record<string, number> = { ...sp.drops };
    const g = this.guard?.portAddrs(sp.port);
    if (g) for (const [k, v] of Object.entries(g.drops)) out[`source.${k}`] = v;
    return out;
  }

  /** The addresses a port holds (source guard), as text. */
  addressesOf(p: Port): string[] { return (this.guard?.addressesOf(p) ?? []).map(addrToString); }

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
