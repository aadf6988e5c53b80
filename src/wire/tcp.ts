// TCP header (RFC 9293) and the options a modern endpoint negotiates: MSS, window scale (RFC 7323),
// SACK-permitted and SACK blocks (RFC 2018), timestamps (RFC 7323).
//
// Design: TcpHeader extends TcpOptions, so a parsed segment's options can be handed straight to the
// writer, and both are preallocated and reused (SACK blocks live in a fixed Uint32Array). Unknown
// options with a sane length are skipped; a missing or bad length byte, or a known option with the
// wrong length, makes the segment malformed, as Linux drops those too. A window scale above 14 is
// clamped to 14 (RFC 7323 §2.3). The checksum is verified in parseTcp() when the caller passes the
// pseudo-header sum (pseudoSumV4/V6 with l4len = end - off); otherwise checksumOk stays false.
// Building is two steps: writeTcp() writes header + options with checksum 0 and returns the
// payload offset; after the payload is in place finishTcpV4/V6 stores the checksum.
// Option layout follows Linux (MSS, SACK-permitted + timestamps, NOP + window scale, NOP NOP +
// SACK), which keeps everything 4-byte aligned; SACK blocks that do not fit in 40 bytes are dropped.

import { foldChecksum, pseudoSumV4, pseudoSumV6, sumWords } from './checksum.ts';
import { IPPROTO_TCP } from './ipv4.ts';

export const TCP_HEADER_LEN = 20;
export const TCP_MAX_OPTIONS = 40;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

export const TCPOPT_EOL = 0;
export const TCPOPT_NOP = 1;
export const TCPOPT_MSS = 2;
export const TCPOPT_WSCALE = 3;
export const TCPOPT_SACK_PERMITTED = 4;
export const TCPOPT_SACK = 5;
export const TCPOPT_TIMESTAMP = 8;

export class TcpOptions {
  /** MSS option value, or -1 when absent. */
  mss = -1;
  /** Window scale shift (0..14), or -1 when absent. */
  wscale = -1;
  sackPermitted = false;
  tsPresent = false;
  tsVal = 0;
  tsEcr = 0;
  /** Number of SACK blocks (0..4); block i is [sackBlocks[2i], sackBlocks[2i+1]). */
  sackCount = 0;
  readonly sackBlocks = new Uint32Array(8);

  clear(): void {
    this.mss = -1;
    this.wscale = -1;
    this.sackPermitted = false;
    this.tsPresent = false;
    this.tsVal = 0;
    this.tsEcr = 0;
    this.sackCount = 0;
  }
}

export class TcpHeader extends TcpOptions {
  srcPort = 0;
  dstPort = 0;
  seq = 0;
  ack = 0;
  /** Header length in bytes (data offset * 4). */
  headerLength = 0;
  /** Flag byte: TCP_FIN | TCP_SYN | ... */
  flags = 0;
  window = 0;
  checksum = 0;
  checksumOk = false;
  urgent = 0;
  optionsOffset = 0;
  optionsEnd = 0;
  payloadOffset = 0;
  payloadEnd = 0;
}

function u32(buf: Buffer, p: number): number {
  return ((buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]) >>> 0;
}

/** Parses the segment buf[off, end) (end = the IP payload end). pseudo: pseudo-header partial
 *  sum for checksum verification, or -1 to skip it. */
export function parseTcp(buf: Buffer, off: number, end: number, out: TcpHeader, pseudo = -1): string | null {
  if (off < 0 || end > buf.length || end - off < TCP_HEADER_LEN) return 'tcp: truncated';
  const hl = (buf[off + 12] >>> 4) * 4;
  if (hl < TCP_HEADER_LEN) return 'tcp: bad data offset';
  if (hl > end - off) return 'tcp: data offset beyond segment';
  out.srcPort = (buf[off] << 8) | buf[off + 1];
  out.dstPort = (buf[off + 2] << 8) | buf[off + 3];
  out.seq = u32(buf, off + 4);
  out.ack = u32(buf, off + 8);
  out.headerLength = hl;
  out.flags = buf[off + 13];
  out.window = (buf[off + 14] << 8) | buf[off + 15];
  out.checksum = (buf[off + 16] << 8) | buf[off + 17];
  out.urgent = (buf[off + 18] << 8) | buf[off + 19];
  out.optionsOffset = off + TCP_HEADER_LEN;
  out.optionsEnd = off + hl;
  out.payloadOffset = off + hl;
  out.payloadEnd = end;
  out.clear();
  let p = off + TCP_HEADER_LEN;
  const oe = off + hl;
  while (p < oe) {
    const kind = buf[p];
    if (kind === TCPOPT_EOL) break;
    if (kind === TCPOPT_NOP) { p++; continue; }
    if (p + 1 >= oe) return 'tcp: option without length';
    const len = buf[p + 1];
    if (len < 2 || len > oe - p) return 'tcp: bad option length';
    switch (kind) {
      case TCPOPT_MSS:
        if (len !== 4) return 'tcp: bad mss option';
        out.mss = (buf[p + 2] << 8) | buf[p + 3];
        break;
      case TCPOPT_WSCALE:
        if (len !== 3) return 'tcp: bad window scale option';
        out.wscale = buf[p + 2] > 14 ? 14 : buf[p + 2];
        break;
      case TCPOPT_SACK_PERMITTED:
        if (len !== 2) return 'tcp: bad sack-permitted option';
        out.sackPermitted = true;
        break;
      case TCPOPT_SACK: {
        const n = (len - 2) >>> 3;
        if (n < 1 || n > 4 || len !== 2 + n * 8) return 'tcp: bad sack option';
        const b = out.sackBlocks;
        for (let k = 0; k < n; k++) {
          b[2 * k] = u32(buf, p + 2 + 8 * k);
          b[2 * k + 1] = u32(buf, p + 6 + 8 * k);
        }
        out.sackCount = n;
        break;
      }
      case TCPOPT_TIMESTAMP:
        if (len !== 10) return 'tcp: bad timestamp option';
        out.tsPresent = true;
        out.tsVal = u32(buf, p + 2);
        out.tsEcr = u32(buf, p + 6);
        break;
      default:
        break; // unknown: skip by its length
    }
    p += len;
  }
  out.checksumOk = pseudo >= 0 && foldChecksum(sumWords(buf, off, end - off, pseudo)) === 0;
  return null;
}

