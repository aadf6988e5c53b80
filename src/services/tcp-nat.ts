// TCP NAT: a guest connection to any address becomes an ordinary host socket to that
// address (the gateway's "host" address maps to the host's loopback, as in slirp). The
// guest sees the real outcome: SYN-ACK once connect() succeeds, RST when refused, ICMP
// unreachable when the host has no route, silence then ICMP host-unreachable on timeout.
import net from 'node:net';
import type { TcpConn, TcpStack } from '../stack/tcp.ts';
import type { Gateway } from '../stack/gateway.ts';
import { ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, ICMP_NET_UNREACH } from '../wire/icmpv4.ts';
import { ip4ToString } from '../wire/addr.ts';
import { IPPROTO_TCP } from '../wire/ipv4.ts';
import { writeIcmpv4Error } from '../wire/icmpv4.ts';
import { IPPROTO_ICMP, writeIpv4 } from '../wire/ipv4.ts';

export interface NatStats { opened: number; refused: number; unreachable: number; timedOut: number; active: number }

/** Where a guest's destination goes on the host: the gateway address means loopback. */
export function hostTarget(dst: number, hostAddr: number, loopback = '127.0.0.1'): string {
  return dst === hostAddr ? loopback : ip4ToString(dst);
}

export class TcpNat {
  readonly stats: NatStats = { opened: 0, refused: 0, unreachable: 0, timedOut: 0, active: 0 };

  constructor(private readonly stack: TcpStack, private readonly gw: Gateway, private readonly hostAddr: number) {
    stack.onConnectTimeout = (c) => { this.stats.timedOut++; this.unreachable(c, ICMP_HOST_UNREACH); };
  }

  /** Open the host side for a guest connection; the connection is answered when it is up. */
  open(c: TcpConn): void {
    const host = hostTarget(c.remoteIp, this.hostAddr);
    const sock = net.connect({ host, port: c.remotePort, noDelay: true });
    this.stats.active++;
    let settled = false;
    sock.once('connect', () => {
      settled = true;
      this.stats.opened++;
      sock.setKeepAlive(true, 60_000);
      c.attach(sock);
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      sock.destroy();
      switch (err.code) {
        case 'ECONNREFUSED': this.stats.refused++; c.refuse(); break;
        case 'ENETUNREACH': this.stats.unreachable++; this.unreachable(c, ICMP_NET_UNREACH); break;
        default: this.stats.unreachable++; this.unreachable(c, ICMP_HOST_UNREACH); break;
      }
    });
    sock.once('close', () => { this.stats.active--; });
    c.onClose = () => { if (!settled) { settled = true; sock.destroy(); } };
  }

  /** Tell the guest its SYN can't be delivered (host or network unreachable), then forget it. */
  private unreachable(c: TcpConn, code: number): void {
    // Rebuild the guest's SYN header (what the ICMP error quotes) from the connection.
    const quote = Buffer.alloc(28);
    writeIpv4(quote, 0, c.guestIp, c.remoteIp, IPPROTO_TCP, 20);
    quote.writeUInt16BE(c.guestPort, 20);
    quote.writeUInt16BE(c.remotePort, 22);
    quote.writeUInt32BE(c.irs, 24);
    const gw = this.gw;
    const o = gw.txReserve(8 + 28);
    const end = writeIcmpv4Error(gw.txBuf, o, ICMP_DEST_UNREACH, code, 0, quote, 0, 28, 8);
    gw.txIpv4(o, this.hostAddr, c.guestIp, IPPROTO_ICMP, end - o);
    c.close();
  }
}

export { type TcpStack };
