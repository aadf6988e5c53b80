// The gateway's IPv4 layer: input (header checks, fragment reassembly, ICMP echo for the
// gateway's addresses, demultiplexing to UDP services, TCP and the NATs) and output (the IPv4
// header, fragmentation beyond the MTU, link resolution through ARP).
//
// Sources: the neighbour table learns guests from their IPv4 sources on the segment.
// Multicast, limited and directed broadcast destinations are never answered and never NATed
// (but bound UDP services such as DHCP see them). The gateway owns the layer's buffers: see
// gateway.ts for the transmit arena and the send contract.
import type { Gateway, IpPacket } from './gateway.ts';
import { Reassembler } from './reassembly.ts';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, finishIpv4, parseIpv4, writeIpv4 } from '../wire/ipv4.ts';
import { ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_PORT_UNREACH, Icmpv4Header, isIcmpv4Error, parseIcmpv4, writeIcmpv4Echo, writeIcmpv4Error } from '../wire/icmpv4.ts';
import { UdpHeader, finishUdpV4, parseUdp } from '../wire/udp.ts';
import { finishTcpV4 } from '../wire/tcp.ts';
import { ETHERTYPE_IPV4, writeEthernet } from '../wire/ethernet.ts';
import { pseudoSumV4 } from '../wire/checksum.ts';

