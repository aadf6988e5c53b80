// qnet's own services for guests on a kernel bridge (no dnsmasq): the network's DHCP server
// and DNS forwarder, met through the host's kernel instead of qnet's switch and gateway.
//
//   DHCP   BridgeUdpHost is a UdpHost (stack/output.ts) over a packet socket on the bridge
//          (link/packet.ts) whose BPF filter passes only IPv4 UDP to port 67: the ordinary
//          DHCP server binds to it and answers; replies leave through the bridge with the
//          bridge's own MAC and the gateway address, as if the bridge sent them. There is no
//          gateway on this path, so nothing of qnet answers ARP or ICMP for the bridge's
//          address: the kernel does. A UDP socket bound to GATEWAY:67 keeps the kernel from
//          answering unicast renewals with ICMP port unreachable (it only drains; the packet
//          socket has the same datagram).
//   DNS    ordinary UDP and TCP sockets on GATEWAY:53 feed the network's DNS forwarder (local
//          names from leases and records, the rest to the upstreams).
//
// Limits: DHCP replies are not fragmented (they are a few hundred bytes; a larger one is
// dropped and counted); at most MAX_TCP DNS-over-TCP connections at once (more are refused),
// each closed after IDLE_MS without a query. Everything binds to the gateway address only.
import dgram from 'node:dgram';
import net from 'node:net';
import { PacketPort, udpPortFilter } from '../link/packet.ts';
import type { UdpDatagram, UdpHandler, UdpHost } from '../stack/output.ts';
import type { TimerQueue } from '../stack/timers.ts';
import type { DnsForwarder } from '../services/dns.ts';
import { serveDnsStream } from '../services/dns-tcp.ts';
import { EthernetHeader, ETHERTYPE_IPV4, parseEthernet, writeEthernet } from '../wire/ethernet.ts';
import { IPPROTO_UDP, Ipv4Header, parseIpv4, writeIpv4 } from '../wire/ipv4.ts';
import { UdpHeader, finishUdpV4, parseUdp, writeUdp } from '../wire/udp.ts';
import { pseudoSumV4 } from '../wire/checksum.ts';
import { inSubnet, ip4ToString, maskOf, parseIp4 } from '../wire/addr.ts';

const MAX_TCP = 64;
const IDLE_MS = 30_000;
const HEADERS = 14 + 20 + 8;

export interface BridgeHostStats { rxDatagrams: number; malformed: number; badChecksum: number; fragments: number; unbound: number; txDatagrams: number; txDropped: number }

/** UdpHost over a packet socket on a bridge: the DHCP server's way onto a kernel network. */
export class BridgeUdpHost implements UdpHost {
  readonly stats: BridgeHostStats = { rxDatagrams: 0, malformed: 0, badChecksum: 0, fragments: 0, unbound: 0, txDatagrams: 0, txDropped: 0 };
  readonly addrs: ReadonlySet<number>;
  readonly port: PacketPort;
  private readonly bindings = new Map<number, UdpHandler>();
  private readonly eth = new EthernetHeader();
  private readonly ip = new Ipv4Header();
  private readonly udp = new UdpHeader();
  private readonly msg: UdpDatagram = { srcIp: 0, srcPort: 0, dstIp: 0, dstPort: 0, srcMac: Buffer.alloc(6), payload: Buffer.alloc(0) };
  private readonly tx = Buffer.alloc(HEADERS + 65535);

  constructor(readonly bridge: string, private readonly mac: Buffer, gateway: number, readonly net: number, readonly prefix: number,
    readonly mtu: number, readonly timers: TimerQueue, port = 67) {
    this.addrs = new Set([gateway]);
    this.port = PacketPort.open(bridge, udpPortFilter(port));
    this.port.onFrame = (f) => this.input(f);
  }

  get broadcast(): number { return (this.net | ~maskOf(this.prefix)) >>> 0; }
  isLocal(ip: number): boolean { return inSubnet(ip, this.net, this.prefix); }
  bindUdp(ip: number, port: number, h: UdpHandler): void { this.bindings.set(ip * 65536 + port, h); }
  unbindUdp(ip: number, port: number): void { this.bindings.delete(ip * 65536 + port); }

