// The gateway's TCP: a real TCP endpoint facing each guest connection, whose other end is
// an ordinary host stream (a NAT socket, a hostfwd client, a guestfwd target, a service).
//
// Scope and trade-offs:
// - The guest link is a local, in-order transport, so the receive side keeps no
//   out-of-order queue: an out-of-order segment is dropped and answered with a duplicate
//   ACK, which drives the guest's fast retransmit. SACK and timestamps are not offered.
// - Send side: data from the host stream is queued as chunks until the guest ACKs it, and
//   is retransmitted on RTO (go-back-N from snd.una) or after three duplicate ACKs. A small
//   Reno congestion window keeps bursts within what the QEMU socket queue can take.
// - Flow control is end to end: the host stream is paused while the bytes queued for
//   the guest exceed what the guest's window (and a fixed cap) allows, and the window we
//   advertise is what the host stream's write backlog leaves of our receive buffer. No
//   buffer anywhere grows without bound.
// - ACKs to the guest are coalesced: one per flow per input batch (sent from a microtask).
// - Connections from the guest are answered with SYN-ACK only once the host side is up
//   (the opener decides; RST when refused), as a real router would show the outcome.
// - TIME_WAIT is short (the virtual link has no stray old segments worth waiting out).
import type { Duplex } from 'node:stream';
import { Gateway, type IpPacket } from './gateway.ts';
import { Timer } from './timers.ts';
import { IPPROTO_TCP } from '../wire/ipv4.ts';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TcpHeader, TcpOptions, finishTcpV4, parseTcp, writeTcp } from '../wire/tcp.ts';
import { pseudoSumV4 } from '../wire/checksum.ts';

const seqLt = (a: number, b: number): boolean => ((a - b) | 0) < 0;
const seqLe = (a: number, b: number): boolean => ((a - b) | 0) <= 0;
const seqAdd = (a: number, n: number): number => (a + n) >>> 0;
const seqDiff = (a: number, b: number): number => (a - b) | 0;

/** Our receive buffer: the most guest data we accept that the host stream has not taken. */
const RCV_BUF = 4 * 1024 * 1024;
const RCV_WSCALE = 7;
/** Most bytes queued towards the guest (unacked + unsent) before the host stream is paused. */
const SND_BUF = 2 * 1024 * 1024;
const RTO_MIN = 200;
const RTO_MAX = 60_000;
const RTO_INIT = 1000;
const SYN_RETRIES = 5;
const DATA_RETRIES = 12;
const TIME_WAIT_MS = 2000;
/** Keepalive towards the guest, as Linux and slirp do: after 2 h idle, 9 probes 75 s apart. */
const KEEPALIVE_IDLE_MS = 2 * 3600_000;
const KEEPALIVE_INTERVAL_MS = 75_000;
const KEEPALIVE_PROBES = 9;
/** Segments per burst once the pipe is full (see output()). */
const BURST = 16;
/** Most out-of-order bytes kept per connection. */
const OOO_MAX = 2 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);
const CONNECT_TIMEOUT_MS = 20_000;

export const enum State {
  /** guest SYN received, host side being opened; nothing sent yet */
  Opening,
  SynSent,
  SynReceived,
  Established,
  FinWait1,
  FinWait2,
  Closing,
  TimeWait,
  CloseWait,
  LastAck,
  Closed,
}

export interface TcpStats {
  segmentsIn: number;
  segmentsOut: number;
  retransmits: number;
  fastRetransmits: number;
  outOfOrder: number;
  badChecksum: number;
  malformed: number;
  resetsSent: number;
  refused: number;
  limitHits: number;
  connsOpened: number;
}

/** The decision for a new guest connection: open a host stream for it, or refuse. */
export type TcpOpener = (c: TcpConn) => void;

export class TcpConn {
  state = State.Opening;
  // send side (towards the guest)
  iss = 0;
  sndUna = 0;
  sndNxt = 0;
  /** highest sequence number sent + 1 (snd.nxt rewinds after a timeout, this does not) */
  sndMax = 0;
  sndWnd = 0;
  sndWscale = 0;
  mss = 536;
  cwnd = 0;
  ssthresh = 1 << 30;
  dupAcks = 0;
  // loss recovery (RFC 6675-style, simplified): SACKed ranges above snd.una as flat [start, end) pairs
  private sacked: number[] = [];
  private recovery = false;
  private recoverSeq = 0;
  private rtxNext = 0;
  private chunks: Buffer[] = [];
  private headOff = 0; // offset in chunks[0] of the byte at sndUna
  queued = 0; // data bytes from sndUna to the end of the queue
  private finQueued = false; // host side ended: FIN after the queued data
  private finSent = false;
  // receive side (from the guest)
  irs = 0;
  rcvNxt = 0;
  rcvWscale = 0;
  private lastAdvertised = 0;
  // out-of-order segments from the guest, sorted by sequence number
  private ooo: { seq: number; data: Buffer }[] = [];
  private oooBytes = 0;
  private oooFin = -1;
  private lastOoo = 0;
  /** the guest offered SACK-permitted: our duplicate ACKs carry SACK blocks */
  sackOk = false;
  private ackPending = false;
  // retransmission
  rto = RTO_INIT;
  srtt = 0;
  rttvar = 0;
  private rttSeq = -1;
  private rttAt = 0;
  retries = 0;
  readonly rtxTimer: Timer;
  /** guest-side keepalive: a guest that vanished without a FIN or RST is found out */
  private readonly kaTimer: Timer;
  private kaProbes = 0;
  // the host side
  host: Duplex | null = null;
  private hostPaused = false;
  private corked = false;
  /** still counted against the guest's connection limit */
  counted = true;
  createdAt = Date.now();
  bytesIn = 0;
  bytesOut = 0;
  /** Called once when the connection is gone (both directions closed, reset or timed out). */
  onClose: ((c: TcpConn) => void) | null = null;

