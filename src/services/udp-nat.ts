// UDP NAT: each guest flow (guest address and port, destination address and port) gets
// its own connected host UDP socket, udp4 or udp6 after the flow's family. Connected sockets
// make the kernel report ICMP port unreachable as ECONNREFUSED, which is passed back to the
// guest as ICMP(v6) port unreachable, the way it would see it on a real network; a host with
// no route for the family answers at once with network unreachable. Flows expire when idle
// (DNS-like request/response flows sooner).
//
// Limits: flows are counted per owner (`limit`: the switch port holding the guest address,
// as the network says), and every socket takes a descriptor from the process's budget
// (util/fds.ts). A datagram that would open a flow beyond either gets ICMP(v6)
// administratively prohibited, is counted in limitHits and reported to onLimit.
//
// Flows are found by numbers (guest address and port, then destination address and port):
// nothing is allocated per datagram but the copy of its payload that the send holds.
import dgram from 'node:dgram';
import type { IpPacket } from '../stack/gateway.ts';
import type { IpOutput, UdpHost } from '../stack/output.ts';
import { Timer } from '../stack/timers.ts';
import { V6_BASE, refAddr, unrefAddr } from '../stack/addr.ts';
import type { UdpHeader } from '../wire/udp.ts';
import { FlowLimit, NO_OWNER } from '../util/flow-limit.ts';
import type { FdBudget } from '../util/fds.ts';
import { IPPROTO_UDP } from '../wire/ipv4.ts';
import { hostTarget, unreachable, unreachableFor, type HostAddrs, type Unreachable } from './host-target.ts';

interface Flow {
  /** guest address * 65536 + guest port; destination address * 65536 + port */
  guestKey: number;
  dstKey: number;
  /** whom it is counted under (UdpNat.limit) */
  owner: number;
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
  /** flows per owner (guest address, or its port: see UdpNat.limit); 0: no limit; default 512 */
  maxFlowsPerGuest?: number;
  /** descriptors for guest flows, shared by the process; none: unbounded */
  fdBudget?: FdBudget | null;
}

export type UdpLimit = 'flowsPerGuest' | 'descriptors';

export class UdpNat {
  /** guest key -> destination key -> flow */
  private readonly flows = new Map<number, Map<number, Flow>>();
  private count = 0;
  readonly stats = { flows: 0, datagramsOut: 0, datagramsIn: 0, refused: 0, unreachable: 0, limitHits: 0, sendErrors: 0 };
  private readonly idleMs: number;
  /** flows counted per owner (the network sets limit.ownerOf) */
  readonly limit: FlowLimit;
  private readonly fdBudget: FdBudget | null;
  /** a flow was refused by a limit */
  onLimit: ((guestIp: number, which: UdpLimit, max: number) => void) | null = null;

  constructor(private readonly gw: UdpHost & IpOutput, private readonly host: HostAddrs, opts: UdpNatOptions = {}) {
    this.idleMs = opts.idleMs ?? 60_000;
    this.limit = new FlowLimit(opts.maxFlowsPerGuest ?? 512);
    this.fdBudget = opts.fdBudget ?? null;
  }

  /** A guest datagram to a destination that is not a local service. */
  input(p: IpPacket, udp: UdpHeader): void {
    const guestKey = p.src * 65536 + udp.srcPort;
    const dstKey = p.dst * 65536 + udp.dstPort;
    let f = this.flows.get(guestKey)?.get(dstKey);
    if (!f) {
      const owner = this.limit.take(p.src);
      if (owner === NO_OWNER) return this.refuse(p, 'flowsPerGuest', this.limit.max);
      if (this.fdBudget !== null && !this.fdBudget.tryAcquire()) {
        this.limit.give(owner);
        return this.refuse(p, 'descriptors', this.fdBudget.flows);
      }
      f = this.open(guestKey, dstKey, owner, p.src, udp.srcPort, p.dst, udp.dstPort);
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

  /** A limit says no: tell the guest (administratively prohibited, quoting its datagram). */
  private refuse(p: IpPacket, which: UdpLimit, max: number): void {
    this.stats.limitHits++;
    this.onLimit?.(p.src, which, max);
    // ICMP type 3 code 13 / ICMPv6 type 1 code 1
    this.gw.sendIcmpError(p.v6 ? 1 : 3, p.v6 ? 1 : 13, p.dst, p);
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

  private open(guestKey: number, dstKey: number, owner: number, guestIp: number, guestPort: number, dstIp: number, dstPort: number): Flow {
    const sock = dgram.createSocket(dstIp >= V6_BASE ? 'udp6' : 'udp4');
    const f: Flow = {
      guestKey, dstKey, owner, sock, guestIp, guestPort, dstIp, dstPort, ready: false, backlog: [],
      timer: new Timer(() => this.close(f)),
    };
    refAddr(guestIp);
    refAddr(dstIp);
    let m = this.flows.get(guestKey);
    if (m === undefined) { m = new Map(); this.flows.set(guestKey, m); }
    m.set(dstKey, f);
    this.count++;
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
    const m = this.flows.get(f.guestKey);
    if (m?.get(f.dstKey) !== f) return;
    m.delete(f.dstKey);
    if (m.size === 0) this.flows.delete(f.guestKey);
    this.count--;
    this.gw.timers.cancel(f.timer);
    this.limit.give(f.owner);
    this.fdBudget?.release();
    unrefAddr(f.guestIp);
    unrefAddr(f.dstIp);
    try { f.sock.close(); } catch { /* already closed */ }
  }

  get size(): number { return this.count; }

  private all(): Flow[] {
    const out: Flow[] = [];
    for (const m of this.flows.values()) for (const f of m.values()) out.push(f);
    return out;
  }

  /** Drop every flow of a guest address (its VM is gone). */
  closeGuest(ip: number): void { for (const f of this.all()) if (f.guestIp === ip) this.close(f); }

  /** Drop every flow counted under an owner (its port is gone); how many. */
  closeOwner(owner: number): number {
    let n = 0;
    for (const f of this.all()) if (f.owner === owner) { this.close(f); n++; }
    return n;
  }

  closeAll(): void { for (const f of this.all()) this.close(f); }
}
