// The gateway's TCP: the connection table, and the I/O around the connections (conn.ts).
//
// - Input: input() parses and checksums a segment, finds its connection by 4-tuple (guest
//   address and port, remote address and port) and hands it over. A SYN for no connection
//   creates one (in Opening) and asks `opener` what it reaches; anything else for no
//   connection gets a RST (RFC 9293 reset generation). A SYN on a 4-tuple in TIME_WAIT
//   starts afresh (the guest reuses its port).
// - Output: connections hand segments to transmit(), which writes them through the send
//   contract (stack/output.ts) with one writer made at construction (no per-segment
//   closure). The carrier (the gateway, or an in-memory link in tests) adds the checksum,
//   the IP header and the link.
// - Batching: ACKs and host-stream uncorks are deferred to the end of the input batch
//   (`defer`, a microtask by default): one ACK per connection per batch, one writev to the
//   host per batch. Guest data is copied out of the borrowed frames into one slab for all
//   connections (rx-slab.ts), a connection's data of one batch reaching its host as one Buffer.
// - Limits: at most `maxConnsPerGuest` connections per owner (`limit`: the switch port that
//   holds the guest address, as the network says, else the address). A SYN beyond that gets
//   ICMP(v6) administratively prohibited (not a RST: the guest can tell a limit from a closed
//   port), is counted in limitHits and reported to onLimit; TIME_WAIT connections do not count.
//   Of those, at most `maxOpeningPerGuest` may be half-open (a guest SYN whose host side is
//   still connecting: each holds a host socket), the same way (`opening`).
// - Addresses are ids of either family (stack/addr.ts); a connection references its two
//   while it is in the table. The same code serves IPv4 and IPv6.
// - Time and randomness are injected (the timer queue's clock; `random` for initial
//   sequence numbers and ephemeral ports), so tests are deterministic.
import { RxSlab } from './rx-slab.ts';
import { IPPROTO_TCP } from '../../wire/ipv4.ts';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpHeader, TcpOptions, parseTcp, writeTcp } from '../../wire/tcp.ts';
import { pseudoSumV4 } from '../../wire/checksum.ts';
import type { TimerQueue } from '../timers.ts';
import type { IpOutput } from '../output.ts';
import { logger, type Logger } from '../../util/log.ts';
import { FlowLimit, NO_OWNER } from '../../util/flow-limit.ts';
import { V6_BASE } from '../addr.ts';
import { seqAdd } from './seq.ts';
import { refAddr, unrefAddr } from '../addr.ts';
import { State, TcpConn } from './conn.ts';
import type { SendQueue } from './send-queue.ts';

const CONNECT_TIMEOUT_MS = 20_000;
const EPHEMERAL_LOW = 49152;

export interface TcpStats {
  segmentsIn: number;
  segmentsOut: number;
  /** segments sent again (timeouts, fast retransmit, hole retransmission) */
  retransmits: number;
  /** loss episodes entered through duplicate ACKs / SACK */
  fastRetransmits: number;
  /** loss episodes that ended with a full ACK */
  recoveries: number;
  /** NewReno partial ACKs in recovery */
  partialAcks: number;
  /** retransmission timer expiries (excluding handshakes and window probes) */
  timeouts: number;
  windowProbes: number;
  keepalives: number;
  challengeAcks: number;
  outOfOrder: number;
  badChecksum: number;
  malformed: number;
  resetsSent: number;
  refused: number;
  limitHits: number;
  connsOpened: number;
}

export interface TcpStackOptions {
  /** Most connections per owner (guest address, or its port: see `limit`); 0: no limit. Default 4096. */
  maxConnsPerGuest?: number;
  /** Most of them half-open (the host side still connecting) per owner; 0: no limit. Default 256. */
  maxOpeningPerGuest?: number;
  /** in [0, 1): initial sequence numbers and ephemeral ports (default Math.random) */
  random?: () => number;
  /** run fn once the current input batch is done (default queueMicrotask) */
  defer?: (fn: () => void) => void;
}