  constructor(readonly stack: TcpStack, readonly guestIp: number, readonly guestPort: number,
    readonly remoteIp: number, readonly remotePort: number) {
    this.rtxTimer = new Timer(() => this.onRtx());
    this.kaTimer = new Timer(() => this.onKeepalive());
  }

  private onKeepalive(): void {
    if (this.state === State.Closed || this.state === State.TimeWait) return;
    if (++this.kaProbes > KEEPALIVE_PROBES) { this.abort(true); return; }
    // an already-acknowledged sequence number: a live guest answers with an ACK
    this.sendFlags(TCP_ACK, seqAdd(this.sndUna, -1));
    this.stack.timers.arm(this.kaTimer, KEEPALIVE_INTERVAL_MS);
  }

  get key(): string { return `${this.guestIp}:${this.guestPort}-${this.remoteIp}:${this.remotePort}`; }

  // ---- the host side ----

  /** Join the connection to a host stream and (for a guest-opened connection) accept it. */
  attach(host: Duplex): void {
    this.host = host;
    host.on('data', (d: Buffer) => this.fromHost(d));
    host.on('end', () => this.hostEnded());
    host.on('drain', () => this.windowUpdate());
    host.on('error', () => this.abort(true));
    host.on('close', () => { if (this.state !== State.Closed && !this.finQueued) this.abort(true); });
    if (this.state === State.Opening) {
      this.state = State.SynReceived;
      this.sendSyn();
    }
  }

  /** Refuse a guest-opened connection (the host said no): RST, as the real host would. */
  refuse(): void {
    this.stack.stats.refused++;
    this.sendFlags(TCP_RST | TCP_ACK, 0);
    this.close();
  }

  private fromHost(d: Buffer): void {
    if (this.state === State.Closed || this.finQueued) return;
    this.chunks.push(d);
    this.queued += d.length;
    this.bytesIn += d.length;
    if (this.queued >= SND_BUF && this.host && !this.hostPaused) {
      this.hostPaused = true;
      this.host.pause();
    }
    this.output();
  }

  private hostEnded(): void {
    if (this.state === State.Closed) return;
    this.finQueued = true;
    this.output();
  }

  /** The advertised receive window, in bytes. */
  private window(): number {
    const backlog = this.host ? this.host.writableLength : 0;
    return Math.max(0, RCV_BUF - backlog);
  }

  private windowUpdate(): void {
    if (this.state === State.Closed || this.state === State.Opening) return;
    // Announce the opened window if the last one we sent was small.
    if (this.lastAdvertised < RCV_BUF / 4) this.scheduleAck();
  }

  // ---- segments from the guest ----

  input(h: TcpHeader, buf: Buffer): void {
    const flags = h.flags;
    this.kaProbes = 0;
    this.stack.timers.arm(this.kaTimer, KEEPALIVE_IDLE_MS);
    if (flags & TCP_RST) {
      // RFC 5961-style check: only an in-window RST counts.
      if (this.state === State.SynSent ? seqDiff(h.ack, this.sndNxt) === 0 : (seqLe(this.rcvNxt, h.seq) && seqLt(h.seq, seqAdd(this.rcvNxt, Math.max(1, this.window()))))) {
        this.abort(false);
      }
      return;
    }
    if (this.state === State.SynSent) {
      if ((flags & (TCP_SYN | TCP_ACK)) !== (TCP_SYN | TCP_ACK) || seqDiff(h.ack, this.sndNxt) !== 0) {
        if (flags & TCP_ACK) this.sendRst(h.ack);
        return;
      }
      this.irs = h.seq;
      this.rcvNxt = seqAdd(h.seq, 1);
      this.takeSynOptions(h);
      this.sndUna = h.ack;
      this.sndWnd = h.window; // windows in SYNs are never scaled
      this.established();
      this.scheduleAck();
      return;
    }
    if (flags & TCP_SYN) {
      // A retransmitted SYN: our SYN-ACK was lost (or not sent yet while opening).
      if (this.state === State.SynReceived && h.seq === this.irs) this.sendSyn();
      else if (this.state !== State.Opening) this.scheduleAck();
      return;
    }
    if (this.state === State.Opening) return;
    if (!(flags & TCP_ACK)) return;

    // ACK processing
    const ack = h.ack;
    if (h.sackCount > 0 && this.sackOk) this.takeSacks(h);
    if (seqLt(this.sndUna, ack) && seqLe(ack, this.sndMax)) {
      this.ackAdvance(ack, h);
    } else if (ack === this.sndUna) {
      const len = h.payloadEnd - h.payloadOffset;
      this.sndWnd = h.window << this.sndWscale;
      // (the window is not compared: a receiver holding out-of-order data changes it)
      if (len === 0 && !(flags & TCP_FIN) && this.sndMax !== this.sndUna) {
        this.dupAcks++;
        if (this.recovery) this.retransmitHoles();
        else if (this.dupAcks >= 3 || this.sackedBytes() > 3 * this.mss) this.enterRecovery();
      }
    } else if (seqLt(this.sndMax, ack)) {
      this.scheduleAck(); // acks something we never sent
      return;
    }
    if (this.state === State.Closed) return;

    // data and FIN
    const len = h.payloadEnd - h.payloadOffset;
    const fin = (flags & TCP_FIN) !== 0;
    if (len > 0 || fin) {
      let from = h.payloadOffset;
      let seq = h.seq;
      if (seqLt(seq, this.rcvNxt)) {
        const skip = seqDiff(this.rcvNxt, seq);
        if (skip >= len + (fin ? 1 : 0)) { this.scheduleAck(); return; } // all old: retransmit or keepalive
        from += Math.min(skip, len);
        seq = this.rcvNxt;
      }
      if (seq !== this.rcvNxt) { this.stash(buf, from, h.payloadEnd, seq, fin); return; }
      this.deliverData(buf, from, h.payloadEnd, fin);
      if (this.ooo.length > 0) this.drainOoo();
    }
    this.output();
  }

