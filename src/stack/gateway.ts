// The gateway: a virtual host that is just another port on the switch (as in
// gvisor-tap-vsock). It owns one MAC and a set of IPv4 addresses (the router, the DNS
// address, guestfwd addresses), answers ARP and ICMP echo for them, reassembles IPv4
// fragments, and hands UDP, TCP and foreign ICMP to services. It keeps a neighbour table
// of guests, learned from ARP and from IPv4 sources on the segment.
//
// Frames towards guests are built in an arena buffer and delivered to the switch from a
// microtask, once the current input batch is done: replies never re-enter the switch
// while it is still forwarding the frame that caused them, and a batch of segments goes
// out together. An arena is never reused while frames in it are queued.
import { Port } from '../link/port.ts';
import { TimerQueue } from './timers.ts';
import { Reassembler } from './reassembly.ts';
import { ArpPacket, ARP_REPLY, ARP_REQUEST, parseArp, writeArp } from '../wire/arp.ts';
import { EthernetHeader, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parseEthernet, writeEthernet } from '../wire/ethernet.ts';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, parseIpv4, writeIpv4, finishIpv4 } from '../wire/ipv4.ts';
import { ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_PORT_UNREACH, Icmpv4Header, isIcmpv4Error, parseIcmpv4, writeIcmpv4Echo, writeIcmpv4Error } from '../wire/icmpv4.ts';
import { UdpHeader, finishUdpV4, parseUdp, writeUdp } from '../wire/udp.ts';
import { pseudoSumV4 } from '../wire/checksum.ts';
import { inSubnet, ip4ToString, maskOf } from '../wire/addr.ts';

const BROADCAST_MAC = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
const ZERO_MAC = Buffer.alloc(6);
const ARENA = 1 << 20;
const HEADROOM = 14 + 20;

export interface GatewayConfig {
  mac: Buffer;
  /** network address and prefix of the segment */
  net: number;
  prefix: number;
  /** addresses the gateway answers for (router, DNS, guestfwd, ...) */
  addrs: number[];
  /** largest IPv4 packet sent to guests; larger ones are fragmented */
  mtu?: number;
}

/** A UDP datagram handed to a service. `payload` is borrowed for the call only. */
export interface UdpDatagram {
  srcIp: number;
  srcPort: number;
  dstIp: number;
  dstPort: number;
  srcMac: Buffer;
  payload: Buffer;
}
export type UdpHandler = (d: UdpDatagram) => void;

/** Parsed IPv4 packet handed to the TCP layer and to ICMP/UDP NAT. Borrowed for the call only. */
export interface IpPacket {
  ip: Ipv4Header;
  buf: Buffer;
  /** offset of the IPv4 header in buf */
  ipOff: number;
  srcMac: Buffer;
}

interface Neighbour { mac: Buffer; lastArp: number }

export interface GatewayCounters {
  rxFrames: number;
  notForUs: number;
  malformed: number;
  badChecksum: number;
  ipv6Ignored: number;
  unknownProtocol: number;
  udpNoService: number;
  arpReplies: number;
  arpRequests: number;
  echoReplies: number;
  unresolved: number;
  fragmentsSent: number;
  lastMalformed: string;
}

export class Gateway extends Port {
  readonly timers = new TimerQueue();
  readonly stats: GatewayCounters = {
    rxFrames: 0, notForUs: 0, malformed: 0, badChecksum: 0, ipv6Ignored: 0, unknownProtocol: 0,
    udpNoService: 0, arpReplies: 0, arpRequests: 0, echoReplies: 0, unresolved: 0, fragmentsSent: 0, lastMalformed: '',
  };
  readonly mac: Buffer;
  readonly net: number;
  readonly prefix: number;
  readonly mtu: number;
  readonly addrs = new Set<number>();
  /** Our addresses whose unbound UDP goes to the host (slirp's host address -> loopback). */
  readonly natAddrs = new Set<number>();
  readonly neighbours = new Map<number, Neighbour>();
  private readonly pendingArp = new Map<number, Buffer[]>();
  private readonly reasm: Reassembler;
  private readonly udpBindings = new Map<number, UdpHandler>();
  /** UDP not bound to a local service (UDP NAT). */
  onUdp: ((p: IpPacket, udp: UdpHeader) => void) | null = null;
  /** every TCP segment (the TCP layer) */
  onTcp: ((p: IpPacket) => void) | null = null;
  /** ICMP not addressed to the gateway (ICMP NAT) */
  onIcmp: ((p: IpPacket, icmp: Icmpv4Header) => void) | null = null;
  /** a guest's address seen for the first time or with a new MAC */
  onNeighbour: ((ip: number, mac: Buffer) => void) | null = null;

