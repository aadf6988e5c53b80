// Guest data on its way to host sockets. Frames are borrowed, so in-order data must be copied
// out before the host gets it; instead of a new Buffer per segment, the stack copies into one
// slab shared by its connections. A connection's segments of one input batch land next to each
// other there and reach its host as one Buffer (one write) when the batch ends (TcpConn's run).
//
// A slab is never rewritten: a host (a socket) may hold what it was given until the kernel
// takes it, so a full slab is left to the GC with its last views and a fresh one begun.
export const RX_SLAB = 256 * 1024;

export class RxSlab {
  buf = Buffer.allocUnsafe(RX_SLAB);
  fill = 0;

  /** Offset in buf of room for len bytes (a new slab when this one is full). */
  reserve(len: number): number {
    if (this.fill + len > this.buf.length) {
      this.buf = Buffer.allocUnsafe(Math.max(RX_SLAB, len));
      this.fill = 0;
    }
    return this.fill;
  }
}