  /** Keep an out-of-order segment (bounded) and answer with an immediate duplicate ACK + SACK. */
  private stash(buf: Buffer, from: number, to: number, seq: number, fin: boolean): void {
    const len = to - from;
    this.stack.stats.outOfOrder++;
    const beyond = seqDiff(seqAdd(seq, len), this.rcvNxt);
    if (beyond <= this.window() && this.oooBytes + len <= OOO_MAX && this.ooo.length < 1024) {
      const data = Buffer.allocUnsafe(len);
      buf.copy(data, 0, from, to);
      let i = this.ooo.length;
      while (i > 0 && seqLt(seq, this.ooo[i - 1].seq)) i--;
      this.ooo.splice(i, 0, { seq, data });
      this.oooBytes += len;
      this.lastOoo = seq;
      if (fin) this.oooFin = seqAdd(seq, len);
    }
    this.sendFlags(TCP_ACK, this.sndNxt);
  }

  /** Deliver stashed segments that the hole-filling segment made contiguous. */
  private drainOoo(): void {
    const q = this.ooo;
    let i = 0;
    while (i < q.length && seqLe(q[i].seq, this.rcvNxt)) {
      const e = q[i++];
      this.oooBytes -= e.data.length;
      const skip = seqDiff(this.rcvNxt, e.seq);
      if (skip < e.data.length) this.deliverData(e.data, skip, e.data.length, false, true);
    }
    if (i > 0) q.splice(0, i);
    if (this.oooFin >= 0 && this.oooFin === this.rcvNxt) {
      this.oooFin = -1;
      this.deliverData(EMPTY, 0, 0, true);
    }
    if (q.length === 0) this.oooBytes = 0;
  }

  private deliverData(buf: Buffer, from: number, to: number, fin: boolean, owned = false): void {
    const len = to - from;
    if (len > 0) {
      const state = this.state;
      if (state === State.Established || state === State.FinWait1 || state === State.FinWait2) {
        const room = this.window();
        if (len > room + 1) { this.scheduleAck(); return; } // beyond our window: drop
        // The frame is borrowed: the host stream gets its own copy.
        let data: Buffer;
        if (owned) data = buf.subarray(from, to);
        else { data = Buffer.allocUnsafe(len); buf.copy(data, 0, from, to); }
        const h = this.host;
        if (h) {
          // One writev per input batch instead of a syscall per segment (uncorked from a microtask).
          if (!this.corked) { this.corked = true; h.cork(); this.stack.queueUncork(this); }
          h.write(data);
        }
        this.bytesOut += len;
      }
      this.rcvNxt = seqAdd(this.rcvNxt, len);
    }
    if (fin) {
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      switch (this.state) {
        case State.SynReceived:
        case State.Established:
          this.state = State.CloseWait;
          this.host?.end();
          break;
        case State.FinWait1:
          this.state = State.Closing;
          this.host?.end();
          break;
        case State.FinWait2:
          this.host?.end();
          this.enterTimeWait();
          break;
        default:
          break;
      }
    }
    this.scheduleAck();
    this.output();
  }

