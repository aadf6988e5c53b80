// One gateway TCP connection: a real TCP endpoint (RFC 9293) facing a guest, whose other end
// is a host stream (stack/tcp/host.ts).
//
// Shape: the connection decides, the stack sends. It reacts to five kinds of event (a
// segment from the guest, host data, host end/failure/drain, a timer, the ACK flush at the
// end of an input batch) and answers with segments it hands to the stack (transmit()), host
// writes, and timer changes on the stack's queue. It reads time only from that queue's
// clock, so the same code runs against the gateway or an in-memory link with a manual clock.
// Every state change goes through setState() (with a debug line giving the reason).
//
// Receive side: segments are checked against the window first (RFC 9293 3.10.7.4); RSTs and
// SYNs in a synchronized state follow RFC 5961 (exact-match RST, else a challenge ACK);
// in-order data goes to the host, out-of-order data to a bounded reorder queue
// (recv-queue.ts) answered with an immediate duplicate ACK carrying SACK blocks when the guest
// offered SACK. ACKs are otherwise coalesced: one per connection per input batch.
//
// Send side: host data is queued (send-queue.ts) until the guest ACKs it. What may be in
// flight is min(guest window, cwnd); cwnd comes from a congestion controller
// (congestion.ts: NewReno). Loss recovery: three duplicate ACKs, or SACKed data beyond three
// segments, start fast recovery: the holes the SACK scoreboard shows (or, without SACK, the
// segment at snd.una, NewReno-style on each partial ACK) are resent, two per ACK, until an
// ACK covers everything sent before recovery began. The retransmission timer (RFC 6298,
// rtt.ts) backs off exponentially and rewinds to snd.una (go-back-N); after DATA_RETRIES
// (SYN_RETRIES for a handshake) the connection is reset. A zero window is probed with
// already-acknowledged sequence numbers on the same timer, capped at 5 s.
//
// Flow control is end to end: the host stream is paused while more than SND_BUF bytes are
// queued for the guest, and the window advertised to the guest is what the host stream's
// write backlog leaves of RCV_BUF. No buffer grows without bound.
//
// Opening: a guest SYN creates the connection in Opening (nothing sent); the stack's opener
// joins it to a host stream, and only then is the SYN answered (SYN-ACK), or refused with a
// RST, or (by the NAT) answered with ICMP unreachable: the guest sees the real outcome. A
// connection into the guest (hostfwd) starts in SynSent; a simultaneous open is handled.
// Closing: the host's end queues our FIN after the data (FIN-WAIT-1 / LAST-ACK at once, as
// RFC 9293's CLOSE does); TIME_WAIT is short (TIME_WAIT_MS: the virtual link has no stray old
// segments worth waiting out) and a new SYN on its 4-tuple starts afresh. Keepalive probes
// towards a guest idle for 2 h find guests that vanished without FIN or RST.
//
// Options: MSS (clamped to what the gateway MTU leaves after the IPv4 or IPv6 and TCP
// headers, and at least MIN_MSS), window scale (ours 7,
// RCV_BUF 4 MiB) and SACK-permitted are negotiated; timestamps are not offered.
import type { Duplex } from 'node:stream';
import { Timer } from '../timers.ts';
import { V6_BASE } from '../addr.ts';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type TcpHeader, type TcpOptions } from '../../wire/tcp.ts';
import { seqAdd, seqDiff, seqInRange, seqLe, seqLt } from './seq.ts';
import { RttEstimator } from './rtt.ts';
import { SendQueue, SackScoreboard } from './send-queue.ts';
import type { Slab } from './rx-slab.ts';
import { ReorderQueue } from './recv-queue.ts';
import { NewReno, type CongestionControl } from './congestion.ts';
import { attachStream, type HostEnd, type HostEvents } from './host.ts';
import type { TcpStack } from './stack.ts';

/** Our receive buffer: the most guest data we accept that the host stream has not taken. */
export const RCV_BUF = 4 * 1024 * 1024;
export const RCV_WSCALE = 7;
/** Most bytes queued towards the guest (unacked + unsent) before the host stream is paused. */
export const SND_BUF = 2 * 1024 * 1024;
export const SYN_RETRIES = 5;
export const DATA_RETRIES = 12;
export const TIME_WAIT_MS = 2000;
/** Keepalive towards the guest, as Linux and slirp do: after 2 h idle, 9 probes 75 s apart. */
export const KEEPALIVE_IDLE_MS = 2 * 3600_000;
export const KEEPALIVE_INTERVAL_MS = 75_000;
export const KEEPALIVE_PROBES = 9;
/** Segments per burst once the pipe is full (see output()). */
export const BURST = 16;
/** The MSS when the guest sends none (RFC 9293 3.7.1) and the least we accept. */
export const DEFAULT_MSS = 536;
export const MIN_MSS = 64;
/** Longest interval between zero-window probes. */
export const PERSIST_MAX_MS = 5000;

