// ARP (RFC 826) and the gateway's IPv4 neighbour table.
//
// - Learning: a guest's address is learned from ARP (sender fields) and from IPv4 sources on
//   the segment; only on-link, unicast, non-gateway addresses are kept, at most MAX_NEIGHBOURS
//   of them (a guest sending from random addresses cannot grow the table without bound).
// - Replies: requests for one of the gateway's own addresses are answered (gratuitous ARP,
//   sender = target, is learned from but never answered).
// - Resolution: a packet to an unknown neighbour is held (at most HELD_PER_DEST frames for at
//   most MAX_PENDING destinations) while a request goes out, at most one per destination per
//   second; held frames go when the answer arrives and are dropped after HOLD_MS without one.
// All time comes from the gateway's timer queue.
import { ArpPacket, ARP_REPLY, ARP_REQUEST, parseArp, writeArp } from '../wire/arp.ts';
import { ETHERTYPE_ARP, writeEthernet } from '../wire/ethernet.ts';
import { Timer, type TimerQueue } from './timers.ts';
import { macEquals } from '../wire/addr.ts';

const MAX_NEIGHBOURS = 4096;
const MAX_PENDING = 64;
const HELD_PER_DEST = 16;
const HOLD_MS = 3000;
const REQUEST_INTERVAL_MS = 1000;
const BROADCAST_MAC = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
const ZERO_MAC = Buffer.alloc(6);

export interface Neighbour { mac: Buffer }

/** What ARP needs from its gateway. */
export interface ArpHost {
  readonly mac: Buffer;
  readonly timers: TimerQueue;
  /** an address the gateway answers for */
  owns(ip: number): boolean;
  /** on the segment, not the network or broadcast address */
  isNeighbourAddress(ip: number): boolean;
  /** the address ARP requests come from */
  primaryAddress(): number;
  /** queue a link frame of `len` bytes written by `write` at offset 0 of a buffer */
  sendFrame(len: number, write: (buf: Buffer, off: number) => void): void;
  /** queue a frame that was held for resolution (its destination MAC now filled in) */
  sendHeld(frame: Buffer): void;
}

interface Pending { frames: Buffer[]; timer: Timer; lastRequest: number }

export class Arp {
  readonly neighbours = new Map<number, Neighbour>();
  readonly stats = { replies: 0, requests: 0, unresolved: 0, heldDropped: 0 };
  /** a guest's address seen for the first time or with a new MAC */
  onNeighbour: ((ip: number, mac: Buffer) => void) | null = null;
  private readonly pending = new Map<number, Pending>();
  private readonly pkt = new ArpPacket();

  constructor(private readonly host: ArpHost) {}

  /** An ARP packet at frame[off, end); returns an error string for malformed input. */
  input(frame: Buffer, off: number, end: number): string | null {
    const a = this.pkt;
    const err = parseArp(frame, off, end, a);
    if (err) return err;
    this.learn(a.senderIp, frame, a.senderMacOffset);
    if (a.op === ARP_REQUEST && this.host.owns(a.targetIp) && a.senderIp !== a.targetIp) {
      const senderMac = frame.subarray(a.senderMacOffset, a.senderMacOffset + 6);
      const senderIp = a.senderIp;
      const targetIp = a.targetIp;
      const mac = this.host.mac;
      this.host.sendFrame(14 + 28, (b, o) => {
        writeEthernet(b, o, senderMac, mac, ETHERTYPE_ARP);
        writeArp(b, o + 14, ARP_REPLY, mac, targetIp, senderMac, senderIp);
      });
      this.stats.replies++;
    }
    return null;
  }

  /** Learn ip -> the MAC at mac[macOff] (from ARP or an IPv4 source on the segment). */
  learn(ip: number, mac: Buffer, macOff: number): void {
    if (ip === 0 || !this.host.isNeighbourAddress(ip) || this.host.owns(ip)) return;
    if (mac[macOff] & 1) return;
    const n = this.neighbours.get(ip);
    if (n && macEquals(n.mac, 0, mac, macOff)) return;
    if (!n && this.neighbours.size >= MAX_NEIGHBOURS) return;
    const m = Buffer.from(mac.subarray(macOff, macOff + 6));
    this.neighbours.set(ip, { mac: m });
    this.onNeighbour?.(ip, m);
    const p = this.pending.get(ip);
    if (p) {
      this.pending.delete(ip);
      this.host.timers.cancel(p.timer);
      for (const f of p.frames) { m.copy(f, 0); this.host.sendHeld(f); }
    }
  }

  /** The MAC of an on-link destination, or null (then hold the frame with hold()). */
  resolve(dst: number): Buffer | null {
    return this.neighbours.get(dst)?.mac ?? null;
  }

  /** Hold a copy of `frame` (destination MAC unknown) and ask who has `dst`. */
  hold(dst: number, frame: Buffer): void {
    this.stats.unresolved++;
    let p = this.pending.get(dst);
    if (!p) {
      if (this.pending.size >= MAX_PENDING) { this.stats.heldDropped++; return; }
      const entry: Pending = {
        frames: [], lastRequest: -Infinity,
        timer: new Timer(() => {
          // nobody answered: give up on what was held
          this.stats.heldDropped += entry.frames.length;
          this.pending.delete(dst);
        }),
      };
      p = entry;
      this.pending.set(dst, p);
    }
    if (p.frames.length < HELD_PER_DEST) p.frames.push(Buffer.from(frame));
    else this.stats.heldDropped++;
    const now = this.host.timers.now();
    if (now - p.lastRequest < REQUEST_INTERVAL_MS) return;
    p.lastRequest = now;
    this.host.timers.arm(p.timer, HOLD_MS);
    const src = this.host.primaryAddress();
    const mac = this.host.mac;
    this.host.sendFrame(14 + 28, (b, o) => {
      writeEthernet(b, o, BROADCAST_MAC, mac, ETHERTYPE_ARP);
      writeArp(b, o + 14, ARP_REQUEST, mac, src, ZERO_MAC, dst);
    });
    this.stats.requests++;
  }

  /** Forget a neighbour (its port went away). */
  forget(ip: number): void { this.neighbours.delete(ip); }

  close(): void {
    for (const p of this.pending.values()) this.host.timers.cancel(p.timer);
    this.pending.clear();
  }
}
