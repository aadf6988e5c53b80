// Source validation for a userspace network's guest ports (what libvirt's clean-traffic
// filter does on a bridge): a port may send only from addresses it holds, so a guest can
// neither impersonate another nor escape its limits by inventing sources. The switch asks
// check() for every frame a guest port sends on the gateway's VLAN (Switch's SwitchPort.guard);
// a frame it refuses is dropped and counted per port and reason.
//
// What a port holds (IPv4 and, when the network has it, IPv6):
//   - an address DHCP(v6) gave one of its MACs (a live lease or a held offer) or a static
//     host's address for one of its MACs: these always win; the address moves to the port
//     whose MAC it belongs to, and whatever another port had running from it is closed;
//   - an address nobody owns that it sends from first ("learned": guests with static
//     configuration, SLAAC and link-local addresses), at most `max4` / `max6` per port. At
//     the cap the port's least recently used learned address is given up if it has been idle
//     for `evictIdleMs` (its flows closed), else the new address is refused (reported).
// Never: the unspecified address (except DHCP from 0.0.0.0:68 to :67 and, for IPv6, DAD
// neighbour solicitations, router solicitations and MLD), the gateway's own addresses, the
// subnet's network and broadcast addresses, anything off the subnet (IPv4 link-local
// 169.254/16 aside) or off the prefix (IPv6 link-local fe80::/10 aside). ARP must carry the
// frame's own source MAC and a held (or probing, 0.0.0.0) sender; a neighbour advertisement
// must advertise a held target. IPv6 is checked only on networks that have it (elsewhere the
// gateway ignores it, and guests may use it among themselves).
//
// Hot path: one ethertype read and one address compare per frame against the port's last
// source (a one-entry cache per family); else a map lookup (IPv6: first a lookup in the
// address table); the rest runs only for an address the port does not hold yet.
// Memory: at most max4 + max6 learned addresses per port, plus leased ones (bounded by DHCP's
// per-port limit); everything a port held goes when the port goes.
import type { Port } from '../link/port.ts';
import type { Clock } from '../stack/timers.ts';
import { ip6, refAddr, unrefAddr } from '../stack/addr.ts';
import { equal16, macKey, macKeyToBuf } from '../wire/addr.ts';

/** Why a frame was refused (per port, and in total). */
export interface GuardDrops {
  /** IPv4 source off the subnet, IPv6 source off the prefix and not link-local, or a multicast source */
  offSubnet: number;
  /** the gateway's own address, or the subnet's network or broadcast address */
  reserved: number;
  /** an address another port holds (or DHCP gave another MAC) */
  taken: number;
  /** the unspecified address outside DHCP and neighbour discovery */
  unspecified: number;
  /** a new address beyond the port's cap while its others are in use */
  tooMany: number;
  /** ARP whose sender MAC is not the frame's, or a packet too short to have a source */
  malformed: number;
}

function drops(): GuardDrops { return { offSubnet: 0, reserved: 0, taken: 0, unspecified: 0, tooMany: 0, malformed: 0 }; }

/** One port's addresses. */
export class PortAddrs {
  readonly drops = drops();
  /** every address it holds -> whether it was learned (counts against the cap) */
  readonly held = new Map<number, Holder>();
  learned4 = 0;
  learned6 = 0;
  /** the last source that passed, per family (its holder still live) */
  last4 = -1;
  last4h: Holder | null = null;
  readonly last6 = Buffer.alloc(16);
  last6h: Holder | null = null;
  constructor(readonly port: Port) {}
}

interface Holder {
  st: PortAddrs;
  /** still held (a cache entry pointing here is valid) */
  live: boolean;
  learned: boolean;
  v6: boolean;
  /** clock ms of the last frame from it */
  seen: number;
}

