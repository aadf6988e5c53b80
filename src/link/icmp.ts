// ICMP echo through unprivileged "ping sockets": socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP).
// Allowed when the process's group is inside net.ipv4.ping_group_range (per network
// namespace; the kernel default "1 0" allows nobody, root included). No raw sockets.
//
// The kernel owns the echo identifier: the socket is bound to a free one at open (localId),
// and every request sent gets that identifier (and its checksum) filled in. Replies to it
// come back to this socket only, so ICMP NAT uses one socket per guest flow (guest IP +
// guest identifier) and rewrites the reply's identifier back to the guest's.
//
// With IP_RECVERR, ICMP errors caused by our requests (unreachable, time exceeded, ...) are
// read from the socket's error queue and reported through onError.
import { ICMP_ERR_FLAG, sys, sysErrorCode, type SysHandle } from './sys.ts';

export type IcmpReplyHandler = (srcIp: number, id: number, seq: number, data: Buffer) => void;
/**
 * offender: who sent the error; dstIp: where our request was going; request: the quoted
 * request starting at its ICMP header (id = localId, seq at offset 6), as far as quoted.
 */
export type IcmpErrorHandler = (offender: number, type: number, code: number, dstIp: number, request: Buffer) => void;

export type IcmpOpenResult = { socket: IcmpEchoSocket; reason?: undefined } | { socket: null; reason: string };

const RX_SLOT = 65536;
const RX_BYTES = 2 * RX_SLOT;
const ECHO_REQUEST = 8;
const ECHO_REPLY = 0;

export class IcmpEchoSocket {
  /** The kernel-assigned echo identifier: requests carry it, replies are matched on it. */
  readonly localId: number;
  private onReplyCb: IcmpReplyHandler | null = null;
  private onErrorCb: IcmpErrorHandler | null = null;
  private readonly rx = Buffer.alloc(RX_BYTES);
  private readonly info: Uint32Array;
  private tx = Buffer.alloc(1500);
  closed = false;
  /** Counters: requests sent / not sent, replies delivered, datagrams dropped (short, truncated, not replies). */
  sent = 0;
  sendFailed = 0;
  lastSendError = 0;
  replies = 0;
  errors = 0;
  dropped = 0;

  private constructor(private readonly handle: SysHandle) {
    const s = sys();
    this.localId = s.localPort(handle);
    this.info = new Uint32Array(s.STRIDE * s.MAX_BATCH);
    s.start(handle, this.rx, this.info, RX_SLOT, (n) => this.onBatch(n));
    s.setRef(handle, false); // an idle flow socket must not keep the process alive
  }

  /** Open a ping socket, or say why not (no exception for the expected permission failure). */
  static open(): IcmpOpenResult {
    const s = sys();
    try {
      return { socket: new IcmpEchoSocket(s.openIcmp()) };
    } catch (e) {
      const code = sysErrorCode(e);
      if (code === 'EACCES' || code === 'EPERM') {
        return { socket: null, reason: 'ICMP echo sockets not permitted: run as root or widen net.ipv4.ping_group_range' };
      }
      return { socket: null, reason: `cannot open ICMP echo socket: ${(e as Error).message}` };
    }
  }

  /**
   * Send an echo request (type 8 code 0) with this sequence number and payload to dstIp (u32).
   * The kernel fills in the identifier and checksum. false if not sent (see lastSendError).
   */
  send(dstIp: number, seq: number, data: Buffer): boolean {
    if (this.closed) { this.sendFailed++; return false; }
    const len = 8 + data.length;
    if (this.tx.length < len) this.tx = Buffer.alloc(Math.max(len, this.tx.length * 2));
    const b = this.tx.subarray(0, len);
    b[0] = ECHO_REQUEST; b[1] = 0;
    b.writeUInt32BE(0, 2); // checksum + identifier: the kernel's
    b.writeUInt16BE(seq & 0xffff, 6);
    data.copy(b, 8);
    const e = sys().sendIcmp(this.handle, b, dstIp >>> 0);
    if (e !== 0) { this.sendFailed++; this.lastSendError = e; return false; }
    this.sent++;
    return true;
  }

  /** data is a view valid for the duration of the call. */
  onReply(cb: IcmpReplyHandler | null): void { this.onReplyCb = cb; }
  /** request is a view valid for the duration of the call. */
  onError(cb: IcmpErrorHandler | null): void { this.onErrorCb = cb; }

  private onBatch(n: number): void {
    const info = this.info, stride = sys().STRIDE;
    for (let i = 0; i < n && !this.closed; i++) {
      const e = i * stride;
      const off = info[e], len = info[e + 1], ip = info[e + 2], flags = info[e + 3];
      if (len > RX_SLOT) { this.dropped++; continue; }
      const d = this.rx.subarray(off, off + len);
      if ((flags & ICMP_ERR_FLAG) !== 0) {
        this.errors++;
        this.onErrorCb?.(ip, (flags >>> 8) & 0xff, flags & 0xff, info[e + 4], d);
        continue;
      }
      if (len < 8 || d[0] !== ECHO_REPLY) { this.dropped++; continue; }
      this.replies++;
      this.onReplyCb?.(ip, d.readUInt16BE(4), d.readUInt16BE(6), d.subarray(8));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    sys().close(this.handle);
  }
}
