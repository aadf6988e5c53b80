// ICMPv6 (RFC 4443) and the Neighbor Discovery messages a gateway needs (RFC 4861): router
// solicitation/advertisement, neighbor solicitation/advertisement, and their options.
//
// Design: parseIcmpv6() verifies the checksum when given the pseudo-header partial sum
// (pseudoSumV6(buf, ip.srcOffset, ip.dstOffset, 58, end - off)); otherwise checksumOk is false.
// For ND messages it validates the option list (every option needs a non-zero length that fits,
// as RFC 4861 §4.6 requires receivers to drop such packets) and reports the offsets of the target
// address and of the first source/target link-layer address, prefix information and MTU options.
// RFC 4861's other checks (hop limit 255, code 0) need the IP header and are left to the caller.
// Writers fill in everything but the checksum, which finishIcmpv6() stores once the IPv6 header
// (whose addresses it reads) is in the same buffer. Errors quote as much of the offending packet as
// fits in the IPv6 minimum MTU (RFC 4443 §2.4 (c)).

import { foldChecksum, pseudoSumV6, sumWords } from './checksum.ts';
import { IPPROTO_ICMPV6 } from './ipv4.ts';

export const ICMPV6_HEADER_LEN = 8;
export const ICMPV6_DEST_UNREACH = 1;
export const ICMPV6_PACKET_TOO_BIG = 2;
export const ICMPV6_TIME_EXCEEDED = 3;
export const ICMPV6_PARAM_PROBLEM = 4;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;
export const ND_ROUTER_SOLICIT = 133;
export const ND_ROUTER_ADVERT = 134;
export const ND_NEIGHBOR_SOLICIT = 135;
export const ND_NEIGHBOR_ADVERT = 136;
export const ND_REDIRECT = 137;

export const ND_OPT_SOURCE_LINKADDR = 1;
export const ND_OPT_TARGET_LINKADDR = 2;
export const ND_OPT_PREFIX_INFO = 3;
export const ND_OPT_MTU = 5;
/** Recursive DNS server and DNS search list options (RFC 8106). */
export const ND_OPT_RDNSS = 25;
export const ND_OPT_DNSSL = 31;

/** Router advertisement flags (byte 5): managed address configuration, other configuration. */
export const ND_RA_MANAGED = 0x80;
export const ND_RA_OTHER = 0x40;
/** Prefix information flags: on-link, autonomous address configuration. */
export const ND_PREFIX_ONLINK = 0x80;
export const ND_PREFIX_AUTONOMOUS = 0x40;

/** Neighbor advertisement flags (byte 4). */
export const ND_NA_ROUTER = 0x80;
export const ND_NA_SOLICITED = 0x40;
export const ND_NA_OVERRIDE = 0x20;

/** Most quoted bytes in an error so the whole message fits the 1280-byte minimum MTU. */
export const ICMPV6_ERROR_QUOTE_MAX = 1280 - 40 - ICMPV6_HEADER_LEN;

export class Icmpv6Header {
  type = 0;
  code = 0;
  checksum = 0;
  checksumOk = false;
  /** Echo identifier and sequence (types 128/129). */
  id = 0;
  seq = 0;
  /** Bytes 4..7 as a u32 (MTU for packet too big, pointer for parameter problem,
   *  flags << 24 for NA, hop limit << 24 | flags << 16 | lifetime for RA). */
  rest = 0;
  /** Quoted packet for error types 1..4, else -1. */
  embeddedOffset = -1;
  /** Target address of NS/NA/redirect, else -1. */
  targetOffset = -1;
  /** MAC inside the first source/target link-layer address option, else -1. */
  srcLinkAddrOffset = -1;
  tgtLinkAddrOffset = -1;
  /** Start of the first prefix information option (type 3, 32 bytes), else -1. */
  prefixInfoOffset = -1;
  /** Value of the MTU option, or -1. */
  mtu = -1;
  /** ND options range; both equal payloadEnd for messages without options. */
  optionsOffset = 0;
  optionsEnd = 0;
  payloadOffset = 0;
  payloadEnd = 0;
}

function ndFixedLen(type: number): number {
  switch (type) {
    case ND_ROUTER_SOLICIT: return 8;
    case ND_ROUTER_ADVERT: return 16;
    case ND_NEIGHBOR_SOLICIT:
    case ND_NEIGHBOR_ADVERT: return 24;
    case ND_REDIRECT: return 40;
    default: return -1;
  }
}

