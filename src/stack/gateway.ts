// The gateway: a virtual host that is just another port on the switch (as in
// gvisor-tap-vsock). It owns one MAC and a set of IPv4 addresses (the router, the DNS
// address, guestfwd addresses), answers ARP (stack/arp.ts) and ICMP echo for them,
// reassembles IPv4 fragments, and hands UDP, TCP and foreign ICMP to services.
//
// Input: the switch hands the gateway a frame through Port.send(), which is the gateway's
// receive path (handleFrame). Every parser is bounds-checked; malformed input is counted in
// `stats.malformed` (the last reason in `lastMalformed`) and dropped. A service that throws
// is a bug, not bad input: it is counted in `stats.handlerErrors` and the first one is logged
// with its stack; the network keeps running.
//
// Output: the send contract of stack/output.ts. Protocols call sendIp() with a writer for
// their L4 part, or sendUdp() / sendIcmpError() / sendIcmpErrorForFlow(); the gateway does
// the pseudo-header checksums, IPv4 header, fragmentation beyond the MTU, the Ethernet
// header and neighbour resolution. Frames are built in an arena buffer and delivered to the
// switch from a microtask, once the current input batch is done: replies never re-enter the
// switch while it is still forwarding the frame that caused them, and a batch of segments
// goes out together. An arena is never reused while frames in it are queued.
import { Port } from '../link/port.ts';
import { TimerQueue, type Clock } from './timers.ts';
import { Reassembler } from './reassembly.ts';
import { Arp } from './arp.ts';
import type { IpOutput, L4Writer, QuotedPacket, UdpDatagram, UdpHandler, UdpHost } from './output.ts';

export type { UdpDatagram, UdpHandler };
import { EthernetHeader, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parseEthernet, writeEthernet } from '../wire/ethernet.ts';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, parseIpv4, writeIpv4, finishIpv4 } from '../wire/ipv4.ts';
import { ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_PORT_UNREACH, Icmpv4Header, isIcmpv4Error, parseIcmpv4, writeIcmpv4Echo, writeIcmpv4Error } from '../wire/icmpv4.ts';
import { UdpHeader, finishUdpV4, parseUdp, writeUdp } from '../wire/udp.ts';
import { finishTcpV4 } from '../wire/tcp.ts';
import { pseudoSumV4 } from '../wire/checksum.ts';
import { inSubnet, ip4ToString, maskOf } from '../wire/addr.ts';
import { logger } from '../util/log.ts';

const log = logger('gateway');
const BROADCAST_MAC = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
const ZERO_MAC = Buffer.alloc(6);
const ARENA = 1 << 20;
const ETH = 14;
const HEADROOM = ETH + 20;
/** RFC 1812 4.3.2.3: quote the IP header and this much of the offending payload */
const ICMP_QUOTE_BYTES = 64;

export interface GatewayConfig {
  mac: Buffer;
  /** network address and prefix of the segment */
  net: number;
  prefix: number;
  /** addresses the gateway answers for (router, DNS, guestfwd, ...) */
  addrs: number[];
  /** largest IPv4 packet sent to guests; larger ones are fragmented */
  mtu?: number;
  /** the clock of the gateway's timer queue (and of everything that shares it) */
  clock?: Clock;
}

/** Parsed IPv4 packet handed to the TCP layer and to ICMP/UDP NAT. Borrowed for the call only. */
export interface IpPacket extends QuotedPacket {
  ip: Ipv4Header;
}

export interface GatewayCounters {
  notForUs: number;
  malformed: number;
  badChecksum: number;
  ipv6Ignored: number;
  unknownProtocol: number;
  udpNoService: number;
  echoReplies: number;
  fragmentsSent: number;
  /** a service threw while handling a packet (a bug; the first is logged) */
  handlerErrors: number;
  lastMalformed: string;
}

