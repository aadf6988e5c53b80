// IPv6 fixed header (RFC 8200) and a bounded walk over extension headers.
//
// Design: the parser checks the payload length against the available bytes (trailing Ethernet
// padding is excluded) and skips hop-by-hop, routing, fragment, destination options and AH headers
// to find the upper-layer protocol, visiting at most IPV6_MAX_EXT_HEADERS of them so a chain of
// tiny headers cannot make us loop long. Hop-by-hop is only valid first. ESP (50) and No Next
// Header (59) end the walk and are reported as the protocol. A fragment header is recorded
// (offset, M flag, id); for a non-first fragment the walk stops, since what follows is not a header,
// and callers must look at hasFragment before treating payloadOffset as an upper-layer header.
// Jumbograms (payload length 0 with hop-by-hop) are not supported. Option contents are not
// interpreted. Addresses stay in the buffer (srcOffset/dstOffset), which is what the pseudo-header
// sum and the writers want.

export const IPV6_HEADER_LEN = 40;
export const IPV6_MAX_EXT_HEADERS = 8;

export const IPV6_NH_HOPOPTS = 0;
export const IPV6_NH_ROUTING = 43;
export const IPV6_NH_FRAGMENT = 44;
export const IPV6_NH_ESP = 50;
export const IPV6_NH_AH = 51;
export const IPV6_NH_NONE = 59;
export const IPV6_NH_DSTOPTS = 60;

export class Ipv6Header {
  trafficClass = 0;
  flowLabel = 0;
  payloadLength = 0;
  /** Next header field of the fixed header. */
  nextHeader = 0;
  hopLimit = 0;
  srcOffset = 0;
  dstOffset = 0;
  /** Upper-layer protocol after all extension headers (or 50/59 where the walk stopped). */
  protocol = 0;
  /** Start of the upper-layer data (after the extension headers). */
  payloadOffset = 0;
  /** off + 40 + payloadLength. */
  payloadEnd = 0;
  /** Number of extension headers skipped. */
  extCount = 0;
  hasFragment = false;
  /** Offset of the fragment header, or -1. */
  fragmentHeaderOffset = -1;
  /** Fragment offset in bytes, M flag and identification (when hasFragment). */
  fragmentOffset = 0;
  moreFragments = false;
  fragmentId = 0;
}

export function parseIpv6(buf: Buffer, off: number, end: number, out: Ipv6Header): string | null {
  if (off < 0 || end > buf.length || end - off < IPV6_HEADER_LEN) return 'ipv6: truncated';
  if (buf[off] >>> 4 !== 6) return 'ipv6: bad version';
  const plen = (buf[off + 4] << 8) | buf[off + 5];
  let nh = buf[off + 6];
  if (plen === 0 && nh === IPV6_NH_HOPOPTS) return 'ipv6: jumbogram unsupported';
  if (plen > end - off - IPV6_HEADER_LEN) return 'ipv6: truncated payload';
  const pend = off + IPV6_HEADER_LEN + plen;
  out.trafficClass = ((buf[off] & 15) << 4) | (buf[off + 1] >>> 4);
  out.flowLabel = ((buf[off + 1] & 15) << 16) | (buf[off + 2] << 8) | buf[off + 3];
  out.payloadLength = plen;
  out.nextHeader = nh;
  out.hopLimit = buf[off + 7];
  out.srcOffset = off + 8;
  out.dstOffset = off + 24;
  out.payloadEnd = pend;
  out.extCount = 0;
  out.hasFragment = false;
  out.fragmentHeaderOffset = -1;
  out.fragmentOffset = 0;
  out.moreFragments = false;
  out.fragmentId = 0;
  let p = off + IPV6_HEADER_LEN;
  for (;;) {
    let hlen: number;
    if (nh === IPV6_NH_HOPOPTS && out.extCount !== 0) return 'ipv6: misplaced hop-by-hop header';
    switch (nh) {
      case IPV6_NH_HOPOPTS:
      case IPV6_NH_ROUTING:
      case IPV6_NH_DSTOPTS:
        if (pend - p < 8) return 'ipv6: truncated extension header';
        hlen = (buf[p + 1] + 1) * 8;
        break;
      case IPV6_NH_AH:
        if (pend - p < 8) return 'ipv6: truncated extension header';
        hlen = (buf[p + 1] + 2) * 4;
        break;
      case IPV6_NH_FRAGMENT: {
        if (pend - p < 8) return 'ipv6: truncated extension header';
        if (out.hasFragment) return 'ipv6: duplicate fragment header';
        const fo = (buf[p + 2] << 8) | buf[p + 3];
        out.hasFragment = true;
        out.fragmentHeaderOffset = p;
        out.fragmentOffset = fo & 0xfff8;
        out.moreFragments = (fo & 1) !== 0;
        out.fragmentId = ((buf[p + 4] << 24) | (buf[p + 5] << 16) | (buf[p + 6] << 8) | buf[p + 7]) >>> 0;
        hlen = 8;
        break;
      }
      default:
        hlen = -1; // upper layer, ESP or no next header
    }
    if (hlen < 0) break;
    if (hlen > pend - p) return 'ipv6: truncated extension header';
    if (++out.extCount > IPV6_MAX_EXT_HEADERS) return 'ipv6: too many extension headers';
    nh = buf[p];
    p += hlen;
    // A non-first fragment carries no further headers, only data.
    if (out.fragmentHeaderOffset >= 0 && out.fragmentOffset !== 0) break;
  }
  out.protocol = nh;
  out.payloadOffset = p;
  return null;
}