  /** SACK blocks describing the stash (the most recently received block first, RFC 2018). */
  private sackOptions(): TcpOptions | null {
    if (!this.sackOk || this.ooo.length === 0) return null;
    const o = this.stack.ackOpts;
    o.clear();
    const blocks: number[] = [];
    let s0 = this.ooo[0].seq;
    let e0 = seqAdd(s0, this.ooo[0].data.length);
    for (let i = 1; i <= this.ooo.length; i++) {
      const e = this.ooo[i];
      if (e && seqLe(e.seq, e0)) {
        const end = seqAdd(e.seq, e.data.length);
        if (seqLt(e0, end)) e0 = end;
        continue;
      }
      blocks.push(s0, e0);
      if (e) { s0 = e.seq; e0 = seqAdd(e.seq, e.data.length); }
    }
    // move the block holding the latest arrival to the front
    for (let b = 0; b < blocks.length; b += 2) {
      if (seqLe(blocks[b], this.lastOoo) && seqLt(this.lastOoo, blocks[b + 1])) {
        if (b > 0) blocks.unshift(...blocks.splice(b, 2));
        break;
      }
    }
    const n = Math.min(3, blocks.length / 2);
    for (let i = 0; i < 2 * n; i++) o.sackBlocks[i] = blocks[i];
    o.sackCount = n;
    return o;
  }

  private takeSynOptions(h: TcpHeader): void {
    this.sackOk = h.sackPermitted;
    this.mss = h.mss > 0 ? Math.min(h.mss, this.stack.gw.mtu - 40) : 536;
    if (h.wscale >= 0) {
      this.sndWscale = Math.min(h.wscale, 14);
      this.rcvWscale = RCV_WSCALE;
    } else {
      this.sndWscale = 0;
      this.rcvWscale = 0;
    }
    this.cwnd = 10 * this.mss;
  }

  private established(): void {
    this.state = State.Established;
    this.retries = 0;
    this.stack.timers.cancel(this.rtxTimer);
    this.output();
  }

  private ackAdvance(ack: number, h: TcpHeader): void {
    let acked = seqDiff(ack, this.sndUna);
    this.dupAcks = 0;
    this.retries = 0;
    if (this.rttSeq >= 0 && seqLe(this.rttSeq, ack)) {
      this.sampleRtt(performance.now() - this.rttAt);
      this.rttSeq = -1;
    }
    if (this.state === State.SynReceived) {
      acked--; // our SYN
      this.sndUna = seqAdd(this.sndUna, 1);
      this.sndWnd = h.window << this.sndWscale;
      this.established();
    }
    // data bytes acked (a FIN counts one more)
    const dataAcked = Math.min(acked, this.queued);
    this.dropAcked(dataAcked);
    this.sndUna = ack;
    if (seqLt(this.sndNxt, ack)) this.sndNxt = ack; // after a timeout rewind, the guest had more
    this.sndWnd = h.window << this.sndWscale;
    while (this.sacked.length > 0 && seqLe(this.sacked[1], ack)) this.sacked.splice(0, 2);
    if (this.sacked.length > 0 && seqLt(this.sacked[0], ack)) this.sacked[0] = ack;
    if (this.recovery) {
      if (seqLe(this.recoverSeq, ack)) { this.recovery = false; this.cwnd = this.ssthresh; }
      else this.retransmitHoles(); // partial ACK: the next hole starts at the new snd.una
    } else if (this.cwnd < this.ssthresh) this.cwnd += Math.min(dataAcked, this.mss); // Reno growth
    else this.cwnd += Math.max(1, Math.floor((this.mss * this.mss) / this.cwnd));
    if (this.cwnd > SND_BUF) this.cwnd = SND_BUF;
    const finAcked = this.finSent && ack === this.sndMax;
    if (finAcked) {
      switch (this.state) {
        case State.FinWait1: this.state = State.FinWait2; break;
        case State.Closing: this.enterTimeWait(); break;
        case State.LastAck: this.close(); return;
        default: break;
      }
    }
    if (this.sndUna === this.sndNxt) this.stack.timers.cancel(this.rtxTimer);
    else this.stack.timers.arm(this.rtxTimer, this.rto);
    if (this.hostPaused && this.queued < SND_BUF / 2 && this.host) {
      this.hostPaused = false;
      this.host.resume();
    }
  }

  private dropAcked(n: number): void {
    this.queued -= n;
    while (n > 0 && this.chunks.length > 0) {
      const c = this.chunks[0];
      const avail = c.length - this.headOff;
      if (n >= avail) {
        n -= avail;
        this.chunks.shift();
        this.headOff = 0;
      } else {
        this.headOff += n;
        n = 0;
      }
    }
  }

  private sampleRtt(r: number): void {
    if (this.srtt === 0) { this.srtt = r; this.rttvar = r / 2; }
    else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(RTO_MAX, Math.max(RTO_MIN, this.srtt + 4 * this.rttvar));
  }

  // ---- segments to the guest ----

