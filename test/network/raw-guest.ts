// A guest made of raw frames on a network's stream socket, for the hostile-peer suites: it
// speaks just enough DHCP, ARP, ICMP, DNS and TCP (a SYN/SYN-ACK listener) to be a rogue or a
// well-behaved guest, and decodes what comes back.
//
// No fixed sleeps: every wait is for a condition (a frame that matches), with a deadline that
// only guards against a hang. To show that something did NOT come back, use barrier(): an ARP
// probe (sender 0.0.0.0, RFC 5227) that the gateway always answers; frames on one stream
// keep their order, so once the probe's answer is in, any answer to what was sent before it
// would be in too.
import { StreamPeer } from '../link/peers.ts';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetHeader, parseEthernet, writeEthernet } from '../../src/wire/ethernet.ts';
import { ArpPacket, ARP_REPLY, ARP_REQUEST, parseArp, writeArp } from '../../src/wire/arp.ts';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, parseIpv4, writeIpv4 } from '../../src/wire/ipv4.ts';
import { UdpHeader, finishUdpV4, parseUdp, writeUdp } from '../../src/wire/udp.ts';
import { TcpHeader, finishTcpV4, parseTcp, writeTcp } from '../../src/wire/tcp.ts';
import { ICMP_ECHO_REQUEST, writeIcmpv4Echo } from '../../src/wire/icmpv4.ts';
import { ip4FromBuf, ip4ToBuf, macToString, parseIp4, parseMac } from '../../src/wire/addr.ts';

export const ip = (s: string): number => parseIp4(s)!;
export const mac = (s: string): Buffer => parseMac(s)!;
const BCAST = mac('ff:ff:ff:ff:ff:ff');
const ZERO = Buffer.alloc(6);

export const DHCP = { DISCOVER: 1, OFFER: 2, REQUEST: 3, DECLINE: 4, ACK: 5, NAK: 6, RELEASE: 7 } as const;
const TCP_SYN = 0x02, TCP_ACK = 0x10, TCP_RST = 0x04;