export enum State {
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

/** States in which data may still go to the guest. */
function canSend(s: State): boolean {
  return s === State.Established || s === State.CloseWait || s === State.FinWait1 || s === State.Closing || s === State.LastAck;
}

/** States in which guest data is still taken (the guest has not sent its FIN). */
function canReceive(s: State): boolean {
  return s === State.Established || s === State.FinWait1 || s === State.FinWait2;
}

export class TcpConn implements HostEvents {
  state = State.Opening;
  // send side (towards the guest)
  iss = 0;
  sndUna = 0;
  sndNxt = 0;
  /** highest sequence number sent + 1 (snd.nxt rewinds after a timeout, this does not) */
  sndMax = 0;
  sndWnd = 0;
  /** segment sequence and ack numbers of the last window update (RFC 9293 SND.WL1/WL2) */
  private sndWl1 = 0;
  private sndWl2 = 0;
  sndWscale = 0;
  mss = DEFAULT_MSS;
  readonly cc: CongestionControl = new NewReno(SND_BUF);
  dupAcks = 0;
  readonly sendQ = new SendQueue();
  readonly sack = new SackScoreboard();
  /** in fast recovery until an ACK reaches recoverSeq */
  recovery = false;
  private recoverSeq = 0;
  /** where the next hole retransmission looks from */
  private rtxNext = 0;
  /** the host side ended: our FIN follows the queued data */
  finQueued = false;
  /** our FIN is in the sequence space (sent, possibly unacknowledged) */
  finSent = false;
  // receive side (from the guest)
  irs = 0;
  rcvNxt = 0;
  rcvWscale = 0;
  /** the window (bytes) in our last segment */
  private lastAdvertised = 0;
  readonly reorder = new ReorderQueue();
  /** the guest offered SACK-permitted: our duplicate ACKs carry SACK blocks */
  sackOk = false;
  private ackPending = false;
  // timers
  readonly rtt = new RttEstimator();
  retries = 0;
  readonly rtxTimer: Timer;
  /** guest-side keepalive: a guest that vanished without a FIN or RST is found out */
  private readonly kaTimer: Timer;
  private kaProbes = 0;
  // the host side
  host: HostEnd | null = null;
  private hostPaused = false;
  private corked = false;
  /** this batch's in-order data in the stack's rx slab, not yet written to the host */
  private runSlab: Slab | null = null;
  private runStart = 0;
  private runEnd = 0;
  /** still counted against the guest's connection limit */
  counted = true;
  /** whom it is counted under (TcpStack.limit) */
  owner = 0;
  /** whom it is counted under as half-open (TcpStack.opening); -1: not (any more) */
  openingOwner = -1;
  readonly createdAt = Date.now();
  bytesIn = 0;
  bytesOut = 0;
  /** Called once when the connection is gone (both directions closed, reset or timed out). */
  onClose: ((c: TcpConn) => void) | null = null;

  constructor(readonly stack: TcpStack, readonly guestIp: number, readonly guestPort: number,
    readonly remoteIp: number, readonly remotePort: number) {
    this.rtxTimer = new Timer(() => this.onRtx());
    this.kaTimer = new Timer(() => this.onKeepalive());
  }

  get key(): string { return `${this.guestIp}:${this.guestPort}-${this.remoteIp}:${this.remotePort}`; }
  /** IP + TCP header bytes (what the MTU leaves for data is mtu - headers) */
  get headers(): number { return this.guestIp >= V6_BASE ? 60 : 40; }
  get rto(): number { return this.rtt.rto; }
  get cwnd(): number { return this.cc.cwnd; }
  get ssthresh(): number { return this.cc.ssthresh; }
  /** bytes queued for the guest: unacknowledged + unsent */
  get queued(): number { return this.sendQ.length; }

