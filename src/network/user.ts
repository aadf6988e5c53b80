// A user-mode network (QEMU's `-netdev user`, served by qnet): a switch whose gateway port
// provides DHCP, DNS, TFTP, NAT for TCP/UDP/ICMP through host sockets, hostfwd and
// guestfwd, with slirp's addressing (10.0.2.0/24, host .2, DNS .3, DHCP from .15).
// Several guests may join one network (like several NICs on one QEMU hub).
import { Switch } from '../switch/switch.ts';
import { Gateway } from '../stack/gateway.ts';
import { TcpStack, type TcpConn } from '../stack/tcp.ts';
import { DhcpServer } from '../services/dhcp.ts';
import { TcpNat } from '../services/tcp-nat.ts';
import { UdpNat } from '../services/udp-nat.ts';
import { HostForwarder, type HostFwdRule } from '../services/hostfwd.ts';
import { GuestForwarder, type GuestFwdRule } from '../services/guestfwd.ts';
import { parseIp4 } from '../wire/addr.ts';
import type { UserNetdevConfig } from '../qemu/user-options.ts';
import type { AttachSpec } from '../link/address.ts';
import { StreamConnector, StreamListener } from '../link/stream.ts';
import { McastPort, UdpEndpoint } from '../link/dgram.ts';
import type { Port } from '../link/port.ts';
import { logger } from '../util/log.ts';
import { DnsForwarder, serveDnsStream } from '../services/dns.ts';
import { TftpServer } from '../services/tftp.ts';
import { IcmpNat } from '../services/icmp-nat.ts';
import { readResolvConf, type Upstream } from '../services/upstreams.ts';

const log = logger('user');

export interface UserNetworkOptions {
  config: UserNetdevConfig;
  /** DNS upstreams; default: the host's /etc/resolv.conf */
  dnsUpstreams?: Upstream[];
  listen?: AttachSpec[];
  connect?: AttachSpec[];
  mtu?: number;
  pcap?: string;
  /** most TCP connections per guest address */
  maxConnsPerGuest?: number;
}

function ip(s: string, what: string): number {
  const v = parseIp4(s);
  if (v === null) throw new Error(`${what} '${s}' is not an IPv4 address`);
  return v;
}

/** slirp-style gateway MAC: 52:55 followed by the host address. */
function gatewayMac(host: number): Buffer {
  const m = Buffer.alloc(6);
  m[0] = 0x52; m[1] = 0x55;
  m.writeUInt32BE(host >>> 0, 2);
  return m;
}

export class UserNetwork {
  readonly sw: Switch;
  readonly gw: Gateway;
  readonly tcp: TcpStack;
  readonly dhcp: DhcpServer;
  readonly dns: DnsForwarder;
  readonly tftp: TftpServer | null;
  readonly tcpNat: TcpNat;
  readonly udpNat: UdpNat;
  readonly icmpNat: IcmpNat | null;
  readonly hostfwd: HostForwarder;
  readonly guestfwd: GuestForwarder;
  readonly hostAddr: number;
  readonly dnsAddr: number;
  readonly dhcpStart: number;
  readonly restrict: boolean;
  private readonly closers: (() => void)[] = [];

  private constructor(readonly opts: UserNetworkOptions) {
    const c = opts.config;
    if (c.prefixLength === null) throw new Error(`net=${c.net}/${c.netmask}: the netmask must be contiguous`);
    const net = ip(c.net, 'net');
    const prefix = c.prefixLength;
    this.hostAddr = ip(c.host, 'host');
    this.dnsAddr = ip(c.dns, 'dns');
    this.dhcpStart = ip(c.dhcpstart, 'dhcpstart');
    this.restrict = c.restrict;
    const guestfwdRules: GuestFwdRule[] = c.guestfwd.map((g) => {
      const t = g.target;
      if (t.kind === 'chardev') throw new Error(`guestfwd ${g.raw}: target '${t.spec}' is not supported by qnet (use cmd:, tcp: or unix:)`);
      const target = t.kind === 'cmd' ? t : t.kind === 'unix' ? { kind: 'unix' as const, path: t.path } : { kind: 'tcp' as const, host: t.host, port: Number(t.port) };
      if (target.kind === 'tcp' && !(target.port > 0 && target.port < 65536)) throw new Error(`guestfwd ${g.raw}: bad target port '${t.kind === 'tcp' ? t.port : ''}'`);
      return { server: g.server ? ip(g.server, 'guestfwd server') : 0, port: g.port, target, text: g.raw };
    });
    const addrs = [this.hostAddr, this.dnsAddr, ...guestfwdRules.map((r) => r.server).filter((a) => a !== 0)];
    this.sw = new Switch({ mtu: 0 });
    this.gw = new Gateway({ mac: gatewayMac(this.hostAddr), net, prefix, addrs, mtu: opts.mtu ?? 1500 });
    this.sw.attach(this.gw);
    this.tcp = new TcpStack(this.gw, { maxConnsPerGuest: opts.maxConnsPerGuest });
    this.dhcp = new DhcpServer(this.gw, {
      serverIp: this.hostAddr,
      router: this.hostAddr,
      poolStart: this.dhcpStart,
      dns: [this.dnsAddr],
      domainName: c.domainname,
      dnsSearch: c.dnssearch.length ? c.dnssearch : undefined,
      hostname: c.hostname,
      mtu: opts.mtu && opts.mtu !== 1500 ? opts.mtu : undefined,
      tftpServerName: c.tftpServerName,
      bootfile: c.bootfile,
    });
    this.dns = new DnsForwarder(this.gw, { listenIp: this.dnsAddr, upstreams: opts.dnsUpstreams ?? readResolvConf() });
    this.tftp = c.tftp ? new TftpServer(this.gw, { root: c.tftp, listenIp: this.hostAddr }) : null;
    this.tcpNat = new TcpNat(this.tcp, this.gw, this.hostAddr);
    this.udpNat = new UdpNat(this.gw, this.hostAddr);
    this.icmpNat = this.restrict ? null : new IcmpNat(this.gw, this.hostAddr);
    this.guestfwd = new GuestForwarder(guestfwdRules);
    this.hostfwd = new HostForwarder(this.gw, this.tcp, this.hostAddr, () => this.dhcpStart);
    if (!this.restrict) {
      this.gw.natAddrs.add(this.hostAddr);
      this.gw.onUdp = (p, u) => this.udpNat.input(p, u);
      const icmp = this.icmpNat;
      if (icmp) this.gw.onIcmp = (p, h) => icmp.input(p, h);
    }
    this.tcp.opener = (conn) => this.openTcp(conn);
  }

