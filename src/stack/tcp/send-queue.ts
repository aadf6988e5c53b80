// The send side's data: bytes from the host stream that the guest has not acknowledged yet,
// and the SACK scoreboard of what the guest reported holding beyond snd.una.
//
// SendQueue holds host data two ways. push() keeps a chunk the host gave away as it came (no
// copy on the way in). append() copies from a buffer the host lends for the call (a socket's
// one read buffer, see services/tcp-nat.ts) into fixed-size blocks from a shared pool, so a
// bulk transfer allocates nothing per read: Node's per-read 64 KiB buffers were the largest
// source of garbage on the host->guest path. Either way a segment's payload is copied once,
// straight into the transmit buffer (copyOut). Acknowledged bytes are dropped from the front
// and emptied blocks go back to the pool. Its size is bounded by the connection, which pauses
// the host stream when the queue is full; the pool keeps at most POOL_KEEP spare blocks.
//
// SackScoreboard holds the SACKed ranges (RFC 2018) above snd.una as sorted, disjoint,
// flat [start, end) pairs: at most MAX_RANGES of them (the oldest are forgotten beyond
// that), blocks below snd.una or beyond snd.max ignored (they are stale or bogus).
import { seqDiff, seqLe, seqLt } from './seq.ts';

export const BLOCK = 64 * 1024;
const POOL_KEEP = 256;

/** Spare blocks shared by every queue of the process. */
const spare: Buffer[] = [];

function takeBlock(): Buffer { return spare.pop() ?? Buffer.allocUnsafe(BLOCK); }
function giveBlock(b: Buffer): void { if (spare.length < POOL_KEEP) spare.push(b); }

/** Blocks waiting in the pool (tests, metrics). */
export function spareBlocks(): number { return spare.length; }

export class SendQueue {
  private chunks: Buffer[] = [];
  /** valid bytes of each chunk (a pool block fills up over several appends) */
  private lens: number[] = [];
  /** chunk i is a pool block (returned when dropped) */
  private pooled: boolean[] = [];
  /** offset in chunks[0] of the first unacknowledged byte */
  private headOff = 0;
  /** unacknowledged + unsent bytes */
  length = 0;

  push(data: Buffer): void {
    if (data.length === 0) return;
    this.chunks.push(data);
    this.lens.push(data.length);
    this.pooled.push(false);
    this.length += data.length;
  }

  /** Copy src[from, to) in (src stays the caller's). */
  append(src: Buffer, from: number, to: number): void {
    this.length += to - from;
    let last = this.chunks.length - 1;
    while (from < to) {
      if (last < 0 || !this.pooled[last] || this.lens[last] === BLOCK) {
        this.chunks.push(takeBlock());
        this.lens.push(0);
        this.pooled.push(true);
        last++;
      }
      const fill = this.lens[last];
      const n = Math.min(to - from, BLOCK - fill);
      src.copy(this.chunks[last], fill, from, from + n);
      this.lens[last] = fill + n;
      from += n;
    }
  }

  /** The first n bytes were acknowledged. */
  drop(n: number): void {
    if (n > this.length) n = this.length;
    this.length -= n;
    while (n > 0 && this.chunks.length > 0) {
      const avail = this.lens[0] - this.headOff;
      if (n >= avail) {
        n -= avail;
        this.shift();
        this.headOff = 0;
      } else {
        this.headOff += n;
        n = 0;
      }
    }
    // all acknowledged: the emptied tail block goes back to the pool too
    if (this.length === 0 && this.chunks.length > 0) this.clear();
  }

  private shift(): void {
    const c = this.chunks.shift()!;
    this.lens.shift();
    if (this.pooled.shift()) giveBlock(c);
  }

  /** Copy n bytes starting `at` bytes into the queue to dst[off]; returns the end offset in dst. */
  copyOut(at: number, n: number, dst: Buffer, off: number): number {
    let skip = at + this.headOff;
    let w = off;
    let left = n;
    for (let i = 0; i < this.chunks.length && left > 0; i++) {
      const len = this.lens[i];
      if (skip >= len) { skip -= len; continue; }
      const take = Math.min(left, len - skip);
      this.chunks[i].copy(dst, w, skip, skip + take);
      w += take;
      left -= take;
      skip = 0;
    }
    return w;
  }

  clear(): void {
    for (let i = 0; i < this.chunks.length; i++) if (this.pooled[i]) giveBlock(this.chunks[i]);
    this.chunks = [];
    this.lens = [];
    this.pooled = [];
    this.headOff = 0;
    this.length = 0;
  }
}

const MAX_RANGES = 16;

export class SackScoreboard {
  /** flat [start, end) pairs, sorted by sequence number */
  readonly ranges: number[] = [];

  get empty(): boolean { return this.ranges.length === 0; }

  /** The highest SACKed sequence number + 1, or `fallback` when nothing is SACKed. */
  top(fallback: number): number { return this.ranges.length > 0 ? this.ranges[this.ranges.length - 1] : fallback; }

  /** Merge one SACK block, given snd.una and snd.max. */
  add(start: number, end: number, una: number, max: number): void {
    if (!seqLt(start, end) || seqLe(end, una) || seqLt(max, end)) return;
    if (seqLt(start, una)) start = una;
    const r = this.ranges;
    let j = 0;
    while (j < r.length && seqLt(r[j + 1], start)) j += 2;
    let s0 = start;
    let e0 = end;
    let k = j;
    while (k < r.length && seqLe(r[k], e0)) {
      if (seqLt(r[k], s0)) s0 = r[k];
      if (seqLt(e0, r[k + 1])) e0 = r[k + 1];
      k += 2;
    }
    r.splice(j, k - j, s0, e0);
    if (r.length > 2 * MAX_RANGES) r.splice(0, r.length - 2 * MAX_RANGES);
  }

  /** snd.una advanced to `ack`: forget what it covers. */
  advance(ack: number): void {
    const r = this.ranges;
    let n = 0;
    while (n < r.length && seqLe(r[n + 1], ack)) n += 2;
    if (n > 0) r.splice(0, n);
    if (r.length > 0 && seqLt(r[0], ack)) r[0] = ack;
  }

  bytes(): number {
    let n = 0;
    for (let i = 0; i < this.ranges.length; i += 2) n += seqDiff(this.ranges[i + 1], this.ranges[i]);
    return n;
  }

  /**
   * The first hole at or after `pos` below `top`: [start, end), or null. A hole is a range
   * the guest has not SACKed.
   */
  holeFrom(pos: number, top: number): [number, number] | null {
    const r = this.ranges;
    for (let i = 0; i < r.length && seqLt(pos, top); i += 2) {
      if (seqLt(pos, r[i])) return [pos, seqLt(r[i], top) ? r[i] : top];
      if (seqLt(pos, r[i + 1])) pos = r[i + 1];
    }
    return seqLt(pos, top) ? [pos, top] : null;
  }

  clear(): void { this.ranges.length = 0; }
}