  /** The one place the state changes. */
  private setState(next: State, why: string): void {
    if (this.state === next) return;
    const log = this.stack.log;
    if (log.enabled('debug')) log.debug('state', { conn: this.key, from: State[this.state], to: State[next], why });
    if (this.state === State.Opening) this.stack.opened(this);
    this.state = next;
  }

  // ---- opening ----

  /** A guest SYN (from the stack): take its sequence number and options. */
  acceptSyn(h: TcpHeader, iss: number): void {
    this.irs = h.seq;
    this.rcvNxt = seqAdd(h.seq, 1);
    this.iss = iss;
    this.sndUna = iss;
    this.sndNxt = iss;
    this.sndWnd = h.window; // windows in SYNs are never scaled
    this.sndWl1 = h.seq;
    this.takeSynOptions(h);
  }

  /** Open towards the guest (hostfwd): send our SYN. */
  openActive(iss: number): void {
    this.iss = iss;
    this.sndUna = iss;
    this.rcvWscale = RCV_WSCALE;
    this.cc.init(DEFAULT_MSS);
    this.setState(State.SynSent, 'connect to the guest');
    this.sendSyn();
  }

  /** Join the connection to a host stream and (for a guest-opened connection) accept it. */
  attach(host: Duplex): void { attachStream(this, host); }

  attachHost(h: HostEnd): void {
    this.host = h;
    if (this.state === State.Opening) {
      this.setState(State.SynReceived, 'host side open');
      this.stack.timers.cancel(this.rtxTimer);
      this.sendSyn();
    }
  }

  /** Refuse a guest-opened connection (the host said no): RST, as the real host would. */
  refuse(): void {
    this.stack.stats.refused++;
    this.sendFlags(TCP_RST | TCP_ACK, 0);
    this.close('refused');
  }

  private takeSynOptions(h: TcpHeader): void {
    this.sackOk = h.sackPermitted;
    const limit = this.stack.out.mtu - this.headers;
    this.mss = h.mss > 0 ? Math.max(MIN_MSS, Math.min(h.mss, limit)) : Math.min(DEFAULT_MSS, limit);
    if (h.wscale >= 0) {
      this.sndWscale = Math.min(h.wscale, 14);
      this.rcvWscale = RCV_WSCALE;
    } else {
      this.sndWscale = 0;
      this.rcvWscale = 0;
    }
    this.cc.init(this.mss);
  }

  private established(why: string): void {
    this.setState(State.Established, why);
    this.retries = 0;
    this.stack.timers.cancel(this.rtxTimer);
    if (this.finQueued) this.closeRequested();
    this.output();
  }

  // ---- the host side ----

  hostData(d: Buffer): void {
    if (this.state === State.Closed || this.finQueued) return;
    this.sendQ.push(d);
    this.queuedFromHost(d.length);
  }

  /** Host data in a buffer lent for the call only (a socket's shared read buffer): copied in. */
  hostDataBorrowed(buf: Buffer, len: number): void {
    if (this.state === State.Closed || this.finQueued) return;
    this.sendQ.append(buf, 0, len);
    this.queuedFromHost(len);
  }

  private queuedFromHost(len: number): void {
    this.bytesIn += len;
    if (this.sendQ.length >= SND_BUF && this.host && !this.hostPaused) {
      this.hostPaused = true;
      this.host.pause();
    }
    this.output();
  }

  hostEnded(): void {
    if (this.state === State.Closed || this.finQueued) return;
    this.finQueued = true;
    this.closeRequested();
    this.output();
  }

  hostDrained(): void {
    if (this.state === State.Closed || this.state === State.Opening) return;
    // Announce the opened window if the last one we sent was small.
    if (this.lastAdvertised < RCV_BUF / 4) this.scheduleAck();
  }

  hostFailed(): void { this.abort(true); }

  hostClosed(): void { if (this.state !== State.Closed && !this.finQueued) this.abort(true); }

  /** RFC 9293 CLOSE: our FIN is queued after the data, and the state says so at once. */
  private closeRequested(): void {
    if (this.state === State.Established) this.setState(State.FinWait1, 'host side ended');
    else if (this.state === State.CloseWait) this.setState(State.LastAck, 'host side ended');
    // before the handshake completes, established() comes back here
  }

  /** The advertised receive window, in bytes. */
  window(): number {
    const backlog = this.host ? this.host.backlog : 0;
    return Math.max(0, RCV_BUF - backlog);
  }

  // ---- segments from the guest ----

