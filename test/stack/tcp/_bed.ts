// An in-memory link for the gateway's TCP: no namespace, no QEMU, no sockets, no real time.
// The stack sends through the same send contract as on a gateway (stack/output.ts); this link
// serialises each segment exactly as the gateway would (checksum included), parses it back
// with the wire codec and records it. The guest side is played by the test: guest() builds
// real segments and feeds them to stack.input(). Time is a manual clock; the end of an input
// batch (ACK coalescing, host uncork) runs when the test says (every guest() and advance()
// ends its batch, like one read from QEMU).
import { ManualClock, TimerQueue } from '../../../src/stack/timers.ts';
import { TcpStack, type TcpStackOptions } from '../../../src/stack/tcp/stack.ts';
import type { TcpConn } from '../../../src/stack/tcp/conn.ts';
import type { HostEnd } from '../../../src/stack/tcp/host.ts';
import type { IpOutput, L4Writer, QuotedPacket } from '../../../src/stack/output.ts';
import { IPPROTO_TCP } from '../../../src/wire/ipv4.ts';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TcpHeader, TcpOptions, finishTcpV4, parseTcp, writeTcp } from '../../../src/wire/tcp.ts';
import { pseudoSumV4 } from '../../../src/wire/checksum.ts';
import { parseIp4 } from '../../../src/wire/addr.ts';
import { random } from '../../helpers/prng.ts';

export { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN };

export const GUEST = parseIp4('10.0.2.15')!;
export const REMOTE = parseIp4('93.184.216.34')!;
export const GPORT = 40000;
export const RPORT = 80;

/** A segment the stack sent, parsed back. */
export interface Seg {
  src: number;
  dst: number;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  mss: number;
  wscale: number;
  sackPermitted: boolean;
  sack: [number, number][];
  data: Buffer;
  checksumOk: boolean;
}

export function flagNames(f: number): string {
  const n: string[] = [];
  if (f & TCP_SYN) n.push('SYN');
  if (f & TCP_ACK) n.push('ACK');
  if (f & TCP_FIN) n.push('FIN');
  if (f & TCP_RST) n.push('RST');
  if (f & TCP_PSH) n.push('PSH');
  return n.join('|') || 'none';
}

/** What a test-controlled host side saw. */
export class FakeHost implements HostEnd {
  written: Buffer[] = [];
  ended = false;
  wasReset = false;
  released = false;
  paused = false;
  corked = 0;
  /** bytes "not yet taken" by the host (shrinks our advertised window) */
  backlog = 0;
  write(data: Buffer): void { this.written.push(Buffer.from(data)); }
  end(): void { this.ended = true; }
  reset(): void { this.wasReset = true; }
  release(): void { this.released = true; }
  pause(): void { this.paused = true; }
  resume(): void { this.paused = false; }
  cork(): void { this.corked++; }
  uncork(): void { this.corked--; }
  get text(): string { return Buffer.concat(this.written).toString(); }
  get bytes(): number { return this.written.reduce((n, b) => n + b.length, 0); }
}

export interface GuestSegment {
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  data?: Buffer | string;
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  sack?: [number, number][];
  sport?: number;
  dport?: number;
  src?: number;
  dst?: number;
  /** corrupt the checksum */
  badChecksum?: boolean;
}

export interface BedOptions extends TcpStackOptions {
  mtu?: number;
  /** what a new guest connection reaches: 'accept' (a FakeHost, at once), 'refuse', 'hold' (stays Opening) */
  opener?: 'accept' | 'refuse' | 'hold';
  seed?: number;
}

export class Bed implements IpOutput {
  readonly clock = new ManualClock(1000);
  readonly timers = new TimerQueue(this.clock, { autoRun: false });
  readonly stack: TcpStack;
  readonly mtu: number;
  readonly sent: Seg[] = [];
  readonly icmpErrors: { type: number; code: number; guest: number; dst: number; proto: number }[] = [];
  /** hosts handed to accepted connections, in order */
  readonly hosts: FakeHost[] = [];
  private deferred: (() => void)[] = [];
  private readonly buf = Buffer.alloc(70000);
  private readonly hdr = new TcpHeader();

  constructor(opts: BedOptions = {}) {
    this.mtu = opts.mtu ?? 1500;
    const rand = random(opts.seed ?? 1);
    this.stack = new TcpStack(this, this.timers, { random: rand, defer: (fn) => this.deferred.push(fn), ...opts });
    const mode = opts.opener ?? 'accept';
    this.stack.opener = (c) => {
      if (mode === 'refuse') return false;
      if (mode === 'accept') { const h = new FakeHost(); this.hosts.push(h); c.attachHost(h); }
      return true;
    };
  }

  // ---- IpOutput ----

