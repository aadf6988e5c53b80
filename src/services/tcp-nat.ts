// TCP NAT: a guest connection to any address becomes an ordinary host socket to that
// address (the gateway's "host" addresses map to the host's loopback, as in slirp), for
// IPv4 and IPv6 alike. The guest sees the real outcome: SYN-ACK once connect() succeeds, RST
// when refused, ICMP(v6) unreachable at once when the host has no route (so a guest with
// both families falls back to the other without waiting), silence then host-unreachable on
// timeout.
import net from 'node:net';
import type { TcpConn } from '../stack/tcp/conn.ts';
import type { TcpStack } from '../stack/tcp/stack.ts';
import type { IpOutput } from '../stack/output.ts';
import { IPPROTO_TCP } from '../wire/ipv4.ts';
import { hostAddrFor, hostTarget, unreachable, unreachableFor, type HostAddrs, type Unreachable } from './host-target.ts';

export interface NatStats { opened: number; refused: number; unreachable: number; timedOut: number; active: number }

export class TcpNat {
  readonly stats: NatStats = { opened: 0, refused: 0, unreachable: 0, timedOut: 0, active: 0 };

  constructor(stack: TcpStack, private readonly out: IpOutput, private readonly host: HostAddrs) {
    stack.onConnectTimeout = (c) => { this.stats.timedOut++; this.unreachable(c, 'host'); };
  }

  /** Open the host side for a guest connection; the connection is answered when it is up. */
  open(c: TcpConn): void {
    const sock = net.connect({ host: hostTarget(c.remoteIp, this.host), port: c.remotePort, noDelay: true });
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
      if (err.code === 'ECONNREFUSED') { this.stats.refused++; c.refuse(); return; }
      this.stats.unreachable++;
      this.unreachable(c, unreachableFor(err.code));
    });
    sock.once('close', () => { this.stats.active--; });
    c.onClose = () => { if (!settled) { settled = true; sock.destroy(); } };
  }

  /** Tell the guest its SYN can't be delivered, then forget it. */
  private unreachable(c: TcpConn, why: Unreachable): void {
    // The quote: the guest's SYN, rebuilt from the connection (ports and sequence number).
    const head = Buffer.alloc(8);
    head.writeUInt16BE(c.guestPort, 0);
    head.writeUInt16BE(c.remotePort, 2);
    head.writeUInt32BE(c.irs, 4);
    const [type, code] = unreachable(c.guestIp, why);
    this.out.sendIcmpErrorForFlow(type, code, hostAddrFor(c.guestIp, this.host), c.guestIp, c.remoteIp, IPPROTO_TCP, head, 20);
    c.close('unreachable');
  }
}
