// Guest data on its way to host sockets. Frames are borrowed, so in-order data must be copied
// out before the host gets it; instead of a new Buffer per segment, the stack copies into one
// slab shared by its connections. A connection's segments of one input batch land next to each
// other there and reach its host as one Buffer (one write) when the batch ends (TcpConn's run).
//
// Reuse: a host that lends (HostEnd.writeLent: a socket) hands each view back once written; a
// full slab whose views are all back is recycled (a few are kept spare). A host that keeps
// what it is given (HostEnd.write) marks the slab kept, and a kept slab is left to the GC.
// So a bulk upload allocates nothing per segment and, once warm, nothing per slab either.
export const RX_SLAB = 256 * 1024;
const SPARE_KEEP = 8;

export class Slab {
  fill = 0;
  /** views handed to hosts and not yet given back */
  pending = 0;
  /** full: no more appends; recycled once nothing is pending */
  retired = false;
  /** a host kept a view: never reused */
  kept = false;
  readonly done = (): void => {
    if (--this.pending === 0 && this.retired) this.owner.recycle(this);
  };
  constructor(readonly buf: Buffer, private readonly owner: RxSlab) {}
}

export class RxSlab {
  cur: Slab;
  private readonly spare: Buffer[] = [];

  constructor() { this.cur = new Slab(Buffer.allocUnsafe(RX_SLAB), this); }

  /** Offset in cur.buf of room for len bytes (a fresh slab when this one is full). */
  reserve(len: number): number {
    const c = this.cur;
    if (c.fill + len > c.buf.length) {
      c.retired = true;
      if (c.pending === 0) this.recycle(c);
      this.cur = new Slab(len <= RX_SLAB ? this.spare.pop() ?? Buffer.allocUnsafe(RX_SLAB) : Buffer.allocUnsafe(len), this);
    }
    return this.cur.fill;
  }

  recycle(s: Slab): void {
    if (!s.kept && s.buf.length === RX_SLAB && this.spare.length < SPARE_KEEP) this.spare.push(s.buf);
  }

  /** Slabs waiting for reuse (tests). */
  get spares(): number { return this.spare.length; }
}