  input(h: TcpHeader, buf: Buffer): void {
    const st = this.state;
    if (st === State.Closed) return;
    if (st !== State.TimeWait) {
      this.kaProbes = 0;
      this.stack.timers.arm(this.kaTimer, KEEPALIVE_IDLE_MS);
    }
    if (st === State.Opening) return this.inputOpening(h);
    if (st === State.SynSent) return this.inputSynSent(h);
    const flags = h.flags;
    const len = h.payloadEnd - h.payloadOffset;
    const segLen = len + (flags & TCP_SYN ? 1 : 0) + (flags & TCP_FIN ? 1 : 0);

    // our SYN-ACK was lost and the guest sends its SYN again: answer it again (as Linux does;
    // an ACK alone would leave the guest in SYN-SENT)
    if (st === State.SynReceived && flags & TCP_SYN && !(flags & TCP_ACK) && h.seq === this.irs) { this.sendSyn(); return; }
    // 1. the sequence number must fall in the window
    let takeData = true;
    if (!this.acceptable(h.seq, segLen)) {
      if (h.seq === this.rcvNxt && this.window() === 0) {
        takeData = false; // RFC 9293: with our window shut, valid ACKs and RSTs still count
      } else {
        // an old duplicate, a keepalive probe, or beyond the window: say where we are
        if (!(flags & TCP_RST)) this.scheduleAck();
        return;
      }
    }
    // 2. RST (RFC 5961 3: only an exact match resets; in-window ones get a challenge ACK)
    if (flags & TCP_RST) {
      if (h.seq === this.rcvNxt) this.abort(false, 'reset by the guest');
      else this.challengeAck();
      return;
    }
    // 3. SYN in a synchronized state (RFC 5961 4: a challenge ACK, whatever its sequence number)
    if (flags & TCP_SYN) { this.challengeAck(); return; }
    // 4. ACK
    if (!(flags & TCP_ACK)) return;
    if (st === State.SynReceived) {
      if (!(seqLt(this.sndUna, h.ack) && seqLe(h.ack, this.sndMax))) { this.sendFlags(TCP_RST, h.ack); return; }
      this.sndUna = seqAdd(this.sndUna, 1); // our SYN
      this.updateWindow(h);
      this.established('handshake complete');
    }
    if (!this.processAck(h)) return;
    if (this.state === State.Closed) return;
    // 5. data and FIN
    if (!takeData) this.scheduleAck(); // the window is still shut
    else if (len > 0 || flags & TCP_FIN) this.receive(h, buf, len, (flags & TCP_FIN) !== 0);
    this.output();
  }

  /** A SYN arrived while the host side is still being opened. */
  private inputOpening(h: TcpHeader): void {
    // a retransmitted SYN waits for the host like the first one; a RST from the guest cancels
    if (h.flags & TCP_RST && h.seq === this.rcvNxt) this.close('guest reset before the host answered');
  }

  private inputSynSent(h: TcpHeader): void {
    const flags = h.flags;
    const ackOk = (flags & TCP_ACK) !== 0 && h.ack === this.sndNxt;
    if (flags & TCP_ACK && !ackOk) {
      if (!(flags & TCP_RST)) this.sendFlags(TCP_RST, h.ack);
      return;
    }
    if (flags & TCP_RST) {
      if (ackOk) this.abort(false, 'refused by the guest');
      return;
    }
    if (!(flags & TCP_SYN)) return;
    this.irs = h.seq;
    this.rcvNxt = seqAdd(h.seq, 1);
    this.takeSynOptions(h);
    this.sndWnd = h.window; // windows in SYNs are never scaled
    this.sndWl1 = h.seq;
    this.sndWl2 = h.ack;
    if (ackOk) {
      this.sndUna = h.ack;
      this.established('SYN-ACK received');
      this.scheduleAck();
    } else {
      // simultaneous open (RFC 9293 3.5): answer with SYN-ACK from the same ISS
      this.setState(State.SynReceived, 'simultaneous open');
      this.sendSyn();
    }
  }

  /** RFC 9293 3.10.7.4: does a segment of segLen starting at seq overlap the receive window? */
  private acceptable(seq: number, segLen: number): boolean {
    const wnd = this.window();
    const nxt = this.rcvNxt;
    if (segLen === 0) return wnd === 0 ? seq === nxt : seqInRange(seq, nxt, seqAdd(nxt, wnd));
    if (wnd === 0) return false;
    const end = seqAdd(nxt, wnd);
    return seqInRange(seq, nxt, end) || seqInRange(seqAdd(seq, segLen - 1), nxt, end);
  }