export interface SourceGuardOptions {
  /** the IPv4 subnet */
  net: number;
  prefix: number;
  /** the gateway's own addresses (either family, its link-local included) */
  gatewayOwns: (addr: number) => boolean;
  /** the IPv6 prefix (masked), when the network has IPv6 */
  prefix6: { prefix: Buffer; len: number } | null;
  /** the MAC key an IPv4 address belongs to (static host, lease, offer), or -1 */
  owner4: (ip: number) => number;
  /** the MAC an IPv6 address (16 bytes at b[o]) belongs to (DHCPv6), or null */
  owner6: (b: Buffer, o: number) => Buffer | null;
  /** the port a MAC (6 bytes at b[o]) was learned on */
  portOfMac: (b: Buffer, o: number) => Port | undefined;
  /** learned addresses per port; default 4 (IPv4) and 16 (IPv6) */
  max4?: number;
  max6?: number;
  /** a learned address idle this long may be given up for a new one at the cap; default 60 s */
  evictIdleMs?: number;
  clock: Clock;
  /** `addr` left `from` (another port's lease took it, or its own cap): close what it had from it */
  onRelease: (addr: number, from: Port, why: string) => void;
  /** a port hit its cap of learned addresses */
  onTooMany: (port: Port, max: number, v6: boolean) => void;
}

const ETH_ARP = 0x0806;
const ETH_IP4 = 0x0800;
const ETH_IP6 = 0x86dd;

export class SourceGuard {
  /** address -> holder */
  private readonly holders = new Map<number, Holder>();
  private readonly ports = new Map<Port, PortAddrs>();
  readonly drops = drops();
  private readonly mask: number;
  private readonly broadcast: number;
  private readonly max4: number;
  private readonly max6: number;
  private readonly evictIdleMs: number;

  constructor(private readonly o: SourceGuardOptions) {
    this.mask = o.prefix === 0 ? 0 : (0xffffffff << (32 - o.prefix)) >>> 0;
    this.broadcast = ((o.net & this.mask) | ~this.mask) >>> 0;
    this.max4 = o.max4 ?? 4;
    this.max6 = o.max6 ?? 16;
    this.evictIdleMs = o.evictIdleMs ?? 60_000;
  }

  /** Start guarding a port: the check the switch runs on its frames. */
  add(port: Port, vlan: number): { st: PortAddrs; check: (frame: Buffer, l3: number, vid: number) => boolean } {
    const st = new PortAddrs(port);
    this.ports.set(port, st);
    // other VLANs never reach the gateway: guests may address each other there as they like
    return { st, check: (frame, l3, vid) => vid !== vlan || this.check(st, frame, l3) };
  }

  /** The port gone: everything it held is free. Returns the addresses it held. */
  remove(port: Port): number[] {
    const st = this.ports.get(port);
    if (!st) return [];
    this.ports.delete(port);
    const out = [...st.held.keys()];
    for (const a of out) this.release(a);
    return out;
  }

  /** The port holding an address now (null: none). */
  holderOf(addr: number): Port | null { return this.holders.get(addr)?.st.port ?? null; }

  /** What a port holds (for status and tests). */
  addressesOf(port: Port): number[] { return [...(this.ports.get(port)?.held.keys() ?? [])]; }

  portAddrs(port: Port): PortAddrs | undefined { return this.ports.get(port); }