export function parseIcmpv6(buf: Buffer, off: number, end: number, out: Icmpv6Header, pseudo = -1): string | null {
  if (off < 0 || end > buf.length || end - off < ICMPV6_HEADER_LEN) return 'icmpv6: truncated';
  const type = buf[off];
  out.type = type;
  out.code = buf[off + 1];
  out.checksum = (buf[off + 2] << 8) | buf[off + 3];
  out.id = (buf[off + 4] << 8) | buf[off + 5];
  out.seq = (buf[off + 6] << 8) | buf[off + 7];
  out.rest = out.id * 0x10000 + out.seq;
  out.embeddedOffset = -1;
  out.targetOffset = -1;
  out.srcLinkAddrOffset = -1;
  out.tgtLinkAddrOffset = -1;
  out.prefixInfoOffset = -1;
  out.mtu = -1;
  out.payloadOffset = off + ICMPV6_HEADER_LEN;
  out.payloadEnd = end;
  out.optionsOffset = end;
  out.optionsEnd = end;
  if (type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAM_PROBLEM) {
    if (end - off < ICMPV6_HEADER_LEN + 40) return 'icmpv6: truncated error quote';
    out.embeddedOffset = off + ICMPV6_HEADER_LEN;
  } else {
    const fixed = ndFixedLen(type);
    if (fixed > 0) {
      if (end - off < fixed) return 'icmpv6: truncated nd message';
      if (fixed === 24 || fixed === 40) out.targetOffset = off + 8;
      let p = off + fixed;
      out.optionsOffset = p;
      // Every option is at least 8 bytes, so this loop runs at most (end - off) / 8 times.
      while (p < end) {
        if (end - p < 2) return 'icmpv6: truncated nd option';
        const olen = buf[p + 1] * 8;
        if (olen === 0 || olen > end - p) return 'icmpv6: bad nd option length';
        const ot = buf[p];
        if (ot === ND_OPT_SOURCE_LINKADDR && out.srcLinkAddrOffset < 0 && olen >= 8) out.srcLinkAddrOffset = p + 2;
        else if (ot === ND_OPT_TARGET_LINKADDR && out.tgtLinkAddrOffset < 0 && olen >= 8) out.tgtLinkAddrOffset = p + 2;
        else if (ot === ND_OPT_PREFIX_INFO && out.prefixInfoOffset < 0) {
          if (olen !== 32) return 'icmpv6: bad prefix information option';
          out.prefixInfoOffset = p;
        } else if (ot === ND_OPT_MTU && out.mtu < 0) {
          if (olen !== 8) return 'icmpv6: bad mtu option';
          out.mtu = ((buf[p + 4] << 24) | (buf[p + 5] << 16) | (buf[p + 6] << 8) | buf[p + 7]) >>> 0;
        }
        p += olen;
      }
    }
  }
  out.checksumOk = pseudo >= 0 && foldChecksum(sumWords(buf, off, end - off, pseudo)) === 0;
  return null;
}

/** Stores the checksum of the message buf[off, off+len); the IPv6 addresses are read from buf at
 *  srcOff/dstOff (normally the header written just before). */
export function finishIcmpv6(buf: Buffer, off: number, len: number, srcOff: number, dstOff: number): void {
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  const c = foldChecksum(sumWords(buf, off, len, pseudoSumV6(buf, srcOff, dstOff, IPPROTO_ICMPV6, len)));
  buf[off + 2] = c >>> 8;
  buf[off + 3] = c;
}

function header(buf: Buffer, off: number, type: number, code: number, rest: number): void {
  buf[off] = type;
  buf[off + 1] = code;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = rest >>> 24;
  buf[off + 5] = rest >>> 16;
  buf[off + 6] = rest >>> 8;
  buf[off + 7] = rest;
}

/** Echo request/reply header in front of dataLength bytes already at off + 8; returns the end.
 *  Call finishIcmpv6 afterwards. */
export function writeIcmpv6Echo(buf: Buffer, off: number, type: number, id: number, seq: number, dataLength: number): number {
  header(buf, off, type, 0, ((id & 0xffff) * 0x10000 + (seq & 0xffff)) >>> 0);
  return off + ICMPV6_HEADER_LEN + dataLength;
}

/** Error message quoting orig[origOff, origEnd), clamped to ICMPV6_ERROR_QUOTE_MAX bytes.
 *  rest: MTU for packet too big, pointer for parameter problem, else 0. Returns the end;
 *  call finishIcmpv6 afterwards. */
export function writeIcmpv6Error(buf: Buffer, off: number, type: number, code: number, rest: number,
  orig: Buffer, origOff: number, origEnd: number): number {
  header(buf, off, type, code, rest);
  const n = Math.max(0, Math.min(origEnd - origOff, ICMPV6_ERROR_QUOTE_MAX));
  orig.copy(buf, off + ICMPV6_HEADER_LEN, origOff, origOff + n);
  return off + ICMPV6_HEADER_LEN + n;
}

/** Neighbor solicitation (srcMac null: no source link-layer option, as for DAD). */
export function writeNeighborSolicit(buf: Buffer, off: number, target: Buffer, srcMac: Buffer | null): number {
  header(buf, off, ND_NEIGHBOR_SOLICIT, 0, 0);
  target.copy(buf, off + 8, 0, 16);
  const p = off + 24;
  return srcMac ? writeNdLinkAddrOption(buf, p, ND_OPT_SOURCE_LINKADDR, srcMac) : p;
}

