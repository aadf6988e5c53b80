// UDP NAT: each guest flow (guest address and port, destination address and port) gets
// its own connected host UDP socket, udp4 or udp6 after the flow's family. Connected sockets
// make the kernel report ICMP port unreachable as ECONNREFUSED, which is passed back to the
// guest as ICMP(v6) port unreachable, the way it would see it on a real network; a host with
// no route for the family answers at once with network unreachable. Flows expire when idle
// (DNS-like request/response flows sooner), and a guest can hold only so many at once.
import dgram from 'node:dgram';
import type { IpPacket } from '../stack/gateway.ts';
import type { IpOutput, UdpHost } from '../stack/output.ts';
import { Timer } from '../stack/timers.ts';
import { V6_BASE, refAddr, unrefAddr } from '../stack/addr.ts';
import type { UdpHeader } from '../wire/udp.ts';
import { IPPROTO_UDP } from '../wire/ipv4.ts';
import { hostTarget, unreachable, unreachableFor, type HostAddrs, type Unreachable } from './host-target.ts';

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
  readonly stats = { flows: 0, datagramsOut: 0, datagramsIn: 0, refused: 0, unreachable: 0, limitHits: 0, sendErrors: 0 };
  private readonly idleMs: number;
  private readonly maxPerGuest: number;

  constructor(private readonly gw: UdpHost & IpOutput, private readonly host: HostAddrs, opts: UdpNatOptions = {}) {
    this.idleMs = opts.idleMs ?? 60_000;
    this.maxPerGuest = opts.maxFlowsPerGuest ?? 512;
  }

  /** A guest datagram to a destination that is not a local service. */
  input(p: IpPacket, udp: UdpHeader): void {
    const key = `${p.src}:${udp.srcPort}:${p.dst}:${udp.dstPort}`;
    let f = this.flows.get(key);
    if (!f) {
      const n = this.perGuest.get(p.src) ?? 0;
      if (n >= this.maxPerGuest) { this.stats.limitHits++; return; }
      f = this.open(key, p.src, udp.srcPort, p.dst, udp.dstPort);
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
    f.sock.send(payload, (err) => { if (err) this.failed(f, err as NodeJS.ErrnoException); });
  }

  private failed(f: Flow, err: NodeJS.ErrnoException): void {
    if (err.code === 'ECONNREFUSED') { this.stats.refused++; this.tellGuest(f, 'port'); return; }
    if (err.code === 'ENETUNREACH' || err.code === 'EHOSTUNREACH' || err.code === 'EADDRNOTAVAIL') {
      this.stats.unreachable++;
      this.tellGuest(f, unreachableFor(err.code));
      return;
    }
    this.stats.sendErrors++;
  }

  private open(key: string, guestIp: number, guestPort: number, dstIp: number, dstPort: number): Flow {
    const sock = dgram.createSocket(dstIp >= V6_BASE ? 'udp6' : 'udp4');
    const f: Flow = {
      key, sock, guestIp, guestPort, dstIp, dstPort, ready: false, backlog: [],
      timer: new Timer(() => this.close(f)),
    };
    refAddr(guestIp);
    refAddr(dstIp);
    this.flows.set(key, f);
    this.perGuest.set(guestIp, (this.perGuest.get(guestIp) ?? 0) + 1);
    this.stats.flows++;
    sock.on('message', (msg) => {
      this.stats.datagramsIn++;
      this.gw.timers.arm(f.timer, this.idleMs);
      this.gw.sendUdp(f.dstIp, f.dstPort, f.guestIp, f.guestPort, msg);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') { this.stats.refused++; this.tellGuest(f, 'port'); return; }
      if (!f.ready) { this.failed(f, err); this.close(f); return; } // connect failed: no route
      this.stats.sendErrors++;
      this.close(f);
    });
    sock.connect(dstPort, hostTarget(dstIp, this.host), () => {
      f.ready = true;
      for (const b of f.backlog) this.send(f, b);
      f.backlog = [];
    });
    return f;
  }

  /** ICMP(v6) unreachable to the guest, as if from the destination, quoting its datagram header. */
  private tellGuest(f: Flow, why: Unreachable): void {
    const head = Buffer.alloc(8);
    head.writeUInt16BE(f.guestPort, 0);
    head.writeUInt16BE(f.dstPort, 2);
    head.writeUInt16BE(8, 4);
    const [type, code] = unreachable(f.guestIp, why);
    this.gw.sendIcmpErrorForFlow(type, code, f.dstIp, f.guestIp, f.dstIp, IPPROTO_UDP, head);
  }

  private close(f: Flow): void {
    if (this.flows.get(f.key) !== f) return;
    this.flows.delete(f.key);
    this.gw.timers.cancel(f.timer);
    const n = (this.perGuest.get(f.guestIp) ?? 1) - 1;
    if (n <= 0) this.perGuest.delete(f.guestIp); else this.perGuest.set(f.guestIp, n);
    unrefAddr(f.guestIp);
    unrefAddr(f.dstIp);
    try { f.sock.close(); } catch { /* already closed */ }
  }

  get size(): number { return this.flows.size; }

  /** Drop every flow of a guest address (its VM is gone). */
  closeGuest(ip: number): void { for (const f of [...this.flows.values()]) if (f.guestIp === ip) this.close(f); }

  closeAll(): void { for (const f of [...this.flows.values()]) this.close(f); }
}
