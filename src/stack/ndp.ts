// Neighbor Discovery (RFC 4861) for the gateway: the IPv6 neighbour table, beside ARP for IPv4.
//
// - Learning: a guest's address is learned from neighbor solicitations (source link-layer
//   option) and advertisements (target link-layer option, else the frame's source MAC), and
//   from IPv6 sources on the segment; only on-link unicast addresses (link-local or on the
//   network's prefix), never the gateway's own, at most MAX_NEIGHBOURS of them. Learned
//   addresses are referenced in the address table while they are neighbours.
// - Answers: a solicitation for one of the gateway's addresses gets an advertisement (router,
//   solicited and override flags, our MAC). A solicitation for any other address is never
//   answered: in particular duplicate address detection (source ::) by a guest for its own
//   tentative address stays unanswered, so the guest keeps its address.
// - Resolution: a packet to an unknown neighbour is held (HELD_PER_DEST frames for at most
//   MAX_PENDING destinations) while a solicitation goes to the solicited-node multicast
//   address, at most one per destination per second; held frames go when the advertisement
//   arrives and are dropped after HOLD_MS without one.
// - Every NDP message must arrive with hop limit 255 (RFC 4861 7.1.1); others are dropped by
//   the caller. Router advertisements are a service (services/router-adv.ts); guests' own
//   router advertisements and redirects are ignored.
import { ND_NA_OVERRIDE, ND_NA_ROUTER, ND_NA_SOLICITED, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, type Icmpv6Header, writeNeighborAdvert, writeNeighborSolicit } from '../wire/icmpv6.ts';
import { solicitedNode } from '../wire/ipv6.ts';
import { ip6, refAddr, unrefAddr } from './addr.ts';
import { Timer, type TimerQueue } from './timers.ts';
import { macEquals } from '../wire/addr.ts';

const MAX_NEIGHBOURS = 4096;
const MAX_PENDING = 64;
const HELD_PER_DEST = 16;
const HOLD_MS = 3000;
const REQUEST_INTERVAL_MS = 1000;
const ALL_NODES = Buffer.from('ff020000000000000000000000000001', 'hex');

/** What NDP needs from its gateway. */
export interface NdpHost {
  readonly mac: Buffer;
  readonly timers: TimerQueue;
  /** an address the gateway answers for */
  owns(a: number): boolean;
  /** link-local or on the prefix, unicast, not unspecified */
  isNeighbourAddress(a: number): boolean;
  /** the link-local address solicitations come from */
  readonly linkLocal: number;
  /** an ICMPv6 message with hop limit 255 from src to the IPv6 address `dst` (16 bytes), to dstMac */
  sendNd(src: number, dst: Buffer, len: number, write: (buf: Buffer, off: number) => number, dstMac: Buffer | null): void;
  /** queue a frame that was held for resolution (its destination MAC now filled in) */
  sendHeld(frame: Buffer): void;
}

interface Pending { frames: Buffer[]; timer: Timer; lastRequest: number }

export class Ndp {
  readonly neighbours = new Map<number, { mac: Buffer }>();
  readonly stats = { advertisements: 0, solicitations: 0, unresolved: 0, heldDropped: 0, dadIgnored: 0 };
  /** a guest's address seen for the first time or with a new MAC */
  onNeighbour: ((a: number, mac: Buffer) => void) | null = null;
  private readonly pending = new Map<number, Pending>();
  private readonly target = Buffer.alloc(16);
  private readonly group = Buffer.alloc(16);

  constructor(private readonly host: NdpHost) {}