export class Gateway extends Port implements IpOutput, UdpHost {
  readonly timers: TimerQueue;
  readonly stats: GatewayCounters = {
    notForUs: 0, malformed: 0, badChecksum: 0, ipv6Ignored: 0, unknownProtocol: 0,
    udpNoService: 0, echoReplies: 0, fragmentsSent: 0, handlerErrors: 0, lastMalformed: '',
  };
  readonly mac: Buffer;
  readonly net: number;
  readonly prefix: number;
  readonly mtu: number;
  readonly addrs = new Set<number>();
  /** Our addresses whose unbound UDP goes to the host (slirp's host address -> loopback). */
  readonly natAddrs = new Set<number>();
  readonly arp: Arp;
  private readonly reasm: Reassembler;
  private readonly udpBindings = new Map<number, UdpHandler>();
  /** UDP not bound to a local service (UDP NAT). */
  onUdp: ((p: IpPacket, udp: UdpHeader) => void) | null = null;
  /** every TCP segment (the TCP layer) */
  onTcp: ((p: IpPacket) => void) | null = null;
  /** ICMP not addressed to the gateway (ICMP NAT) */
  onIcmp: ((p: IpPacket, icmp: Icmpv4Header) => void) | null = null;

  // reusable parse results
  private readonly eth = new EthernetHeader();
  private readonly ip = new Ipv4Header();
  private readonly icmp = new Icmpv4Header();
  private readonly udp = new UdpHeader();
  private readonly pkt: IpPacket = { ip: this.ip, buf: Buffer.alloc(0), ipOff: 0, end: 0, src: 0, srcMac: Buffer.alloc(6) };
  private readonly udpMsg: UdpDatagram = { srcIp: 0, srcPort: 0, dstIp: 0, dstPort: 0, srcMac: this.pkt.srcMac, payload: Buffer.alloc(0) };

  // transmit arena
  private arena = Buffer.allocUnsafe(ARENA);
  private arenaFill = 0;
  private readonly txq: Buffer[] = [];
  private flushQueued = false;
  private readonly flushFn = (): void => this.flushTx();
  private fragId = 1;

  constructor(cfg: GatewayConfig) {
    super('gateway', 'qnet');
    this.mac = Buffer.from(cfg.mac);
    this.net = cfg.net;
    this.prefix = cfg.prefix;
    this.mtu = cfg.mtu ?? 1500;
    for (const a of cfg.addrs) this.addrs.add(a);
    this.timers = new TimerQueue(cfg.clock, { onError: (err) => this.handlerError(err) });
    this.reasm = new Reassembler(this.timers);
    this.arp = new Arp({
      mac: this.mac,
      timers: this.timers,
      owns: (ip) => this.addrs.has(ip),
      isNeighbourAddress: (ip) => this.isLocal(ip) && ip !== this.broadcast,
      primaryAddress: () => this.addrs.values().next().value ?? 0,
      sendFrame: (len, write) => { const o = this.reserve(len, 0); write(this.arena, o); this.commit(o, len); },
      sendHeld: (f) => this.queueFrame(f),
    });
  }

  get broadcast(): number { return (this.net | ~maskOf(this.prefix)) >>> 0; }
  isLocal(ip: number): boolean { return inSubnet(ip, this.net, this.prefix); }
  /** guests' addresses and MACs, learned from ARP and IPv4 sources */
  get neighbours(): Map<number, { mac: Buffer }> { return this.arp.neighbours; }
  set onNeighbour(fn: ((ip: number, mac: Buffer) => void) | null) { this.arp.onNeighbour = fn; }

  bindUdp(ip: number, port: number, h: UdpHandler): void { this.udpBindings.set(ip * 65536 + port, h); }
  unbindUdp(ip: number, port: number): void { this.udpBindings.delete(ip * 65536 + port); }

  // ---- input (frames from the switch) ----

  /** Port.send: the switch hands the gateway a frame, i.e. the gateway receives it. */
  send(frame: Buffer): void {
    this.counters.txFrames++;
    this.counters.txBytes += frame.length;
    this.handleFrame(frame);
  }

