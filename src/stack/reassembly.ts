// IPv4 fragment reassembly (RFC 791, hole list of RFC 815). Bounded on every axis a
// hostile guest could push: concurrent datagrams, datagram size (65535), hole count, and
// time (an incomplete datagram is dropped after the timeout). Overlapping fragments
// simply overwrite: the checksum of the reassembled upper layer catches any mischief.
import { Timer, TimerQueue } from './timers.ts';
import { finishIpv4 } from '../wire/ipv4.ts';

interface Pending {
  key: string;
  buf: Buffer; // IP header (from the first fragment) at 0..hl, payload after
  hl: number;
  holes: number[]; // flat [start, end) pairs in payload bytes; end may be Infinity
  total: number; // payload length once the last fragment is seen, else -1
  timer: Timer;
}

export class Reassembler {
  private readonly pending = new Map<string, Pending>();
  readonly stats = { completed: 0, timedOut: 0, dropped: 0 };

  constructor(private readonly timers: TimerQueue, private readonly maxDatagrams = 64, private readonly timeoutMs = 30_000) {}

  /**
   * Feed one fragment (IP header at off, header length hl, payload [pOff, pEnd), fragment
   * offset in bytes, more-fragments flag). Returns the whole datagram (a fresh buffer with a
   * fixed-up header) when complete, else null.
   */
  input(buf: Buffer, off: number, hl: number, pOff: number, pEnd: number, fragOffset: number, mf: boolean,
    src: number, dst: number, proto: number, id: number): Buffer | null {
    const len = pEnd - pOff;
    const end = fragOffset + len;
    if (end > 65535 - 20 || (mf && (len === 0 || (len & 7) !== 0))) { this.stats.dropped++; return null; }
    const key = `${src}:${dst}:${proto}:${id}`;
    let p = this.pending.get(key);
    if (!p) {
      if (this.pending.size >= this.maxDatagrams) { this.stats.dropped++; return null; }
      const entry: Pending = {
        key, buf: Buffer.alloc(60 + 65535), hl: 20, holes: [0, Infinity], total: -1,
        timer: new Timer(() => { this.pending.delete(key); this.stats.timedOut++; }),
      };
      p = entry;
      this.pending.set(key, p);
      this.timers.arm(p.timer, this.timeoutMs);
    }
    if (fragOffset === 0) {
      buf.copy(p.buf, 0, off, off + hl);
      if (hl !== p.hl) {
        // payload was stored assuming p.hl; move it under the real header length
        p.buf.copy(p.buf, hl, p.hl, p.hl + 65535 - Math.max(hl, p.hl));
        p.hl = hl;
      }
    }
    if (!mf) {
      if (p.total >= 0 && p.total !== end) { this.drop(p); return null; }
      p.total = end;
    }
    buf.copy(p.buf, p.hl + fragOffset, pOff, pEnd);
    // punch [fragOffset, end) out of the hole list
    const holes: number[] = [];
    for (let i = 0; i < p.holes.length; i += 2) {
      const hs = p.holes[i];
      let he = p.holes[i + 1];
      if (p.total >= 0 && he > p.total) he = p.total;
      if (hs >= he) continue;
      if (end <= hs || fragOffset >= he) { holes.push(hs, he); continue; }
      if (fragOffset > hs) holes.push(hs, fragOffset);
      if (end < he) holes.push(end, he);
    }
    if (holes.length > 64) { this.drop(p); return null; }
    p.holes = holes;
    if (holes.length > 0 || p.total < 0) return null;
    this.timers.cancel(p.timer);
    this.pending.delete(key);
    this.stats.completed++;
    const total = p.hl + p.total;
    const out = p.buf.subarray(0, total);
    out.writeUInt16BE(total, 2);
    out.writeUInt16BE(0, 6); // no longer a fragment
    finishIpv4(out, 0);
    return out;
  }

  private drop(p: Pending): void {
    this.timers.cancel(p.timer);
    this.pending.delete(p.key);
    this.stats.dropped++;
  }

  get size(): number { return this.pending.size; }
}