export const HEADROOM4 = 14 + 20;
/** RFC 1812 4.3.2.3: quote the IP header and this much of the offending payload */
const ICMP_QUOTE_BYTES = 64;
const BROADCAST_MAC = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export class Ipv4Layer {
  private readonly reasm: Reassembler;
  private readonly ip = new Ipv4Header();
  private readonly icmp = new Icmpv4Header();
  private readonly udp = new UdpHeader();
  private fragId = 1;

  constructor(private readonly gw: Gateway, private readonly pkt: IpPacket) {
    this.reasm = new Reassembler(gw.timers);
  }

  get reassembly(): Reassembler { return this.reasm; }

  /** Limited or directed broadcast, or multicast: never answered, never NATed. */
  isGroup(dst: number): boolean {
    return dst === this.gw.broadcast || dst === 0xffffffff || (dst >>> 28) === 14;
  }

  input(frame: Buffer, off: number, end: number, srcMac: Buffer): void {
    const gw = this.gw;
    const ip = this.ip;
    let err = parseIpv4(frame, off, end, ip);
    if (err) return gw.bad(err);
    if (!ip.checksumOk) { gw.stats.badChecksum++; return; }
    gw.arp.learn(ip.src, frame, 6);
    let buf = frame;
    let ipOff = off;
    if (ip.mf || ip.fragmentOffset !== 0) {
      const whole = this.reasm.input(frame, off, ip.headerLength, ip.payloadOffset, ip.payloadEnd, ip.fragmentOffset, ip.mf,
        ip.src, ip.dst, ip.protocol, ip.id);
      if (whole === null) return;
      buf = whole;
      ipOff = 0;
      err = parseIpv4(buf, 0, buf.length, ip);
      if (err) return gw.bad(err);
    }
    const p = this.pkt;
    p.v6 = false;
    p.buf = buf;
    p.ipOff = ipOff;
    p.end = ip.payloadEnd;
    p.src = ip.src;
    p.dst = ip.dst;
    p.proto = ip.protocol;
    p.l4 = ip.payloadOffset;
    p.l4End = ip.payloadEnd;
    p.ttl = ip.ttl;
    srcMac.copy(p.srcMac);
    switch (ip.protocol) {
      case IPPROTO_TCP:
        p.pseudo = pseudoSumV4(ip.src, ip.dst, IPPROTO_TCP, p.l4End - p.l4);
        if (gw.onTcp) gw.onTcp(p);
        return;
      case IPPROTO_UDP: return this.udpInput(p);
      case IPPROTO_ICMP: return this.icmpInput(p);
      default:
        gw.stats.unknownProtocol++;
    }
  }

  private icmpInput(p: IpPacket): void {
    const gw = this.gw;
    const icmp = this.icmp;
    const err = parseIcmpv4(p.buf, p.l4, p.l4End, icmp);
    if (err) return gw.bad(err);
    if (!icmp.checksumOk) { gw.stats.badChecksum++; return; }
    if (gw.addrs.has(p.dst)) {
      if (icmp.type === ICMP_ECHO_REQUEST) this.echoReply(p, icmp);
      return;
    }
    if (this.isGroup(p.dst)) return;
    if (gw.onIcmp && !isIcmpv4Error(icmp.type)) gw.onIcmp(p, icmp);
  }

  private echoReply(p: IpPacket, icmp: Icmpv4Header): void {
    const dataLen = icmp.payloadEnd - icmp.payloadOffset;
    const src = p.buf;
    const from = icmp.payloadOffset;
    const id = icmp.id;
    const seq = icmp.seq;
    this.gw.sendIp(p.dst, p.src, IPPROTO_ICMP, 8 + dataLen, (b, o) => {
      src.copy(b, o + 8, from, from + dataLen);
      return writeIcmpv4Echo(b, o, ICMP_ECHO_REPLY, id, seq, dataLen);
    }, p.srcMac);
    this.gw.stats.echoReplies++;
  }

  private udpInput(p: IpPacket): void {
    const gw = this.gw;
    const udp = this.udp;
    p.pseudo = pseudoSumV4(p.src, p.dst, IPPROTO_UDP, p.l4End - p.l4);
    const err = parseUdp(p.buf, p.l4, p.l4End, udp, p.pseudo);
    if (err) return gw.bad(err);
    if (!udp.checksumOk) { gw.stats.badChecksum++; return; }
    if (gw.deliverUdp(p, udp)) return;
    if (gw.addrs.has(p.dst) && !(gw.onUdp && gw.natAddrs.has(p.dst))) {
      gw.stats.udpNoService++;
      gw.sendIcmpError(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, p.dst, p);
      return;
    }
    if (this.isGroup(p.dst)) return;
    if (gw.isLocal(p.dst) && !gw.natAddrs.has(p.dst)) return;
    if (gw.onUdp) gw.onUdp(p, udp);
  }

  // ---- output ----

  /** Checksums, IPv4 header and link for the L4 part at l4off (reserved with HEADROOM4), then queue. */
  emit(l4off: number, src: number, dst: number, proto: number, l4len: number, dstMac?: Buffer): void {
    const gw = this.gw;
    const b = gw.txArena;
    finishL4(b, l4off, src, dst, proto, l4len);
    const mac = dstMac ?? this.linkDest(dst);
    if (20 + l4len > gw.mtu) { this.fragment(l4off, src, dst, proto, l4len, mac); return; }
    writeIpv4(b, l4off - 20, src, dst, proto, l4len, 64, 0, false);
    this.frameOut(l4off - HEADROOM4, HEADROOM4 + l4len, dst, mac);
  }

  /**
   * The whole frame around an L4 part at buf[l4off] in someone else's buffer (a port's output):
   * checksums, IPv4 header, Ethernet header. false when it exceeds the MTU (nothing written).
   */
  seal(buf: Buffer, l4off: number, src: number, dst: number, proto: number, l4len: number, mac: Buffer): boolean {
    if (20 + l4len > this.gw.mtu) return false;
    finishL4(buf, l4off, src, dst, proto, l4len);
    writeIpv4(buf, l4off - 20, src, dst, proto, l4len, 64, 0, false);
    writeEthernet(buf, l4off - HEADROOM4, mac, this.gw.mac, ETHERTYPE_IPV4);
    return true;
  }

  linkDest(dst: number): Buffer | null {
    if (this.isGroup(dst)) return BROADCAST_MAC;
    return this.gw.arp.resolve(dst);
  }

  private frameOut(start: number, len: number, dst: number, mac: Buffer | null): void {
    const gw = this.gw;
    gw.writeLink(start, mac, ETHERTYPE_IPV4);
    if (mac === null) { gw.arp.hold(dst, gw.hold(start, len)); return; }
    gw.commit(start, len);
  }

  private fragment(l4off: number, src: number, dst: number, proto: number, l4len: number, mac: Buffer | null): void {
    const gw = this.gw;
    const maxData = (gw.mtu - 20) & ~7;
    const id = this.fragId = (this.fragId + 1) & 0xffff;
    const whole = Buffer.from(gw.txArena.subarray(l4off, l4off + l4len));
    gw.release(l4off + l4len);
    for (let at = 0; at < l4len; at += maxData) {
      const n = Math.min(maxData, l4len - at);
      const o = gw.reserve(n, HEADROOM4);
      const b = gw.txArena;
      whole.copy(b, o, at, at + n);
      writeIpv4(b, o - 20, src, dst, proto, n, 64, id, false);
      const more = at + n < l4len;
      b.writeUInt16BE((more ? 0x2000 : 0) | (at >> 3), o - 20 + 6);
      finishIpv4(b, o - 20);
      gw.stats.fragmentsSent++;
      this.frameOut(o - HEADROOM4, HEADROOM4 + n, dst, mac);
    }
  }

  /** ICMP error quoting the guest's packet p. */
  icmpError(type: number, code: number, from: number, buf: Buffer, ipOff: number, end: number, to: number, toMac: Buffer, rest: number): void {
    const gw = this.gw;
    const hl = (buf[ipOff] & 15) * 4;
    const quoted = Math.min(end - ipOff, hl + ICMP_QUOTE_BYTES);
    const o = gw.reserve(8 + quoted, HEADROOM4);
    const e = writeIcmpv4Error(gw.txArena, o, type, code, rest, buf, ipOff, end, ICMP_QUOTE_BYTES);
    this.emit(o, from, to, IPPROTO_ICMP, e - o, toMac);
  }

  /** ICMP error about a flow: the quoted IPv4 header (guest -> dst) rebuilt, then l4head. */
  icmpErrorForFlow(type: number, code: number, from: number, guest: number, dst: number, proto: number, l4head: Buffer, l4len: number): void {
    const gw = this.gw;
    const n = Math.min(l4head.length, ICMP_QUOTE_BYTES);
    const o = gw.reserve(8 + 20 + n, HEADROOM4);
    const b = gw.txArena;
    // the rebuilt offending packet goes where the quote belongs (the error then quotes it in place)
    writeIpv4(b, o + 8, guest, dst, proto, l4len);
    l4head.copy(b, o + 28, 0, n);
    const e = writeIcmpv4Error(b, o, type, code, 0, b, o + 8, o + 28 + n, n);
    this.emit(o, from, guest, IPPROTO_ICMP, e - o);
  }

  close(): void {}
}

function finishL4(b: Buffer, l4off: number, src: number, dst: number, proto: number, l4len: number): void {
  if (proto === IPPROTO_TCP) finishTcpV4(b, l4off, l4len, src, dst);
  else if (proto === IPPROTO_UDP) finishUdpV4(b, l4off, src, dst);
}
