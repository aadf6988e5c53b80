// A network of a given mode: switch + gateway + services, composed.
//   user      QEMU's -netdev user semantics (slirp addressing, NAT unless restrict=on)
//   nat       a shared segment for many VMs with DHCP, DNS by hostname, NAT to the outside
//             and the host reachable at the gateway address (like libvirt's NAT network)
//   isolated  guests, DHCP and DNS, and no way out (libvirt's isolated network)
// Attach points (where QEMU connects) are part of the network; the daemon and the CLI only
// build the options and read the state.
//
// Names (shared networks): a name belongs to its static host, else to the VM registered under
// it (`qnet attach`/`qnet run` record VM name -> MAC in vmMacs), else to the first live lease
// that asked for it. Another MAC asking DHCP for a taken name gets an address but not the
// name (logged and counted as the `dhcp.nameTaken` limit). DNS and forwards by name resolve to
// the owner only, never to whoever asked for the name last.
//
// Limits: every limit hit by a guest of this network (DHCP leases per port, names, stream
// listener caps, ...) is reported to `limits`, which counts it for /metrics and logs it at
// most once per interval per port. DHCP learns which switch port a message came from through
// portOf(): the port the switch learned the frame's source MAC on.
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
import { DnsForwarder, TYPE_A } from '../services/dns.ts';
import { serveDnsStream } from '../services/dns-tcp.ts';
import { TftpServer } from '../services/tftp.ts';
import { IcmpNat } from '../services/icmp-nat.ts';
import { readResolvConf, type Upstream } from '../services/upstreams.ts';
import { ip4ToString, macKey, macKeyToString, parseIp4 } from '../wire/addr.ts';
import { LimitLog } from '../util/limits.ts';
import type { FdBudget } from '../util/fds.ts';

import { StreamConnector, type StreamAddress } from '../link/stream.ts';
import { connectAttachPoint, listenAttachPoint, type AttachSpec, type OpenAttachPoint } from './attach.ts';
import type { Port } from '../link/port.ts';
import { logger } from '../util/log.ts';

