// IP fragment reassembly, IPv4 (RFC 791, hole list of RFC 815) and IPv6 (RFC 8200 4.5), with
// the same bounds for both families on every axis a hostile guest could push: concurrent
// datagrams, datagram size (65535), hole count, and time (an incomplete datagram is dropped
// after the timeout). Overlapping fragments simply overwrite: the checksum of the reassembled
// upper layer catches any mischief. The whole datagram comes back with a fresh header: the
// first fragment's IPv4 header (fixed up), or a plain 40-byte IPv6 header whose next header is
// the fragment header's (extension headers after it are part of the reassembled payload).
import { Timer, TimerQueue } from './timers.ts';
import { finishIpv4 } from '../wire/ipv4.ts';
import { writeIpv6 } from '../wire/ipv6.ts';
import { ip6, refAddr, unrefAddr } from './addr.ts';

interface Pending {
  key: string;
  buf: Buffer; // header at 0..hl, payload after
  hl: number;
  holes: number[]; // flat [start, end) pairs in payload bytes; end may be Infinity
  total: number; // payload length once the last fragment is seen, else -1
  timer: Timer;
  /** IPv6: the addresses (referenced while pending) and the upper-layer next header; -1 for IPv4 */
  src: number;
  dst: number;
  nextHeader: number;
}

const MAX_PAYLOAD = 65535;

export class Reassembler {
  private readonly pending = new Map<string, Pending>();
  readonly stats = { completed: 0, timedOut: 0, dropped: 0 };

  constructor(private readonly timers: TimerQueue, private readonly maxDatagrams = 64, private readonly timeoutMs = 30_000) {}

  /**
   * Feed one IPv4 fragment (IP header at off, header length hl, payload [pOff, pEnd), fragment
   * offset in bytes, more-fragments flag). Returns the whole datagram (a fresh buffer with a
   * fixed-up header) when complete, else null.
   */
  input(buf: Buffer, off: number, hl: number, pOff: number, pEnd: number, fragOffset: number, mf: boolean,
    src: number, dst: number, proto: number, id: number): Buffer | null {
    const len = pEnd - pOff;
    const end = fragOffset + len;
    if (end > MAX_PAYLOAD - 20 || (mf && (len === 0 || (len & 7) !== 0))) { this.stats.dropped++; return null; }
    const p = this.entry(`4:${src}:${dst}:${proto}:${id}`, -1, -1, -1);
    if (!p) return null;
    if (fragOffset === 0) {
      buf.copy(p.buf, 0, off, off + hl);
      if (hl !== p.hl) {
        // payload was stored assuming p.hl; move it under the real header length
        p.buf.copy(p.buf, hl, p.hl, p.hl + MAX_PAYLOAD - Math.max(hl, p.hl));
        p.hl = hl;
      }
    }
    if (!this.place(p, buf, pOff, pEnd, fragOffset, mf)) return null;
    if (p.holes.length > 0 || p.total < 0) return null;
    const out = this.finish(p);
    out.writeUInt16BE(out.length, 2);
    out.writeUInt16BE(0, 6); // no longer a fragment
    finishIpv4(out, 0);
    return out;
  }

  /**
   * Feed one IPv6 fragment: the data after its fragment header is buf[pOff, pEnd), at
   * fragOffset bytes; nextHeader is the fragment header's. src/dst are address ids.
   */
  inputV6(nextHeader: number, pOff: number, buf: Buffer, pEnd: number, fragOffset: number, mf: boolean, src: number, dst: number, id: number): Buffer | null {
    const len = pEnd - pOff;
    const end = fragOffset + len;
    if (end > MAX_PAYLOAD || (mf && (len === 0 || (len & 7) !== 0))) { this.stats.dropped++; return null; }
    const p = this.entry(`6:${src}:${dst}:${id}`, src, dst, nextHeader);
    if (!p) return null;
    if (fragOffset === 0) p.nextHeader = nextHeader;
    if (!this.place(p, buf, pOff, pEnd, fragOffset, mf)) return null;
    if (p.holes.length > 0 || p.total < 0) return null;
    const out = this.finish(p);
    writeIpv6(out, 0, ip6.bytes(p.src), ip6.bytes(p.dst), p.nextHeader, p.total);
    return out;
  }

  private entry(key: string, src: number, dst: number, nextHeader: number): Pending | null {
    let p = this.pending.get(key);
    if (p) return p;
    if (this.pending.size >= this.maxDatagrams) { this.stats.dropped++; return null; }
    const hl = src >= 0 ? 40 : 20;
    const entry: Pending = {
      key, buf: Buffer.alloc(60 + MAX_PAYLOAD), hl, holes: [0, Infinity], total: -1, src, dst, nextHeader,
      timer: new Timer(() => { this.forget(entry); this.stats.timedOut++; }),
    };
    if (src >= 0) { refAddr(src); refAddr(dst); }
    p = entry;
    this.pending.set(key, p);
    this.timers.arm(p.timer, this.timeoutMs);
    return p;
  }

  /** Copy a fragment in and punch it out of the hole list; false when the datagram was dropped. */
  private place(p: Pending, buf: Buffer, pOff: number, pEnd: number, fragOffset: number, mf: boolean): boolean {
    const end = fragOffset + (pEnd - pOff);
    if (!mf) {
      if (p.total >= 0 && p.total !== end) { this.drop(p); return false; }
      p.total = end;
    }
    buf.copy(p.buf, p.hl + fragOffset, pOff, pEnd);
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
    if (holes.length > 64) { this.drop(p); return false; }
    p.holes = holes;
    return true;
  }

  private finish(p: Pending): Buffer {
    this.timers.cancel(p.timer);
    this.forget(p);
    this.stats.completed++;
    return p.buf.subarray(0, p.hl + p.total);
  }

  private forget(p: Pending): void {
    if (this.pending.get(p.key) !== p) return;
    this.pending.delete(p.key);
    if (p.src >= 0) { unrefAddr(p.src); unrefAddr(p.dst); }
  }

  private drop(p: Pending): void {
    this.timers.cancel(p.timer);
    this.forget(p);
    this.stats.dropped++;
  }

  get size(): number { return this.pending.size; }
}