  // reusable parse results
  private readonly eth = new EthernetHeader();
  private readonly arp = new ArpPacket();
  private readonly ip = new Ipv4Header();
  private readonly icmp = new Icmpv4Header();
  private readonly udp = new UdpHeader();
  private readonly pkt: IpPacket = { ip: this.ip, buf: Buffer.alloc(0), ipOff: 0, srcMac: Buffer.alloc(6) };
  private readonly udpMsg: UdpDatagram = { srcIp: 0, srcPort: 0, dstIp: 0, dstPort: 0, srcMac: this.pkt.srcMac, payload: Buffer.alloc(0) };

  // transmit arena
  private arena = Buffer.allocUnsafe(ARENA);
  private arenaFill = 0;
  private readonly txq: Buffer[] = [];
  private flushQueued = false;
  private readonly flushFn = (): void => this.flushTx();

  constructor(cfg: GatewayConfig) {
    super('gateway', 'qnet');
    this.mac = Buffer.from(cfg.mac);
    this.net = cfg.net;
    this.prefix = cfg.prefix;
    this.mtu = cfg.mtu ?? 1500;
    for (const a of cfg.addrs) this.addrs.add(a);
    this.reasm = new Reassembler(this.timers);
  }

  get broadcast(): number { return (this.net | ~maskOf(this.prefix)) >>> 0; }
  isLocal(ip: number): boolean { return inSubnet(ip, this.net, this.prefix); }

  bindUdp(ip: number, port: number, h: UdpHandler): void { this.udpBindings.set(ip * 65536 + port, h); }
  unbindUdp(ip: number, port: number): void { this.udpBindings.delete(ip * 65536 + port); }

  // ---- input (frames from the switch) ----

