// ICMP echo NAT: a guest's ping to any address goes out through an unprivileged ICMP
// "ping socket" (one per guest address and echo identifier: the kernel gives each socket
// its own identifier, which we map back). Replies and ICMP errors about the request return
// to the guest as they arrived. Where the host does not allow ping sockets (not root, or
// net.ipv4.ping_group_range excludes us), requests are dropped and counted, with one clear
// log line: a reply is never faked, so "unreachable" stays truthful.
import type { IpPacket } from '../stack/gateway.ts';
import type { IpOutput } from '../stack/output.ts';
import type { TimerQueue } from '../stack/timers.ts';
import { Timer } from '../stack/timers.ts';
import { IcmpEchoSocket } from '../link/icmp.ts';
import { sysAvailable } from '../link/sys.ts';
import { ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, type Icmpv4Header, writeIcmpv4Echo } from '../wire/icmpv4.ts';
import { IPPROTO_ICMP } from '../wire/ipv4.ts';
import { ip4ToString, parseIp4 } from '../wire/addr.ts';
import { logger } from '../util/log.ts';

const log = logger('icmp-nat');
const LOOPBACK = parseIp4('127.0.0.1')!;

interface Flow { key: number; sock: IcmpEchoSocket; guestIp: number; guestId: number; timer: Timer }

export class IcmpNat {
  private readonly flows = new Map<number, Flow>();
  readonly stats = { requests: 0, replies: 0, errors: 0, notPermitted: 0, limitHits: 0, sendFailed: 0 };
  private disabledReason: string | null = null;
  private warned = false;

  constructor(private readonly gw: IpOutput & { readonly timers: TimerQueue }, private readonly hostAddr: number, private readonly maxFlows = 256, private readonly idleMs = 30_000) {
    if (!sysAvailable()) this.disabledReason = 'the qnet native addon is not built (run npm rebuild)';
  }

  input(p: IpPacket, icmp: Icmpv4Header): void {
    if (icmp.type !== ICMP_ECHO_REQUEST) return;
    this.stats.requests++;
    const ip = p.ip;
    const key = ip.src * 65536 + icmp.id;
    let f = this.flows.get(key);
    if (!f) {
      if (this.disabledReason) return this.notPermitted();
      if (this.flows.size >= this.maxFlows) { this.stats.limitHits++; return; }
      const r = IcmpEchoSocket.open();
      if (!r.socket) { this.disabledReason = r.reason; return this.notPermitted(); }
      f = this.open(key, r.socket, ip.src, icmp.id);
    }
    this.gw.timers.arm(f.timer, this.idleMs);
    const dst = ip.dst === this.hostAddr ? LOOPBACK : ip.dst;
    if (!f.sock.send(dst, icmp.seq, p.buf.subarray(icmp.payloadOffset, icmp.payloadEnd))) this.stats.sendFailed++;
  }

  private notPermitted(): void {
    this.stats.notPermitted++;
    if (!this.warned) {
      this.warned = true;
      log.warn(`guest ping dropped: ${this.disabledReason}`);
    }
  }

  private open(key: number, sock: IcmpEchoSocket, guestIp: number, guestId: number): Flow {
    const f: Flow = { key, sock, guestIp, guestId, timer: new Timer(() => this.close(f)) };
    this.flows.set(key, f);
    sock.onReply((srcIp, _id, seq, data) => {
      this.stats.replies++;
      const from = srcIp === LOOPBACK ? this.hostAddr : srcIp;
      this.gw.sendIp(from, f.guestIp, IPPROTO_ICMP, 8 + data.length, (b, o) => {
        data.copy(b, o + 8);
        return writeIcmpv4Echo(b, o, ICMP_ECHO_REPLY, f.guestId, seq, data.length);
      });
    });
    sock.onError((offender, type, code, dstIp, request) => {
      this.stats.errors++;
      // Quote the guest's own request: its addresses and identifier, the kernel's payload.
      const head = Buffer.from(request.subarray(0, Math.min(request.length, 16)));
      if (head.length >= 6) head.writeUInt16BE(f.guestId, 4);
      this.gw.sendIcmpErrorForFlow(type, code, offender, f.guestIp, dstIp, IPPROTO_ICMP, head);
    });
    log.debug('ping flow', { guest: ip4ToString(guestIp), id: guestId, localId: sock.localId });
    return f;
  }

  private close(f: Flow): void {
    if (this.flows.get(f.key) !== f) return;
    this.flows.delete(f.key);
    this.gw.timers.cancel(f.timer);
    f.sock.close();
  }

  get size(): number { return this.flows.size; }

  /** Drop every flow of a guest address (its VM is gone). */
  closeGuest(ip: number): void { for (const f of [...this.flows.values()]) if (f.guestIp === ip) this.close(f); }

  closeAll(): void { for (const f of [...this.flows.values()]) this.close(f); }
}