  /**
   * An NS or NA (already checked: hop limit 255, valid options). src is the sender's address
   * id (-1 for the unspecified address), srcMac the frame's source MAC.
   */
  input(icmp: Icmpv6Header, buf: Buffer, src: number, srcMac: Buffer): void {
    if (icmp.targetOffset < 0) return;
    buf.copy(this.target, 0, icmp.targetOffset, icmp.targetOffset + 16);
    if (this.target[0] === 0xff) return; // a multicast target is invalid (RFC 4861 7.1)
    const target = ip6.lookup(this.target, 0);
    if (icmp.type === ND_NEIGHBOR_SOLICIT) {
      if (src >= 0 && icmp.srcLinkAddrOffset >= 0) this.learn(src, buf, icmp.srcLinkAddrOffset);
      if (target < 0 || !this.host.owns(target)) {
        if (src < 0) this.stats.dadIgnored++; // a guest checking its own tentative address
        return;
      }
      this.advertise(target, src, src >= 0 ? (icmp.srcLinkAddrOffset >= 0 ? buf.subarray(icmp.srcLinkAddrOffset, icmp.srcLinkAddrOffset + 6) : srcMac) : null);
      return;
    }
    if (icmp.type === ND_NEIGHBOR_ADVERT && target >= 0) {
      if (icmp.tgtLinkAddrOffset >= 0) this.learn(target, buf, icmp.tgtLinkAddrOffset);
      else this.learn(target, srcMac, 0);
    }
  }

  /** Our NA for `target` to the soliciting `to` (or all nodes for DAD). */
  private advertise(target: number, to: number, toMac: Buffer | null): void {
    const mac = this.host.mac;
    const t = Buffer.from(ip6.bytes(target));
    const flags = ND_NA_ROUTER | ND_NA_OVERRIDE | (to >= 0 ? ND_NA_SOLICITED : 0);
    const dst = to >= 0 ? Buffer.from(ip6.bytes(to)) : ALL_NODES;
    this.host.sendNd(target, dst, 32, (b, o) => writeNeighborAdvert(b, o, t, flags, mac), toMac);
    this.stats.advertisements++;
  }

  /** Learn a -> the MAC at mac[macOff] (NDP, or an IPv6 source on the segment). */
  learn(a: number, mac: Buffer, macOff: number): void {
    if (!this.host.isNeighbourAddress(a) || this.host.owns(a)) return;
    if (mac[macOff] & 1) return;
    const n = this.neighbours.get(a);
    if (n && macEquals(n.mac, 0, mac, macOff)) return;
    if (!n) {
      if (this.neighbours.size >= MAX_NEIGHBOURS) return;
      refAddr(a);
    }
    const m = Buffer.from(mac.subarray(macOff, macOff + 6));
    this.neighbours.set(a, { mac: m });
    this.onNeighbour?.(a, m);
    const p = this.pending.get(a);
    if (p) {
      this.pending.delete(a);
      this.host.timers.cancel(p.timer);
      unrefAddr(a);
      for (const f of p.frames) { m.copy(f, 0); this.host.sendHeld(f); }
    }
  }

  resolve(dst: number): Buffer | null {
    return this.neighbours.get(dst)?.mac ?? null;
  }

  /** Hold a copy of `frame` (destination MAC unknown) and solicit `dst`. */
  hold(dst: number, frame: Buffer): void {
    this.stats.unresolved++;
    let p = this.pending.get(dst);
    if (!p) {
      if (this.pending.size >= MAX_PENDING) { this.stats.heldDropped++; return; }
      const entry: Pending = {
        frames: [], lastRequest: -Infinity,
        timer: new Timer(() => {
          this.stats.heldDropped += entry.frames.length;
          this.pending.delete(dst);
          unrefAddr(dst);
        }),
      };
      p = entry;
      refAddr(dst);
      this.pending.set(dst, p);
    }
    if (p.frames.length < HELD_PER_DEST) p.frames.push(Buffer.from(frame));
    else this.stats.heldDropped++;
    const now = this.host.timers.now();
    if (now - p.lastRequest < REQUEST_INTERVAL_MS) return;
    p.lastRequest = now;
    this.host.timers.arm(p.timer, HOLD_MS);
    const t = Buffer.from(ip6.bytes(dst));
    const group = solicitedNode(t, this.group);
    const mac = this.host.mac;
    this.host.sendNd(this.host.linkLocal, Buffer.from(group), 32, (b, o) => writeNeighborSolicit(b, o, t, mac), null);
    this.stats.solicitations++;
  }

  forget(a: number): void {
    if (this.neighbours.delete(a)) unrefAddr(a);
  }

  close(): void {
    for (const [a, p] of this.pending) { this.host.timers.cancel(p.timer); unrefAddr(a); }
    this.pending.clear();
    for (const a of this.neighbours.keys()) unrefAddr(a);
    this.neighbours.clear();
  }
}
