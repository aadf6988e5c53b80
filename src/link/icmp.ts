// ICMP echo sockets for the ICMP NAT, IPv4 and IPv6, of two kinds.
//
// Ping sockets: socket(AF_INET[6], SOCK_DGRAM, IPPROTO_ICMP[V6]). Allowed when the process's
// group is inside net.ipv4.ping_group_range (per network namespace, shared by both families;
// the kernel default "1 0" allows nobody, root included). The kernel owns the echo
// identifier: the socket is bound to a free one at open (localId), every request sent gets it
// (and its checksum) filled in, and replies to it come back to this socket only, so the NAT
// uses one socket per guest flow. With IP(V6)_RECVERR, ICMP errors caused by our requests
// are read from the error queue and reported through onError.
//
// Raw sockets: socket(AF_INET[6], SOCK_RAW, IPPROTO_ICMP[V6]), where ping sockets are not
// permitted but the process has CAP_NET_RAW (root in a namespace whose ping_group_range
// excludes it: what slirp falls back to). One socket per family serves every flow: the caller
// picks identifiers, and the socket hands back every echo reply and every error quoting an
// echo request (the caller matches them by identifier and address). It sees all ICMP for the
// host, so what is not an echo reply or an error about one is dropped here.
//
// Addresses at this layer: IPv4 as u32, IPv6 as 16-byte views valid for the callback.
import { ICMP_ERR_FLAG, sys, sysErrorCode, type SysHandle } from './sys.ts';
import { foldChecksum, sumWords } from '../wire/checksum.ts';

/** from: IPv4 u32 (0 for IPv6); from6: IPv6 bytes or null; data: the echo payload. */
export type IcmpReplyHandler = (from: number, from6: Buffer | null, id: number, seq: number, data: Buffer) => void;
/**
 * offender/offender6: who sent the error; dst/dst6: where our request was going; request:
 * the quoted request starting at its ICMP header (id at offset 4, seq at offset 6).
 */
export type IcmpErrorHandler = (offender: number, offender6: Buffer | null, type: number, code: number, dst: number, dst6: Buffer | null, request: Buffer) => void;

export type IcmpOpenResult<T> = { socket: T; reason?: undefined } | { socket: null; reason: string; denied: boolean };

const RX_SLOT = 65536;
const ECHO_REQUEST = [8, 128];
const ECHO_REPLY = [0, 129];

function openFailure(family: 4 | 6, raw: boolean, e: unknown): { socket: null; reason: string; denied: boolean } {
  const code = sysErrorCode(e);
  const denied = code === 'EACCES' || code === 'EPERM';
  if (denied && !raw) {
    return { socket: null, denied, reason: `ICMP echo sockets not permitted: set net.ipv4.ping_group_range to include group ${process.getgid?.() ?? '?'} (e.g. sysctl -w net.ipv4.ping_group_range="0 2147483647"), or give qnet CAP_NET_RAW` };
  }
  if (denied) return { socket: null, denied, reason: 'raw ICMP sockets need CAP_NET_RAW' };
  return { socket: null, denied, reason: `cannot open ICMP${family === 6 ? 'v6' : ''} echo socket: ${(e as Error).message}` };
}

abstract class IcmpSocketBase {
  protected onReplyCb: IcmpReplyHandler | null = null;
  protected onErrorCb: IcmpErrorHandler | null = null;
  protected readonly rx: Buffer;
  protected readonly info: Uint32Array;
  protected readonly infoBytes: Buffer;
  protected tx = Buffer.alloc(1500);
  closed = false;
  /** Counters: requests sent / not sent, replies delivered, errors, datagrams dropped. */
  sent = 0;
  sendFailed = 0;
  lastSendError = 0;
  replies = 0;
  errors = 0;
  dropped = 0;

  protected constructor(protected readonly handle: SysHandle, readonly family: 4 | 6, slots: number) {
    const s = sys();
    this.rx = Buffer.alloc(slots * RX_SLOT);
    this.info = new Uint32Array(s.STRIDE * s.MAX_BATCH);
    this.infoBytes = Buffer.from(this.info.buffer, this.info.byteOffset, this.info.byteLength);
    s.start(handle, this.rx, this.info, RX_SLOT, (n) => this.onBatch(n));
    s.setRef(handle, false); // an idle flow socket must not keep the process alive
  }

  /** data is a view valid for the duration of the call. */
  onReply(cb: IcmpReplyHandler | null): void { this.onReplyCb = cb; }
  /** request is a view valid for the duration of the call. */
  onError(cb: IcmpErrorHandler | null): void { this.onErrorCb = cb; }

  /** Send an echo request message (header at tx[0..8) already filled) to dst. */
  protected sendTo(dst: number | Buffer, len: number): boolean {
    if (this.closed) { this.sendFailed++; return false; }
    const e = sys().sendIcmp(this.handle, this.tx.subarray(0, len), dst);
    if (e !== 0) { this.sendFailed++; this.lastSendError = e; return false; }
    this.sent++;
    return true;
  }

  protected room(len: number): void {
    if (this.tx.length < len) this.tx = Buffer.alloc(Math.max(len, this.tx.length * 2));
  }

