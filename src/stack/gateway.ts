// The gateway: a virtual host that is just another port on the switch (as in
// gvisor-tap-vsock). It owns one MAC and addresses of both families (the router, the DNS
// address, guestfwd addresses; for IPv6 also its link-local address), answers ARP
// (stack/arp.ts), NDP (stack/ndp.ts) and ICMP echo for them, reassembles fragments, and hands
// UDP, TCP and foreign ICMP echo to services. The IP layers are stack/ipv4.ts and
// stack/ipv6.ts; this file is what they share.
//
// Addresses are numbers of either family (stack/addr.ts): an IPv4 u32, or an IPv6 id at or
// above 2^32. Services see the same packet shape (IpPacket) and the same send contract for
// both families, so a NAT or a TCP flow is written once.
//
// Input: the switch hands the gateway a frame through Port.send(), which is the gateway's
// receive path (handleFrame). Every parser is bounds-checked; malformed input is counted in
// `stats.malformed` (the last reason in `lastMalformed`) and dropped. A service that throws
// is a bug, not bad input: it is counted in `stats.handlerErrors` and the first one is logged
// with its stack; the network keeps running.
//
// Output: the send contract of stack/output.ts. Protocols call sendIp() with a writer for
// their L4 part, or sendUdp() / sendIcmpError() / sendIcmpErrorForFlow(); the IP layer of the
// destination's family does the pseudo-header checksums, the IP header, fragmentation beyond
// the MTU, the Ethernet header and neighbour resolution. Frames are built in an arena buffer
// and delivered to the switch from a microtask, once the current input batch is done:
// replies never re-enter the switch while it is still forwarding the frame that caused them,
// and a batch of segments goes out together. An arena is never reused while frames in it are
// queued.
import { Port } from '../link/port.ts';
import { TimerQueue, type Clock } from './timers.ts';
import { Arp } from './arp.ts';
import { Ndp } from './ndp.ts';
import { HEADROOM4, Ipv4Layer } from './ipv4.ts';
import { HEADROOM6, Ipv6Layer } from './ipv6.ts';
import { V6_BASE, addrToString, inPrefix6, ip6, pinAddr } from './addr.ts';
import type { IpOutput, L4Writer, QuotedPacket, UdpDatagram, UdpHandler, UdpHost } from './output.ts';
import { EthernetHeader, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parseEthernet, writeEthernet } from '../wire/ethernet.ts';
import type { Icmpv4Header } from '../wire/icmpv4.ts';
import type { Icmpv6Header } from '../wire/icmpv6.ts';
import { UdpHeader, writeUdp } from '../wire/udp.ts';
import { IPPROTO_UDP } from '../wire/ipv4.ts';
import { inSubnet, macEquals, maskOf } from '../wire/addr.ts';
import { logger } from '../util/log.ts';

export type { UdpDatagram, UdpHandler };

const log = logger('gateway');
const ZERO_MAC = Buffer.alloc(6);
const EMPTY = Buffer.alloc(0);
const ARENA = 1 << 20;
const LINK_LOCAL = Buffer.from('fe800000000000000000000000000000', 'hex');

export interface Ipv6Config {
  /** the network's /64 (or other length) prefix, 16 bytes */
  prefix: Buffer;
  prefixLen: number;
  /** the gateway's addresses on it (router, DNS), as ids */
  addrs: number[];
  /** the router's link-local address (fe80::2 in user mode, like slirp) */
  linkLocal: number;
}

export interface GatewayConfig {
  mac: Buffer;
  /** network address and prefix of the IPv4 segment */
  net: number;
  prefix: number;
  /** IPv4 addresses the gateway answers for (router, DNS, guestfwd, ...) */
  addrs: number[];
  /** IPv6 on the segment; absent: IPv6 frames are counted and ignored */
  ipv6?: Ipv6Config;
  /** largest IP packet sent to guests; larger ones are fragmented */
  mtu?: number;
  /** the clock of the gateway's timer queue (and of everything that shares it) */
  clock?: Clock;
}

/**
 * A parsed IP packet of either family handed to the TCP layer and the NATs (and to
 * sendIcmpError as the packet to quote). Borrowed for the call only; addresses are ids.
 */
export interface IpPacket extends QuotedPacket {
  v6: boolean;
  dst: number;
  /** upper-layer protocol */
  proto: number;
  /** the L4 part: buf[l4, l4End) */
  l4: number;
  l4End: number;
  /** pseudo-header sum for a checksum over the L4 part (TCP, UDP, ICMPv6) */
  pseudo: number;
  /** TTL / hop limit as received */
  ttl: number;
}

/** The fields of an echo request the ICMP NAT needs, for either family. */
export type EchoHeader = Pick<Icmpv4Header | Icmpv6Header, 'type' | 'id' | 'seq' | 'payloadOffset' | 'payloadEnd'>;

