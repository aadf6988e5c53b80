// The receive side's out-of-order queue: segments from the guest that arrived beyond
// rcv.nxt, kept until the hole before them is filled, and the SACK blocks (RFC 2018) that
// describe them in our ACKs.
//
// Bounds: at most MAX_BYTES of data and MAX_SEGMENTS segments per connection, and nothing
// beyond the advertised window; what does not fit is dropped (the guest will send it again).
// Segments are copied on the way in (the frame they arrived in is borrowed) and handed out
// as views when the hole closes. A FIN that arrived out of order is remembered by position.
import { seqAdd, seqDiff, seqLe, seqLt } from './seq.ts';

const MAX_BYTES = 2 * 1024 * 1024;
const MAX_SEGMENTS = 1024;

interface Held { seq: number; data: Buffer }

export class ReorderQueue {
  private q: Held[] = [];
  /** bytes held */
  bytes = 0;
  /** sequence number just after a FIN seen out of order, or -1 */
  private finAt = -1;
  /** start of the most recently received segment (its block goes first in SACK) */
  private latest = 0;

  get empty(): boolean { return this.q.length === 0; }
  get segments(): number { return this.q.length; }

  /**
   * Hold buf[from, to) that starts at `seq` (> rcv.nxt), with a FIN after it when `fin`.
   * `room` is how far beyond rcv.nxt the window reaches. Returns false when it was dropped.
   */
  add(seq: number, buf: Buffer, from: number, to: number, fin: boolean, rcvNxt: number, room: number): boolean {
    const len = to - from;
    if (seqDiff(seqAdd(seq, len), rcvNxt) > room || this.bytes + len > MAX_BYTES || this.q.length >= MAX_SEGMENTS) return false;
    const data = Buffer.allocUnsafe(len);
    buf.copy(data, 0, from, to);
    let i = this.q.length;
    while (i > 0 && seqLt(seq, this.q[i - 1].seq)) i--;
    this.q.splice(i, 0, { seq, data });
    this.bytes += len;
    this.latest = seq;
    if (fin) this.finAt = seqAdd(seq, len);
    return true;
  }

  /**
   * Hand out, in order, what has become contiguous with rcv.nxt: deliver(data, from, to) for
   * each piece; returns true when the FIN is now in order too (at the final rcv.nxt).
   */
  drain(rcvNxt: number, deliver: (data: Buffer, from: number, to: number) => number): boolean {
    const q = this.q;
    let i = 0;
    let nxt = rcvNxt;
    while (i < q.length && seqLe(q[i].seq, nxt)) {
      const e = q[i++];
      this.bytes -= e.data.length;
      const skip = seqDiff(nxt, e.seq);
      if (skip < e.data.length) nxt = deliver(e.data, skip, e.data.length);
    }
    if (i > 0) q.splice(0, i);
    if (q.length === 0) this.bytes = 0;
    if (this.finAt >= 0 && this.finAt === nxt) { this.finAt = -1; return true; }
    return false;
  }

  /**
   * Up to `max` SACK blocks into out (flat pairs), the one holding the latest arrival
   * first, the rest in sequence order; returns how many.
   */
  sackBlocks(out: Uint32Array, max: number): number {
    const blocks: number[] = [];
    const q = this.q;
    if (q.length === 0) return 0;
    let s0 = q[0].seq;
    let e0 = seqAdd(s0, q[0].data.length);
    for (let i = 1; i <= q.length; i++) {
      const e = q[i];
      if (e && seqLe(e.seq, e0)) {
        const end = seqAdd(e.seq, e.data.length);
        if (seqLt(e0, end)) e0 = end;
        continue;
      }
      blocks.push(s0, e0);
      if (e) { s0 = e.seq; e0 = seqAdd(e.seq, e.data.length); }
    }
    for (let b = 0; b < blocks.length; b += 2) {
      if (seqLe(blocks[b], this.latest) && seqLt(this.latest, blocks[b + 1])) {
        if (b > 0) blocks.unshift(...blocks.splice(b, 2));
        break;
      }
    }
    const n = Math.min(max, blocks.length / 2);
    for (let i = 0; i < 2 * n; i++) out[i] = blocks[i];
    return n;
  }

  clear(): void {
    this.q = [];
    this.bytes = 0;
    this.finAt = -1;
  }
}