/** Wait for `cond` (polled on every event loop turn that had I/O, at most every 10 ms); the deadline only guards a hang. */
export async function until<T>(cond: () => T | null | undefined | false, what: string, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Rx {
  frame: Buffer;
  dstMac: string;
  srcMac: string;
  ethertype: number;
  arp?: { op: number; senderIp: number; targetIp: number; senderMac: string; targetMac: string };
  ip?: { src: number; dst: number; protocol: number };
  udp?: { srcPort: number; dstPort: number; payload: Buffer };
  tcp?: { srcPort: number; dstPort: number; seq: number; ack: number; flags: number };
  icmp?: { type: number; code: number; id: number; seq: number };
}

export function decode(f: Buffer): Rx {
  const eth = new EthernetHeader();
  const out: Rx = { frame: f, dstMac: macToString(f, 0), srcMac: macToString(f, 6), ethertype: 0 };
  if (parseEthernet(f, 0, f.length, eth)) return out;
  out.ethertype = eth.ethertype;
  if (eth.ethertype === ETHERTYPE_ARP) {
    const a = new ArpPacket();
    if (!parseArp(f, eth.payloadOffset, f.length, a)) {
      out.arp = { op: a.op, senderIp: a.senderIp, targetIp: a.targetIp, senderMac: macToString(f, a.senderMacOffset), targetMac: macToString(f, a.targetMacOffset) };
    }
    return out;
  }
  if (eth.ethertype !== ETHERTYPE_IPV4) return out;
  const h = new Ipv4Header();
  if (parseIpv4(f, eth.payloadOffset, f.length, h)) return out;
  out.ip = { src: h.src, dst: h.dst, protocol: h.protocol };
  if (h.protocol === IPPROTO_UDP) {
    const u = new UdpHeader();
    if (!parseUdp(f, h.payloadOffset, h.payloadEnd, u)) out.udp = { srcPort: u.srcPort, dstPort: u.dstPort, payload: Buffer.from(f.subarray(u.payloadOffset, u.payloadEnd)) };
  } else if (h.protocol === IPPROTO_TCP) {
    const t = new TcpHeader();
    if (!parseTcp(f, h.payloadOffset, h.payloadEnd, t)) out.tcp = { srcPort: t.srcPort, dstPort: t.dstPort, seq: t.seq, ack: t.ack, flags: t.flags };
  } else if (h.protocol === IPPROTO_ICMP && h.payloadEnd - h.payloadOffset >= 8) {
    const o = h.payloadOffset;
    out.icmp = { type: f[o], code: f[o + 1], id: f.readUInt16BE(o + 4), seq: f.readUInt16BE(o + 6) };
  }
  return out;
}

export interface DhcpReply { type: number; xid: number; yiaddr: number; chaddr: string; opts: Map<number, Buffer> }

export function parseDhcpReply(p: Buffer): DhcpReply | null {
  if (p.length < 240 || p[0] !== 2 || p.readUInt32BE(236) !== 0x63825363) return null;
  const opts = new Map<number, Buffer>();
  let i = 240;
  while (i < p.length && p[i] !== 255) {
    if (p[i] === 0) { i++; continue; }
    if (i + 2 > p.length) break;
    opts.set(p[i], Buffer.from(p.subarray(i + 2, i + 2 + p[i + 1])));
    i += 2 + p[i + 1];
  }
  return { type: opts.get(53)?.[0] ?? 0, xid: p.readUInt32BE(4), yiaddr: ip4FromBuf(p, 16), chaddr: macToString(p, 28), opts };
}

export interface DhcpMsg { type: number; chaddr: Buffer; xid: number; requested?: number; serverId?: number; hostname?: string; ciaddr?: number }

export function dhcpPayload(o: DhcpMsg): Buffer {
  const opts: number[] = [53, 1, o.type];
  const ip4 = (code: number, v: number) => { const b = Buffer.alloc(4); ip4ToBuf(v, b, 0); opts.push(code, 4, ...b); };
  if (o.requested !== undefined) ip4(50, o.requested);
  if (o.serverId !== undefined) ip4(54, o.serverId);
  if (o.hostname !== undefined) opts.push(12, o.hostname.length, ...Buffer.from(o.hostname));
  opts.push(255);
  const m = Buffer.alloc(Math.max(300, 240 + opts.length));
  m[0] = 1; m[1] = 1; m[2] = 6;
  m.writeUInt32BE(o.xid >>> 0, 4);
  m.writeUInt16BE(0x8000, 10); // broadcast: replies come back whatever chaddr is
  ip4ToBuf(o.ciaddr ?? 0, m, 12);
  o.chaddr.copy(m, 28);
  m.writeUInt32BE(0x63825363, 236);
  Buffer.from(opts).copy(m, 240);
  return m;
}

/** A DNS query for the A record of `name`. */
export function dnsQuery(name: string, id: number): Buffer {
  const labels = name.split('.').flatMap((l) => [l.length, ...Buffer.from(l)]);
  return Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...labels, 0, 0, 1, 0, 1]);
}

let nextXid = 0x5e000000;

export class RawGuest {
  /** frames consumed by waits so far */
  private cursor = 0;
  ip = 0;
  private barriers = 0;
  private answered = 0;
  /** answer ARP requests for our address (a real guest would) */
  autoArp = true;
  /** answer SYNs to these ports with a SYN-ACK (a listening guest); counts what it saw */
  readonly listening = new Set<number>();
  readonly synsSeen: { dstPort: number; src: number }[] = [];
  private constructor(readonly peer: StreamPeer, readonly mac: Buffer, readonly gwIp: number, readonly gwMac: Buffer) {
    peer.sock.on('data', () => queueMicrotask(() => this.react()));
  }

  static async connect(sock: string, macStr: string, gw: { ip: number; mac: string }): Promise<RawGuest> {
    return new RawGuest(await StreamPeer.connect(sock), mac(macStr), gw.ip, mac(gw.mac));
  }

  get frames(): Buffer[] { return this.peer.frames; }
  get closed(): boolean { return this.peer.closed; }

