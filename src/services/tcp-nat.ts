// TCP NAT: a guest connection to any address becomes an ordinary host socket to that
// address (the gateway's "host" addresses map to the host's loopback, as in slirp), for
// IPv4 and IPv6 alike. The guest sees the real outcome: SYN-ACK once connect() succeeds, RST
// when refused, ICMP(v6) unreachable at once when the host has no route (so a guest with
// both families falls back to the other without waiting), silence then host-unreachable on
// timeout. Host data is read into one shared buffer and copied into the connection's send
// queue (no allocation per read).
//
// Every host socket takes a descriptor from the process's budget (util/fds.ts) and gives it
// back when it closes; a connection the budget refuses gets ICMP(v6) administratively
// prohibited and is reported to onLimit (connections per guest are the TCP stack's limit).
import net from 'node:net';
import type { TcpConn } from '../stack/tcp/conn.ts';
import type { TcpStack } from '../stack/tcp/stack.ts';
import type { IpOutput } from '../stack/output.ts';
import { IPPROTO_TCP } from '../wire/ipv4.ts';
import { V6_BASE } from '../stack/addr.ts';
import type { FdBudget } from '../util/fds.ts';
import { hostAddrFor, hostTarget, unreachable, unreachableFor, type HostAddrs, type Unreachable } from './host-target.ts';

/** The read buffer all NAT sockets share (a read is consumed before the next one starts). */
const READ_BUF = Buffer.allocUnsafe(64 * 1024);

export interface NatStats { opened: number; refused: number; unreachable: number; timedOut: number; active: number }

export class TcpNat {
  readonly stats: NatStats = { opened: 0, refused: 0, unreachable: 0, timedOut: 0, active: 0 };

  /** the descriptor budget refused a connection */
  onLimit: ((guestIp: number, max: number) => void) | null = null;

  constructor(stack: TcpStack, private readonly out: IpOutput, private readonly host: HostAddrs, private readonly fdBudget: FdBudget | null = null) {
    stack.onConnectTimeout = (c) => { this.stats.timedOut++; this.unreachable(c, 'host'); };
  }

  /** Open the host side for a guest connection; the connection is answered when it is up. */
  open(c: TcpConn): void {
    const budget = this.fdBudget;
    if (budget !== null && !budget.tryAcquire()) {
      this.onLimit?.(c.guestIp, budget.flows);
      const v6 = c.guestIp >= V6_BASE;
      this.tellGuest(c, v6 ? 1 : 3, v6 ? 1 : 13, 'no descriptors for guest flows'); // administratively prohibited
      return;
    }
    const sock = net.connect({
      host: hostTarget(c.remoteIp, this.host), port: c.remotePort, noDelay: true,
      // every NAT socket reads into one buffer; the connection copies what it got into its
      // send queue's pooled blocks (stack/tcp/send-queue.ts) instead of Node allocating per read
      onread: { buffer: READ_BUF, callback: (n: number) => { c.hostDataBorrowed(READ_BUF, n); return true; } },
    });
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
    sock.once('close', () => { this.stats.active--; budget?.release(); });
    c.onClose = () => { if (!settled) { settled = true; sock.destroy(); } };
  }

  /** Tell the guest its SYN can't be delivered, then forget it. */
  private unreachable(c: TcpConn, why: Unreachable): void {
    const [type, code] = unreachable(c.guestIp, why);
    this.tellGuest(c, type, code, 'unreachable');
  }

  private tellGuest(c: TcpConn, type: number, code: number, why: string): void {
    // The quote: the guest's SYN, rebuilt from the connection (ports and sequence number).
    const head = Buffer.alloc(8);
    head.writeUInt16BE(c.guestPort, 0);
    head.writeUInt16BE(c.remotePort, 2);
    head.writeUInt32BE(c.irs, 4);
    this.out.sendIcmpErrorForFlow(type, code, hostAddrFor(c.guestIp, this.host), c.guestIp, c.remoteIp, IPPROTO_TCP, head, 20);
    c.close(why);
  }
}