  /** Send what the windows allow, then the FIN when everything is out. */
  output(): void {
    const st = this.state;
    if (st !== State.Established && st !== State.CloseWait && st !== State.FinWait1 && st !== State.Closing && st !== State.LastAck) return;
    const wnd = Math.min(this.sndWnd, this.cwnd);
    let sent = seqDiff(this.sndNxt, this.sndUna);
    if (this.finSent) sent--; // the FIN is not data
    // SACK blocks on our segments take room from the payload
    const seg = this.sackOk && this.ooo.length > 0 ? this.mss - 40 : this.mss;
    // Sender-side batching: while plenty is in flight (so ACKs keep coming), wait until the
    // window opens by a burst's worth instead of sending two segments per ACK. Each write to
    // QEMU then carries a burst, not a pair: far fewer syscalls on both sides of the socket.
    if (sent >= BURST * this.mss && wnd - sent < BURST * this.mss && this.queued - sent >= BURST * this.mss) return;
    while (sent < this.queued) {
      const room = wnd - sent;
      const n = Math.min(seg, this.queued - sent, room);
      if (n <= 0) break;
      this.sendData(this.sndNxt, sent, n, seqLt(this.sndNxt, this.sndMax));
      this.sndNxt = seqAdd(this.sndNxt, n);
      sent += n;
    }
    if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
    if (this.sndWnd === 0 && sent < this.queued && this.sndNxt === this.sndUna) {
      this.stack.timers.arm(this.rtxTimer, this.rto); // persist: probe the zero window
    }
    if (this.finQueued && !this.finSent && sent === this.queued) {
      this.finSent = true;
      this.sendFlags(TCP_FIN | TCP_ACK, this.sndNxt);
      this.sndNxt = seqAdd(this.sndNxt, 1);
      if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
      if (this.state === State.Established) this.state = State.FinWait1;
      else if (this.state === State.CloseWait) this.state = State.LastAck;
      this.stack.timers.arm(this.rtxTimer, this.rto);
    }
  }

  /** One data segment: n bytes starting `at` bytes after snd.una, sequence number seq. */
  private sendData(seq: number, at: number, n: number, rtx = false): void {
    const gw = this.stack.gw;
    const o = gw.txReserve(60 + n);
    const b = gw.txBuf;
    const flags = TCP_ACK | (at + n === this.queued ? TCP_PSH : 0);
    const p = this.writeHeader(o, seq, flags, null);
    // copy n bytes from the chunk queue at offset `at`
    let skip = at + this.headOff;
    let w = p;
    let left = n;
    for (let i = 0; i < this.chunks.length && left > 0; i++) {
      const c = this.chunks[i];
      if (skip >= c.length) { skip -= c.length; continue; }
      const take = Math.min(left, c.length - skip);
      c.copy(b, w, skip, skip + take);
      w += take;
      left -= take;
      skip = 0;
    }
    const hl = p - o;
    finishTcpV4(b, o, hl + n, this.remoteIp, this.guestIp);
    gw.txIpv4(o, this.remoteIp, this.guestIp, IPPROTO_TCP, hl + n);
    this.stack.stats.segmentsOut++;
    this.ackPending = false;
    if (rtx) this.stack.stats.retransmits++;
    else if (this.rttSeq < 0 && this.retries === 0) { this.rttSeq = seqAdd(seq, n); this.rttAt = performance.now(); }
    if (!this.rtxTimer.deadline) this.stack.timers.arm(this.rtxTimer, this.rto);
  }

  private writeHeader(o: number, seq: number, flags: number, opts: TcpOptions | null): number {
    const win = this.window();
    const scaled = Math.min(0xffff, (flags & TCP_SYN) ? win : win >>> this.rcvWscale);
    this.lastAdvertised = (flags & TCP_SYN) ? scaled : scaled << this.rcvWscale;
    if (opts === null && (flags & (TCP_SYN | TCP_RST)) === 0) opts = this.sackOptions();
    return writeTcp(this.stack.gw.txBuf, o, this.remotePort, this.guestPort, seq, (flags & TCP_ACK) ? this.rcvNxt : 0, flags, scaled, opts);
  }

  private sendFlags(flags: number, seq: number): void {
    const gw = this.stack.gw;
    const o = gw.txReserve(60);
    const end = this.writeHeader(o, seq, flags, null);
    finishTcpV4(gw.txBuf, o, end - o, this.remoteIp, this.guestIp);
    gw.txIpv4(o, this.remoteIp, this.guestIp, IPPROTO_TCP, end - o);
    this.stack.stats.segmentsOut++;
    if (flags & TCP_RST) this.stack.stats.resetsSent++;
    this.ackPending = false;
  }

  private sendRst(seq: number): void { this.sendFlags(TCP_RST, seq); }

  private sendSyn(): void {
    const gw = this.stack.gw;
    const opts = this.stack.synOpts;
    opts.clear();
    opts.mss = gw.mtu - 40;
    if (this.state === State.SynSent || this.rcvWscale > 0) opts.wscale = RCV_WSCALE;
    if (this.state === State.SynSent || this.sackOk) opts.sackPermitted = true;
    const o = gw.txReserve(40);
    const flags = this.state === State.SynSent ? TCP_SYN : TCP_SYN | TCP_ACK;
    const end = this.writeHeader(o, this.iss, flags, opts);
    finishTcpV4(gw.txBuf, o, end - o, this.remoteIp, this.guestIp);
    gw.txIpv4(o, this.remoteIp, this.guestIp, IPPROTO_TCP, end - o);
    this.stack.stats.segmentsOut++;
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
    this.stack.timers.arm(this.rtxTimer, this.rto);
  }