  send(frame: Buffer): void {
    this.counters.txFrames++;
    this.counters.txBytes += frame.length;
    this.stats.rxFrames++;
    try {
      this.input(frame);
    } catch (err) {
      // A bug in a handler must not take the network down: count it like bad input.
      this.stats.malformed++;
      this.stats.lastMalformed = `handler error: ${(err as Error).message}`;
    }
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
      case ETHERTYPE_ARP: return this.arpInput(frame, eth.payloadOffset, frame.length);
      case ETHERTYPE_IPV4: return this.ipInput(frame, eth.payloadOffset, frame.length, frame.subarray(6, 12));
      case ETHERTYPE_IPV6: this.stats.ipv6Ignored++; return;
      default: this.stats.unknownProtocol++;
    }
  }

  private learn(ip: number, mac: Buffer, macOff: number): void {
    if (ip === 0 || !this.isLocal(ip) || this.addrs.has(ip) || ip === this.broadcast) return;
    if (mac[macOff] & 1) return;
    const n = this.neighbours.get(ip);
    if (n && n.mac.compare(mac, macOff, macOff + 6) === 0) return;
    if (!n && this.neighbours.size >= 4096) return;
    const m = Buffer.from(mac.subarray(macOff, macOff + 6));
    this.neighbours.set(ip, { mac: m, lastArp: 0 });
    this.onNeighbour?.(ip, m);
    const queued = this.pendingArp.get(ip);
    if (queued) {
      this.pendingArp.delete(ip);
      for (const f of queued) { m.copy(f, 0); this.queueFrame(f); }
    }
  }

  private arpInput(frame: Buffer, off: number, end: number): void {
    const a = this.arp;
    const err = parseArp(frame, off, end, a);
    if (err) return this.bad(err);
    this.learn(a.senderIp, frame, a.senderMacOffset);
    if (a.op === ARP_REQUEST && this.addrs.has(a.targetIp) && a.senderIp !== a.targetIp) {
      const o = this.txReserve(28, 14);
      const b = this.arena;
      const senderMac = frame.subarray(a.senderMacOffset, a.senderMacOffset + 6);
      writeEthernet(b, o - 14, senderMac, this.mac, ETHERTYPE_ARP);
      writeArp(b, o, ARP_REPLY, this.mac, a.targetIp, senderMac, a.senderIp);
      this.txCommit(o - 14, 14 + 28);
      this.stats.arpReplies++;
    }
  }

  private ipInput(frame: Buffer, off: number, end: number, srcMac: Buffer): void {
    const ip = this.ip;
    let err = parseIpv4(frame, off, end, ip);
    if (err) return this.bad(err);
    if (!ip.checksumOk) { this.stats.badChecksum++; return; }
    this.learn(ip.src, frame, 6);
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

  private icmpInput(p: IpPacket): void {
    const ip = p.ip;
    const icmp = this.icmp;
    const err = parseIcmpv4(p.buf, ip.payloadOffset, ip.payloadEnd, icmp);
    if (err) return this.bad(err);
    if (!icmp.checksumOk) { this.stats.badChecksum++; return; }
    if (this.addrs.has(ip.dst)) {
      if (icmp.type === ICMP_ECHO_REQUEST) {
        const dataLen = icmp.payloadEnd - icmp.payloadOffset;
        const o = this.txReserve(8 + dataLen);
        p.buf.copy(this.arena, o + 8, icmp.payloadOffset, icmp.payloadEnd);
        writeIcmpv4Echo(this.arena, o, ICMP_ECHO_REPLY, icmp.id, icmp.seq, dataLen);
        this.txIpv4(o, ip.dst, ip.src, IPPROTO_ICMP, 8 + dataLen, p.srcMac);
        this.stats.echoReplies++;
      }
      return;
    }
    if (ip.dst === this.broadcast || ip.dst === 0xffffffff || (ip.dst >>> 28) === 14) return;
    if (this.onIcmp && !isIcmpv4Error(icmp.type)) this.onIcmp(p, icmp);
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
      this.sendIcmpError(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, p, ip.dst);
      return;
    }
    if (ip.dst === this.broadcast || ip.dst === 0xffffffff || (ip.dst >>> 28) === 14) return;
    if (this.isLocal(ip.dst) && !this.natAddrs.has(ip.dst)) return;
    if (this.onUdp) this.onUdp(p, udp);
  }

  // ---- output (frames to guests) ----

  /**
   * Reserve room for an IPv4 packet whose L4 part is `l4len` bytes; returns the offset in
   * `this.arena` where the L4 header goes. Complete it with txIpv4 before the next reserve.
   */
  txReserve(l4len: number, headroom = HEADROOM): number {
    const need = headroom + l4len;
    if (this.arenaFill + need > this.arena.length) {
      // Frames queued in the old arena keep it alive until flushed.
      this.arena = Buffer.allocUnsafe(Math.max(ARENA, need));
      this.arenaFill = 0;
    }
    return this.arenaFill + headroom;
  }

  get txBuf(): Buffer { return this.arena; }

  private txCommit(start: number, len: number): void {
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

  /** MAC for an on-link destination, or null after asking (the frame is queued meanwhile). */
  private resolve(dst: number): Buffer | null {
    if (dst === 0xffffffff || dst === this.broadcast || (dst >>> 28) === 14) return BROADCAST_MAC;
    const n = this.neighbours.get(dst);
    return n ? n.mac : null;
  }

  /**
   * Finish the IPv4 packet whose L4 part (l4len bytes) was written at `l4off` (from
   * txReserve) and queue it. Fragments it when it exceeds the MTU.
   */
  txIpv4(l4off: number, src: number, dst: number, proto: number, l4len: number, dstMac?: Buffer, ipId = 0): void {
    const mac = dstMac ?? this.resolve(dst);
    const b = this.arena;
    if (20 + l4len > this.mtu) { this.fragment(l4off, src, dst, proto, l4len, mac); return; }
    writeIpv4(b, l4off - 20, src, dst, proto, l4len, 64, ipId, false);
    writeEthernet(b, l4off - HEADROOM, mac ?? ZERO_MAC, this.mac, ETHERTYPE_IPV4);
    if (mac === null) { this.queueUnresolved(dst, b.subarray(l4off - HEADROOM, l4off + l4len)); this.arenaFill = l4off + l4len; return; }
    this.txCommit(l4off - HEADROOM, HEADROOM + l4len);
  }

  private fragId = 1;
  private fragment(l4off: number, src: number, dst: number, proto: number, l4len: number, mac: Buffer | null): void {
    const maxData = (this.mtu - 20) & ~7;
    const id = this.fragId = (this.fragId + 1) & 0xffff;
    const whole = Buffer.from(this.arena.subarray(l4off, l4off + l4len));
    this.arenaFill = l4off + l4len;
    for (let at = 0; at < l4len; at += maxData) {
      const n = Math.min(maxData, l4len - at);
      const o = this.txReserve(n);
      const b = this.arena;
      whole.copy(b, o, at, at + n);
      writeIpv4(b, o - 20, src, dst, proto, n, 64, id, false);
      const more = at + n < l4len;
      b.writeUInt16BE((more ? 0x2000 : 0) | (at >> 3), o - 20 + 6);
      finishIpv4(b, o - 20);
      writeEthernet(b, o - HEADROOM, mac ?? ZERO_MAC, this.mac, ETHERTYPE_IPV4);
      this.stats.fragmentsSent++;
      if (mac === null) { this.queueUnresolved(dst, b.subarray(o - HEADROOM, o + n)); this.arenaFill = o + n; }
      else this.txCommit(o - HEADROOM, HEADROOM + n);
    }
  }

  private queueUnresolved(dst: number, frame: Buffer): void {
    this.stats.unresolved++;
    let q = this.pendingArp.get(dst);
    if (!q) {
      if (this.pendingArp.size >= 64) return;
      q = [];
      this.pendingArp.set(dst, q);
    }
    if (q.length < 16) q.push(Buffer.from(frame));
    this.arpRequest(dst);
  }

  private lastArpAt = new Map<number, number>();
  private arpRequest(dst: number): void {
    const now = performance.now();
    if ((this.lastArpAt.get(dst) ?? -1e9) > now - 1000) return;
    if (this.lastArpAt.size > 1024) this.lastArpAt.clear();
    this.lastArpAt.set(dst, now);
    const src = this.addrs.values().next().value ?? 0;
    const o = this.txReserve(28, 14);
    writeEthernet(this.arena, o - 14, BROADCAST_MAC, this.mac, ETHERTYPE_ARP);
    writeArp(this.arena, o, ARP_REQUEST, this.mac, src, ZERO_MAC, dst);
    this.txCommit(o - 14, 42);
    this.stats.arpRequests++;
    // give up on the queued frames if nobody answers
    setTimeout(() => { if (!this.neighbours.has(dst)) this.pendingArp.delete(dst); }, 3000).unref();
  }

  /** Send a UDP datagram to a guest (dstMac forces the link destination, e.g. for DHCP). */
  sendUdp(src: number, sport: number, dst: number, dport: number, payload: Buffer, dstMac?: Buffer): void {
    const len = 8 + payload.length;
    const o = this.txReserve(len);
    const b = this.arena;
    payload.copy(b, o + 8);
    writeUdp(b, o, sport, dport, payload.length);
    finishUdpV4(b, o, src, dst);
    this.txIpv4(o, src, dst, IPPROTO_UDP, len, dstMac);
  }

  /** ICMP error about packet p (RFC 1812: quote the header and up to 8+ bytes). */
  sendIcmpError(type: number, code: number, p: IpPacket, from: number, rest = 0): void {
    const ip = p.ip;
    const quoted = Math.min(ip.payloadEnd - p.ipOff, ip.headerLength + 64);
    const o = this.txReserve(8 + quoted);
    const end = writeIcmpv4Error(this.arena, o, type, code, rest, p.buf, p.ipOff, ip.payloadEnd, 64);
    this.txIpv4(o, from, ip.src, IPPROTO_ICMP, end - o, p.srcMac);
  }

  describe(): string {
    return `gateway ${[...this.addrs].map(ip4ToString).join(',')}`;
  }

  protected closeTransport(): void {
    this.timers.close();
  }
}