  /** Whether the port may send this frame; the frame's IP part (or ARP) starts at l3. */
  check(st: PortAddrs, f: Buffer, l3: number): boolean {
    const et = (f[l3 - 2] << 8) | f[l3 - 1];
    if (et === ETH_IP4) {
      if (f.length < l3 + 20) return this.drop(st, 'malformed');
      const src = f.readUInt32BE(l3 + 12);
      const c = st.last4h;
      if (c !== null && src === st.last4 && c.live) { c.seen = this.o.clock.now(); return true; }
      const h = this.holders.get(src);
      if (h !== undefined && h.st === st) { h.seen = this.o.clock.now(); st.last4 = src; st.last4h = h; return true; }
      if (src === 0) {
        // DHCP from a client without an address: UDP 0.0.0.0:68 -> :67
        const ihl = (f[l3] & 0x0f) * 4;
        if (f[l3 + 9] === 17 && f.length >= l3 + ihl + 4 && f.readUInt16BE(l3 + ihl) === 68 && f.readUInt16BE(l3 + ihl + 2) === 67) return true;
        return this.drop(st, 'unspecified');
      }
      return this.claim4(st, src, f);
    }
    if (et === ETH_IP6) {
      if (this.o.prefix6 === null) return true;
      if (f.length < l3 + 40) return this.drop(st, 'malformed');
      const c = st.last6h;
      if (c !== null && c.live && equal16(f, l3 + 8, st.last6, 0) && (f[l3 + 6] !== 58 || f[l3 + 40] !== 136)) { c.seen = this.o.clock.now(); return true; }
      if (!this.source6(st, f, l3 + 8, true)) return false;
      // a neighbour advertisement claims its target
      if (f[l3 + 6] === 58 && f[l3 + 40] === 136 && f.length >= l3 + 64) return this.source6(st, f, l3 + 48, false);
      return true;
    }
    if (et === ETH_ARP) {
      if (f.length < l3 + 28 || f[l3 + 4] !== 6 || f[l3 + 5] !== 4) return this.drop(st, 'malformed');
      // the sender MAC is the frame's own (else the gateway would learn a lie)
      for (let i = 0; i < 6; i++) if (f[l3 + 8 + i] !== f[6 + i]) return this.drop(st, 'malformed');
      const spa = f.readUInt32BE(l3 + 14);
      if (spa === 0) return true; // an ARP probe (RFC 5227)
      const h = this.holders.get(spa);
      if (h !== undefined && h.st === st) { h.seen = this.o.clock.now(); return true; }
      return this.claim4(st, spa, f);
    }
    return true; // nothing the gateway or the NATs act on
  }

  private drop(st: PortAddrs, why: keyof GuardDrops): false {
    st.drops[why]++;
    this.drops[why]++;
    return false;
  }

  /** An IPv4 address the port does not hold yet. */
  private claim4(st: PortAddrs, a: number, f: Buffer): boolean {
    const linkLocal = (a >>> 16) === 0xa9fe;
    if (!linkLocal) {
      if (((a & this.mask) >>> 0) !== ((this.o.net & this.mask) >>> 0)) return this.drop(st, 'offSubnet');
      if (a === this.o.net || a === this.broadcast || this.o.gatewayOwns(a)) return this.drop(st, 'reserved');
      const owner = this.o.owner4(a);
      if (owner >= 0) return this.ownedBy(st, a, false, owner === macKey(f, 6) || this.ownerHere(st, owner));
    }
    return this.learn(st, a, false);
  }

  /** Is the MAC (as a key) learned on this port? */
  private ownerHere(st: PortAddrs, key: number): boolean {
    macKeyToBuf(key, this.keyBuf, 0);
    return this.o.portOfMac(this.keyBuf, 0) === st.port;
  }

  private readonly keyBuf = Buffer.alloc(6);