  /** One frame from the segment. Never throws. */
  handleFrame(frame: Buffer): void {
    try {
      this.input(frame);
    } catch (err) {
      this.handlerError(err);
    }
  }

  private handlerError(err: unknown): void {
    if (this.stats.handlerErrors++ === 0) log.error('a packet handler threw (a qnet bug; the packet was dropped, the network goes on)', { err: (err as Error)?.stack ?? String(err) });
  }

  private bad(reason: string): void {
    this.stats.malformed++;
    this.stats.lastMalformed = reason;
  }

  private input(frame: Buffer): void {
    const eth = this.eth;
    const err = parseEthernet(frame, 0, frame.length, eth);
    if (err) return this.bad(err);
    const toUs = frame[0] & 1 ? true : frame.compare(this.mac, 0, 6, 0, 6) === 0;
    if (!toUs) { this.stats.notForUs++; return; }
    switch (eth.ethertype) {
      case ETHERTYPE_ARP: {
        const e = this.arp.input(frame, eth.payloadOffset, frame.length);
        if (e) this.bad(e);
        return;
      }
      case ETHERTYPE_IPV4: return this.ipInput(frame, eth.payloadOffset, frame.length, frame.subarray(6, 12));
      case ETHERTYPE_IPV6: this.stats.ipv6Ignored++; return;
      default: this.stats.unknownProtocol++;
    }
  }

  private ipInput(frame: Buffer, off: number, end: number, srcMac: Buffer): void {
    const ip = this.ip;
    let err = parseIpv4(frame, off, end, ip);
    if (err) return this.bad(err);
    if (!ip.checksumOk) { this.stats.badChecksum++; return; }
    this.arp.learn(ip.src, frame, 6);
    let buf = frame;
    let ipOff = off;
    if (ip.mf || ip.fragmentOffset !== 0) {
      const whole = this.reasm.input(frame, off, ip.headerLength, ip.payloadOffset, ip.payloadEnd, ip.fragmentOffset, ip.mf,
        ip.src, ip.dst, ip.protocol, ip.id);
      if (whole === null) return;
      buf = whole;
      ipOff = 0;
      err = parseIpv4(buf, 0, buf.length, ip);
      if (err) return this.bad(err);
    }
    const pkt = this.pkt;
    pkt.buf = buf;
    pkt.ipOff = ipOff;
    pkt.end = ip.payloadEnd;
    pkt.src = ip.src;
    srcMac.copy(pkt.srcMac);
    switch (ip.protocol) {
      case IPPROTO_TCP:
        if (this.onTcp) this.onTcp(pkt);
        return;
      case IPPROTO_UDP: return this.udpInput(pkt);
      case IPPROTO_ICMP: return this.icmpInput(pkt);
      default:
        this.stats.unknownProtocol++;
    }
  }

  /** Limited or directed broadcast, or multicast: never answered, never NATed. */
  private isGroup(dst: number): boolean {
    return dst === this.broadcast || dst === 0xffffffff || (dst >>> 28) === 14;
  }

  private icmpInput(p: IpPacket): void {
    const ip = p.ip;
    const icmp = this.icmp;
    const err = parseIcmpv4(p.buf, ip.payloadOffset, ip.payloadEnd, icmp);
    if (err) return this.bad(err);
    if (!icmp.checksumOk) { this.stats.badChecksum++; return; }
    if (this.addrs.has(ip.dst)) {
      if (icmp.type === ICMP_ECHO_REQUEST) this.echoReply(p, icmp);
      return;
    }
    if (this.isGroup(ip.dst)) return;
    if (this.onIcmp && !isIcmpv4Error(icmp.type)) this.onIcmp(p, icmp);
  }

