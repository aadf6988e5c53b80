// The gateway's IPv6 layer: input (header and extension-header walk, fragment reassembly with
// the same bounds as IPv4, ICMPv6 echo for the gateway's addresses, NDP, router
// solicitations for the RA service, demultiplexing to UDP services, TCP and the NATs) and
// output (the IPv6 header, fragmentation with a fragment header beyond the MTU, link
// resolution through NDP, multicast to 33:33:xx).
//
// Sources: a packet must come from an on-link address (link-local or the network's prefix)
// or, for DAD and router solicitations, from the unspecified address; any other source is
// dropped and counted (`offLinkSource`) before it reaches a table. Destinations: the
// gateway's addresses, multicast (ff00::/8: services such as DHCPv6 see it, nothing is NATed
// or answered with an error), or anything else when the network NATs. NDP messages need
// hop limit 255 (RFC 4861).
import type { Gateway, IpPacket } from './gateway.ts';
import { Reassembler } from './reassembly.ts';
import { ip6 } from './addr.ts';
import { IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from '../wire/ipv4.ts';
import { IPV6_NH_FRAGMENT, Ipv6Header, ipv6MulticastMac, parseIpv6, writeIpv6, writeIpv6Fragment, writeIpv6From } from '../wire/ipv6.ts';
import {
  ICMPV6_DEST_UNREACH, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, Icmpv6Header, ND_NEIGHBOR_ADVERT,
  ND_NEIGHBOR_SOLICIT, ND_REDIRECT, ND_ROUTER_ADVERT, ND_ROUTER_SOLICIT, finishIcmpv6, parseIcmpv6, writeIcmpv6Echo,
  writeIcmpv6Error, ICMPV6_ERROR_QUOTE_MAX,
} from '../wire/icmpv6.ts';
import { UdpHeader, finishUdpV6, parseUdp } from '../wire/udp.ts';
import { finishTcpV6 } from '../wire/tcp.ts';
import { ETHERTYPE_IPV6, writeEthernet } from '../wire/ethernet.ts';
import { pseudoSumV6 } from '../wire/checksum.ts';

export const HEADROOM6 = 14 + 40;
const ICMPV6_PORT_UNREACH = 4;
const NO_ADDR = -1;

export class Ipv6Layer {
  private readonly reasm: Reassembler;
  private readonly ip = new Ipv6Header();
  private readonly icmp = new Icmpv6Header();
  private readonly udp = new UdpHeader();
  private readonly mmac = Buffer.alloc(6);
  private readonly hdr = Buffer.alloc(40);
  private fragId = 1;

  constructor(private readonly gw: Gateway, private readonly pkt: IpPacket) {
    this.reasm = new Reassembler(gw.timers);
  }

  get reassembly(): Reassembler { return this.reasm; }

  input(frame: Buffer, off: number, end: number, srcMac: Buffer): void {
    const gw = this.gw;
    const ip = this.ip;
    let err = parseIpv6(frame, off, end, ip);
    if (err) return gw.bad(err);
    ip6.tick();
    // the source: unspecified (DAD, RS), or on-link; the destination: ours, multicast or beyond
    let src = NO_ADDR;
    if (!isUnspecified(frame, ip.srcOffset)) {
      if (frame[ip.srcOffset] === 0xff) return gw.bad('ipv6: multicast source');
      src = ip6.intern(frame, ip.srcOffset);
      if (src < 0 || !gw.isLocal(src)) { gw.stats.offLinkSource++; return; }
      gw.ndp!.learn(src, frame, 6);
    }
    const multicast = frame[ip.dstOffset] === 0xff;
    const dst = ip6.intern(frame, ip.dstOffset);
    if (dst < 0) { gw.stats.addressTableFull++; return; }
    let buf = frame;
    let ipOff = off;
    if (ip.hasFragment) {
      if (src === NO_ADDR) return gw.bad('ipv6: fragment from the unspecified address');
      const fh = ip.fragmentHeaderOffset;
      const whole = this.reasm.inputV6(frame[fh], fh + 8, frame, ip.payloadEnd, ip.fragmentOffset, ip.moreFragments, src, dst, ip.fragmentId);
      if (whole === null) return;
      buf = whole;
      ipOff = 0;
      err = parseIpv6(buf, 0, buf.length, ip);
      if (err) return gw.bad(err);
    }
    const p = this.pkt;
    p.v6 = true;
    p.buf = buf;
    p.ipOff = ipOff;
    p.end = ip.payloadEnd;
    p.src = src;
    p.dst = dst;
    p.proto = ip.protocol;
    p.l4 = ip.payloadOffset;
    p.l4End = ip.payloadEnd;
    p.ttl = ip.hopLimit;
    srcMac.copy(p.srcMac);
    p.pseudo = pseudoSumV6(buf, ip.srcOffset, ip.dstOffset, ip.protocol, p.l4End - p.l4);
    switch (ip.protocol) {
      case IPPROTO_TCP:
        if (src === NO_ADDR || multicast) return gw.bad('ipv6: tcp from :: or to a group');
        if (gw.onTcp) gw.onTcp(p);
        return;
      case IPPROTO_UDP: return this.udpInput(p, multicast);
      case IPPROTO_ICMPV6: return this.icmpInput(p, multicast);
      default:
        gw.stats.unknownProtocol++;
    }
  }

  private icmpInput(p: IpPacket, multicast: boolean): void {
    const gw = this.gw;
    const icmp = this.icmp;
    const err = parseIcmpv6(p.buf, p.l4, p.l4End, icmp, p.pseudo);
    if (err) return gw.bad(err);
    if (!icmp.checksumOk) { gw.stats.badChecksum++; return; }
    switch (icmp.type) {
      case ND_NEIGHBOR_SOLICIT:
      case ND_NEIGHBOR_ADVERT:
        if (p.ttl !== 255 || icmp.code !== 0) { gw.stats.ndpDropped++; return; }
        gw.ndp!.input(icmp, p.buf, p.src, p.srcMac);
        return;
      case ND_ROUTER_SOLICIT:
        if (p.ttl !== 255 || icmp.code !== 0) { gw.stats.ndpDropped++; return; }
        gw.onRouterSolicit?.(p, icmp);
        return;
      case ND_ROUTER_ADVERT:
      case ND_REDIRECT:
        gw.stats.ndpDropped++; // a guest is no router here
        return;
      default:
        break;
    }
    if (p.src === NO_ADDR) return;
    if (gw.addrs.has(p.dst) || p.dst === gw.linkLocal) {
      if (icmp.type === ICMPV6_ECHO_REQUEST) this.echoReply(p, icmp);
      return;
    }
    if (multicast) return;
    if (gw.onIcmp && icmp.type === ICMPV6_ECHO_REQUEST) gw.onIcmp(p, icmp);
  }

  private echoReply(p: IpPacket, icmp: Icmpv6Header): void {
    const dataLen = icmp.payloadEnd - icmp.payloadOffset;
    const src = p.buf;
    const from = icmp.payloadOffset;
    const id = icmp.id;
    const seq = icmp.seq;
    this.gw.sendIp(p.dst, p.src, IPPROTO_ICMPV6, 8 + dataLen, (b, o) => {
      src.copy(b, o + 8, from, from + dataLen);
      return writeIcmpv6Echo(b, o, ICMPV6_ECHO_REPLY, id, seq, dataLen);
    }, p.srcMac);
    this.gw.stats.echoReplies++;
  }

  private udpInput(p: IpPacket, multicast: boolean): void {
    const gw = this.gw;
    const udp = this.udp;
    const err = parseUdp(p.buf, p.l4, p.l4End, udp, p.pseudo, true);
    if (err) return gw.bad(err);
    if (!udp.checksumOk) { gw.stats.badChecksum++; return; }
    if (p.src === NO_ADDR) return; // (DHCPv6 clients use their link-local address)
    if (gw.deliverUdp(p, udp)) return;
    if (multicast) return;
    if ((gw.addrs.has(p.dst) || p.dst === gw.linkLocal) && !(gw.onUdp && gw.natAddrs.has(p.dst))) {
      gw.stats.udpNoService++;
      gw.sendIcmpError(ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH, p.dst, p);
      return;
    }
    if (gw.isLocal(p.dst) && !gw.natAddrs.has(p.dst)) return;
    if (gw.onUdp) gw.onUdp(p, udp);
  }

  // ---- output ----

  /** Checksums, IPv6 header and link for the L4 part at l4off (reserved with HEADROOM6), then queue. */
  emit(l4off: number, src: number, dst: number, proto: number, l4len: number, dstMac?: Buffer | null, hopLimit = 64): void {
    const gw = this.gw;
    const b = gw.txArena;
    headerAndL4(b, l4off, src, dst, proto, l4len, hopLimit);
    const mac = dstMac ?? this.linkDest(dst);
    if (40 + l4len > gw.mtu) { this.fragment(l4off, src, dst, proto, l4len, mac, hopLimit); return; }
    this.frameOut(l4off - HEADROOM6, HEADROOM6 + l4len, dst, mac);
  }

  /** An NDP/RA message (hop limit 255) to an address given as bytes (multicast groups need no id). */
  emitNd(l4off: number, src: number, dst: Buffer, l4len: number, dstMac: Buffer | null): void {
    const gw = this.gw;
    const b = gw.txArena;
    const h = l4off - 40;
    writeIpv6(b, h, ip6.bytes(src), dst, IPPROTO_ICMPV6, l4len, 255);
    finishIcmpv6(b, l4off, l4len, h + 8, h + 24);
    const mac = dstMac ?? (dst[0] === 0xff ? ipv6MulticastMac(dst, this.mmac) : gw.ndp!.resolve(ip6.intern(dst, 0)));
    if (mac === null) { gw.release(l4off + l4len); return; } // a unicast NDP answer needs a known MAC
    gw.writeLink(l4off - HEADROOM6, mac, ETHERTYPE_IPV6);
    gw.commit(l4off - HEADROOM6, HEADROOM6 + l4len);
  }

  /**
   * The whole frame around an L4 part at buf[l4off] in someone else's buffer (a port's output):
   * IPv6 header, checksums, Ethernet header. false when it exceeds the MTU (nothing written).
   */
  seal(buf: Buffer, l4off: number, src: number, dst: number, proto: number, l4len: number, mac: Buffer): boolean {
    if (40 + l4len > this.gw.mtu) return false;
    headerAndL4(buf, l4off, src, dst, proto, l4len, 64);
    writeEthernet(buf, l4off - HEADROOM6, mac, this.gw.mac, ETHERTYPE_IPV6);
    return true;
  }

  linkDest(dst: number): Buffer | null {
    if (ip6.firstByte(dst) === 0xff) return ipv6MulticastMac(ip6.bytes(dst), this.mmac);
    return this.gw.ndp!.resolve(dst);
  }

  private frameOut(start: number, len: number, dst: number, mac: Buffer | null): void {
    const gw = this.gw;
    gw.writeLink(start, mac, ETHERTYPE_IPV6);
    if (mac === null) { gw.ndp!.hold(dst, gw.hold(start, len)); return; }
    gw.commit(start, len);
  }

  /** RFC 8200 4.5: the source may fragment; each fragment carries a fragment header. */
  private fragment(l4off: number, src: number, dst: number, proto: number, l4len: number, mac: Buffer | null, hopLimit: number): void {
    const gw = this.gw;
    const maxData = (gw.mtu - 40 - 8) & ~7;
    const id = this.fragId = (this.fragId + 1) >>> 0;
    const whole = Buffer.from(gw.txArena.subarray(l4off, l4off + l4len));
    gw.release(l4off + l4len);
    for (let at = 0; at < l4len; at += maxData) {
      const n = Math.min(maxData, l4len - at);
      const o = gw.reserve(8 + n, HEADROOM6);
      const b = gw.txArena;
      writeIpv6Fragment(b, o, proto, at, at + n < l4len, id);
      whole.copy(b, o + 8, at, at + n);
      writeIpv6(b, o - 40, ip6.bytes(src), ip6.bytes(dst), IPV6_NH_FRAGMENT, 8 + n, hopLimit);
      gw.stats.fragmentsSent++;
      this.frameOut(o - HEADROOM6, HEADROOM6 + 8 + n, dst, mac);
    }
  }

  /** ICMPv6 error quoting the guest's packet (as much as fits the 1280-byte minimum MTU). */
  icmpError(type: number, code: number, from: number, buf: Buffer, ipOff: number, end: number, to: number, toMac: Buffer, rest: number): void {
    if (to < 0) return; // never to the unspecified address
    const gw = this.gw;
    const quoted = Math.min(end - ipOff, ICMPV6_ERROR_QUOTE_MAX);
    const o = gw.reserve(8 + quoted, HEADROOM6);
    const e = writeIcmpv6Error(gw.txArena, o, type, code, rest, buf, ipOff, ipOff + quoted);
    this.emit(o, from, to, IPPROTO_ICMPV6, e - o, toMac);
  }

  /** ICMPv6 error about a flow: the quoted IPv6 header (guest -> dst) rebuilt, then l4head. */
  icmpErrorForFlow(type: number, code: number, from: number, guest: number, dst: number, proto: number, l4head: Buffer, l4len: number): void {
    const gw = this.gw;
    const n = Math.min(l4head.length, 64);
    writeIpv6(this.hdr, 0, ip6.bytes(guest), ip6.bytes(dst), proto, l4len);
    const o = gw.reserve(8 + 40 + n, HEADROOM6);
    const b = gw.txArena;
    this.hdr.copy(b, o + 8);
    l4head.copy(b, o + 48, 0, n);
    const e = writeIcmpv6Error(b, o, type, code, 0, b, o + 8, o + 48 + n);
    this.emit(o, from, guest, IPPROTO_ICMPV6, e - o);
  }
}

/** The IPv6 header in front of the L4 part, then the L4 checksum (it reads the addresses there). */
function headerAndL4(b: Buffer, l4off: number, src: number, dst: number, proto: number, l4len: number, hopLimit: number): void {
  const h = l4off - 40;
  const m = ip6.memory;
  writeIpv6From(b, h, m, ip6.offset(src), m, ip6.offset(dst), proto, l4len, hopLimit);
  if (proto === IPPROTO_TCP) finishTcpV6(b, l4off, l4len, h + 8, h + 24);
  else if (proto === IPPROTO_UDP) finishUdpV6(b, l4off, h + 8, h + 24);
  else if (proto === IPPROTO_ICMPV6) finishIcmpv6(b, l4off, l4len, h + 8, h + 24);
}

function isUnspecified(b: Buffer, o: number): boolean {
  for (let k = 0; k < 16; k++) if (b[o + k] !== 0) return false;
  return true;
}

