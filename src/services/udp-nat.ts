// UDP NAT: each guest flow (guest address and port, destination address and port) gets
// its own connected host UDP socket. Connected sockets make the kernel report ICMP port
// unreachable as ECONNREFUSED, which is passed back to the guest as ICMP port
// unreachable, the way it would see it on a real network. Flows expire when idle (DNS-like
// request/response flows sooner), and a guest can hold only so many at once.
import dgram from 'node:dgram';
import type { IpPacket } from '../stack/gateway.ts';
import type { IpOutput, UdpHost } from '../stack/output.ts';
import { Timer } from '../stack/timers.ts';
import type { UdpHeader } from '../wire/udp.ts';
import { IPPROTO_UDP } from '../wire/ipv4.ts';
import { ICMP_DEST_UNREACH, ICMP_PORT_UNREACH } from '../wire/icmpv4.ts';
import { hostTarget } from './tcp-nat.ts';

interface Flow {
  key: string;
  sock: dgram.Socket;
  guestIp: number;
  guestPort: number;
  dstIp: number;
  dstPort: number;
  timer: Timer;
  ready: boolean;
  backlog: Buffer[];
}

export interface UdpNatOptions {
  idleMs?: number;
  maxFlowsPerGuest?: number;
}

export class UdpNat {
  private readonly flows = new Map<string, Flow>();
  private readonly perGuest = new Map<number, number>();
  readonly stats = { flows: 0, datagramsOut: 0, datagramsIn: 0, refused: 0, limitHits: 0, sendErrors: 0 };
  private readonly idleMs: number;
  private readonly maxPerGuest: number;

  constructor(private readonly gw: UdpHost & IpOutput, private readonly hostAddr: number, opts: UdpNatOptions = {}) {
    this.idleMs = opts.idleMs ?? 60_000;
    this.maxPerGuest = opts.maxFlowsPerGuest ?? 512;
  }

  /** A guest datagram to a destination that is not a local service. */
  input(p: IpPacket, udp: UdpHeader): void {
    const ip = p.ip;
    const key = `${ip.src}:${udp.srcPort}:${ip.dst}:${udp.dstPort}`;
    let f = this.flows.get(key);
    if (!f) {
      const n = this.perGuest.get(ip.src) ?? 0;
      if (n >= this.maxPerGuest) { this.stats.limitHits++; return; }
      f = this.open(key, ip.src, udp.srcPort, ip.dst, udp.dstPort);
    }
    const payload = Buffer.from(p.buf.subarray(udp.payloadOffset, udp.payloadEnd));
    this.gw.timers.arm(f.timer, udp.dstPort === 53 ? Math.min(this.idleMs, 10_000) : this.idleMs);
    this.stats.datagramsOut++;
    if (!f.ready) { if (f.backlog.length < 64) f.backlog.push(payload); return; }
    this.send(f, payload);
  }

  /**
   * Send on the flow's connected socket. A pending ICMP port unreachable is reported by the
   * kernel to whichever call comes next: to recv (the socket's 'error' event) or to this
   * send. When the guest sends two datagrams back to back (nslookup's A and AAAA queries),
   * the second send usually collects it, so ECONNREFUSED here must also become ICMP port
   * unreachable for the guest, or the guest never learns the port is closed.
   */
  private send(f: Flow, payload: Buffer): void {
    f.sock.send(payload, (err) => {
      if (!err) return;
      if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED') { this.stats.refused++; this.portUnreachable(f); }
      else this.stats.sendErrors++;
    });
  }

  private open(key: string, guestIp: number, guestPort: number, dstIp: number, dstPort: number): Flow {
    const sock = dgram.createSocket('udp4');
    const f: Flow = {
      key, sock, guestIp, guestPort, dstIp, dstPort, ready: false, backlog: [],
      timer: new Timer(() => this.close(f)),
    };
    this.flows.set(key, f);
    this.perGuest.set(guestIp, (this.perGuest.get(guestIp) ?? 0) + 1);
    this.stats.flows++;
    sock.on('message', (msg) => {
      this.stats.datagramsIn++;
      this.gw.timers.arm(f.timer, this.idleMs);
      this.gw.sendUdp(f.dstIp, f.dstPort, f.guestIp, f.guestPort, msg);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') { this.stats.refused++; this.portUnreachable(f); }
      else { this.stats.sendErrors++; this.close(f); }
    });
    sock.connect(dstPort, hostTarget(dstIp, this.hostAddr), () => {
      f.ready = true;
      for (const b of f.backlog) this.send(f, b);
      f.backlog = [];
    });
    return f;
  }

  private portUnreachable(f: Flow): void {
    // The quote: the guest's datagram header, rebuilt from the flow.
    const head = Buffer.alloc(8);
    head.writeUInt16BE(f.guestPort, 0);
    head.writeUInt16BE(f.dstPort, 2);
    head.writeUInt16BE(8, 4);
    this.gw.sendIcmpErrorForFlow(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, f.dstIp, f.guestIp, f.dstIp, IPPROTO_UDP, head);
  }

  private close(f: Flow): void {
    if (this.flows.get(f.key) !== f) return;
    this.flows.delete(f.key);
    this.gw.timers.cancel(f.timer);
    const n = (this.perGuest.get(f.guestIp) ?? 1) - 1;
    if (n <= 0) this.perGuest.delete(f.guestIp); else this.perGuest.set(f.guestIp, n);
    try { f.sock.close(); } catch { /* already closed */ }
  }

  get size(): number { return this.flows.size; }

  /** Drop every flow of a guest address (its VM is gone). */
  closeGuest(ip: number): void { for (const f of [...this.flows.values()]) if (f.guestIp === ip) this.close(f); }

  closeAll(): void { for (const f of [...this.flows.values()]) this.close(f); }
}
