// IPv4 header (RFC 791) with options, fragmentation fields and header checksum.
//
// Design: the parser validates only what makes offsets trustworthy (version, IHL 5..15 within the
// buffer, total length covering the header and within the buffer); bytes after total length are
// Ethernet padding and are excluded via payloadEnd. A bad header checksum does not fail the parse:
// it sets checksumOk = false so the caller can count it before dropping. Options are reported as a
// range but not interpreted (nothing here routes on them). parseIpv4Quoted() is the lenient variant
// for the datagram quoted inside ICMP errors, which is truncated by definition. writeIpv4() writes
// a 20-byte header (no options) and computes its checksum; the payload may be written before or
// after, since the header checksum does not cover it.

import { csumAdjust16, csumAdjust32, foldChecksum, sumWords } from './checksum.ts';

export const IPV4_HEADER_LEN = 20;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_IPV6 = 41;
export const IPPROTO_ICMPV6 = 58;

export class Ipv4Header {
  /** Header length in bytes (IHL * 4). */
  headerLength = 0;
  /** The whole TOS byte (DSCP << 2 | ECN). */
  tos = 0;
  totalLength = 0;
  id = 0;
  df = false;
  mf = false;
  /** Fragment offset in bytes (the header field times 8). */
  fragmentOffset = 0;
  ttl = 0;
  protocol = 0;
  checksum = 0;
  checksumOk = false;
  src = 0;
  dst = 0;
  /** Options occupy [optionsOffset, optionsEnd); empty when headerLength is 20. */
  optionsOffset = 0;
  optionsEnd = 0;
  payloadOffset = 0;
  /** off + totalLength (or the end of the buffer for a quoted, truncated datagram). */
  payloadEnd = 0;
}

export function isFragment(h: Ipv4Header): boolean {
  return h.mf || h.fragmentOffset !== 0;
}

function parseCommon(buf: Buffer, off: number, end: number, out: Ipv4Header, quoted: boolean): string | null {
  if (off < 0 || end > buf.length || end - off < IPV4_HEADER_LEN) return 'ipv4: truncated';
  const vihl = buf[off];
  if (vihl >>> 4 !== 4) return 'ipv4: bad version';
  const hl = (vihl & 15) * 4;
  if (hl < IPV4_HEADER_LEN) return 'ipv4: bad header length';
  if (hl > end - off) return 'ipv4: truncated options';
  const total = (buf[off + 2] << 8) | buf[off + 3];
  if (total < hl) return 'ipv4: bad total length';
  if (total > end - off) {
    if (!quoted) return 'ipv4: truncated payload';
    out.payloadEnd = end;
  } else {
    out.payloadEnd = off + total;
  }
  out.headerLength = hl;
  out.tos = buf[off + 1];
  out.totalLength = total;
  out.id = (buf[off + 4] << 8) | buf[off + 5];
  const ff = (buf[off + 6] << 8) | buf[off + 7];
  out.df = (ff & 0x4000) !== 0;
  out.mf = (ff & 0x2000) !== 0;
  out.fragmentOffset = (ff & 0x1fff) * 8;
  out.ttl = buf[off + 8];
  out.protocol = buf[off + 9];
  out.checksum = (buf[off + 10] << 8) | buf[off + 11];
  out.src = ((buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15]) >>> 0;
  out.dst = ((buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19]) >>> 0;
  out.optionsOffset = off + IPV4_HEADER_LEN;
  out.optionsEnd = off + hl;
  out.payloadOffset = off + hl;
  out.checksumOk = foldChecksum(sumWords(buf, off, hl)) === 0;
  return null;
}

/** Parses an IPv4 header; end is the end of the available bytes (e.g. the Ethernet payload end). */
export function parseIpv4(buf: Buffer, off: number, end: number, out: Ipv4Header): string | null {
  return parseCommon(buf, off, end, out, false);
}

/** As parseIpv4, but accepts a total length beyond end (payloadEnd is then end): for the original
 *  datagram quoted in an ICMP error. */
export function parseIpv4Quoted(buf: Buffer, off: number, end: number, out: Ipv4Header): string | null {
  return parseCommon(buf, off, end, out, true);
}

/** Writes a 20-byte IPv4 header with its checksum; returns the payload offset (off + 20). */
export function writeIpv4(buf: Buffer, off: number, src: number, dst: number, protocol: number,
  payloadLength: number, ttl = 64, id = 0, df = false, tos = 0): number {
  const total = IPV4_HEADER_LEN + payloadLength;
  buf[off] = 0x45;
  buf[off + 1] = tos;
  buf[off + 2] = total >>> 8;
  buf[off + 3] = total;
  buf[off + 4] = id >>> 8;
  buf[off + 5] = id;
  buf[off + 6] = df ? 0x40 : 0;
  buf[off + 7] = 0;
  buf[off + 8] = ttl;
  buf[off + 9] = protocol;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  buf[off + 12] = src >>> 24;
  buf[off + 13] = src >>> 16;
  buf[off + 14] = src >>> 8;
  buf[off + 15] = src;
  buf[off + 16] = dst >>> 24;
  buf[off + 17] = dst >>> 16;
  buf[off + 18] = dst >>> 8;
  buf[off + 19] = dst;
  finishIpv4(buf, off);
  return off + IPV4_HEADER_LEN;
}

/** Recomputes the header checksum of the IPv4 header at off (IHL taken from the header). */
export function finishIpv4(buf: Buffer, off: number): void {
  const hl = (buf[off] & 15) * 4;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  const c = foldChecksum(sumWords(buf, off, hl));
  buf[off + 10] = c >>> 8;
  buf[off + 11] = c;
}

/** Rewrites the source (which = 12) or destination (which = 16) address with an incremental
 *  header checksum update; returns the old address so the caller can adjust the L4 checksum. */
export function ipv4RewriteAddr(buf: Buffer, off: number, which: 12 | 16, addr: number): number {
  const p = off + which;
  const old = ((buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]) >>> 0;
  const c = csumAdjust32((buf[off + 10] << 8) | buf[off + 11], old, addr >>> 0);
  buf[p] = addr >>> 24;
  buf[p + 1] = addr >>> 16;
  buf[p + 2] = addr >>> 8;
  buf[p + 3] = addr;
  buf[off + 10] = c >>> 8;
  buf[off + 11] = c;
  return old;
}

/** Decrements the TTL with an incremental checksum update; returns the new TTL. */
export function ipv4DecTtl(buf: Buffer, off: number): number {
  const ttl = buf[off + 8];
  if (ttl === 0) return 0;
  const oldWord = (ttl << 8) | buf[off + 9];
  const c = csumAdjust16((buf[off + 10] << 8) | buf[off + 11], oldWord, oldWord - 0x100);
  buf[off + 8] = ttl - 1;
  buf[off + 10] = c >>> 8;
  buf[off + 11] = c;
  return ttl - 1;
}
