// ICMP echo NAT, IPv4 and IPv6: a guest's ping to any address goes out through a host ICMP
// socket and the replies, and the ICMP errors about the request, return to the guest as they
// arrived (the host addresses map to loopback, as for TCP and UDP).
//
// Sockets (link/icmp.ts): an unprivileged ping socket per flow (guest address and echo
// identifier; the kernel gives each socket its own identifier, which we map back). Where ping
// sockets are not permitted but qnet has CAP_NET_RAW (root in a namespace whose
// net.ipv4.ping_group_range excludes it: the kernel default), one raw socket per family serves
// every flow instead, as slirp falls back to: qnet picks the identifiers, and a reply counts
// only when its identifier is a flow's and its source is an address that flow pinged
// (bounded, MAX_DESTS per flow). Without either, requests are dropped and counted, with one
// log line naming the sysctl: a reply is never faked, so "unreachable" stays truthful.
//
// Limits: at most `maxFlows` flows in all and `maxFlowsPerGuest` per owner (`limit`: the
// switch port holding the guest address, as the network says), a ping socket taking a
// descriptor from the process's budget (util/fds.ts); a request beyond them is dropped,
// counted in limitHits and reported to onLimit. A flow expires after `idleMs` without requests.
import type { IpPacket, EchoHeader } from '../stack/gateway.ts';
import type { IpOutput } from '../stack/output.ts';
import type { TimerQueue } from '../stack/timers.ts';
import { Timer } from '../stack/timers.ts';
import { addr6, ip6, refAddr, unrefAddr } from '../stack/addr.ts';
import { IcmpEchoSocket, IcmpRawSocket } from '../link/icmp.ts';
import { sysAvailable } from '../link/sys.ts';
import { ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, writeIcmpv4Echo } from '../wire/icmpv4.ts';
import { ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, writeIcmpv6Echo } from '../wire/icmpv6.ts';
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from '../wire/ipv4.ts';
import { parseIp4, parseIp6 } from '../wire/addr.ts';
import type { HostAddrs } from './host-target.ts';
import { logger } from '../util/log.ts';
import { FlowLimit, NO_OWNER } from '../util/flow-limit.ts';
import type { FdBudget } from '../util/fds.ts';

const log = logger('icmp-nat');
const LOOPBACK4 = parseIp4('127.0.0.1')!;
const LOOPBACK6 = parseIp6('::1')!;
const MAX_DESTS = 16;

interface Flow {
  key: number;
  /** whom it is counted under (IcmpNat.limit) */
  owner: number;
  v6: boolean;
  guestIp: number;
  guestId: number;
  timer: Timer;
  /** a ping socket of its own, or null on the shared raw socket */
  sock: IcmpEchoSocket | null;
  /** the identifier on the raw socket */
  rawId: number;
  /** where it sent requests (raw: replies must come from one of these) */
  dests: Set<number>;
}

/** How a family's echo requests leave: per-flow ping sockets, the shared raw socket, or not at all. */
type Mode = { kind: 'ping' } | { kind: 'raw'; sock: IcmpRawSocket; flows: Map<number, Flow>; nextId: number } | { kind: 'off'; reason: string };

export interface IcmpNatOptions {
  /** flows in all; default 1024 */
  maxFlows?: number;
  /** flows per owner (guest address, or its port); 0: no limit; default 64 */
  maxFlowsPerGuest?: number;
  idleMs?: number;
  /** descriptors for guest flows, shared by the process; none: unbounded */
  fdBudget?: FdBudget | null;
}

export type IcmpLimit = 'flows' | 'flowsPerGuest' | 'descriptors';

export class IcmpNat {
  private readonly flows = new Map<number, Flow>();
  readonly stats = { requests: 0, replies: 0, errors: 0, notPermitted: 0, limitHits: 0, sendFailed: 0, raw: 0 };
  private readonly modes: [Mode, Mode];
  private warned = false;

  private readonly maxFlows: number;
  private readonly idleMs: number;
  /** flows counted per owner (the network sets limit.ownerOf) */
  readonly limit: FlowLimit;
  private readonly fdBudget: FdBudget | null;
  /** a flow was refused by a limit */
  onLimit: ((guestIp: number, which: IcmpLimit, max: number) => void) | null = null;