/** The segment transmit() is writing (one per stack, reused). */
interface OutSegment {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  opts: TcpOptions | null;
  data: SendQueue | null;
  dataAt: number;
  dataLen: number;
}

export class TcpStack {
  readonly stats: TcpStats = {
    segmentsIn: 0, segmentsOut: 0, retransmits: 0, fastRetransmits: 0, recoveries: 0, partialAcks: 0, timeouts: 0,
    windowProbes: 0, keepalives: 0, challengeAcks: 0, outOfOrder: 0, badChecksum: 0, malformed: 0, resetsSent: 0,
    refused: 0, limitHits: 0, connsOpened: 0,
  };
  readonly log: Logger = logger('tcp');
  /** guest (ip*65536+port) -> remote (ip*65536+port) -> connection */
  private readonly conns = new Map<number, Map<number, TcpConn>>();
  /** connections counted per owner (the network sets limit.ownerOf) */
  readonly limit: FlowLimit;
  /** guest SYNs whose host side is still connecting, counted per owner (the same ownerOf) */
  readonly opening: FlowLimit;
  /** a connection was refused by `limit` (guest SYN or a connection into the guest) or by `opening` */
  onLimit: ((guestIp: number, max: number, which: 'connections' | 'opening') => void) | null = null;
  private readonly quote = Buffer.alloc(8);
  private readonly random: () => number;
  private readonly defer: (fn: () => void) => void;
  private readonly acks: TcpConn[] = [];
  private readonly uncorks: TcpConn[] = [];
  private batchQueued = false;
  private readonly endOfBatch = (): void => {
    this.batchQueued = false;
    const u = this.uncorks;
    for (let i = 0; i < u.length; i++) u[i].uncork();
    u.length = 0;
    const a = this.acks;
    for (let i = 0; i < a.length; i++) a[i].flushAck();
    a.length = 0;
  };
  /** where guest data for hosts is copied out of frames (see rx-slab.ts) */
  readonly rxSlab = new RxSlab();
  readonly synOpts = new TcpOptions();
  readonly ackOpts = new TcpOptions();
  private readonly hdr = new TcpHeader();
  private readonly seg: OutSegment = { sport: 0, dport: 0, seq: 0, ack: 0, flags: 0, window: 0, opts: null, data: null, dataAt: 0, dataLen: 0 };
  private readonly writeSegment = (b: Buffer, o: number): number => {
    const s = this.seg;
    const p = writeTcp(b, o, s.sport, s.dport, s.seq, s.ack, s.flags, s.window, s.opts);
    return s.data && s.dataLen > 0 ? s.data.copyOut(s.dataAt, s.dataLen, b, p) : p;
  };
  private nextPort: number;
  /** Decides what a new guest connection reaches (NAT, guestfwd, a service); false = RST. */
  opener: ((c: TcpConn) => boolean) | null = null;
  onConnectTimeout: ((c: TcpConn) => void) | null = null;

  constructor(readonly out: IpOutput, readonly timers: TimerQueue, opts: TcpStackOptions = {}) {
    this.limit = new FlowLimit(opts.maxConnsPerGuest ?? 4096);
    this.opening = new FlowLimit(opts.maxOpeningPerGuest ?? 256);
    this.random = opts.random ?? Math.random;
    this.defer = opts.defer ?? queueMicrotask;
    this.nextPort = EPHEMERAL_LOW + Math.floor(this.random() * 8192);
  }

  get size(): number { let n = 0; for (const m of this.conns.values()) n += m.size; return n; }

  connections(): TcpConn[] {
    const out: TcpConn[] = [];
    for (const m of this.conns.values()) for (const c of m.values()) out.push(c);
    return out;
  }

  /** The connection for a 4-tuple, if any. */
  find(guestIp: number, guestPort: number, remoteIp: number, remotePort: number): TcpConn | undefined {
    return this.conns.get(guestIp * 65536 + guestPort)?.get(remoteIp * 65536 + remotePort);
  }

  private iss(): number { return (this.random() * 0x100000000) >>> 0; }