function put32(buf: Buffer, p: number, v: number): void {
  buf[p] = v >>> 24;
  buf[p + 1] = v >>> 16;
  buf[p + 2] = v >>> 8;
  buf[p + 3] = v;
}

/** Writes the header and options (opts may be null for none) with checksum 0; returns the payload
 *  offset. Options are padded with EOL/NOP to a multiple of 4 bytes. */
export function writeTcp(buf: Buffer, off: number, srcPort: number, dstPort: number, seq: number, ack: number,
  flags: number, window: number, opts: TcpOptions | null = null, urgent = 0): number {
  buf[off] = srcPort >>> 8;
  buf[off + 1] = srcPort;
  buf[off + 2] = dstPort >>> 8;
  buf[off + 3] = dstPort;
  put32(buf, off + 4, seq);
  put32(buf, off + 8, ack);
  buf[off + 13] = flags;
  buf[off + 14] = window >>> 8;
  buf[off + 15] = window;
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  buf[off + 18] = urgent >>> 8;
  buf[off + 19] = urgent;
  let p = off + TCP_HEADER_LEN;
  if (opts !== null) {
    if (opts.mss >= 0) {
      buf[p] = TCPOPT_MSS;
      buf[p + 1] = 4;
      buf[p + 2] = opts.mss >>> 8;
      buf[p + 3] = opts.mss;
      p += 4;
    }
    if (opts.tsPresent) {
      if (opts.sackPermitted) {
        buf[p] = TCPOPT_SACK_PERMITTED;
        buf[p + 1] = 2;
      } else {
        buf[p] = TCPOPT_NOP;
        buf[p + 1] = TCPOPT_NOP;
      }
      buf[p + 2] = TCPOPT_TIMESTAMP;
      buf[p + 3] = 10;
      put32(buf, p + 4, opts.tsVal);
      put32(buf, p + 8, opts.tsEcr);
      p += 12;
    } else if (opts.sackPermitted) {
      buf[p] = TCPOPT_NOP;
      buf[p + 1] = TCPOPT_NOP;
      buf[p + 2] = TCPOPT_SACK_PERMITTED;
      buf[p + 3] = 2;
      p += 4;
    }
    if (opts.wscale >= 0) {
      buf[p] = TCPOPT_NOP;
      buf[p + 1] = TCPOPT_WSCALE;
      buf[p + 2] = 3;
      buf[p + 3] = opts.wscale;
      p += 4;
    }
    const room = TCP_MAX_OPTIONS - (p - off - TCP_HEADER_LEN);
    const n = Math.min(opts.sackCount, 4, (room - 4) >> 3);
    if (n > 0) {
      buf[p] = TCPOPT_NOP;
      buf[p + 1] = TCPOPT_NOP;
      buf[p + 2] = TCPOPT_SACK;
      buf[p + 3] = 2 + 8 * n;
      p += 4;
      const b = opts.sackBlocks;
      for (let k = 0; k < n; k++) {
        put32(buf, p, b[2 * k]);
        put32(buf, p + 4, b[2 * k + 1]);
        p += 8;
      }
    }
    // Every option above is emitted in 4-byte units, so no padding is needed; keep the loop for
    // safety should a non-aligned option be added.
    while (((p - off) & 3) !== 0) buf[p++] = TCPOPT_EOL;
  }
  const hl = p - off;
  buf[off + 12] = (hl >>> 2) << 4;
  return p;
}

function store(buf: Buffer, off: number, len: number, pseudo: number): void {
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  const c = foldChecksum(sumWords(buf, off, len, pseudo));
  buf[off + 16] = c >>> 8;
  buf[off + 17] = c;
}

/** Stores the checksum of the segment buf[off, off+len) (header + options + payload). */
export function finishTcpV4(buf: Buffer, off: number, len: number, src: number, dst: number): void {
  store(buf, off, len, pseudoSumV4(src, dst, IPPROTO_TCP, len));
}

/** As finishTcpV4; the IPv6 addresses are read from buf at srcOff/dstOff. */
export function finishTcpV6(buf: Buffer, off: number, len: number, srcOff: number, dstOff: number): void {
  store(buf, off, len, pseudoSumV6(buf, srcOff, dstOff, IPPROTO_TCP, len));
}
