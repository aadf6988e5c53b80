// UDP header (RFC 768) with checksums over the IPv4 or IPv6 pseudo-header.
//
// Design: parseUdp() checks the length field (8 <= length <= available bytes) and, when given the
// pseudo-header partial sum (pseudoSumV4/pseudoSumV6 with l4len = the UDP length), verifies the
// checksum in the same pass; without it checksumOk stays false. A zero checksum means "none" in
// IPv4 and is accepted; in IPv6 it is invalid (RFC 8200 §8.1). Bytes beyond the UDP length (e.g.
// an IP payload longer than the datagram) are outside payloadEnd. Building is two steps so the
// payload can be written in place between them: writeUdp() writes the header with checksum 0,
// then finishUdpV4/finishUdpV6 computes the checksum over header + payload, mapping 0 to 0xffff.

import { foldChecksum, pseudoSumV4, pseudoSumV6, sumWords } from './checksum.ts';
import { IPPROTO_UDP } from './ipv4.ts';

export const UDP_HEADER_LEN = 8;

export class UdpHeader {
  srcPort = 0;
  dstPort = 0;
  length = 0;
  checksum = 0;
  /** True when verified (or absent in IPv4); false when wrong or not checked. */
  checksumOk = false;
  payloadOffset = 0;
  payloadEnd = 0;
}

/** pseudo: pseudo-header partial sum, or -1 to skip verification. v6: the datagram is over IPv6. */
export function parseUdp(buf: Buffer, off: number, end: number, out: UdpHeader, pseudo = -1, v6 = false): string | null {
  if (off < 0 || end > buf.length || end - off < UDP_HEADER_LEN) return 'udp: truncated';
  const len = (buf[off + 4] << 8) | buf[off + 5];
  if (len < UDP_HEADER_LEN) return 'udp: bad length';
  if (len > end - off) return 'udp: length beyond packet';
  out.srcPort = (buf[off] << 8) | buf[off + 1];
  out.dstPort = (buf[off + 2] << 8) | buf[off + 3];
  out.length = len;
  out.checksum = (buf[off + 6] << 8) | buf[off + 7];
  out.payloadOffset = off + UDP_HEADER_LEN;
  out.payloadEnd = off + len;
  if (out.checksum === 0) out.checksumOk = !v6;
  else out.checksumOk = pseudo >= 0 && foldChecksum(sumWords(buf, off, len, pseudo)) === 0;
  return null;
}

/** Writes the 8-byte header with a zero checksum; returns the payload offset. */
export function writeUdp(buf: Buffer, off: number, srcPort: number, dstPort: number, payloadLength: number): number {
  const len = UDP_HEADER_LEN + payloadLength;
  buf[off] = srcPort >>> 8;
  buf[off + 1] = srcPort;
  buf[off + 2] = dstPort >>> 8;
  buf[off + 3] = dstPort;
  buf[off + 4] = len >>> 8;
  buf[off + 5] = len;
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  return off + UDP_HEADER_LEN;
}

function store(buf: Buffer, off: number, len: number, pseudo: number): void {
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  let c = foldChecksum(sumWords(buf, off, len, pseudo));
  if (c === 0) c = 0xffff; // 0 would mean "no checksum"
  buf[off + 6] = c >>> 8;
  buf[off + 7] = c;
}

/** Computes and stores the checksum of the datagram at off (length from its header). */
export function finishUdpV4(buf: Buffer, off: number, src: number, dst: number): void {
  const len = (buf[off + 4] << 8) | buf[off + 5];
  store(buf, off, len, pseudoSumV4(src, dst, IPPROTO_UDP, len));
}

/** As finishUdpV4; the IPv6 addresses are read from buf at srcOff/dstOff. */
export function finishUdpV6(buf: Buffer, off: number, srcOff: number, dstOff: number): void {
  const len = (buf[off + 4] << 8) | buf[off + 5];
  store(buf, off, len, pseudoSumV6(buf, srcOff, dstOff, IPPROTO_UDP, len));
}
