// A tap device (/dev/net/tun, IFF_TAP | IFF_NO_PI, no vnet header): one read() is one frame,
// one write() sends one. Needs CAP_NET_ADMIN (or a persistent tap owned by our user), so it
// is for root-mode networks. Reads are drained in batches by the native addon (sys.ts).
import { MAX_FRAME, Port } from './port.ts';
import { sys, sysErrorCode, errnoName, type SysHandle } from './sys.ts';

const RX_SLOT = MAX_FRAME;
const RX_BYTES = 1 << 20;

export class TapPort extends Port {
  private readonly rx = Buffer.alloc(RX_BYTES);
  private readonly info: Uint32Array;
  lastSendError = 0;

  private constructor(private readonly handle: SysHandle, readonly ifname: string) {
    super('tap', ifname);
    const s = sys();
    this.info = new Uint32Array(s.STRIDE * s.MAX_BATCH);
    s.start(handle, this.rx, this.info, RX_SLOT, (n, _senders, errno) => this.onBatch(n, errno));
  }

  /** Attach to (or create) tap device `name` ('' lets the kernel pick tapN). */
  static open(name: string): TapPort {
    const s = sys();
    try {
      const [h, actual] = s.openTap(name);
      return new TapPort(h, actual);
    } catch (e) {
      const code = sysErrorCode(e);
      const hint = code === 'EPERM' || code === 'EACCES' ? ' (needs CAP_NET_ADMIN or a tap device owned by this user)'
        : code === 'EBUSY' ? ' (the device is in use by another process, or is not a tap)'
        : code === 'ENOENT' || code === 'ENODEV' ? ' (no /dev/net/tun: load the tun module)'
        : '';
      throw new Error(`cannot open tap ${name || '(any)'}: ${(e as Error).message}${hint}`);
    }
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
    if (errno !== 0 && !this.closed) this.close(`tap read error: ${errnoName(errno)}`);
  }

  /** Let the process exit while the tap is open (or not: the default). */
  ref(on = true): void { if (!this.closed) sys().setRef(this.handle, on); }

  protected closeTransport(): void { sys().close(this.handle); }
}