  /** One ACK per flow per input batch. */
  scheduleAck(): void {
    if (this.ackPending) return;
    this.ackPending = true;
    this.stack.queueAck(this);
  }

  flushAck(): void {
    if (!this.ackPending || this.state === State.Closed) return;
    this.sendFlags(TCP_ACK, this.sndNxt);
  }

  // ---- timers ----

  private onRtx(): void {
    if (this.state === State.Closed) return;
    if (this.state === State.TimeWait) { this.close(); return; }
    if (this.state === State.Opening) {
      // host connect never finished
      this.stack.connectTimedOut(this);
      return;
    }
    const limit = this.state === State.SynSent || this.state === State.SynReceived ? SYN_RETRIES : DATA_RETRIES;
    if (++this.retries > limit) { this.abort(true); return; }
    this.stack.stats.retransmits++;
    this.rto = Math.min(RTO_MAX, this.rto * 2);
    this.rttSeq = -1;
    if (this.state === State.SynSent || this.state === State.SynReceived) { this.sendSyn(); return; }
    if (this.sndWnd === 0 && this.queued > 0 && this.sndNxt === this.sndUna) {
      // zero-window probe: an already-acked sequence number makes the guest answer with its window
      this.retries = 0;
      this.sendFlags(TCP_ACK, seqAdd(this.sndUna, -1));
      this.stack.timers.arm(this.rtxTimer, Math.min(this.rto, 5000));
      return;
    }
    this.ssthresh = Math.max(2 * this.mss, Math.floor(seqDiff(this.sndMax, this.sndUna) / 2));
    this.cwnd = this.mss;
    this.recovery = false;
    this.sacked = [];
    this.goBack();
  }

  /** Merge the guest's SACK blocks into the scoreboard (bounded; stale blocks ignored). */
  private takeSacks(h: TcpHeader): void {
    for (let i = 0; i < h.sackCount; i++) {
      let st = h.sackBlocks[2 * i];
      const en = h.sackBlocks[2 * i + 1];
      if (!seqLt(st, en) || seqLe(en, this.sndUna) || seqLt(this.sndMax, en)) continue;
      if (seqLt(st, this.sndUna)) st = this.sndUna;
      const r = this.sacked;
      let j = 0;
      while (j < r.length && seqLt(r[j + 1], st)) j += 2;
      let s0 = st;
      let e0 = en;
      let k = j;
      while (k < r.length && seqLe(r[k], e0)) {
        if (seqLt(r[k], s0)) s0 = r[k];
        if (seqLt(e0, r[k + 1])) e0 = r[k + 1];
        k += 2;
      }
      r.splice(j, k - j, s0, e0);
      if (r.length > 32) r.splice(0, r.length - 32);
    }
  }

  private sackedBytes(): number {
    let n = 0;
    for (let i = 0; i < this.sacked.length; i += 2) n += seqDiff(this.sacked[i + 1], this.sacked[i]);
    return n;
  }

  private enterRecovery(): void {
    this.stack.stats.fastRetransmits++;
    this.recovery = true;
    this.recoverSeq = this.sndMax;
    this.ssthresh = Math.max(2 * this.mss, Math.floor(seqDiff(this.sndMax, this.sndUna) / 2));
    this.cwnd = this.ssthresh;
    this.rtxNext = this.sndUna;
    this.rttSeq = -1;
    this.retransmitHoles();
  }

  /**
   * Resend what the scoreboard says is missing: holes below the highest SACKed byte (or,
   * without SACK, the segment at snd.una: NewReno). A couple of segments per ACK keeps
   * the retransmissions clocked by the guest's ACKs.
   */
  private retransmitHoles(): void {
    const dataEnd = seqAdd(this.sndUna, this.queued);
    const r = this.sacked;
    const top = r.length > 0 ? r[r.length - 1] : seqAdd(this.sndUna, 1);
    let pos = seqLt(this.rtxNext, this.sndUna) ? this.sndUna : this.rtxNext;
    let budget = 2;
    while (budget > 0 && seqLt(pos, top) && seqLt(pos, dataEnd)) {
      let holeEnd = top;
      let inside = false;
      for (let i = 0; i < r.length; i += 2) {
        if (seqLe(r[i], pos) && seqLt(pos, r[i + 1])) { pos = r[i + 1]; inside = true; break; }
        if (seqLt(pos, r[i])) { holeEnd = r[i]; break; }
      }
      if (inside) continue;
      const n = Math.min(this.mss, seqDiff(holeEnd, pos), seqDiff(dataEnd, pos));
      if (n <= 0) break;
      this.sendData(pos, seqDiff(pos, this.sndUna), n, true);
      pos = seqAdd(pos, n);
      budget--;
    }
    this.rtxNext = pos;
    this.stack.timers.arm(this.rtxTimer, this.rto);
  }