  private challengeAck(): void {
    this.stack.stats.challengeAcks++;
    this.sendFlags(TCP_ACK, this.sndNxt);
  }

  /** RFC 9293: take the window only from segments newer than the last update. */
  private updateWindow(h: TcpHeader): void {
    if (seqLt(this.sndWl1, h.seq) || (this.sndWl1 === h.seq && seqLe(this.sndWl2, h.ack))) {
      this.sndWnd = h.window << this.sndWscale;
      this.sndWl1 = h.seq;
      this.sndWl2 = h.ack;
    }
  }

  /** ACK processing for a synchronized state; false when the segment is done with. */
  private processAck(h: TcpHeader): boolean {
    const ack = h.ack;
    if (h.sackCount > 0 && this.sackOk) {
      for (let i = 0; i < h.sackCount; i++) this.sack.add(h.sackBlocks[2 * i], h.sackBlocks[2 * i + 1], this.sndUna, this.sndMax);
    }
    if (seqLt(this.sndUna, ack) && seqLe(ack, this.sndMax)) {
      this.ackAdvance(ack, h);
    } else if (ack === this.sndUna) {
      this.updateWindow(h);
      const len = h.payloadEnd - h.payloadOffset;
      // (the window is not compared, as RFC 5681 would: a receiver holding out-of-order data changes it)
      if (len === 0 && !(h.flags & TCP_FIN) && this.sndMax !== this.sndUna) {
        this.dupAcks++;
        if (this.recovery) this.retransmitHoles();
        else if (this.dupAcks >= 3 || this.sack.bytes() > 3 * this.mss) this.enterRecovery();
      }
    } else if (seqLt(this.sndMax, ack)) {
      this.scheduleAck(); // acks something we never sent
      return false;
    }
    return true;
  }

  private ackAdvance(ack: number, h: TcpHeader): void {
    const acked = seqDiff(ack, this.sndUna);
    this.dupAcks = 0;
    this.retries = 0;
    this.rtt.acked(ack, this.stack.timers.now());
    // data bytes acked (a FIN counts one more)
    const dataAcked = Math.min(acked, this.sendQ.length);
    this.sendQ.drop(dataAcked);
    this.sndUna = ack;
    if (seqLt(this.sndNxt, ack)) this.sndNxt = ack; // after a timeout rewind, the guest had more
    this.updateWindow(h);
    this.sack.advance(ack);
    if (this.recovery) {
      if (seqLe(this.recoverSeq, ack)) {
        this.recovery = false;
        this.stack.stats.recoveries++;
        this.cc.onRecovered();
      } else {
        this.stack.stats.partialAcks++;
        this.retransmitHoles(); // partial ACK: the next hole starts at the new snd.una
      }
    } else {
      this.cc.onAck(dataAcked);
    }
    if (this.finSent && ack === this.sndMax) {
      switch (this.state) {
        case State.FinWait1: this.setState(State.FinWait2, 'our FIN acknowledged'); break;
        case State.Closing: this.enterTimeWait('our FIN acknowledged'); break;
        case State.LastAck: this.close('our FIN acknowledged'); return;
        default: break;
      }
    }
    if (this.sndUna === this.sndNxt) this.stack.timers.cancel(this.rtxTimer);
    else this.stack.timers.arm(this.rtxTimer, this.rtt.rto);
    if (this.hostPaused && this.sendQ.length < SND_BUF / 2 && this.host) {
      this.hostPaused = false;
      this.host.resume();
    }
  }

  /** Data and FIN of an acceptable segment. */
  private receive(h: TcpHeader, buf: Buffer, len: number, fin: boolean): void {
    let from = h.payloadOffset;
    let seq = h.seq;
    if (seqLt(seq, this.rcvNxt)) {
      // the start was received before: keep only what is new
      const skip = seqDiff(this.rcvNxt, seq);
      if (skip >= len + (fin ? 1 : 0)) { this.scheduleAck(); return; }
      from += Math.min(skip, len);
      seq = this.rcvNxt;
    }
    if (seq !== this.rcvNxt) { this.stash(buf, from, h.payloadEnd, seq, fin); return; }
    const to = h.payloadEnd;
    // what lies beyond the window is dropped, and with it a FIN after it
    const room = this.window();
    if (to - from > room) { this.deliver(buf, from, from + room, false, false); this.scheduleAck(); return; }
    this.deliver(buf, from, to, fin, false);
    if (!this.reorder.empty) {
      const finInOrder = this.reorder.drain(this.rcvNxt, (d, f, t) => { this.deliver(d, f, t, false, true); return this.rcvNxt; });
      if (finInOrder) this.deliver(buf, 0, 0, true, false);
    }
  }