  sendIp(src: number, dst: number, proto: number, maxLen: number, write: L4Writer): void {
    if (proto !== IPPROTO_TCP) throw new Error(`unexpected protocol ${proto}`);
    const end = write(this.buf, 0);
    if (end > maxLen) throw new Error(`segment of ${end} bytes exceeds the ${maxLen} reserved`);
    finishTcpV4(this.buf, 0, end, src, dst);
    const h = this.hdr;
    const err = parseTcp(this.buf, 0, end, h, pseudoSumV4(src, dst, IPPROTO_TCP, end));
    if (err) throw new Error(`the stack sent a malformed segment: ${err}`);
    const sack: [number, number][] = [];
    for (let i = 0; i < h.sackCount; i++) sack.push([h.sackBlocks[2 * i], h.sackBlocks[2 * i + 1]]);
    this.sent.push({
      src, dst, sport: h.srcPort, dport: h.dstPort, seq: h.seq, ack: h.ack, flags: h.flags, window: h.window,
      mss: h.mss, wscale: h.wscale, sackPermitted: h.sackPermitted, sack,
      data: Buffer.from(this.buf.subarray(h.payloadOffset, h.payloadEnd)), checksumOk: h.checksumOk,
    });
  }

  sendIcmpError(type: number, code: number, _from: number, p: QuotedPacket): void {
    this.icmpErrors.push({ type, code, guest: p.src, dst: 0, proto: 0 });
  }

  sendIcmpErrorForFlow(type: number, code: number, _from: number, guest: number, dst: number, proto: number): void {
    this.icmpErrors.push({ type, code, guest, dst, proto });
  }

  // ---- driving ----

  /** End the current input batch (deferred ACKs and uncorks). */
  flush(): void {
    while (this.deferred.length > 0) {
      const d = this.deferred;
      this.deferred = [];
      for (const fn of d) fn();
    }
  }

  /** One segment from the guest, as one input batch. */
  guest(s: GuestSegment): void {
    this.guestBatch([s]);
  }

  /** Several segments in one read from QEMU (one batch: ACKs coalesce). */
  guestBatch(segs: GuestSegment[]): void {
    for (const s of segs) {
      const b = Buffer.alloc(60 + (s.data ? Buffer.byteLength(s.data) : 0));
      const o = new TcpOptions();
      if (s.mss !== undefined) o.mss = s.mss;
      if (s.wscale !== undefined) o.wscale = s.wscale;
      if (s.sackPermitted) o.sackPermitted = true;
      if (s.sack) { o.sackCount = s.sack.length; s.sack.forEach(([a, z], i) => { o.sackBlocks[2 * i] = a; o.sackBlocks[2 * i + 1] = z; }); }
      const p = writeTcp(b, 0, s.sport ?? GPORT, s.dport ?? RPORT, s.seq >>> 0, (s.ack ?? 0) >>> 0, s.flags, s.window ?? 65535, o);
      let end = p;
      if (s.data) end += (typeof s.data === 'string' ? Buffer.from(s.data) : s.data).copy(b, p);
      const src = s.src ?? GUEST;
      const dst = s.dst ?? REMOTE;
      finishTcpV4(b, 0, end, src, dst);
      if (s.badChecksum) b[16] ^= 0xff;
      this.stack.input(src, dst, b, 0, end);
    }
    this.flush();
  }

  /** Let `ms` pass: timers fire at their own times, each firing ends a batch. */
  advance(ms: number): void {
    const until = this.clock.t + ms;
    for (;;) {
      const next = this.timers.nextAt;
      if (next < 0 || next > until) break;
      this.timers.runUntil(this.clock, next);
      this.flush();
    }
    this.clock.t = until;
    this.flush();
  }

  /** Segments sent since the last take(). */
  take(): Seg[] { return this.sent.splice(0); }

  /** The one segment sent since the last take() (fails otherwise). */
  one(): Seg {
    const s = this.take();
    if (s.length !== 1) throw new Error(`expected one segment, got ${s.length}: ${s.map(describe).join('; ')}`);
    return s[0];
  }

  conn(): TcpConn {
    const all = this.stack.connections();
    if (all.length !== 1) throw new Error(`expected one connection, got ${all.length}`);
    return all[0];
  }

  /**
   * A guest-opened connection through the handshake. Returns the connection, its host, the
   * guest's next sequence number (g) and ours (r).
   */
  open(o: { iss?: number; window?: number; mss?: number; wscale?: number; sackPermitted?: boolean } = {}): Opened {
    const iss = o.iss ?? 1000;
    this.guest({ seq: iss, flags: TCP_SYN, window: o.window ?? 65535, mss: o.mss ?? 1460, wscale: o.wscale, sackPermitted: o.sackPermitted });
    const synack = this.one();
    if (synack.flags !== (TCP_SYN | TCP_ACK)) throw new Error(`expected SYN-ACK, got ${describe(synack)}`);
    this.guest({ seq: iss + 1, ack: synack.seq + 1, flags: TCP_ACK, window: o.window ?? 65535 });
    this.take();
    return { c: this.conn(), host: this.hosts[this.hosts.length - 1], g: iss + 1, r: (synack.seq + 1) >>> 0, synack };
  }
}

export interface Opened { c: TcpConn; host: FakeHost; g: number; r: number; synack: Seg }

export function describe(s: Seg): string {
  return `${flagNames(s.flags)} seq=${s.seq} ack=${s.ack} win=${s.window} len=${s.data.length}${s.sack.length ? ` sack=${JSON.stringify(s.sack)}` : ''}`;
}

export const bytes = (n: number, fill = 0x61): Buffer => Buffer.alloc(n, fill);