  /** Rewind to snd.una and send again. */
  private goBack(): void {
    if (this.finSent && this.sndUna === seqAdd(this.sndNxt, -1) && this.queued === 0) {
      this.sendFlags(TCP_FIN | TCP_ACK, this.sndUna);
      this.stack.timers.arm(this.rtxTimer, this.rto);
      return;
    }
    this.sndNxt = this.sndUna;
    this.finSent = false;
    const st = this.state;
    if (st === State.FinWait1) this.state = State.Established;
    else if (st === State.LastAck) this.state = State.CloseWait;
    else if (st === State.Closing) this.state = State.CloseWait;
    const wnd = Math.max(this.mss, Math.min(this.sndWnd, this.cwnd));
    const before = this.cwnd;
    this.cwnd = wnd;
    this.output();
    this.cwnd = before;
    this.stack.timers.arm(this.rtxTimer, this.rto);
  }

  private enterTimeWait(): void {
    this.state = State.TimeWait;
    this.stack.uncount(this); // a closed connection waiting out stray segments is no longer the guest's
    this.stack.timers.arm(this.rtxTimer, TIME_WAIT_MS);
    this.releaseHost();
  }

  // ---- teardown ----

  /** Reset both ways: RST to the guest (if toGuest) and a reset of the host stream. */
  abort(toGuest: boolean): void {
    if (this.state === State.Closed) return;
    if (toGuest && this.state !== State.Opening && this.state !== State.TimeWait) this.sendFlags(TCP_RST | TCP_ACK, this.sndNxt);
    const h = this.host;
    this.host = null;
    if (h && !h.destroyed) {
      const s = h as Duplex & { resetAndDestroy?: () => void };
      if (s.resetAndDestroy) s.resetAndDestroy(); else h.destroy();
    }
    this.close();
  }

  uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.host?.uncork();
  }

  private releaseHost(): void {
    const h = this.host;
    this.host = null;
    if (h && !h.destroyed) h.destroy();
  }

  close(): void {
    if (this.state === State.Closed) return;
    this.state = State.Closed;
    this.stack.timers.cancel(this.rtxTimer);
    this.stack.timers.cancel(this.kaTimer);
    this.chunks = [];
    this.queued = 0;
    this.releaseHost();
    this.stack.remove(this);
    this.onClose?.(this);
  }
}

export interface TcpStackOptions {
  /** Most connections per guest address (new ones get RST and are counted). */
  maxConnsPerGuest?: number;
}

export class TcpStack {
  readonly stats: TcpStats = {
    segmentsIn: 0, segmentsOut: 0, retransmits: 0, fastRetransmits: 0, outOfOrder: 0, badChecksum: 0,
    malformed: 0, resetsSent: 0, refused: 0, limitHits: 0, connsOpened: 0,
  };
  readonly timers;
  /** guest (ip*65536+port) -> remote (ip*65536+port) -> connection */
  private readonly conns = new Map<number, Map<number, TcpConn>>();
  private readonly perGuest = new Map<number, number>();
  private readonly maxPerGuest: number;
  private readonly acks: TcpConn[] = [];
  private acksQueued = false;
  private readonly uncorks: TcpConn[] = [];
  private readonly flushAcks = (): void => {
    this.acksQueued = false;
    const u = this.uncorks;
    for (let i = 0; i < u.length; i++) u[i].uncork();
    u.length = 0;
    const a = this.acks;
    for (let i = 0; i < a.length; i++) a[i].flushAck();
    a.length = 0;
  };
  readonly synOpts = new TcpOptions();
  readonly ackOpts = new TcpOptions();
  private readonly hdr = new TcpHeader();
  private nextPort = 49152 + Math.floor(Math.random() * 8192);
  /** Decides what a new guest connection reaches (NAT, guestfwd, a service); null = RST. */
  opener: ((c: TcpConn) => boolean) | null = null;
  onConnectTimeout: ((c: TcpConn) => void) | null = null;

  constructor(readonly gw: Gateway, opts: TcpStackOptions = {}) {
    this.timers = gw.timers;
    this.maxPerGuest = opts.maxConnsPerGuest ?? 4096;
    gw.onTcp = (p) => this.input(p);
  }

  get size(): number { let n = 0; for (const m of this.conns.values()) n += m.size; return n; }

  connections(): TcpConn[] {
    const out: TcpConn[] = [];
    for (const m of this.conns.values()) for (const c of m.values()) out.push(c);
    return out;
  }

  queueUncork(c: TcpConn): void {
    this.uncorks.push(c);
    if (!this.acksQueued) {
      this.acksQueued = true;
      queueMicrotask(this.flushAcks);
    }
  }

  uncount(c: TcpConn): void {
    if (!c.counted) return;
    c.counted = false;
    const n = (this.perGuest.get(c.guestIp) ?? 1) - 1;
    if (n <= 0) this.perGuest.delete(c.guestIp); else this.perGuest.set(c.guestIp, n);
  }

  queueAck(c: TcpConn): void {
    this.acks.push(c);
    if (!this.acksQueued) {
      this.acksQueued = true;
      queueMicrotask(this.flushAcks);
    }
  }