  private input(frame: Buffer): void {
    if (parseEthernet(frame, 0, frame.length, this.eth) || this.eth.ethertype !== ETHERTYPE_IPV4) { this.stats.malformed++; return; }
    const ip = this.ip;
    if (parseIpv4(frame, this.eth.payloadOffset, frame.length, ip) || ip.protocol !== IPPROTO_UDP) { this.stats.malformed++; return; }
    if (!ip.checksumOk) { this.stats.badChecksum++; return; }
    if (ip.mf || ip.fragmentOffset !== 0) { this.stats.fragments++; return; }
    const udp = this.udp;
    if (parseUdp(frame, ip.payloadOffset, ip.payloadEnd, udp, pseudoSumV4(ip.src, ip.dst, IPPROTO_UDP, ip.payloadEnd - ip.payloadOffset))) { this.stats.malformed++; return; }
    if (!udp.checksumOk) { this.stats.badChecksum++; return; }
    const h = this.bindings.get(ip.dst * 65536 + udp.dstPort) ?? this.bindings.get(udp.dstPort);
    if (!h) { this.stats.unbound++; return; }
    this.stats.rxDatagrams++;
    const d = this.msg;
    d.srcIp = ip.src; d.srcPort = udp.srcPort; d.dstIp = ip.dst; d.dstPort = udp.dstPort;
    frame.copy(d.srcMac, 0, 6, 12);
    d.payload = frame.subarray(udp.payloadOffset, udp.payloadEnd);
    h(d);
  }

  /** dstMac is required: this host resolves no neighbours (DHCP always knows the client's MAC). */
  sendUdp(src: number, sport: number, dst: number, dport: number, payload: Buffer, dstMac?: Buffer): void {
    if (!dstMac || 20 + 8 + payload.length > this.mtu) { this.stats.txDropped++; return; }
    const b = this.tx;
    const l4 = 14 + 20;
    payload.copy(b, l4 + 8);
    writeUdp(b, l4, sport, dport, payload.length);
    finishUdpV4(b, l4, src, dst);
    writeIpv4(b, 14, src, dst, IPPROTO_UDP, 8 + payload.length, 64, 0, false);
    writeEthernet(b, 0, dstMac, this.mac, ETHERTYPE_IPV4);
    this.port.send(b.subarray(0, HEADERS + payload.length));
    this.stats.txDatagrams++;
  }

  close(): void { this.port.close(); }
}

export interface DnsSocketStats { udpQueries: number; tcpConnections: number; tcpRefused: number; dhcpUnicastDrained: number }

/** The DNS forwarder on GATEWAY:53 (UDP and TCP), and the drain on GATEWAY:67. */
export class GatewaySockets {
  readonly stats: DnsSocketStats = { udpQueries: 0, tcpConnections: 0, tcpRefused: 0, dhcpUnicastDrained: 0 };
  private readonly conns = new Set<net.Socket>();
  private closed = false;

  private constructor(private readonly udp53: dgram.Socket, private readonly udp67: dgram.Socket, private readonly tcp53: net.Server) {}

  static async start(gateway: number, dns: DnsForwarder): Promise<GatewaySockets> {
    const addr = ip4ToString(gateway);
    const opened: (() => void)[] = [];
    try {
      const udp67 = await bindUdp(addr, 67);
      opened.push(() => udp67.close());
      const udp53 = await bindUdp(addr, 53);
      opened.push(() => udp53.close());
      const tcp53 = net.createServer();
      await new Promise<void>((resolve, reject) => {
        tcp53.once('error', reject);
        tcp53.listen({ host: addr, port: 53, exclusive: true }, () => { tcp53.off('error', reject); resolve(); });
      }).catch((e: Error) => { throw new Error(`cannot listen on ${addr}:53/tcp for the network's DNS: ${e.message}`); });
      const s = new GatewaySockets(udp53, udp67, tcp53);
      udp67.on('message', () => { s.stats.dhcpUnicastDrained++; });
      udp53.on('message', (msg, rinfo) => {
        s.stats.udpQueries++;
        dns.query(msg, parseIp4(rinfo.address) ?? 0, (answer) => { if (!s.closed) udp53.send(answer, rinfo.port, rinfo.address); });
      });
      tcp53.on('connection', (c) => s.onTcp(c, dns));
      return s;
    } catch (e) {
      for (const c of opened.reverse()) { try { c(); } catch { /* closing what was opened */ } }
      throw e;
    }
  }

  private onTcp(c: net.Socket, dns: DnsForwarder): void {
    if (this.closed || this.conns.size >= MAX_TCP) { this.stats.tcpRefused++; c.destroy(); return; }
    this.stats.tcpConnections++;
    this.conns.add(c);
    c.setTimeout(IDLE_MS, () => c.destroy());
    c.on('close', () => this.conns.delete(c));
    serveDnsStream(c, dns);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [this.udp53, this.udp67]) { try { s.close(); } catch { /* already closed */ } }
    this.tcp53.close();
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }
}

function bindUdp(addr: string, port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    s.once('error', (e) => { s.close(); reject(new Error(`cannot bind ${addr}:${port}/udp for the network's services: ${e.message}`)); });
    s.bind(port, addr, () => { s.removeAllListeners('error'); s.on('error', () => {}); resolve(s); });
  });
}