  /** What a new guest TCP connection reaches. false = refused (RST). */
  private openTcp(conn: TcpConn): boolean {
    const g = this.guestfwd.match(conn.remoteIp, conn.remotePort);
    if (g) { this.guestfwd.open(conn, g); return true; }
    if (conn.remoteIp === this.dnsAddr) {
      if (conn.remotePort !== 53) return false;
      const stream = serveDnsStream(this.dns);
      conn.attach(stream);
      return true;
    }
    if (this.restrict) return false;
    if (this.gw.addrs.has(conn.remoteIp) && conn.remoteIp !== this.hostAddr) return false;
    this.tcpNat.open(conn);
    return true;
  }

  static async start(opts: UserNetworkOptions): Promise<UserNetwork> {
    const n = new UserNetwork(opts);
    try {
      for (const f of opts.config.hostfwd) await n.hostfwd.add(f as HostFwdRule);
      const attach = (spec: AttachSpec) => (p: Port) => {
        n.sw.attach(p, spec.port);
        log.info('guest port attached', { port: p.name, on: spec.text });
      };
      for (const spec of opts.listen ?? []) {
        const ep = spec.endpoint;
        if (ep.kind === 'stream') {
          const l = await StreamListener.listen(ep.addr);
          l.onPort = attach(spec);
          n.closers.push(() => l.close());
        } else if (ep.kind === 'udp') {
          const e = await UdpEndpoint.bind(ep.local);
          e.onPort = attach(spec);
          if (ep.peer) e.addPeer(ep.peer);
          n.closers.push(() => e.close());
        } else {
          const m = await McastPort.join(ep.group, ep.localAddr);
          attach(spec)(m);
          n.closers.push(() => m.close());
        }
      }
      for (const spec of opts.connect ?? []) {
        if (spec.endpoint.kind !== 'stream') throw new Error(`--connect ${spec.text}: only unix: and tcp: addresses can be connected to`);
        const c = new StreamConnector(spec.endpoint.addr);
        c.onPort = attach(spec);
        c.start();
        n.closers.push(() => c.close());
      }
      if (opts.pcap) n.sw.startCapture(opts.pcap);
    } catch (err) {
      n.close();
      throw err;
    }
    return n;
  }

  stats(): Record<string, unknown> {
    return {
      switch: this.sw.stats,
      gateway: this.gw.counters2,
      tcp: { ...this.tcp.stats, connections: this.tcp.size },
      tcpNat: this.tcpNat.stats,
      udpNat: { ...this.udpNat.stats, active: this.udpNat.size },
      icmpNat: this.icmpNat?.stats ?? null,
      dhcp: this.dhcp.stats,
      dns: this.dns.stats,
      leases: this.dhcp.leases().map((l) => ({ ...l, ip: l.ip })),
      hostfwd: this.hostfwd.rules.map((r) => ({ proto: r.proto, hostAddr: r.hostAddr, hostPort: r.boundPort, guestPort: r.guestPort, connections: r.connections })),
      ports: [...this.sw.ports.values()].map((sp) => ({ id: sp.port.id, name: sp.port.name, macs: this.sw.macsOn(sp.port), ...sp.port.counters, drops: sp.drops })),
    };
  }

  close(): void {
    for (const c of this.closers.splice(0)) c();
    this.hostfwd.closeAll();
    this.tcp.close();
    this.udpNat.closeAll();
    this.icmpNat?.closeAll();
    this.dns.close();
    this.tftp?.close();
    this.dhcp.close();
    this.sw.close();
  }
}