  private input(p: IpPacket): void {
    const ip = p.ip;
    const h = this.hdr;
    const err = parseTcp(p.buf, ip.payloadOffset, ip.payloadEnd, h, pseudoSumV4(ip.src, ip.dst, IPPROTO_TCP, ip.payloadEnd - ip.payloadOffset));
    if (err) { this.stats.malformed++; return; }
    if (!h.checksumOk) { this.stats.badChecksum++; return; }
    this.stats.segmentsIn++;
    const gk = ip.src * 65536 + h.srcPort;
    const rk = ip.dst * 65536 + h.dstPort;
    const c = this.conns.get(gk)?.get(rk);
    if (c) {
      // A new SYN on a 4-tuple still in TIME_WAIT: the guest reuses the port, so start afresh.
      if (c.state === State.TimeWait && (h.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) c.close();
      else { c.input(h, p.buf); return; }
    }
    if ((h.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) !== TCP_SYN) {
      if (!(h.flags & TCP_RST)) this.resetFor(ip.src, ip.dst, h, p.buf);
      return;
    }
    if ((this.perGuest.get(ip.src) ?? 0) >= this.maxPerGuest) {
      this.stats.limitHits++;
      this.resetFor(ip.src, ip.dst, h, p.buf);
      return;
    }
    const conn = new TcpConn(this, ip.src, h.srcPort, ip.dst, h.dstPort);
    conn.irs = h.seq;
    conn.rcvNxt = seqAdd(h.seq, 1);
    conn.iss = (Math.random() * 0x100000000) >>> 0;
    conn.sndUna = conn.iss;
    conn.sndNxt = conn.iss;
    conn.sndWnd = h.window;
    const opts = this.synOpts;
    // takeSynOptions is private to the connection's logic: replicate the decision via a SYN-ACK path
    (conn as unknown as { takeSynOptions(h: TcpHeader): void }).takeSynOptions(h);
    this.add(conn);
    void opts;
    if (!this.opener || !this.opener(conn)) { conn.refuse(); return; }
    if (conn.state === State.Opening) this.timers.arm(conn.rtxTimer, CONNECT_TIMEOUT_MS);
  }

  connectTimedOut(c: TcpConn): void {
    this.onConnectTimeout?.(c);
    c.close();
  }

  /** RST for a segment that matches no connection (RFC 793 reset generation). */
  private resetFor(guestIp: number, remoteIp: number, h: TcpHeader, _buf: Buffer): void {
    const gw = this.gw;
    const o = gw.txReserve(20);
    const len = h.payloadEnd - h.payloadOffset + ((h.flags & TCP_SYN) ? 1 : 0) + ((h.flags & TCP_FIN) ? 1 : 0);
    const end = (h.flags & TCP_ACK)
      ? writeTcp(gw.txBuf, o, h.dstPort, h.srcPort, h.ack, 0, TCP_RST, 0, null)
      : writeTcp(gw.txBuf, o, h.dstPort, h.srcPort, 0, seqAdd(h.seq, len), TCP_RST | TCP_ACK, 0, null);
    finishTcpV4(gw.txBuf, o, end - o, remoteIp, guestIp);
    gw.txIpv4(o, remoteIp, guestIp, IPPROTO_TCP, end - o);
    this.stats.resetsSent++;
  }

  /** Open a connection into a guest (hostfwd): from remoteIp:port (ephemeral if 0). */
  connect(guestIp: number, guestPort: number, remoteIp: number, remotePort = 0): TcpConn | null {
    if ((this.perGuest.get(guestIp) ?? 0) >= this.maxPerGuest) { this.stats.limitHits++; return null; }
    let rp = remotePort;
    if (rp === 0) {
      for (let i = 0; i < 16384; i++) {
        rp = this.nextPort;
        this.nextPort = this.nextPort >= 65535 ? 49152 : this.nextPort + 1;
        if (!this.conns.get(guestIp * 65536 + guestPort)?.has(remoteIp * 65536 + rp)) break;
      }
    }
    const c = new TcpConn(this, guestIp, guestPort, remoteIp, rp);
    c.state = State.SynSent;
    c.iss = (Math.random() * 0x100000000) >>> 0;
    c.sndUna = c.iss;
    c.rcvWscale = RCV_WSCALE;
    c.cwnd = 10 * 536;
    this.add(c);
    (c as unknown as { sendSyn(): void }).sendSyn();
    return c;
  }

  private add(c: TcpConn): void {
    const gk = c.guestIp * 65536 + c.guestPort;
    let m = this.conns.get(gk);
    if (!m) { m = new Map(); this.conns.set(gk, m); }
    m.set(c.remoteIp * 65536 + c.remotePort, c);
    this.perGuest.set(c.guestIp, (this.perGuest.get(c.guestIp) ?? 0) + 1);
    this.stats.connsOpened++;
  }

  remove(c: TcpConn): void {
    const gk = c.guestIp * 65536 + c.guestPort;
    const m = this.conns.get(gk);
    if (m?.get(c.remoteIp * 65536 + c.remotePort) === c) {
      m.delete(c.remoteIp * 65536 + c.remotePort);
      if (m.size === 0) this.conns.delete(gk);
      this.uncount(c);
    }
  }

  /** Reset the host side of every connection of a guest address (its VM is gone). */
  abortGuest(ip: number): number {
    let n = 0;
    for (const c of this.connections()) if (c.guestIp === ip) { c.abort(false); n++; }
    return n;
  }

  close(): void {
    for (const c of this.connections()) c.abort(true);
  }
}
