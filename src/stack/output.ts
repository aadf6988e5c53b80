// The send contract between protocols and whatever carries their packets to guests (the
// gateway in a network; an in-memory link in TCP's tests).
//
// A protocol never touches transmit buffers: it asks for an IP packet and passes a writer
// that fills in the L4 part, once, synchronously, in a buffer the carrier owns and reuses:
//   out.sendIp(src, dst, IPPROTO_TCP, maxLen, writer)
// The carrier then does everything that depends on the IP header or the link: the L4
// checksum where a pseudo-header is involved (TCP, UDP, and ICMPv6 once IPv6 exists), the IP
// header, fragmentation beyond the MTU, the link header and neighbour resolution. So a writer
// is family-agnostic: the same TCP segment writer serves IPv4 and IPv6. Writers leave those
// checksum fields zero; messages whose checksum needs no pseudo-header (ICMPv4) are finished
// by their writer.
//
// ICMP errors about a guest's packet are built in one place too: either quoting the packet as
// the guest sent it (sendIcmpError), or, when the packet is long gone (a host connect that
// failed, a port unreachable reported by the host kernel later), quoting a header rebuilt from
// the flow (sendIcmpErrorForFlow, with the first bytes of the L4 header).
//
// Writers are called with the carrier's buffer and the offset where the L4 header goes, and
// return the end offset. They must not keep the buffer. A writer that is a bound method or a
// closure made once per flow keeps the hot path free of per-packet allocation.

import type { TimerQueue } from './timers.ts';

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

/**
 * What a UDP service (DHCP, DNS, TFTP) needs from the segment it serves: its addressing,
 * bound ports, and a typed send. The gateway is one; a service port on a kernel bridge can
 * be another.
 */
export interface UdpHost {
  readonly net: number;
  readonly prefix: number;
  readonly broadcast: number;
  readonly mtu: number;
  /** the segment's timers (and clock) */
  readonly timers: TimerQueue;
  /** the addresses the services answer on */
  readonly addrs: ReadonlySet<number>;
  isLocal(ip: number): boolean;
  /** datagrams to ip:port (ip 0 = any of our addresses) go to h */
  bindUdp(ip: number, port: number, h: UdpHandler): void;
  unbindUdp(ip: number, port: number): void;
  /** dstMac forces the link destination (a DHCP client without an address yet) */
  sendUdp(src: number, sport: number, dst: number, dport: number, payload: Buffer, dstMac?: Buffer): void;
}

/** Fills buf from `off` with an L4 message (checksum fields left to the carrier); returns the end offset. */
export type L4Writer = (buf: Buffer, off: number) => number;

/** An IPv4 packet the guest sent, as handed to protocols (borrowed for the call only). */
export interface QuotedPacket {
  buf: Buffer;
  /** offset of the IP header in buf */
  ipOff: number;
  /** end of the IP packet in buf */
  end: number;
  /** the guest's source address (the ICMP error goes back to it) */
  src: number;
  /** link address the packet came from; the error goes straight back there */
  srcMac: Buffer;
}

export interface IpOutput {
  /** largest IP packet towards guests (larger ones are fragmented) */
  readonly mtu: number;
  /**
   * Send one IP packet towards a guest. `maxLen` bounds what the writer may write. dstMac
   * forces the link destination (DHCP to a client without an address); otherwise the
   * destination is resolved (and the packet held until it is).
   */
  sendIp(src: number, dst: number, proto: number, maxLen: number, write: L4Writer, dstMac?: Buffer): void;
  /** ICMP error about a packet as the guest sent it (RFC 792/1812 quoting). */
  sendIcmpError(type: number, code: number, from: number, p: QuotedPacket, rest?: number): void;
  /**
   * ICMP error about a guest flow whose packet is gone: the quoted IP header (guest -> dst,
   * proto) is rebuilt and followed by `l4head`, the first bytes of the flow's L4 header;
   * `l4len` is the L4 length the rebuilt header claims (default: l4head's).
   */
  sendIcmpErrorForFlow(type: number, code: number, from: number, guest: number, dst: number, proto: number, l4head: Buffer, l4len?: number): void;
}