  // ---- batching ----

  private queueBatch(): void {
    if (this.batchQueued) return;
    this.batchQueued = true;
    this.defer(this.endOfBatch);
  }

  queueUncork(c: TcpConn): void { this.uncorks.push(c); this.queueBatch(); }
  queueAck(c: TcpConn): void { this.acks.push(c); this.queueBatch(); }

  // ---- input ----

  /**
   * A segment from a guest: buf[off, end) is the TCP part of an IP packet src -> dst (address
   * ids of either family); pseudo is the pseudo-header sum for its checksum.
   */
  input(src: number, dst: number, buf: Buffer, off: number, end: number, pseudo = pseudoSumV4(src, dst, IPPROTO_TCP, end - off)): void {
    const h = this.hdr;
    const err = parseTcp(buf, off, end, h, pseudo);
    if (err) { this.stats.malformed++; return; }
    if (!h.checksumOk) { this.stats.badChecksum++; return; }
    this.stats.segmentsIn++;
    const c = this.find(src, h.srcPort, dst, h.dstPort);
    if (c) {
      // A new SYN on a 4-tuple still in TIME_WAIT: the guest reuses the port, so start afresh.
      if (c.state === State.TimeWait && (h.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) c.close('port reused');
      else { c.input(h, buf); return; }
    }
    if ((h.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) !== TCP_SYN) {
      if (!(h.flags & TCP_RST)) this.resetFor(src, dst, h);
      return;
    }
    const full = this.limit.full(src) ? this.limit : this.opening.full(src) ? this.opening : null;
    if (full !== null) {
      this.stats.limitHits++;
      this.onLimit?.(src, full.max, full === this.limit ? 'connections' : 'opening');
      this.prohibited(src, dst, h);
      return;
    }
    const conn = new TcpConn(this, src, h.srcPort, dst, h.dstPort);
    conn.acceptSyn(h, this.iss());
    this.add(conn, this.limit.take(src));
    conn.openingOwner = this.opening.take(src);
    if (!this.opener || !this.opener(conn)) { conn.refuse(); return; }
    if (conn.state === State.Opening) this.timers.arm(conn.rtxTimer, CONNECT_TIMEOUT_MS);
  }

  connectTimedOut(c: TcpConn): void {
    this.onConnectTimeout?.(c);
    c.close('host connect timed out');
  }

  // ---- output ----

  /** Write one segment of connection c to its guest. */
  transmit(c: TcpConn, seq: number, ack: number, flags: number, window: number, opts: TcpOptions | null, dataAt: number, dataLen: number): void {
    const s = this.seg;
    s.sport = c.remotePort; s.dport = c.guestPort; s.seq = seq; s.ack = ack; s.flags = flags; s.window = window;
    s.opts = opts; s.data = c.sendQ; s.dataAt = dataAt; s.dataLen = dataLen;
    this.out.sendIp(c.remoteIp, c.guestIp, IPPROTO_TCP, 60 + dataLen, this.writeSegment);
    this.stats.segmentsOut++;
    if (flags & TCP_RST) this.stats.resetsSent++;
  }

  /** RST for a segment that matches no connection (RFC 9293 3.10.7.1). */
  private resetFor(guestIp: number, remoteIp: number, h: TcpHeader): void {
    const s = this.seg;
    s.sport = h.dstPort; s.dport = h.srcPort; s.window = 0; s.opts = null; s.data = null; s.dataAt = 0; s.dataLen = 0;
    if (h.flags & TCP_ACK) {
      s.seq = h.ack; s.ack = 0; s.flags = TCP_RST;
    } else {
      const len = h.payloadEnd - h.payloadOffset + (h.flags & TCP_SYN ? 1 : 0) + (h.flags & TCP_FIN ? 1 : 0);
      s.seq = 0; s.ack = seqAdd(h.seq, len); s.flags = TCP_RST | TCP_ACK;
    }
    this.out.sendIp(remoteIp, guestIp, IPPROTO_TCP, 20, this.writeSegment);
    this.stats.resetsSent++;
  }

  /** ICMP(v6) administratively prohibited for a guest SYN, quoting its ports and sequence number. */
  private prohibited(guestIp: number, remoteIp: number, h: TcpHeader): void {
    const q = this.quote;
    q.writeUInt16BE(h.srcPort, 0);
    q.writeUInt16BE(h.dstPort, 2);
    q.writeUInt32BE(h.seq, 4);
    const v6 = guestIp >= V6_BASE;
    // ICMP type 3 code 13 / ICMPv6 type 1 code 1 ("communication administratively prohibited")
    this.out.sendIcmpErrorForFlow(v6 ? 1 : 3, v6 ? 1 : 13, remoteIp, guestIp, remoteIp, IPPROTO_TCP, q, 20);
  }

  // ---- the table ----

  /** Open a connection into a guest (hostfwd): from remoteIp:port (ephemeral if 0). */
  connect(guestIp: number, guestPort: number, remoteIp: number, remotePort = 0): TcpConn | null {
    if (this.limit.full(guestIp)) { this.stats.limitHits++; this.onLimit?.(guestIp, this.limit.max, 'connections'); return null; }
    let rp = remotePort;
    if (rp === 0) {
      for (let i = 0; i < 65536 - EPHEMERAL_LOW; i++) {
        rp = this.nextPort;
        this.nextPort = this.nextPort >= 65535 ? EPHEMERAL_LOW : this.nextPort + 1;
        if (!this.find(guestIp, guestPort, remoteIp, rp)) break;
      }
    }
    if (this.find(guestIp, guestPort, remoteIp, rp)) { this.stats.limitHits++; return null; }
    const c = new TcpConn(this, guestIp, guestPort, remoteIp, rp);
    this.add(c, this.limit.take(guestIp));
    c.openActive(this.iss());
    return c;
  }

  private add(c: TcpConn, owner: number): void {
    c.owner = owner;
    refAddr(c.guestIp);
    refAddr(c.remoteIp);
    const gk = c.guestIp * 65536 + c.guestPort;
    let m = this.conns.get(gk);
    if (!m) { m = new Map(); this.conns.set(gk, m); }
    m.set(c.remoteIp * 65536 + c.remotePort, c);
    this.stats.connsOpened++;
  }

  /** c's host side is no longer connecting (open, refused or gone): it is not half-open any more. */
  opened(c: TcpConn): void {
    if (c.openingOwner === NO_OWNER) return;
    this.opening.give(c.openingOwner);
    c.openingOwner = NO_OWNER;
  }

  /** c no longer counts against its guest's limit (TIME_WAIT, or gone). */
  uncount(c: TcpConn): void {
    if (!c.counted) return;
    c.counted = false;
    this.limit.give(c.owner);
  }

  remove(c: TcpConn): void {
    const gk = c.guestIp * 65536 + c.guestPort;
    const m = this.conns.get(gk);
    if (m?.get(c.remoteIp * 65536 + c.remotePort) === c) {
      m.delete(c.remoteIp * 65536 + c.remotePort);
      if (m.size === 0) this.conns.delete(gk);
      this.uncount(c);
      unrefAddr(c.guestIp);
      unrefAddr(c.remoteIp);
    }
  }

  /** Connections of a guest address's owner counted against its limit. */
  countOf(guestIp: number): number { return this.limit.countOf(this.limit.ownerOf(guestIp)); }

  /** Reset the host side of every connection of a guest address (its VM is gone). */
  abortGuest(ip: number): number {
    let n = 0;
    for (const c of this.connections()) if (c.guestIp === ip) { c.abort(false, 'the guest port closed'); n++; }
    return n;
  }

  /** Reset the host side of every connection counted under an owner (its port is gone). */
  abortOwner(owner: number, why: string): number {
    let n = 0;
    for (const c of this.connections()) if (c.owner === owner) { c.abort(false, why); n++; }
    return n;
  }

  close(): void {
    for (const c of this.connections()) c.abort(true, 'network stopped');
  }
}
