// qnet's own services for guests on a kernel bridge (no dnsmasq): the network's DHCP server
// and DNS forwarder, met through the host's kernel instead of qnet's switch.
//
//   DHCP   a packet socket on the bridge (link/packet.ts) with a filter for UDP port 67 joins the
//          network's userspace switch as one port, so the ordinary DHCP server answers; its
//          gateway has the bridge's MAC and address, so replies look like the bridge's own.
//          The filter lets nothing else through, so that gateway never answers ARP or ICMP for
//          the bridge's address (the kernel does). A UDP socket bound to GATEWAY:67 keeps the
//          kernel from answering unicast renewals with ICMP port unreachable (it only drains;
//          the packet socket has the same datagram).
//   DNS    ordinary UDP and TCP sockets on GATEWAY:53 feed the network's DNS forwarder (local
//          names from leases and records, the rest to the upstreams).
//
// Limits: at most MAX_TCP DNS-over-TCP connections at once (more are refused), each closed
// after IDLE_MS without a query. Everything binds to the gateway address only.
import dgram from 'node:dgram';
import net from 'node:net';
import { PacketPort, udpPortFilter } from '../link/packet.ts';
import type { Port } from '../link/port.ts';
import type { DnsForwarder } from '../services/dns.ts';
import { serveDnsStream } from '../services/dns.ts';
import { ip4ToString, parseIp4 } from '../wire/addr.ts';

const MAX_TCP = 64;
const IDLE_MS = 30_000;

export interface BridgeServicesStats { dnsUdp: number; dnsTcpConnections: number; dnsTcpRefused: number; dhcpUnicastDrained: number }

export class BridgeServices {
  readonly stats: BridgeServicesStats = { dnsUdp: 0, dnsTcpConnections: 0, dnsTcpRefused: 0, dhcpUnicastDrained: 0 };
  readonly port: PacketPort;
  private readonly udp53: dgram.Socket;
  private readonly udp67: dgram.Socket;
  private readonly tcp53: net.Server;
  private readonly conns = new Set<net.Socket>();
  private closed = false;

  private constructor(readonly bridge: string, readonly gateway: number, port: PacketPort, udp53: dgram.Socket, udp67: dgram.Socket, tcp53: net.Server) {
    this.port = port;
    this.udp53 = udp53;
    this.udp67 = udp67;
    this.tcp53 = tcp53;
  }

  /** Open the packet port (attach it with onPort) and the DNS sockets on the gateway address. */
  static async start(bridge: string, gateway: number, dns: DnsForwarder, onPort: (p: Port) => void): Promise<BridgeServices> {
    const addr = ip4ToString(gateway);
    const opened: (() => void)[] = [];
    try {
      const port = PacketPort.open(bridge, udpPortFilter(67));
      opened.push(() => port.close());
      const udp67 = await bindUdp(addr, 67);
      opened.push(() => udp67.close());
      const udp53 = await bindUdp(addr, 53);
      opened.push(() => udp53.close());
      const tcp53 = net.createServer({ pauseOnConnect: false });
      await new Promise<void>((resolve, reject) => {
        tcp53.once('error', reject);
        tcp53.listen({ host: addr, port: 53, exclusive: true }, () => { tcp53.off('error', reject); resolve(); });
      }).catch((e: Error) => { throw new Error(`cannot listen on ${addr}:53/tcp for the network's DNS: ${e.message}`); });
      opened.push(() => tcp53.close());
      const svc = new BridgeServices(bridge, gateway, port, udp53, udp67, tcp53);
      udp67.on('message', () => { svc.stats.dhcpUnicastDrained++; });
      udp53.on('message', (msg, rinfo) => {
        svc.stats.dnsUdp++;
        const client = parseIp4(rinfo.address) ?? 0;
        dns.query(msg, client, (answer) => { if (!svc.closed) udp53.send(answer, rinfo.port, rinfo.address); });
      });
      tcp53.on('connection', (s) => svc.onTcp(s, dns));
      onPort(port);
      return svc;
    } catch (e) {
      for (const c of opened.reverse()) { try { c(); } catch { /* closing what was opened */ } }
      throw e;
    }
  }

  private onTcp(s: net.Socket, dns: DnsForwarder): void {
    if (this.closed || this.conns.size >= MAX_TCP) { this.stats.dnsTcpRefused++; s.destroy(); return; }
    this.stats.dnsTcpConnections++;
    this.conns.add(s);
    s.setTimeout(IDLE_MS, () => s.destroy());
    s.on('close', () => this.conns.delete(s));
    serveDnsStream(s, dns);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.port.close();
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
