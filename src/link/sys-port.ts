// A port on a descriptor that carries one frame per read and one per write (a tap device, a
// packet socket): the native addon drains its reads in batches into one receive buffer
// (sys.ts), and each frame is delivered as a view of it. What TapPort and PacketPort share.
import { MAX_FRAME, Port } from './port.ts';
import { errnoName, sys, type SysHandle } from './sys.ts';

const RX_SLOT = MAX_FRAME;

export abstract class SysFramePort extends Port {
  private readonly rx: Buffer;
  private readonly info: Uint32Array;
  /** errno of the last write that failed (the frame was dropped and counted) */
  lastSendError = 0;

  /** rxBytes: the receive buffer a batch of reads fills; what: the device, for the close reason */
  protected constructor(kind: string, peer: string, protected readonly handle: SysHandle, rxBytes: number, private readonly what: string) {
    super(kind, peer);
    const s = sys();
    this.rx = Buffer.alloc(rxBytes);
    this.info = new Uint32Array(s.STRIDE * s.MAX_BATCH);
    s.start(handle, this.rx, this.info, RX_SLOT, (n, _senders, errno) => this.onBatch(n, errno));
  }

  send(frame: Buffer): void {
    if (this.closed) { this.counters.txDropped++; return; }
    const e = sys().write(this.handle, frame);
    if (e !== 0) { this.counters.txDropped++; this.lastSendError = e; return; }
    this.counters.txFrames++;
    this.counters.txBytes += frame.length;
  }

  private onBatch(n: number, errno: number): void {
    const info = this.info, stride = sys().STRIDE;
    for (let i = 0; i < n && !this.closed; i++) {
      const off = info[i * stride], len = info[i * stride + 1];
      if (len > RX_SLOT) { this.counters.rxDropped++; continue; }
      this.deliver(this.rx.subarray(off, off + len));
    }
    if (errno !== 0 && !this.closed) this.close(`${this.what} read error: ${errnoName(errno)}`);
  }

  protected closeTransport(): void { sys().close(this.handle); }
}
