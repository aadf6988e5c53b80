// ICMP for IPv4 (RFC 792, with RFC 1812 rules for errors).
//
// Design: the parser verifies the checksum over the whole message (off..end, where end is the IP
// payload end) and reports checksumOk rather than failing. Echo messages expose id/seq and the data
// range; error messages (unreachable, source quench, redirect, time exceeded, parameter problem)
// expose the offset of the quoted IP header so NAT can map the error back to a flow with
// parseIpv4Quoted(). Writers build in place: writeIcmpv4Echo() expects the echo data already at
// off + 8 (a reply can reuse the request's bytes) and checksums it; writeIcmpv4Error() copies the
// quoted datagram itself. Both compute the checksum.

import { foldChecksum, sumWords } from './checksum.ts';

export const ICMPV4_HEADER_LEN = 8;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_SOURCE_QUENCH = 4;
export const ICMP_REDIRECT = 5;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PARAM_PROBLEM = 12;

// Destination unreachable codes.
export const ICMP_NET_UNREACH = 0;
export const ICMP_HOST_UNREACH = 1;
export const ICMP_PROTO_UNREACH = 2;
export const ICMP_PORT_UNREACH = 3;
export const ICMP_FRAG_NEEDED = 4;
export const ICMP_ADMIN_PROHIBITED = 13;

export function isIcmpv4Error(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

export class Icmpv4Header {
  type = 0;
  code = 0;
  checksum = 0;
  checksumOk = false;
  /** Echo identifier and sequence (meaningful for types 0 and 8). */
  id = 0;
  seq = 0;
  /** Bytes 4..7 as a u32 (gateway for redirects; MTU in the low 16 bits for frag-needed;
   *  pointer in the top byte for parameter problem). */
  rest = 0;
  /** Offset of the quoted IP header for error types, else -1. */
  embeddedOffset = -1;
  /** Data after the 8-byte header (echo data or the quoted datagram). */
  payloadOffset = 0;
  payloadEnd = 0;
}

export function parseIcmpv4(buf: Buffer, off: number, end: number, out: Icmpv4Header): string | null {
  if (off < 0 || end > buf.length || end - off < ICMPV4_HEADER_LEN) return 'icmpv4: truncated';
  const type = buf[off];
  out.type = type;
  out.code = buf[off + 1];
  out.checksum = (buf[off + 2] << 8) | buf[off + 3];
  out.id = (buf[off + 4] << 8) | buf[off + 5];
  out.seq = (buf[off + 6] << 8) | buf[off + 7];
  out.rest = (out.id * 0x10000 + out.seq);
  out.payloadOffset = off + ICMPV4_HEADER_LEN;
  out.payloadEnd = end;
  if (isIcmpv4Error(type)) {
    // RFC 792: at least the IP header and 8 bytes; insist on a minimal IP header being present.
    if (end - off < ICMPV4_HEADER_LEN + 20) return 'icmpv4: truncated error quote';
    out.embeddedOffset = off + ICMPV4_HEADER_LEN;
  } else {
    out.embeddedOffset = -1;
  }
  out.checksumOk = foldChecksum(sumWords(buf, off, end - off)) === 0;
  return null;
}

function store(buf: Buffer, off: number, len: number): void {
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  const c = foldChecksum(sumWords(buf, off, len));
  buf[off + 2] = c >>> 8;
  buf[off + 3] = c;
}

/** Writes an echo header (type ICMP_ECHO_REQUEST or ICMP_ECHO_REPLY) in front of dataLength bytes
 *  already at off + 8, and checksums the message; returns off + 8 + dataLength. */
export function writeIcmpv4Echo(buf: Buffer, off: number, type: number, id: number, seq: number, dataLength: number): number {
  buf[off] = type;
  buf[off + 1] = 0;
  buf[off + 4] = id >>> 8;
  buf[off + 5] = id;
  buf[off + 6] = seq >>> 8;
  buf[off + 7] = seq;
  const len = ICMPV4_HEADER_LEN + dataLength;
  store(buf, off, len);
  return off + len;
}

/** Writes an ICMP error quoting the datagram orig[origOff, origEnd): its IP header plus `extra`
 *  bytes of payload (8 per RFC 792; RFC 1812 allows more, up to 576 bytes in total), clamped to
 *  what is available. `rest` is bytes 4..7 (e.g. the next-hop MTU for frag-needed, or the pointer
 *  << 24 for parameter problem). Returns the end offset of the message. */
export function writeIcmpv4Error(buf: Buffer, off: number, type: number, code: number, rest: number,
  orig: Buffer, origOff: number, origEnd: number, extra = 8): number {
  buf[off] = type;
  buf[off + 1] = code;
  buf[off + 4] = rest >>> 24;
  buf[off + 5] = rest >>> 16;
  buf[off + 6] = rest >>> 8;
  buf[off + 7] = rest;
  const avail = Math.max(0, origEnd - origOff);
  const hl = (orig[origOff] & 15) * 4;
  const n = Math.min(avail, hl + Math.max(0, extra));
  orig.copy(buf, off + ICMPV4_HEADER_LEN, origOff, origOff + n);
  const len = ICMPV4_HEADER_LEN + n;
  store(buf, off, len);
  return off + len;
}