  /** Keep an out-of-order segment (bounded) and answer with an immediate duplicate ACK + SACK. */
  private stash(buf: Buffer, from: number, to: number, seq: number, fin: boolean): void {
    this.stack.stats.outOfOrder++;
    this.reorder.add(seq, buf, from, to, fin, this.rcvNxt, this.window());
    this.sendFlags(TCP_ACK, this.sndNxt);
  }

  /** In-order guest data (and FIN) at rcv.nxt. `owned`: buf is ours (from the reorder queue). */
  private deliver(buf: Buffer, from: number, to: number, fin: boolean, owned: boolean): void {
    const len = to - from;
    if (len > 0) {
      if (canReceive(this.state)) {
        const h = this.host;
        if (h) {
          // One writev per input batch instead of a syscall per segment (uncorked after the batch).
          if (!this.corked) { this.corked = true; h.cork(); this.stack.queueUncork(this); }
          if (owned) { this.flushRun(); h.write(buf.subarray(from, to)); }
          else this.appendRun(buf, from, to);
        }
        this.bytesOut += len;
      }
      this.rcvNxt = seqAdd(this.rcvNxt, len);
    }
    if (fin) {
      this.flushRun();
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      switch (this.state) {
        case State.Established:
          this.setState(State.CloseWait, 'guest sent FIN');
          this.host?.end();
          break;
        case State.FinWait1:
          this.setState(State.Closing, 'guest sent FIN');
          this.host?.end();
          break;
        case State.FinWait2:
          this.host?.end();
          this.enterTimeWait('guest sent FIN');
          break;
        case State.TimeWait:
          this.stack.timers.arm(this.rtxTimer, TIME_WAIT_MS); // a retransmitted FIN: wait again
          break;
        default:
          break;
      }
    }
    this.scheduleAck();
  }

  // ---- segments to the guest ----

  /** Send what the windows allow, then the FIN when everything is out. */
  output(): void {
    if (!canSend(this.state)) return;
    const queued = this.sendQ.length;
    const wnd = Math.min(this.sndWnd, this.cc.cwnd);
    let sent = seqDiff(this.sndNxt, this.sndUna);
    if (this.finSent) sent--; // the FIN is not data
    // SACK blocks on our segments take room from the payload
    const seg = this.sackOk && !this.reorder.empty ? this.mss - 40 : this.mss;
    // Sender-side batching: while plenty is in flight (so ACKs keep coming), wait until the
    // window opens by a burst's worth instead of sending two segments per ACK. Each write to
    // QEMU then carries a burst, not a pair: far fewer syscalls on both sides of the socket.
    if (sent >= BURST * this.mss && wnd - sent < BURST * this.mss && queued - sent >= BURST * this.mss) return;
    while (sent < queued) {
      const n = Math.min(seg, queued - sent, wnd - sent);
      if (n <= 0) break;
      this.sendData(this.sndNxt, sent, n, seqLt(this.sndNxt, this.sndMax));
      this.sndNxt = seqAdd(this.sndNxt, n);
      sent += n;
    }
    if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
    if (this.sndWnd === 0 && sent < queued && this.sndNxt === this.sndUna && !this.rtxTimer.armed) {
      this.stack.timers.arm(this.rtxTimer, this.rtt.rto); // persist: probe the zero window
    }
    if (this.finQueued && !this.finSent && sent === queued) {
      this.finSent = true;
      this.sendFlags(TCP_FIN | TCP_ACK, this.sndNxt);
      this.sndNxt = seqAdd(this.sndNxt, 1);
      if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
      this.stack.timers.arm(this.rtxTimer, this.rtt.rto);
    }
  }