export interface GatewayCounters {
  notForUs: number;
  malformed: number;
  badChecksum: number;
  ipv6Ignored: number;
  unknownProtocol: number;
  udpNoService: number;
  echoReplies: number;
  fragmentsSent: number;
  /** IPv6 from a source that is not on the segment (neither link-local nor the prefix) */
  offLinkSource: number;
  /** NDP with a hop limit other than 255, a bad code, or from a guest playing router */
  ndpDropped: number;
  addressTableFull: number;
  /** a service threw while handling a packet (a bug; the first is logged) */
  handlerErrors: number;
  lastMalformed: string;
}

export class Gateway extends Port implements IpOutput, UdpHost {
  readonly timers: TimerQueue;
  readonly stats: GatewayCounters = {
    notForUs: 0, malformed: 0, badChecksum: 0, ipv6Ignored: 0, unknownProtocol: 0, udpNoService: 0, echoReplies: 0,
    fragmentsSent: 0, offLinkSource: 0, ndpDropped: 0, addressTableFull: 0, handlerErrors: 0, lastMalformed: '',
  };
  readonly mac: Buffer;
  readonly net: number;
  readonly prefix: number;
  readonly mtu: number;
  /** the addresses of both families the gateway answers for */
  readonly addrs = new Set<number>();
  /** Our addresses whose unbound UDP goes to the host (slirp's host address -> loopback). */
  readonly natAddrs = new Set<number>();
  readonly arp: Arp;
  readonly ndp: Ndp | null;
  readonly ipv6: Ipv6Config | null;
  /** the IPv6 link-local address, or -1 without IPv6 */
  readonly linkLocal: number;
  private readonly v4: Ipv4Layer;
  private readonly v6: Ipv6Layer | null;
  private readonly udpBindings = new Map<number, UdpHandler>();
  /** UDP not bound to a local service (UDP NAT). */
  onUdp: ((p: IpPacket, udp: UdpHeader) => void) | null = null;
  /** every TCP segment (the TCP layer) */
  onTcp: ((p: IpPacket) => void) | null = null;
  /** echo requests not addressed to the gateway (ICMP NAT) */
  onIcmp: ((p: IpPacket, icmp: EchoHeader) => void) | null = null;
  /** an IPv6 router solicitation (the RA service) */
  onRouterSolicit: ((p: IpPacket, icmp: Icmpv6Header) => void) | null = null;
  private readonly udpOut: { sport: number; dport: number; payload: Buffer } = { sport: 0, dport: 0, payload: EMPTY };
  private readonly writeUdpOut = (b: Buffer, o: number): number => {
    const u = this.udpOut;
    writeUdp(b, o, u.sport, u.dport, u.payload.length);
    return o + 8 + u.payload.copy(b, o + 8);
  };