/** Neighbor advertisement; flags from ND_NA_*; tgtMac null omits the target link-layer option. */
export function writeNeighborAdvert(buf: Buffer, off: number, target: Buffer, flags: number, tgtMac: Buffer | null): number {
  header(buf, off, ND_NEIGHBOR_ADVERT, 0, (flags & 0xe0) * 0x1000000);
  target.copy(buf, off + 8, 0, 16);
  const p = off + 24;
  return tgtMac ? writeNdLinkAddrOption(buf, p, ND_OPT_TARGET_LINKADDR, tgtMac) : p;
}

/** Router advertisement fixed part (flags: 0x80 managed, 0x40 other config); append options with
 *  the writers below. Returns off + 16. */
export function writeRouterAdvert(buf: Buffer, off: number, curHopLimit: number, flags: number,
  routerLifetime: number, reachableTime = 0, retransTimer = 0): number {
  header(buf, off, ND_ROUTER_ADVERT, 0, ((curHopLimit & 0xff) * 0x1000000 + (flags & 0xff) * 0x10000 + (routerLifetime & 0xffff)) >>> 0);
  buf.writeUInt32BE(reachableTime >>> 0, off + 8);
  buf.writeUInt32BE(retransTimer >>> 0, off + 12);
  return off + 16;
}

/** Router solicitation (srcMac null when the sender has no address yet). */
export function writeRouterSolicit(buf: Buffer, off: number, srcMac: Buffer | null): number {
  header(buf, off, ND_ROUTER_SOLICIT, 0, 0);
  const p = off + 8;
  return srcMac ? writeNdLinkAddrOption(buf, p, ND_OPT_SOURCE_LINKADDR, srcMac) : p;
}

/** Source (1) or target (2) link-layer address option for Ethernet: 8 bytes. */
export function writeNdLinkAddrOption(buf: Buffer, off: number, type: number, mac: Buffer): number {
  buf[off] = type;
  buf[off + 1] = 1;
  mac.copy(buf, off + 2, 0, 6);
  return off + 8;
}

/** Prefix information option (32 bytes); flags: 0x80 on-link, 0x40 autonomous. */
export function writeNdPrefixOption(buf: Buffer, off: number, prefix: Buffer, prefixLen: number, flags: number,
  validLifetime: number, preferredLifetime: number): number {
  buf[off] = ND_OPT_PREFIX_INFO;
  buf[off + 1] = 4;
  buf[off + 2] = prefixLen;
  buf[off + 3] = flags;
  buf.writeUInt32BE(validLifetime >>> 0, off + 4);
  buf.writeUInt32BE(preferredLifetime >>> 0, off + 8);
  buf.fill(0, off + 12, off + 16);
  prefix.copy(buf, off + 16, 0, 16);
  return off + 32;
}

/** MTU option (8 bytes). */
export function writeNdMtuOption(buf: Buffer, off: number, mtu: number): number {
  buf[off] = ND_OPT_MTU;
  buf[off + 1] = 1;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf.writeUInt32BE(mtu >>> 0, off + 4);
  return off + 8;
}

/** RDNSS option (RFC 8106 5.1): lifetime in seconds and IPv6 server addresses (16 bytes each, read from servers[i]). */
export function writeNdRdnssOption(buf: Buffer, off: number, lifetime: number, servers: Buffer[]): number {
  const len = 8 + 16 * servers.length;
  buf[off] = ND_OPT_RDNSS;
  buf[off + 1] = len / 8;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf.writeUInt32BE(lifetime >>> 0, off + 4);
  for (let i = 0; i < servers.length; i++) servers[i].copy(buf, off + 8 + 16 * i, 0, 16);
  return off + len;
}

/** DNSSL option (RFC 8106 5.2): domain names in DNS wire form (no compression), padded to 8 bytes. */
export function writeNdDnsslOption(buf: Buffer, off: number, lifetime: number, names: string[]): number {
  let p = off + 8;
  for (const name of names) {
    for (const label of name.replace(/\.$/, '').split('.')) {
      if (label.length === 0) continue;
      p += buf.write(label, p + 1, 'ascii') + 1;
      buf[p - label.length - 1] = label.length;
    }
    buf[p++] = 0;
  }
  const len = Math.ceil((p - off) / 8) * 8;
  buf.fill(0, p, off + len);
  buf[off] = ND_OPT_DNSSL;
  buf[off + 1] = len / 8;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf.writeUInt32BE(lifetime >>> 0, off + 4);
  return off + len;
}

/** Bytes a DNSSL option for these names takes. */
export function ndDnsslLength(names: string[]): number {
  let n = 8;
  for (const name of names) for (const label of name.replace(/\.$/, '').split('.')) if (label.length) n += label.length + 1;
  n += names.length;
  return Math.ceil(n / 8) * 8;
}