  /** One data segment: n bytes starting `at` bytes after snd.una, sequence number seq. */
  private sendData(seq: number, at: number, n: number, rtx: boolean): void {
    const flags = TCP_ACK | (at + n === this.sendQ.length ? TCP_PSH : 0);
    this.emit(seq, flags, null, at, n);
    this.ackPending = false;
    if (rtx) this.stack.stats.retransmits++;
    else if (this.retries === 0) this.rtt.start(seqAdd(seq, n), this.stack.timers.now());
    if (!this.rtxTimer.armed) this.stack.timers.arm(this.rtxTimer, this.rtt.rto);
  }

  /** Window, ACK and options for a segment, then hand it to the stack. */
  private emit(seq: number, flags: number, opts: TcpOptions | null, dataAt: number, dataLen: number): void {
    const win = this.window();
    const syn = (flags & TCP_SYN) !== 0;
    const scaled = Math.min(0xffff, syn ? win : win >>> this.rcvWscale);
    this.lastAdvertised = syn ? scaled : scaled << this.rcvWscale;
    if (opts === null && (flags & (TCP_SYN | TCP_RST)) === 0) opts = this.sackOptions();
    this.stack.transmit(this, seq, (flags & TCP_ACK) ? this.rcvNxt : 0, flags, scaled, opts, dataAt, dataLen);
  }

  private sendFlags(flags: number, seq: number): void {
    this.emit(seq, flags, null, 0, 0);
    this.ackPending = false;
  }

  /** Our SYN (active open) or SYN-ACK, with our options. */
  private sendSyn(): void {
    const opts = this.stack.synOpts;
    opts.clear();
    opts.mss = this.stack.out.mtu - this.headers;
    const active = this.state === State.SynSent;
    if (active || this.rcvWscale > 0) opts.wscale = RCV_WSCALE;
    if (active || this.sackOk) opts.sackPermitted = true;
    this.emit(this.iss, active ? TCP_SYN : TCP_SYN | TCP_ACK, opts, 0, 0);
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
    this.stack.timers.arm(this.rtxTimer, this.rtt.rto);
  }

  /** SACK blocks describing the reorder queue (the most recently received block first, RFC 2018). */
  private sackOptions(): TcpOptions | null {
    if (!this.sackOk || this.reorder.empty) return null;
    const o = this.stack.ackOpts;
    o.clear();
    o.sackCount = this.reorder.sackBlocks(o.sackBlocks, 3);
    return o;
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

  uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.flushRun();
    this.host?.uncork();
  }

  /**
   * Borrowed in-order data is copied into the stack's slab; while this connection's copies are
   * adjacent there they grow one run, written to the host as one Buffer (see rx-slab.ts).
   */
  private appendRun(buf: Buffer, from: number, to: number): void {
    const len = to - from;
    const rx = this.stack.rxSlab;
    const at = rx.reserve(len);
    const slab = rx.cur;
    if (this.runSlab !== slab || this.runEnd !== at) {
      this.flushRun();
      slab.pending++; // the run holds its slab from now on, not only once it is written
      this.runSlab = slab;
      this.runStart = at;
    }
    buf.copy(slab.buf, at, from, to);
    slab.fill = this.runEnd = at + len;
  }

  private flushRun(): void {
    const s = this.runSlab;
    if (s === null) return;
    this.runSlab = null;
    const h = this.host;
    if (h === null) { s.done(); return; }
    const view = s.buf.subarray(this.runStart, this.runEnd);
    if (h.writeLent) { h.writeLent(view, s.done); return; }
    s.kept = true;
    h.write(view);
    s.done();
  }

  // ---- loss recovery ----

  private enterRecovery(): void {
    this.stack.stats.fastRetransmits++;
    this.recovery = true;
    this.recoverSeq = this.sndMax;
    this.cc.onLoss(seqDiff(this.sndMax, this.sndUna));
    this.rtxNext = this.sndUna;
    this.rtt.invalidate();
    this.retransmitHoles();
  }

  /**
   * Resend what the scoreboard says is missing: holes below the highest SACKed byte (or,
   * without SACK, the segment at snd.una: NewReno). A couple of segments per ACK keeps
   * the retransmissions clocked by the guest's ACKs.
   */
  private retransmitHoles(): void {
    const dataEnd = seqAdd(this.sndUna, this.sendQ.length);
    const top = this.sack.top(seqAdd(this.sndUna, 1));
    let pos = seqLt(this.rtxNext, this.sndUna) ? this.sndUna : this.rtxNext;
    for (let budget = 2; budget > 0; budget--) {
      const hole = this.sack.holeFrom(pos, top);
      if (!hole || !seqLt(hole[0], dataEnd)) break;
      const n = Math.min(this.mss, seqDiff(hole[1], hole[0]), seqDiff(dataEnd, hole[0]));
      if (n <= 0) break;
      this.sendData(hole[0], seqDiff(hole[0], this.sndUna), n, true);
      pos = seqAdd(hole[0], n);
    }
    this.rtxNext = pos;
    this.stack.timers.arm(this.rtxTimer, this.rtt.rto);
  }