  private readonly eth = new EthernetHeader();
  private readonly pkt: IpPacket = {
    v6: false, buf: Buffer.alloc(0), ipOff: 0, end: 0, src: 0, dst: 0, proto: 0, l4: 0, l4End: 0, pseudo: 0, ttl: 0, srcMac: Buffer.alloc(6),
  };
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
    this.timers = new TimerQueue(cfg.clock, { onError: (err) => this.handlerError(err) });
    this.arp = new Arp({
      mac: this.mac,
      timers: this.timers,
      owns: (ip) => this.addrs.has(ip),
      isNeighbourAddress: (ip) => ip < V6_BASE && this.isLocal(ip) && ip !== this.broadcast,
      primaryAddress: () => cfg.addrs[0] ?? 0,
      sendFrame: (len, write) => { const o = this.reserve(len, 0); write(this.arena, o); this.commit(o, len); },
      sendHeld: (f) => this.queueFrame(f),
    });
    this.v4 = new Ipv4Layer(this, this.pkt);
    this.ipv6 = cfg.ipv6 ? { ...cfg.ipv6, prefix: Buffer.from(cfg.ipv6.prefix) } : null;
    if (this.ipv6) {
      for (const a of this.ipv6.addrs) this.addrs.add(pinAddr(a));
      this.linkLocal = pinAddr(this.ipv6.linkLocal);
      this.v6 = new Ipv6Layer(this, this.pkt);
      this.ndp = new Ndp({
        mac: this.mac,
        timers: this.timers,
        owns: (a) => this.addrs.has(a) || a === this.linkLocal,
        isNeighbourAddress: (a) => this.isLocal(a),
        linkLocal: this.linkLocal,
        sendNd: (src, dst, len, write, dstMac) => this.sendNd(src, dst, len, write, dstMac),
        sendHeld: (f) => this.queueFrame(f),
      });
    } else {
      this.linkLocal = -1;
      this.v6 = null;
      this.ndp = null;
    }
  }

  get broadcast(): number { return (this.net | ~maskOf(this.prefix)) >>> 0; }

  /** On the segment: the IPv4 subnet, or (IPv6) the prefix or link-local. */
  isLocal(a: number): boolean {
    if (a < V6_BASE) return inSubnet(a, this.net, this.prefix);
    const v6 = this.ipv6;
    return v6 !== null && (inPrefix6(a, v6.prefix, v6.prefixLen) || inPrefix6(a, LINK_LOCAL, 10));
  }

  /** guests' IPv4 addresses and MACs, learned from ARP and IPv4 sources */
  get neighbours(): Map<number, { mac: Buffer }> { return this.arp.neighbours; }
  /** guests' IPv6 addresses and MACs, learned from NDP and IPv6 sources */
  get neighbours6(): Map<number, { mac: Buffer }> { return this.ndp?.neighbours ?? new Map(); }

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

  /** Count malformed input (for the IP layers). */
  bad(reason: string): void {
    this.stats.malformed++;
    this.stats.lastMalformed = reason;
  }

  private input(frame: Buffer): void {
    const eth = this.eth;
    const err = parseEthernet(frame, 0, frame.length, eth);
    if (err) return this.bad(err);
    const toUs = frame[0] & 1 ? true : macEquals(frame, 0, this.mac, 0);
    if (!toUs) { this.stats.notForUs++; return; }
    switch (eth.ethertype) {
      case ETHERTYPE_ARP: {
        const e = this.arp.input(frame, eth.payloadOffset, frame.length);
        if (e) this.bad(e);
        return;
      }
      case ETHERTYPE_IPV4: return this.v4.input(frame, eth.payloadOffset, frame.length, frame.subarray(6, 12));
      case ETHERTYPE_IPV6:
        if (this.v6) return this.v6.input(frame, eth.payloadOffset, frame.length, frame.subarray(6, 12));
        this.stats.ipv6Ignored++;
        return;
      default: this.stats.unknownProtocol++;
    }
  }

  /** A checked UDP datagram: to its bound service if there is one (then true). */
  deliverUdp(p: IpPacket, udp: UdpHeader): boolean {
    // a service bound to "any of our addresses" (ip 0) gets datagrams to our addresses and to
    // groups, never ones on their way elsewhere (those belong to the NAT)
    const h = this.udpBindings.get(p.dst * 65536 + udp.dstPort) ?? (this.reachesServices(p) ? this.udpBindings.get(udp.dstPort) : undefined);
    if (!h) return false;
    const d = this.udpMsg;
    d.srcIp = p.src; d.srcPort = udp.srcPort; d.dstIp = p.dst; d.dstPort = udp.dstPort;
    d.payload = p.buf.subarray(udp.payloadOffset, udp.payloadEnd);
    h(d);
    return true;
  }

  /** Addressed to the gateway itself or to a group (broadcast, multicast). */
  private reachesServices(p: IpPacket): boolean {
    if (this.addrs.has(p.dst) || p.dst === this.linkLocal) return true;
    return p.v6 ? ip6.firstByte(p.dst) === 0xff : this.v4.isGroup(p.dst);
  }

  // ---- output: the send contract (stack/output.ts) ----

  sendIp(src: number, dst: number, proto: number, maxLen: number, write: L4Writer, dstMac?: Buffer): void {
    const v6 = dst >= V6_BASE;
    if (v6 && !this.v6) return;
    if (this.directTo !== null && this.txq.length === 0 && this.sendDirect(v6, src, dst, proto, maxLen, write, dstMac)) return;
    const o = this.reserve(maxLen, v6 ? HEADROOM6 : HEADROOM4);
    const end = write(this.arena, o);
    const len = end - o;
    if (len < 0 || len > maxLen) throw new Error(`writer for protocol ${proto} wrote ${len} bytes, more than the ${maxLen} it asked for`);
    if (v6) this.v6!.emit(o, src, dst, proto, len, dstMac);
    else this.v4.emit(o, src, dst, proto, len, dstMac);
  }

  /**
   * The fast path: a unicast frame to a guest whose port takes frames in place is built once,
   * straight into that port's output (Port.reserveFrame), instead of in the arena and then
   * copied by the port. false (nothing sent) when that is not possible; the caller then takes
   * the arena path. Frames bigger than the MTU (to be fragmented) go the arena way too, and
   * while frames wait in the arena queue nothing goes direct (that would reorder them).
   */
  private sendDirect(v6: boolean, src: number, dst: number, proto: number, maxLen: number, write: L4Writer, dstMac: Buffer | undefined): boolean {
    const layer = v6 ? this.v6! : this.v4;
    const mac = dstMac ?? layer.linkDest(dst);
    if (mac === null || (mac[0] & 1) !== 0) return false;
    const port = this.directTo!(this.mac, mac);
    if (port === null) return false;
    const head = v6 ? HEADROOM6 : HEADROOM4;
    const at = port.reserveFrame(head + maxLen);
    if (at < 0) return false;
    const buf = port.txBuf;
    const o = at + head;
    const len = write(buf, o) - o;
    if (len < 0 || len > maxLen) throw new Error(`writer for protocol ${proto} wrote ${len} bytes, more than the ${maxLen} it asked for`);
    if (!layer.seal(buf, o, src, dst, proto, len, mac)) {
      // too big: fragments are built from the arena
      const a = this.reserve(len, head);
      buf.copy(this.arena, a, o, o + len);
      if (v6) this.v6!.emit(a, src, dst, proto, len, mac); else this.v4.emit(a, src, dst, proto, len, mac);
      return true;
    }
    port.commitFrame(head + len);
    // counted as if it had crossed the switch from this port
    this.counters.rxFrames++;
    this.counters.rxBytes += head + len;
    return true;
  }

  /** A UDP datagram to a guest (dstMac forces the link destination, e.g. for DHCP). */
  sendUdp(src: number, sport: number, dst: number, dport: number, payload: Buffer, dstMac?: Buffer): void {
    const u = this.udpOut;
    u.sport = sport; u.dport = dport; u.payload = payload;
    this.sendIp(src, dst, IPPROTO_UDP, 8 + payload.length, this.writeUdpOut, dstMac);
    u.payload = EMPTY;
  }

  sendIcmpError(type: number, code: number, from: number, p: QuotedPacket, rest = 0): void {
    if (p.buf[p.ipOff] >>> 4 === 6) this.v6?.icmpError(type, code, from, p.buf, p.ipOff, p.end, p.src, p.srcMac, rest);
    else this.v4.icmpError(type, code, from, p.buf, p.ipOff, p.end, p.src, p.srcMac, rest);
  }

  sendIcmpErrorForFlow(type: number, code: number, from: number, guest: number, dst: number, proto: number, l4head: Buffer, l4len = l4head.length): void {
    if (guest >= V6_BASE) this.v6?.icmpErrorForFlow(type, code, from, guest, dst, proto, l4head, l4len);
    else this.v4.icmpErrorForFlow(type, code, from, guest, dst, proto, l4head, l4len);
  }

  /** An NDP or RA message (hop limit 255) from src to dst (16 bytes; multicast allowed). */
  sendNd(src: number, dst: Buffer, maxLen: number, write: (buf: Buffer, off: number) => number, dstMac: Buffer | null): void {
    if (!this.v6) return;
    const o = this.reserve(maxLen, HEADROOM6);
    const end = write(this.arena, o);
    if (end - o > maxLen) throw new Error(`NDP writer wrote ${end - o} bytes, more than the ${maxLen} it asked for`);
    this.v6.emitNd(o, src, dst, end - o, dstMac);
  }

  // ---- the transmit arena (for the IP layers) ----

  get txArena(): Buffer { return this.arena; }

  /** Room for `len` bytes after `headroom` in the arena; returns where they go. */
  reserve(len: number, headroom: number): number {
    const need = headroom + len;
    if (this.arenaFill + need > this.arena.length) {
      // Frames queued in the old arena keep it alive until flushed.
      this.arena = Buffer.allocUnsafe(Math.max(ARENA, need));
      this.arenaFill = 0;
    }
    return this.arenaFill + headroom;
  }

  /** Ethernet header at start (mac null: filled in once resolved). */
  writeLink(start: number, mac: Buffer | null, ethertype: number): void {
    writeEthernet(this.arena, start, mac ?? ZERO_MAC, this.mac, ethertype);
  }

  /** Queue the frame at arena[start, start+len). */
  commit(start: number, len: number): void {
    const f = this.arena.subarray(start, start + len);
    this.arenaFill = start + len;
    this.queueFrame(f);
  }

  /** The frame at arena[start, start+len) is not sent now (it is copied where it waits). */
  hold(start: number, len: number): Buffer {
    this.arenaFill = start + len;
    return this.arena.subarray(start, start + len);
  }

  /** The arena up to `end` is used (a frame built there was copied away). */
  release(end: number): void { this.arenaFill = end; }

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

  /** Pending reassemblies of both families. */
  get reassemblies(): number { return this.v4.reassembly.size + (this.v6?.reassembly.size ?? 0); }

  describe(): string {
    return `gateway ${[...this.addrs].map(addrToString).join(',')}`;
  }

  protected closeTransport(): void {
    this.arp.close();
    this.ndp?.close();
    this.timers.close();
  }
}