  private onBatch(n: number): void {
    const info = this.info, stride = sys().STRIDE;
    for (let i = 0; i < n && !this.closed; i++) {
      const e = i * stride;
      const off = info[e], len = info[e + 1], ip = info[e + 2], flags = info[e + 3];
      if (len > RX_SLOT) { this.dropped++; continue; }
      const d = this.rx.subarray(off, off + len);
      const peer6 = this.family === 6 ? this.infoBytes.subarray((e + 5) * 4, (e + 9) * 4) : null;
      if ((flags & ICMP_ERR_FLAG) !== 0) {
        this.errors++;
        const dst6 = this.family === 6 ? this.infoBytes.subarray((e + 9) * 4, (e + 13) * 4) : null;
        this.onErrorCb?.(ip, peer6, (flags >>> 8) & 0xff, flags & 0xff, info[e + 4], dst6, d);
        continue;
      }
      this.received(ip, peer6, d);
    }
  }

  protected abstract received(from: number, from6: Buffer | null, d: Buffer): void;

  close(): void {
    if (this.closed) return;
    this.closed = true;
    sys().close(this.handle);
  }
}

/** A ping socket: one per flow, the kernel's identifier. */
export class IcmpEchoSocket extends IcmpSocketBase {
  /** The kernel-assigned echo identifier: requests carry it, replies are matched on it. */
  readonly localId: number;

  private constructor(handle: SysHandle, family: 4 | 6) {
    super(handle, family, 2);
    this.localId = sys().localPort(handle);
  }

  /** Open a ping socket, or say why not (no exception for the expected permission failure). */
  static open(family: 4 | 6 = 4): IcmpOpenResult<IcmpEchoSocket> {
    try {
      return { socket: new IcmpEchoSocket(sys().openIcmp(family, false), family) };
    } catch (e) {
      return openFailure(family, false, e);
    }
  }

  /**
   * Send an echo request with this sequence number and payload to dst (IPv4 u32, or 16 bytes
   * for IPv6). The kernel fills in the identifier and checksum. false if not sent.
   */
  send(dst: number | Buffer, seq: number, data: Buffer): boolean {
    const len = 8 + data.length;
    this.room(len);
    const b = this.tx;
    b[0] = ECHO_REQUEST[this.family === 6 ? 1 : 0]; b[1] = 0;
    b.writeUInt32BE(0, 2); // checksum + identifier: the kernel's
    b.writeUInt16BE(seq & 0xffff, 6);
    data.copy(b, 8);
    return this.sendTo(dst, len);
  }

  protected received(from: number, from6: Buffer | null, d: Buffer): void {
    if (d.length < 8 || d[0] !== ECHO_REPLY[this.family === 6 ? 1 : 0]) { this.dropped++; return; }
    this.replies++;
    this.onReplyCb?.(from, from6, d.readUInt16BE(4), d.readUInt16BE(6), d.subarray(8));
  }
}

/** A raw ICMP socket shared by every flow of one family; the caller's identifiers. */
export class IcmpRawSocket extends IcmpSocketBase {
  private constructor(handle: SysHandle, family: 4 | 6) {
    super(handle, family, 8);
  }

  static open(family: 4 | 6): IcmpOpenResult<IcmpRawSocket> {
    try {
      return { socket: new IcmpRawSocket(sys().openIcmp(family, true), family) };
    } catch (e) {
      return openFailure(family, true, e);
    }
  }

  /** An echo request with our identifier `id` (IPv4: we checksum; ICMPv6: the kernel does). */
  send(dst: number | Buffer, id: number, seq: number, data: Buffer): boolean {
    const len = 8 + data.length;
    this.room(len);
    const b = this.tx;
    b[0] = ECHO_REQUEST[this.family === 6 ? 1 : 0]; b[1] = 0;
    b.writeUInt16BE(0, 2);
    b.writeUInt16BE(id & 0xffff, 4);
    b.writeUInt16BE(seq & 0xffff, 6);
    data.copy(b, 8);
    if (this.family === 4) b.writeUInt16BE(foldChecksum(sumWords(b, 0, len)), 2);
    return this.sendTo(dst, len);
  }

  protected received(from: number, from6: Buffer | null, d: Buffer): void {
    if (d.length < 8) { this.dropped++; return; }
    const v6 = this.family === 6;
    if (d[0] === ECHO_REPLY[v6 ? 1 : 0]) {
      this.replies++;
      this.onReplyCb?.(from, from6, d.readUInt16BE(4), d.readUInt16BE(6), d.subarray(8));
      return;
    }
    // an error quoting one of our echo requests: IP header, then the request's ICMP header
    const isError = v6 ? d[0] >= 1 && d[0] <= 4 : d[0] === 3 || d[0] === 11 || d[0] === 12;
    if (!isError) { this.dropped++; return; }
    const q = 8;
    const hl = v6 ? 40 : (d.length > q ? (d[q] & 15) * 4 : 0);
    if (d.length < q + hl + 8 || (v6 ? d[q + 6] !== 58 : d[q + 9] !== 1)) { this.dropped++; return; }
    const req = d.subarray(q + hl);
    if (req[0] !== ECHO_REQUEST[v6 ? 1 : 0]) { this.dropped++; return; }
    this.errors++;
    const dst = v6 ? 0 : d.readUInt32BE(q + 16);
    const dst6 = v6 ? d.subarray(q + 24, q + 40) : null;
    this.onErrorCb?.(from, from6, d[0], d[1], dst, dst6, req);
  }
}