  constructor(private readonly gw: IpOutput & { readonly timers: TimerQueue }, private readonly host: HostAddrs, opts: IcmpNatOptions = {}) {
    this.maxFlows = opts.maxFlows ?? 1024;
    this.idleMs = opts.idleMs ?? 30_000;
    this.limit = new FlowLimit(opts.maxFlowsPerGuest ?? 64);
    this.fdBudget = opts.fdBudget ?? null;
    const off: Mode | null = sysAvailable() ? null : { kind: 'off', reason: 'the qnet native addon is not built (run npm rebuild)' };
    this.modes = [off ?? { kind: 'ping' }, off ?? { kind: 'ping' }];
  }

  /** 'ping', 'raw' or why echo is off, per family (for status and tests). */
  mode(v6: boolean): string {
    const m = this.modes[v6 ? 1 : 0];
    return m.kind === 'off' ? `off: ${m.reason}` : m.kind;
  }

  input(p: IpPacket, icmp: EchoHeader): void {
    if (icmp.type !== (p.v6 ? ICMPV6_ECHO_REQUEST : ICMP_ECHO_REQUEST)) return;
    this.stats.requests++;
    const key = p.src * 65536 + icmp.id;
    let f = this.flows.get(key);
    if (!f) {
      if (this.flows.size >= this.maxFlows) return this.refused(p.src, 'flows', this.maxFlows);
      const owner = this.limit.take(p.src);
      if (owner === NO_OWNER) return this.refused(p.src, 'flowsPerGuest', this.limit.max);
      const opened = this.open(key, owner, p.v6, p.src, icmp.id);
      if (!opened) { this.limit.give(owner); return; }
      f = opened;
    }
    this.gw.timers.arm(f.timer, this.idleMs);
    const data = p.buf.subarray(icmp.payloadOffset, icmp.payloadEnd);
    const to = this.target(p.dst, f.v6);
    let ok: boolean;
    if (f.sock) ok = f.sock.send(to, icmp.seq, data);
    else {
      const m = this.modes[f.v6 ? 1 : 0];
      if (m.kind !== 'raw') return;
      if (f.dests.size < MAX_DESTS && !f.dests.has(p.dst)) { refAddr(p.dst); f.dests.add(p.dst); }
      ok = m.sock.send(to, f.rawId, icmp.seq, data);
    }
    if (!ok) this.stats.sendFailed++;
  }

  /** The host-side destination: the host address is loopback. */
  private target(dst: number, v6: boolean): number | Buffer {
    if (!v6) return dst === this.host.v4 ? LOOPBACK4 : dst;
    return dst === this.host.v6 ? LOOPBACK6 : ip6.bytes(dst);
  }

  /** The guest-side source of a reply or error from the host's view of an address. */
  private fromHost(v4: number, v6: Buffer | null): number {
    if (v6 === null) return v4 === LOOPBACK4 ? this.host.v4 : v4;
    return v6.equals(LOOPBACK6) ? this.host.v6 : addr6(v6);
  }

  private refused(guestIp: number, which: IcmpLimit, max: number): void {
    this.stats.limitHits++;
    this.onLimit?.(guestIp, which, max);
  }

  private notPermitted(v6: boolean): void {
    this.stats.notPermitted++;
    if (this.warned) return;
    this.warned = true;
    const m = this.modes[v6 ? 1 : 0];
    log.warn(`guest ping dropped: ${m.kind === 'off' ? m.reason : 'no ICMP socket'}`);
  }

  /** A new flow (counted under owner), or null: refused or not possible (said why). */
  private open(key: number, owner: number, v6: boolean, guestIp: number, guestId: number): Flow | null {
    const fam = v6 ? 1 : 0;
    let m = this.modes[fam];
    if (m.kind === 'off') { this.notPermitted(v6); return null; }
    const f: Flow = { key, owner, v6, guestIp, guestId, sock: null, rawId: 0, dests: new Set(), timer: new Timer(() => this.close(f)) };
    if (m.kind === 'ping') {
      if (this.fdBudget !== null && !this.fdBudget.tryAcquire()) { this.refused(guestIp, 'descriptors', this.fdBudget.flows); return null; }
      const r = IcmpEchoSocket.open(v6 ? 6 : 4);
      if (r.socket) {
        f.sock = r.socket;
        this.wirePing(f, r.socket);
      } else {
        this.fdBudget?.release();
        m = this.fallBack(fam, r.denied, r.reason);
        if (m.kind !== 'raw') { this.notPermitted(v6); return null; }
      }
    }
    if (m.kind === 'raw') {
      const id = this.rawId(m);
      if (id < 0) { this.refused(guestIp, 'flows', 0x7fff); return null; }
      f.rawId = id;
      m.flows.set(id, f);
    }
    refAddr(guestIp);
    this.flows.set(key, f);
    if (log.enabled('debug')) log.debug('ping flow', { guest: guestIp, id: guestId, via: m.kind });
    return f;
  }