  private echoReply(p: IpPacket, icmp: Icmpv4Header): void {
    const dataLen = icmp.payloadEnd - icmp.payloadOffset;
    const src = p.buf;
    const from = icmp.payloadOffset;
    const id = icmp.id;
    const seq = icmp.seq;
    this.sendIp(p.ip.dst, p.ip.src, IPPROTO_ICMP, 8 + dataLen, (b, o) => {
      src.copy(b, o + 8, from, from + dataLen);
      return writeIcmpv4Echo(b, o, ICMP_ECHO_REPLY, id, seq, dataLen);
    }, p.srcMac);
    this.stats.echoReplies++;
  }

  private udpInput(p: IpPacket): void {
    const ip = p.ip;
    const udp = this.udp;
    const err = parseUdp(p.buf, ip.payloadOffset, ip.payloadEnd, udp, pseudoSumV4(ip.src, ip.dst, IPPROTO_UDP, ip.payloadEnd - ip.payloadOffset));
    if (err) return this.bad(err);
    if (!udp.checksumOk) { this.stats.badChecksum++; return; }
    const h = this.udpBindings.get(ip.dst * 65536 + udp.dstPort) ?? this.udpBindings.get(udp.dstPort);
    if (h) {
      const d = this.udpMsg;
      d.srcIp = ip.src; d.srcPort = udp.srcPort; d.dstIp = ip.dst; d.dstPort = udp.dstPort;
      d.payload = p.buf.subarray(udp.payloadOffset, udp.payloadEnd);
      h(d);
      return;
    }
    if (this.addrs.has(ip.dst) && !(this.onUdp && this.natAddrs.has(ip.dst))) {
      this.stats.udpNoService++;
      this.sendIcmpError(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ip.dst, p);
      return;
    }
    if (this.isGroup(ip.dst)) return;
    if (this.isLocal(ip.dst) && !this.natAddrs.has(ip.dst)) return;
    if (this.onUdp) this.onUdp(p, udp);
  }

  // ---- output: the send contract (stack/output.ts) ----

  sendIp(src: number, dst: number, proto: number, maxLen: number, write: L4Writer, dstMac?: Buffer): void {
    const o = this.reserve(maxLen, HEADROOM);
    const end = write(this.arena, o);
    const len = end - o;
    if (len < 0 || len > maxLen) throw new Error(`writer for protocol ${proto} wrote ${len} bytes, more than the ${maxLen} it asked for`);
    if (proto === IPPROTO_TCP) finishTcpV4(this.arena, o, len, src, dst);
    else if (proto === IPPROTO_UDP) finishUdpV4(this.arena, o, src, dst);
    this.emitIpv4(o, src, dst, proto, len, dstMac);
  }

  /** A UDP datagram to a guest (dstMac forces the link destination, e.g. for DHCP). */
  sendUdp(src: number, sport: number, dst: number, dport: number, payload: Buffer, dstMac?: Buffer): void {
    const len = 8 + payload.length;
    const o = this.reserve(len, HEADROOM);
    payload.copy(this.arena, o + 8);
    writeUdp(this.arena, o, sport, dport, payload.length);
    finishUdpV4(this.arena, o, src, dst);
    this.emitIpv4(o, src, dst, IPPROTO_UDP, len, dstMac);
  }

  sendIcmpError(type: number, code: number, from: number, p: QuotedPacket, rest = 0): void {
    const hl = (p.buf[p.ipOff] & 15) * 4;
    const quoted = Math.min(p.end - p.ipOff, hl + ICMP_QUOTE_BYTES);
    const o = this.reserve(8 + quoted, HEADROOM);
    const end = writeIcmpv4Error(this.arena, o, type, code, rest, p.buf, p.ipOff, p.end, ICMP_QUOTE_BYTES);
    this.emitIpv4(o, from, p.src, IPPROTO_ICMP, end - o, p.srcMac);
  }