/** Writes a 40-byte header (no extension headers); src/dst are read from offset 0 of their
 *  buffers. Returns the payload offset (off + 40). */
export function writeIpv6(buf: Buffer, off: number, src: Buffer, dst: Buffer, nextHeader: number,
  payloadLength: number, hopLimit = 64, trafficClass = 0, flowLabel = 0): number {
  return writeIpv6From(buf, off, src, 0, dst, 0, nextHeader, payloadLength, hopLimit, trafficClass, flowLabel);
}

/** writeIpv6 with the addresses at src[srcOff] and dst[dstOff] (e.g. one table of addresses). */
export function writeIpv6From(buf: Buffer, off: number, src: Buffer, srcOff: number, dst: Buffer, dstOff: number,
  nextHeader: number, payloadLength: number, hopLimit = 64, trafficClass = 0, flowLabel = 0): number {
  buf[off] = 0x60 | ((trafficClass >>> 4) & 15);
  buf[off + 1] = ((trafficClass & 15) << 4) | ((flowLabel >>> 16) & 15);
  buf[off + 2] = flowLabel >>> 8;
  buf[off + 3] = flowLabel;
  buf[off + 4] = payloadLength >>> 8;
  buf[off + 5] = payloadLength;
  buf[off + 6] = nextHeader;
  buf[off + 7] = hopLimit;
  for (let k = 0; k < 16; k++) {
    buf[off + 8 + k] = src[srcOff + k];
    buf[off + 24 + k] = dst[dstOff + k];
  }
  return off + IPV6_HEADER_LEN;
}

/** Fragment header (RFC 8200 4.5): 8 bytes; offset in bytes (a multiple of 8). Returns off + 8. */
export function writeIpv6Fragment(buf: Buffer, off: number, nextHeader: number, fragOffset: number, more: boolean, id: number): number {
  buf[off] = nextHeader;
  buf[off + 1] = 0;
  const fo = (fragOffset & 0xfff8) | (more ? 1 : 0);
  buf[off + 2] = fo >>> 8;
  buf[off + 3] = fo;
  buf.writeUInt32BE(id >>> 0, off + 4);
  return off + 8;
}

/** The Ethernet multicast address of an IPv6 multicast destination (RFC 2464 7): 33:33 + its last 4 bytes. */
export function ipv6MulticastMac(addr: Buffer, out: Buffer): Buffer {
  out[0] = 0x33; out[1] = 0x33;
  addr.copy(out, 2, 12, 16);
  return out;
}

/** The solicited-node multicast address of addr (RFC 4291 2.7.1): ff02::1:ffXX:XXXX. */
export function solicitedNode(addr: Buffer, out: Buffer): Buffer {
  out.fill(0);
  out[0] = 0xff; out[1] = 0x02; out[11] = 0x01; out[12] = 0xff;
  addr.copy(out, 13, 13, 16);
  return out;
}
