// TCP NAT: a guest connection to any address becomes an ordinary host socket to that
// address (the gateway's "host" address maps to the host's loopback, as in slirp). The
// guest sees the real outcome: SYN-ACK once connect() succeeds, RST when refused, ICMP
// unreachable when the host has no route, silence then ICMP host-unreachable on timeout.
import net from 'node:net';
import type { TcpConn } from '../stack/tcp/conn.ts';
import type { TcpStack } from '../stack/tcp/stack.ts';
import type { IpOutput } from '../stack/output.ts';
import { ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, ICMP_NET_UNREACH } from '../wire/icmpv4.ts';
import { ip4ToString } from '../wire/addr.ts';
import { IPPROTO_TCP } from '../wire/ipv4.ts';

export interface NatStats { opened: number; refused: number; unreachable: number; timedOut: number; active: number }

/** Where a guest's destination goes on the host: the gateway address means loopback. */
export function hostTarget(dst: number, hostAddr: number, loopback = '127.0.0.1'): string {
  return dst === hostAddr ? loopback : ip4ToString(dst);
}

export class TcpNat {
  readonly stats: NatStats = { opened: 0, refused: 0, unreachable: 0, timedOut: 0, active: 0 };

  constructor(stack: TcpStack, private readonly out: IpOutput, private readonly hostAddr: number) {
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
    // The quote: the guest's SYN, rebuilt from the connection (ports and sequence number).
    const head = Buffer.alloc(8);
    head.writeUInt16BE(c.guestPort, 0);
    head.writeUInt16BE(c.remotePort, 2);
    head.writeUInt32BE(c.irs, 4);
    this.out.sendIcmpErrorForFlow(ICMP_DEST_UNREACH, code, this.hostAddr, c.guestIp, c.remoteIp, IPPROTO_TCP, head, 20);
    c.close('unreachable');
  }
}

