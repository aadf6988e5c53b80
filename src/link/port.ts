// The port: anything that carries Ethernet frames (a QEMU stream connection, a dgram
// peer, a multicast group, the gateway). Transports know framing, nothing about protocols.
//
// Contract of send(): the frame is only borrowed for the duration of the call. A port that
// needs the bytes later (to batch or to hand to an async write) copies them. This lets
// producers build frames in reusable scratch buffers, and lets the switch hand out views
// of a read chunk without copying on the forwarding path.

/** QEMU's largest frame on socket netdevs (NET_BUFSIZE in net/net.h: 4096 + 65536). */
export const MAX_FRAME = 69632;
/** Shorter than an Ethernet header: not a frame. */
export const MIN_FRAME = 14;
const EMPTY = Buffer.alloc(0);

export interface PortCounters {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  /** frames received but not delivered: runts, giants, no handler */
  rxDropped: number;
  /** frames not sent: port closed, peer not keeping up */
  txDropped: number;
}

export function newCounters(): PortCounters {
  return { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, rxDropped: 0, txDropped: 0 };
}

export type FrameHandler = (frame: Buffer, port: Port) => void;
export type CloseHandler = (port: Port, reason: string) => void;

let nextPortId = 1;

export abstract class Port {
  readonly id = nextPortId++;
  readonly counters: PortCounters = newCounters();
  /** Called for every valid received frame; the frame is a view valid for the call only. */
  onFrame: FrameHandler | null = null;
  /**
   * Set by the switch this port is on: the port a frame from here (srcMac) to dstMac may be
   * built in directly (see reserveFrame), or null when it must cross the switch.
   */
  directTo: ((srcMac: Buffer, dstMac: Buffer) => Port | null) | null = null;
  closed = false;
  private closeListeners: CloseHandler[] = [];

  /** kind: 'stream', 'dgram', 'mcast', 'gateway', ...; peer: a human-readable remote end. */
  constructor(readonly kind: string, public peer: string) {}

  get name(): string { return `${this.kind}#${this.id}(${this.peer})`; }

  abstract send(frame: Buffer): void;

  /**
   * In-place sending, for producers that build frames (the gateway): room for a frame of up to
   * `max` bytes in this port's own output, at the returned offset of txBuf, or -1 when the port
   * cannot (the default) or will not now (a peer that does not keep up). commitFrame(len) then
   * sends the `len` bytes written there; not committing abandons the room. Saves the copy that
   * send() makes.
   */
  reserveFrame(_max: number): number { return -1; }
  get txBuf(): Buffer { return EMPTY; }
  commitFrame(_len: number): void {}

  /** Deliver a received frame, enforcing frame size limits (shared by all transports). */
  protected deliver(frame: Buffer): void {
    const len = frame.length;
    if (len < MIN_FRAME || len > MAX_FRAME || this.onFrame === null) {
      this.counters.rxDropped++;
      return;
    }
    this.counters.rxFrames++;
    this.counters.rxBytes += len;
    this.onFrame(frame, this);
  }

  /** Run fn once when the port closes (at once if it already has). */
  onClosed(fn: CloseHandler): void {
    if (this.closed) fn(this, 'closed');
    else this.closeListeners.push(fn);
  }

  close(reason = 'closed'): void {
    if (this.closed) return;
    this.closed = true;
    this.closeTransport();
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const fn of listeners) fn(this, reason);
  }

  protected abstract closeTransport(): void;
}