  // ---- timers ----

  private onRtx(): void {
    const st = this.state;
    if (st === State.Closed) return;
    if (st === State.TimeWait) { this.close('TIME_WAIT over'); return; }
    if (st === State.Opening) { this.stack.connectTimedOut(this); return; } // the host connect never finished
    const handshake = st === State.SynSent || st === State.SynReceived;
    if (++this.retries > (handshake ? SYN_RETRIES : DATA_RETRIES)) { this.abort(true, 'retransmissions exhausted'); return; }
    this.stack.stats.retransmits++;
    this.rtt.backoff();
    this.rtt.invalidate();
    if (handshake) { this.sendSyn(); return; }
    if (this.sndWnd === 0 && this.sendQ.length > 0 && this.sndNxt === this.sndUna) {
      // zero-window probe: an already-acked sequence number makes the guest answer with its window
      this.stack.stats.retransmits--;
      this.stack.stats.windowProbes++;
      this.retries = 0;
      this.sendFlags(TCP_ACK, seqAdd(this.sndUna, -1));
      this.stack.timers.arm(this.rtxTimer, Math.min(this.rtt.rto, PERSIST_MAX_MS));
      return;
    }
    this.stack.stats.timeouts++;
    this.cc.onTimeout(seqDiff(this.sndMax, this.sndUna));
    this.recovery = false;
    this.sack.clear();
    this.goBack();
  }

  /** Rewind to snd.una and send again. */
  private goBack(): void {
    if (this.finSent && this.sndUna === seqAdd(this.sndNxt, -1) && this.sendQ.length === 0) {
      // only the FIN is outstanding
      this.sendFlags(TCP_FIN | TCP_ACK, this.sndUna);
      this.stack.timers.arm(this.rtxTimer, this.rtt.rto);
      return;
    }
    this.sndNxt = this.sndUna;
    this.finSent = false;
    this.output();
    this.stack.timers.arm(this.rtxTimer, this.rtt.rto);
  }

  private onKeepalive(): void {
    if (this.state === State.Closed || this.state === State.TimeWait) return;
    if (++this.kaProbes > KEEPALIVE_PROBES) { this.abort(true, 'keepalive: the guest stopped answering'); return; }
    this.stack.stats.keepalives++;
    // an already-acknowledged sequence number: a live guest answers with an ACK
    this.sendFlags(TCP_ACK, seqAdd(this.sndUna, -1));
    this.stack.timers.arm(this.kaTimer, KEEPALIVE_INTERVAL_MS);
  }

  private enterTimeWait(why: string): void {
    this.setState(State.TimeWait, why);
    this.stack.uncount(this); // a closed connection waiting out stray segments is no longer the guest's
    this.stack.timers.cancel(this.kaTimer);
    this.stack.timers.arm(this.rtxTimer, TIME_WAIT_MS);
    this.releaseHost();
  }

  // ---- teardown ----

  /** Reset both ways: RST to the guest (if toGuest) and a reset of the host stream. */
  abort(toGuest: boolean, why = 'aborted'): void {
    if (this.state === State.Closed) return;
    if (toGuest && this.state !== State.Opening && this.state !== State.TimeWait) this.sendFlags(TCP_RST | TCP_ACK, this.sndNxt);
    const h = this.host;
    this.host = null;
    h?.reset();
    this.close(why);
  }

  private releaseHost(): void {
    const h = this.host;
    this.host = null;
    this.runSlab?.done();
    this.runSlab = null;
    h?.release();
  }

  close(why = 'closed'): void {
    if (this.state === State.Closed) return;
    this.setState(State.Closed, why);
    this.stack.timers.cancel(this.rtxTimer);
    this.stack.timers.cancel(this.kaTimer);
    this.sendQ.clear();
    this.reorder.clear();
    this.releaseHost();
    this.stack.remove(this);
    this.onClose?.(this);
  }
}