  sendIcmpErrorForFlow(type: number, code: number, from: number, guest: number, dst: number, proto: number, l4head: Buffer, l4len = l4head.length): void {
    const n = Math.min(l4head.length, ICMP_QUOTE_BYTES);
    const o = this.reserve(8 + 20 + n, HEADROOM);
    const b = this.arena;
    // the rebuilt offending packet goes where the quote belongs (the error then quotes it in place)
    writeIpv4(b, o + 8, guest, dst, proto, l4len);
    l4head.copy(b, o + 28, 0, n);
    const end = writeIcmpv4Error(b, o, type, code, 0, b, o + 8, o + 28 + n, n);
    this.emitIpv4(o, from, guest, IPPROTO_ICMP, end - o);
  }

  /** Room for `len` bytes after `headroom` in the arena; returns where they go. */
  private reserve(len: number, headroom: number): number {
    const need = headroom + len;
    if (this.arenaFill + need > this.arena.length) {
      // Frames queued in the old arena keep it alive until flushed.
      this.arena = Buffer.allocUnsafe(Math.max(ARENA, need));
      this.arenaFill = 0;
    }
    return this.arenaFill + headroom;
  }

  private commit(start: number, len: number): void {
    const f = this.arena.subarray(start, start + len);
    this.arenaFill = start + len;
    this.queueFrame(f);
  }

  private queueFrame(f: Buffer): void {
    this.txq.push(f);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushFn);
    }
  }

  private flushTx(): void {
    this.flushQueued = false;
    const q = this.txq;
    for (let i = 0; i < q.length; i++) this.deliver(q[i]);
    q.length = 0;
    this.arenaFill = 0;
  }

  /** The link destination of an IPv4 destination, or null when it must be resolved first. */
  private linkDest(dst: number): Buffer | null {
    if (this.isGroup(dst)) return BROADCAST_MAC;
    return this.arp.resolve(dst);
  }

  /** IPv4 + Ethernet headers in front of the L4 part at l4off, then queue (or fragment, or hold). */
  private emitIpv4(l4off: number, src: number, dst: number, proto: number, l4len: number, dstMac?: Buffer): void {
    const mac = dstMac ?? this.linkDest(dst);
    if (20 + l4len > this.mtu) { this.fragment(l4off, src, dst, proto, l4len, mac); return; }
    const b = this.arena;
    writeIpv4(b, l4off - 20, src, dst, proto, l4len, 64, 0, false);
    this.frameOut(l4off - HEADROOM, HEADROOM + l4len, dst, mac);
  }

  /** Ethernet header at start, then queue the frame, or hold it until dst is resolved. */
  private frameOut(start: number, len: number, dst: number, mac: Buffer | null): void {
    writeEthernet(this.arena, start, mac ?? ZERO_MAC, this.mac, ETHERTYPE_IPV4);
    if (mac === null) {
      this.arp.hold(dst, this.arena.subarray(start, start + len));
      this.arenaFill = start + len;
      return;
    }
    this.commit(start, len);
  }

  private fragment(l4off: number, src: number, dst: number, proto: number, l4len: number, mac: Buffer | null): void {
    const maxData = (this.mtu - 20) & ~7;
    const id = this.fragId = (this.fragId + 1) & 0xffff;
    const whole = Buffer.from(this.arena.subarray(l4off, l4off + l4len));
    this.arenaFill = l4off + l4len;
    for (let at = 0; at < l4len; at += maxData) {
      const n = Math.min(maxData, l4len - at);
      const o = this.reserve(n, HEADROOM);
      const b = this.arena;
      whole.copy(b, o, at, at + n);
      writeIpv4(b, o - 20, src, dst, proto, n, 64, id, false);
      const more = at + n < l4len;
      b.writeUInt16BE((more ? 0x2000 : 0) | (at >> 3), o - 20 + 6);
      finishIpv4(b, o - 20);
      this.stats.fragmentsSent++;
      this.frameOut(o - HEADROOM, HEADROOM + n, dst, mac);
    }
  }

  describe(): string {
    return `gateway ${[...this.addrs].map(ip4ToString).join(',')}`;
  }

  protected closeTransport(): void {
    this.arp.close();
    this.timers.close();
  }
}