  private reacted = 0;
  /** answers ARP for our address and SYNs to listening ports */
  private react(): void {
    for (; this.reacted < this.peer.frames.length; this.reacted++) {
      const r = decode(this.peer.frames[this.reacted]);
      if (this.autoArp && r.arp && r.arp.op === ARP_REQUEST && this.ip !== 0 && r.arp.targetIp === this.ip) this.sendArp(ARP_REPLY, this.ip, mac(r.arp.senderMac), r.arp.senderIp, mac(r.arp.senderMac));
      if (r.tcp && r.ip && r.ip.dst === this.ip && r.dstMac === macToString(this.mac, 0) && (r.tcp.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) {
        this.synsSeen.push({ dstPort: r.tcp.dstPort, src: r.ip.src });
        if (this.listening.has(r.tcp.dstPort)) this.sendTcp(r.ip.src, r.tcp.dstPort, r.tcp.srcPort, 1000, (r.tcp.seq + 1) >>> 0, TCP_SYN | TCP_ACK);
        else this.sendTcp(r.ip.src, r.tcp.dstPort, r.tcp.srcPort, 0, (r.tcp.seq + 1) >>> 0, TCP_RST | TCP_ACK);
      }
    }
  }

  /** The first frame after the cursor matching `pred` (earlier non-matching ones are skipped). */
  async next(pred: (r: Rx) => boolean, what: string, ms = 10_000): Promise<Rx> {
    return until(() => {
      while (this.cursor < this.peer.frames.length) {
        const r = decode(this.peer.frames[this.cursor++]);
        if (pred(r)) return r;
      }
      if (this.peer.closed) throw new Error(`the connection closed while waiting for ${what}`);
      return null;
    }, what, ms);
  }

  /** Everything received so far that matches, without consuming. */
  seen(pred: (r: Rx) => boolean): Rx[] { return this.peer.frames.map(decode).filter(pred); }

  send(f: Buffer): void { this.peer.send(f); }

  sendArp(op: number, senderIp: number, targetMac: Buffer, targetIp: number, dst = BCAST, src = this.mac): void {
    const f = Buffer.alloc(42);
    writeEthernet(f, 0, dst, src, ETHERTYPE_ARP);
    writeArp(f, 14, op, src, senderIp, targetMac, targetIp);
    this.send(f);
  }

  sendUdp(src: number, sport: number, dst: number, dport: number, payload: Buffer, dstMac = this.gwMac, srcMac = this.mac): void {
    const f = Buffer.alloc(42 + payload.length);
    writeEthernet(f, 0, dstMac, srcMac, ETHERTYPE_IPV4);
    writeIpv4(f, 14, src, dst, IPPROTO_UDP, 8 + payload.length);
    writeUdp(f, 34, sport, dport, payload.length);
    payload.copy(f, 42);
    finishUdpV4(f, 34, src, dst);
    this.send(f);
  }

  sendTcp(dst: number, sport: number, dport: number, seq: number, ack: number, flags: number): void {
    this.sendTcpFrom(this.ip, dst, sport, dport, seq, ack, flags);
  }

  /** A TCP segment from any source address (a spoofing guest). */
  sendTcpFrom(src: number, dst: number, sport: number, dport: number, seq: number, ack: number, flags: number): void {
    const f = Buffer.alloc(54);
    writeEthernet(f, 0, this.gwMac, this.mac, ETHERTYPE_IPV4);
    writeIpv4(f, 14, src, dst, IPPROTO_TCP, 20);
    writeTcp(f, 34, sport, dport, seq, ack, flags, 65535);
    finishTcpV4(f, 34, 20, src, dst);
    this.send(f);
  }

  /** A DHCP message; `srcMac` is the Ethernet source (default: this guest's MAC). */
  dhcp(o: DhcpMsg, srcMac = this.mac): void {
    this.sendUdp(0, 68, 0xffffffff, 67, dhcpPayload(o), BCAST, srcMac);
  }

  /** The next DHCP reply for `xid`. */
  async dhcpReply(xid: number, what: string): Promise<DhcpReply> {
    const r = await this.next((x) => x.udp?.dstPort === 68 && parseDhcpReply(x.udp.payload)?.xid === xid, what);
    return parseDhcpReply(r.udp!.payload)!;
  }

  /**
   * The whole exchange for client `chaddr` (default: this guest): DISCOVER, OFFER, REQUEST,
   * ACK/NAK. Returns the reply to the REQUEST (null when the DISCOVER got no OFFER, which
   * barrier() proves). With `adopt`, the address becomes this guest's.
   */
  async lease(opts: { chaddr?: Buffer; hostname?: string; adopt?: boolean } = {}): Promise<DhcpReply | null> {
    const chaddr = opts.chaddr ?? this.mac;
    const xid = nextXid++;
    this.dhcp({ type: DHCP.DISCOVER, chaddr, xid, hostname: opts.hostname }, chaddr);
    await this.barrier();
    const offer = this.seen((x) => x.udp?.dstPort === 68 && parseDhcpReply(x.udp.payload)?.xid === xid).map((x) => parseDhcpReply(x.udp!.payload)!)[0];
    if (!offer) return null;
    this.dhcp({ type: DHCP.REQUEST, chaddr, xid, requested: offer.yiaddr, serverId: this.gwIp, hostname: opts.hostname }, chaddr);
    const reply = await this.next((x) => x.udp?.dstPort === 68 && parseDhcpReply(x.udp.payload)?.xid === xid && parseDhcpReply(x.udp.payload)?.type !== DHCP.OFFER, `the DHCP ACK for ${macToString(chaddr, 0)}`);
    const r = parseDhcpReply(reply.udp!.payload)!;
    if ((opts.adopt ?? chaddr === this.mac) && r.type === DHCP.ACK) this.ip = r.yiaddr;
    return r;
  }

  /**
   * Wait until the gateway answered an ARP probe sent now: everything the gateway sent this
   * guest before that answer has arrived by then.
   */
  async barrier(): Promise<void> {
    const n = ++this.barriers;
    this.sendArp(ARP_REQUEST, 0, ZERO, this.gwIp);
    await until(() => {
      for (; this.answered < n;) {
        const got = this.peer.frames.filter((f) => { const r = decode(f); return r.arp?.op === ARP_REPLY && r.arp.senderIp === this.gwIp && r.arp.targetIp === 0 && r.dstMac === macToString(this.mac, 0); }).length;
        if (got < n) return null;
        this.answered = got;
      }
      if (this.peer.closed) throw new Error('the connection closed while waiting for the barrier');
      return true;
    }, 'the gateway\'s answer to an ARP probe');
  }

  /** Ping the gateway (from our address) and wait for the reply. */
  async ping(dst = this.gwIp, id = 0x4242, seq = 1): Promise<void> {
    const f = Buffer.alloc(14 + 20 + 8 + 16);
    writeEthernet(f, 0, this.gwMac, this.mac, ETHERTYPE_IPV4);
    writeIpv4(f, 14, this.ip, dst, IPPROTO_ICMP, 24);
    writeIcmpv4Echo(f, 34, ICMP_ECHO_REQUEST, id, seq, 16);
    this.send(f);
    await this.next((r) => r.icmp?.type === 0 && r.icmp.id === id && r.icmp.seq === seq, `the echo reply ${id}/${seq}`);
  }

  /** A DNS A query to the gateway; resolves to the answer addresses (null: NXDOMAIN/SERVFAIL). */
  async resolve(name: string, id = 0x1234, sport = 40000 + (id & 0x3fff), dns = this.gwIp): Promise<{ rcode: number; addrs: number[] }> {
    const labels = name.split('.').flatMap((l) => [l.length, ...Buffer.from(l)]);
    this.sendUdp(this.ip, sport, dns, 53, dnsQuery(name, id));
    const r = await this.next((x) => x.udp?.srcPort === 53 && x.udp.dstPort === sport && x.udp.payload.readUInt16BE(0) === id, `the DNS answer for ${name}`);
    const p = r.udp!.payload;
    const addrs: number[] = [];
    let o = 12 + labels.length + 1 + 4;
    for (let k = 0; k < p.readUInt16BE(6); k++) {
      o += (p[o] & 0xc0) === 0xc0 ? 2 : 0;
      const type = p.readUInt16BE(o), rdlen = p.readUInt16BE(o + 8);
      if (type === 1 && rdlen === 4) addrs.push(ip4FromBuf(p, o + 10));
      o += 10 + rdlen;
    }
    return { rcode: p[3] & 0xf, addrs };
  }

  close(): void { this.peer.close(); }
}