  /** Ping sockets are not permitted: try the raw socket once, else switch the family off. */
  private fallBack(fam: 0 | 1, denied: boolean, reason: string): Mode {
    if (!denied) { this.modes[fam] = { kind: 'off', reason }; return this.modes[fam]; }
    const r = IcmpRawSocket.open(fam === 1 ? 6 : 4);
    if (!r.socket) { this.modes[fam] = { kind: 'off', reason }; return this.modes[fam]; }
    const mode: Mode = { kind: 'raw', sock: r.socket, flows: new Map(), nextId: 1 + (Date.now() & 0x7fff) };
    this.wireRaw(mode);
    this.modes[fam] = mode;
    this.stats.raw++;
    log.info(`ping sockets not permitted (${reason}); guest pings go through a raw ICMP${fam === 1 ? 'v6' : ''} socket`);
    return mode;
  }

  private rawId(m: Extract<Mode, { kind: 'raw' }>): number {
    for (let i = 0; i < 65536; i++) {
      const id = m.nextId;
      m.nextId = (m.nextId + 1) & 0xffff;
      if (!m.flows.has(id)) return id;
    }
    return -1;
  }

  private wirePing(f: Flow, sock: IcmpEchoSocket): void {
    sock.onReply((from, from6, _id, seq, data) => this.reply(f, this.fromHost(from, from6), seq, data));
    sock.onError((off, off6, type, code, dst, dst6, request) => this.error(f, this.fromHost(off, off6), type, code, this.fromHost(dst, dst6), request));
  }

  private wireRaw(m: Extract<Mode, { kind: 'raw' }>): void {
    m.sock.onReply((from, from6, id, seq, data) => {
      const f = m.flows.get(id);
      if (!f) return;
      const src = this.fromHost(from, from6);
      if (!f.dests.has(src)) return; // an identifier of ours, but not from where this flow pinged
      this.reply(f, src, seq, data);
    });
    m.sock.onError((off, off6, type, code, dst, dst6, request) => {
      const f = m.flows.get(request.readUInt16BE(4));
      if (!f) return;
      const to = this.fromHost(dst, dst6);
      if (!f.dests.has(to)) return;
      this.error(f, this.fromHost(off, off6), type, code, to, request);
    });
  }

  private reply(f: Flow, from: number, seq: number, data: Buffer): void {
    this.stats.replies++;
    const id = f.guestId;
    const v6 = f.v6;
    this.gw.sendIp(from, f.guestIp, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, 8 + data.length, (b, o) => {
      data.copy(b, o + 8);
      return v6 ? writeIcmpv6Echo(b, o, ICMPV6_ECHO_REPLY, id, seq, data.length) : writeIcmpv4Echo(b, o, ICMP_ECHO_REPLY, id, seq, data.length);
    });
  }

  private error(f: Flow, offender: number, type: number, code: number, dst: number, request: Buffer): void {
    this.stats.errors++;
    // Quote the guest's own request: its addresses and identifier, the kernel's payload.
    const head = Buffer.from(request.subarray(0, Math.min(request.length, 16)));
    if (head.length >= 6) head.writeUInt16BE(f.guestId, 4);
    this.gw.sendIcmpErrorForFlow(type, code, offender, f.guestIp, dst, f.v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, head);
  }

  private close(f: Flow): void {
    if (this.flows.get(f.key) !== f) return;
    this.flows.delete(f.key);
    this.gw.timers.cancel(f.timer);
    this.limit.give(f.owner);
    if (f.sock) { f.sock.close(); this.fdBudget?.release(); }
    else {
      const m = this.modes[f.v6 ? 1 : 0];
      if (m.kind === 'raw' && m.flows.get(f.rawId) === f) m.flows.delete(f.rawId);
    }
    for (const d of f.dests) unrefAddr(d);
    unrefAddr(f.guestIp);
  }

  get size(): number { return this.flows.size; }

  /** Drop every flow of a guest address (its VM is gone). */
  closeGuest(ip: number): void { for (const f of [...this.flows.values()]) if (f.guestIp === ip) this.close(f); }

  /** Drop every flow counted under an owner (its port is gone); how many. */
  closeOwner(owner: number): number {
    let n = 0;
    for (const f of [...this.flows.values()]) if (f.owner === owner) { this.close(f); n++; }
    return n;
  }

  closeAll(): void {
    for (const f of [...this.flows.values()]) this.close(f);
    for (const m of this.modes) if (m.kind === 'raw') m.sock.close();
  }
}