export interface DnsRecord { name: string; ip: number }

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
  /** pool addresses one switch port may hold (DHCP); default 8, 0: no limit */
  maxLeasesPerPort?: number;
  /** the process's descriptor budget for guest flows (host sockets); none: unbounded */
  fdBudget?: FdBudget;
  onLease?: (lease: Lease, event: LeaseEvent) => void;
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
  readonly tcpNat: TcpNat | null;
  readonly udpNat: UdpNat | null;
  readonly icmpNat: IcmpNat | null;
  readonly hostfwd: HostForwarder;
  readonly guestfwd: GuestForwarder;
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

  private constructor(readonly opts: NetworkOptions) {
    this.log = logger(`net/${opts.name}`);
    this.limits = new LimitLog(this.log);
    this.fdBudget = opts.fdBudget ?? null;
    const guestfwdRules = opts.guestfwd ?? [];
    const addrs = [opts.gateway, ...(opts.dns !== opts.gateway ? [opts.dns] : []), ...guestfwdRules.map((r) => r.server).filter((a) => a !== 0)];
    this.nat = opts.mode === 'nat' || (opts.mode === 'user' && !opts.restrict);
    this.sw = new Switch();
    this.gw = new Gateway({ mac: gatewayMac(opts.gateway), net: opts.net, prefix: opts.prefix, addrs, mtu: opts.mtu ?? 1500 });
    this.sw.attach(this.gw);
    this.sw.onMacMove = (mac, from, to) => this.macMoved(mac, from, to);
    this.tcp = new TcpStack(this.gw, this.gw.timers, { maxConnsPerGuest: opts.maxConnsPerGuest });
    this.gw.onTcp = (p) => this.tcp.input(p.ip.src, p.ip.dst, p.buf, p.ip.payloadOffset, p.ip.payloadEnd);
    this.dhcp = new DhcpServer(this.gw, {
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
      portOf: (mac) => this.sw.portOf(mac)?.name,
      limits: this.limits,
      nameAllowed: opts.mode !== 'user' ? (mac, name) => this.nameAllowed(mac, name) : undefined,
    });
    const shared = opts.mode !== 'user';
    this.dns = new DnsForwarder(this.gw, {
      listenIp: opts.dns,
      // an isolated network has no way out, not even for DNS
      upstreams: opts.mode === 'isolated' ? [] : opts.upstreams ?? readResolvConf(),
      resolveLocal: shared ? (name, type) => this.resolveLocal(name, type) : undefined,
      limits: this.limits,
    });
    this.tftp = opts.tftp ? new TftpServer(this.gw, { root: opts.tftp, listenIp: opts.gateway, limits: this.limits }) : null;
    this.tcpNat = this.nat ? new TcpNat(this.tcp, this.gw, opts.gateway) : null;
    this.udpNat = this.nat ? new UdpNat(this.gw, opts.gateway) : null;
    this.icmpNat = this.nat ? new IcmpNat(this.gw, opts.gateway) : null;
    this.guestfwd = new GuestForwarder(guestfwdRules);
    this.hostfwd = new HostForwarder(this.gw, this.tcp, opts.gateway, () => opts.dhcpStart, shared ? (n) => this.addressOf(n) : undefined);
    if (this.nat) {
      this.gw.natAddrs.add(opts.gateway);
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
    if (conn.remoteIp === this.opts.dns && conn.remotePort === 53) {
      conn.attach(serveDnsStream(this.dns));
      return true;
    }
    if (!this.tcpNat) return false;
    if (this.gw.addrs.has(conn.remoteIp) && conn.remoteIp !== this.opts.gateway) return false;
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

  private staticIp(h: StaticHost): number | null { return typeof h.ip === 'number' ? h.ip : parseIp4(h.ip); }

  /**
   * Who `name` belongs to: its static host, else the VM registered under it (with that VM's
   * address, or null while it has none), else the first live lease that carries it.
   */
  nameOwner(name: string): { mac: string; ip: number | null; by: 'static' | 'vm' | 'lease' } | null {
    const n = this.shortName(name);
    const statics = this.opts.staticHosts ?? [];
    for (const h of statics) {
      if (h.hostname?.toLowerCase() === n) return { mac: h.mac.toLowerCase(), ip: this.staticIp(h), by: 'static' };
    }
    const leases = this.dhcp.leases();
    const vmMac = this.vmMacs.get(n);
    if (vmMac !== undefined) {
      const st = statics.find((h) => h.mac.toLowerCase() === vmMac);
      const ip = st ? this.staticIp(st) : leases.find((l) => l.mac === vmMac)?.ip ?? null;
      return { mac: vmMac, ip, by: 'vm' };
    }
    const l = leases.find((x) => x.hostname?.toLowerCase() === n);
    return l ? { mac: l.mac, ip: l.ip, by: 'lease' } : null;
  }

  /** A VM's current address by name: its owner's (see nameOwner). */
  addressOf(name: string): number | null {
    return this.nameOwner(name)?.ip ?? null;
  }

  /** DHCP asks before binding `mac` under `name`: only a free name or the owner's own (else: whose it is). */
  private nameAllowed(mac: string, name: string): true | string {
    const owner = this.nameOwner(name);
    if (owner === null || owner.mac === mac) return true;
    return `${owner.by === 'static' ? 'static host' : owner.by === 'vm' ? 'VM' : 'lease of'} ${owner.mac}`;
  }

  /** DNS for shared networks: guests by hostname, the gateway by a fixed name, extra records. */
  private resolveLocal(name: string, type: number): number[] | null | undefined {
    const full = name.toLowerCase().replace(/\.$/, '');
    const n = this.shortName(full);
    const inDomain = !this.opts.domain || full !== n || !full.includes('.');
    let ip: number | null = null;
    for (const r of this.opts.records ?? []) {
      const rn = r.name.toLowerCase().replace(/\.$/, '');
      if (rn === full || rn === n) { ip = r.ip; break; }
    }
    if (ip === null && inDomain) {
      if (n === 'gateway' || n === 'host') ip = this.opts.gateway;
      else ip = this.addressOf(n);
    }
    if (ip === null) {
      // a name in our own domain that nobody has: authoritative NXDOMAIN, don't leak it upstream
      return this.opts.domain && full !== n ? null : undefined;
    }
    return type === TYPE_A ? [ip] : [];
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
    this.dhcp.forgetPort(p.name);
    const macs = new Set(this.sw.macsOn(p));
    if (macs.size === 0) return;
    let flows = 0;
    for (const [ip, n] of this.gw.neighbours) {
      if (!macs.has(macKeyToString(macKey(n.mac, 0)))) continue;
      flows += this.tcp.abortGuest(ip);
      this.udpNat?.closeGuest(ip);
      this.icmpNat?.closeGuest(ip);
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
      icmpNat: this.icmpNat?.stats ?? null,
      dhcp: this.dhcp.stats,
      dns: this.dns.stats,
      tftp: this.tftp?.stats ?? null,
      leases: this.dhcp.leases().map((l) => ({ ...l, ip: ip4ToString(l.ip) })),
      hostfwd: this.hostfwd.rules.map((r) => ({ proto: r.proto, hostAddr: r.hostAddr, hostPort: r.boundPort, guest: r.guest, guestPort: r.guestPort, connections: r.connections })),
      ports: [...this.sw.ports.values()].map((sp) => ({ id: sp.port.id, name: sp.port.name, macs: this.sw.macsOn(sp.port), ...sp.port.counters, drops: sp.drops })),
      duplicateMacs: this.duplicates(),
      attachPoints: this.attachPoints.map((a) => a.stats()),
      limits: this.limits.snapshot(),
    };
  }

  close(): void {
    for (const c of this.closers.splice(0)) c();
    for (const c of this.connectors.values()) c.close();
    this.connectors.clear();
    this.hostfwd.closeAll();
    this.tcp.close();
    this.udpNat?.closeAll();
    this.icmpNat?.closeAll();
    this.dns.close();
    this.tftp?.close();
    this.dhcp.close();
    this.sw.close();
  }
}
