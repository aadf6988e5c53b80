// A tap device (/dev/net/tun, IFF_TAP | IFF_NO_PI, no vnet header): one read() is one frame,
// one write() sends one. Needs CAP_NET_ADMIN (or a persistent tap owned by our user), so it
// is for root-mode networks. Reads are drained in batches by the native addon (sys-port.ts).
import { sys, sysErrorCode, type SysHandle } from './sys.ts';
import { SysFramePort } from './sys-port.ts';

const RX_BYTES = 1 << 20;

export class TapPort extends SysFramePort {
  private constructor(handle: SysHandle, readonly ifname: string) {
    super('tap', ifname, handle, RX_BYTES, 'tap');
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

  /** Let the process exit while the tap is open (or not: the default). */
  ref(on = true): void { if (!this.closed) sys().setRef(this.handle, on); }
}