  /** An IPv6 address at f[o] used by the port as a source (or advertised as an NA target). */
  private source6(st: PortAddrs, f: Buffer, o: number, isSource: boolean): boolean {
    const id = ip6.lookup(f, o);
    if (id >= 0) {
      const h = this.holders.get(id);
      if (h !== undefined && h.st === st) {
        h.seen = this.o.clock.now();
        if (isSource) { f.copy(st.last6, 0, o, o + 16); st.last6h = h; }
        return true;
      }
    }
    const b0 = f[o];
    if (b0 === 0xff) return this.drop(st, 'offSubnet');
    if (isSource && b0 === 0 && this.unspecified6(f, o)) {
      // DAD solicitations, router solicitations and MLD reports come from ::
      const l3 = o - 8;
      const nh = f[l3 + 6];
      if (nh === 0) return true; // hop-by-hop options: MLD
      if (nh === 58 && f.length > l3 + 40) {
        const t = f[l3 + 40];
        if (t === 133 || t === 135 || t === 143 || t === 131 || t === 132) return true;
      }
      return this.drop(st, 'unspecified');
    }
    const linkLocal = b0 === 0xfe && (f[o + 1] & 0xc0) === 0x80;
    const p6 = this.o.prefix6!;
    if (!linkLocal && !inPrefixBytes(f, o, p6.prefix, p6.len)) return this.drop(st, 'offSubnet');
    const a = id >= 0 ? id : ip6.intern(f, o);
    if (a < 0) return this.drop(st, 'tooMany'); // the address table is full of referenced addresses
    if (this.o.gatewayOwns(a)) return this.drop(st, 'reserved');
    if (!linkLocal) {
      const owner = this.o.owner6(f, o);
      if (owner !== null) return this.ownedBy(st, a, true, owner.equals(f.subarray(6, 12)) || this.o.portOfMac(owner, 0) === st.port);
    }
    return this.learn(st, a, true);
  }

  private unspecified6(f: Buffer, o: number): boolean {
    for (let i = 0; i < 16; i++) if (f[o + i] !== 0) return false;
    return true;
  }

  /** An address DHCP or a static host gives a MAC: the port with that MAC gets it, nobody else. */
  private ownedBy(st: PortAddrs, a: number, v6: boolean, ours: boolean): boolean {
    if (!ours) return this.drop(st, 'taken');
    const h = this.holders.get(a);
    if (h !== undefined) {
      const from = h.st.port;
      this.release(a);
      this.o.onRelease(a, from, 'its address was leased to a guest on another port');
    }
    this.hold(st, a, v6, false);
    return true;
  }

  /** An address nobody owns: first come, up to the port's cap. */
  private learn(st: PortAddrs, a: number, v6: boolean): boolean {
    const h = this.holders.get(a);
    if (h !== undefined) return this.drop(st, 'taken');
    const max = v6 ? this.max6 : this.max4;
    if ((v6 ? st.learned6 : st.learned4) >= max) {
      const now = this.o.clock.now();
      let oldest = -1;
      let at = Infinity;
      for (const [x, hx] of st.held) if (hx.learned && hx.v6 === v6 && hx.seen < at) { at = hx.seen; oldest = x; }
      if (oldest < 0 || now - at < this.evictIdleMs) {
        this.o.onTooMany(st.port, max, v6);
        return this.drop(st, 'tooMany');
      }
      this.release(oldest);
      this.o.onRelease(oldest, st.port, 'the port used more addresses than it may hold');
    }
    this.hold(st, a, v6, true);
    return true;
  }

  private hold(st: PortAddrs, a: number, v6: boolean, learned: boolean): void {
    const h: Holder = { st, live: true, learned, v6, seen: this.o.clock.now() };
    this.holders.set(a, h);
    st.held.set(a, h);
    if (learned) { if (v6) st.learned6++; else st.learned4++; }
    refAddr(a);
  }

  private release(a: number): void {
    const h = this.holders.get(a);
    if (h === undefined) return;
    this.holders.delete(a);
    h.live = false;
    h.st.held.delete(a);
    if (h.learned) { if (h.v6) h.st.learned6--; else h.st.learned4--; }
    unrefAddr(a);
  }
}

/** Whether the 16 bytes at b[o] are inside prefix/len. */
function inPrefixBytes(b: Buffer, o: number, prefix: Buffer, len: number): boolean {
  let i = 0;
  for (; (i + 1) * 8 <= len; i++) if (b[o + i] !== prefix[i]) return false;
  const rest = len - i * 8;
  if (rest === 0) return true;
  const m = (0xff << (8 - rest)) & 0xff;
  return (b[o + i] & m) === prefix[i];
}
