// The DHCPv6 server's address pool and bindings, kept apart from the protocol (as
// dhcp-leases.ts is for DHCPv4): who has which address, until when, and which address a client
// may have next.
//
// - A client is its link address and its DUID together (the key `mac/duid`). RFC 8415 names a
//   client by its DUID alone, but VMs cloned from one image often share a DUID (systemd derives
//   it from /etc/machine-id, dhclient and dhcpcd keep it in a file on the disk image): keyed by
//   DUID alone, two clones would take each other's address. On a virtual segment without relays
//   the MAC in the frame is the client's own, so the pair costs nothing and separates clones.
// - One binding per client, holding one address for one IA_NA (its IAID recorded), kept after
//   the lease expires or is released: the same client gets the same address again for as long
//   as nobody else took it; a client with a new DUID on a known MAC (a reinstalled guest) is
//   offered the MAC's previous address when that binding is no longer in use.
// - Addresses are 128-bit bigints here (Map keys by value); the protocol side sees 16-byte
//   Buffers and the lease records text. Nothing here holds an interned address id.
// - The range may be huge (a /64 has 2^64 addresses), so the pool is never scanned: fresh
//   addresses come from a cursor that only moves up (skipping the gateway's own, static and
//   RFC 4291/2526 reserved addresses: interface id 0, the subnet-router anycast, and the top 128
//   interface ids of 64-bit ids), and that wraps to the start at the end of the range, so an
//   address whose binding went away (its client moved, a decline hold ran out) is found again
//   on the next lap. A lap step is bounded per allocation (the longest run of taken addresses
//   is bounded by what is held), so an allocation costs O(maxLeases) at worst.
//   Memory is bounded by `maxLeases` (plus the static hosts): bindings and held-down addresses
//   together never exceed it. When it is reached, or the range is used up, the binding that
//   went out of use longest ago is reclaimed; when every binding is in use, there is no
//   address (NoAddrsAvail).
// - An ADVERTISEd address is held for its client for `offerHoldMs`; a DECLINEd address is not
//   handed out for `declineHoldMs`.
// - There are no timers: expiry and hold-downs are checked lazily against the injected clock.
// - Static hosts (by MAC, by DUID, or by both, which must then both match) always get their
//   address, which may lie anywhere on the prefix and is never in the dynamic pool.
//   export()/import() carry bindings across restarts as JSON records.
import { ip6ToString, macToString, parseIp6, parseMac } from '../wire/addr.ts';
import { sanitizeHostname } from './dhcp-codec.ts';
import { duidToString, parseDuid } from './dhcp6-codec.ts';

export interface StaticHost6 {
  /** 'aa:bb:cc:dd:ee:ff' */
  mac?: string;
  /** hex, bytes optionally separated by ':' or '-' */
  duid?: string;
  /** an address on the prefix */
  ip: string;
  hostname?: string;
}

/** A lease as the API reports it (and as it is persisted: every field is JSON). */
export interface Lease6 {
  mac: string;
  /** colon-separated hex */
  duid: string;
  iaid: number;
  /** RFC 5952 text */
  ip: string;
  hostname?: string;
  /** ms since the epoch: the end of the valid lifetime */
  expiresAt: number;
}

/** JSON form of a lease for persistence. */
export type LeaseRecord6 = Lease6;

/** Who is asking: the frame's source MAC and the Client Identifier's DUID. */
export interface Client6 {
  mac: Buffer;
  duid: Buffer;
  key: string;
}

export function client6(mac: Buffer, duid: Buffer): Client6 {
  return { mac, duid, key: `${mac.toString('hex', 0, 6)}/${duid.toString('hex')}` };
}

export interface Binding6 {
  key: string;
  mac: Buffer;
  duid: Buffer;
  iaid: number;
  addr: bigint;
  hostname?: string;
  /** ms; end of the valid lifetime (meaningful once bound) */
  expiresAt: number;
  /** ms; an advertised address is held for the client until then */
  offerUntil: number;
  /** ever committed by a Reply (else only advertised) */
  bound: boolean;
}

interface Static6 {
  mac: Buffer | null;
  duid: Buffer | null;
  addr: bigint;
  hostname?: string;
}

export interface LeaseStore6Options {
  /** 16 bytes and length */
  prefix: Buffer;
  prefixLen: number;
  /** first and last dynamic address (on the prefix); null: no dynamic pool */
  range: { start: bigint; end: bigint } | null;
  /** addresses never handed out (the gateway's own) */
  reserved: (a: bigint) => boolean;
  staticHosts?: StaticHost6[];
  /** bindings plus held-down addresses, static hosts not counted */
  maxLeases: number;
  declineHoldMs: number;
  offerHoldMs: number;
  now: () => number;
}

const MASK64 = (1n << 64n) - 1n;

export function addrToBig(b: Buffer, off = 0): bigint {
  return (b.readBigUInt64BE(off) << 64n) | b.readBigUInt64BE(off + 8);
}

export function bigToAddr(a: bigint): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE((a >> 64n) & MASK64, 0);
  b.writeBigUInt64BE(a & MASK64, 8);
  return b;
}

export function bigToString(a: bigint): string {
  return ip6ToString(bigToAddr(a), 0);
}

/** Until when the binding's address is taken (lease or advertise hold). */
function busyUntil(b: Binding6): number {
  return Math.max(b.bound ? b.expiresAt : 0, b.offerUntil);
}

export function toLease6(b: Binding6): Lease6 {
  const l: Lease6 = { mac: macToString(b.mac, 0), duid: duidToString(b.duid), iaid: b.iaid, ip: bigToString(b.addr), expiresAt: b.expiresAt };
  if (b.hostname !== undefined) l.hostname = b.hostname;
  return l;
}

export class LeaseStore6 {
  private readonly byKey = new Map<string, Binding6>();
  private readonly byAddr = new Map<bigint, Binding6>();
  /** address -> until when it stays unused */
  private readonly declined = new Map<bigint, number>();
  /** the next address the cursor looks at */
  private next: bigint;
  /** most cursor steps one allocation takes (enough to cross the longest run of taken addresses) */
  private readonly maxSteps: bigint;
  private readonly staticsByDuid = new Map<string, Static6[]>();
  private readonly staticsByMac = new Map<string, Static6[]>();
  private readonly staticAddrs = new Set<bigint>();
  private readonly capacity: number;
  private readonly prefixBits: bigint;
  private readonly hostBits: bigint;
  readonly now: () => number;

  constructor(private readonly o: LeaseStore6Options, checkHostname: (h: string) => string) {
    this.now = o.now;
    if (o.prefix.length !== 16 || !(o.prefixLen >= 1 && o.prefixLen <= 128)) throw new Error('dhcp6: bad prefix');
    this.hostBits = BigInt(128 - o.prefixLen);
    this.prefixBits = addrToBig(o.prefix) >> this.hostBits;
    if (!(Number.isInteger(o.maxLeases) && o.maxLeases >= 1)) throw new Error('dhcp6: bad maxLeases');
    if (o.range) {
      const { start, end } = o.range;
      if (!this.inPrefix(start) || !this.inPrefix(end)) throw new Error('dhcp6: the range is not on the prefix');
      if (start > end) throw new Error('dhcp6: the range ends before it starts');
    }
    this.next = o.range ? o.range.start : 0n;
    for (const h of o.staticHosts ?? []) {
      const mac = h.mac === undefined ? null : parseMac(h.mac);
      const duid = h.duid === undefined ? null : parseDuid(h.duid);
      if (h.mac !== undefined && !mac) throw new Error(`dhcp6: bad static host MAC ${h.mac}`);
      if (h.duid !== undefined && !duid) throw new Error(`dhcp6: bad static host DUID ${h.duid}`);
      if (!mac && !duid) throw new Error(`dhcp6: static host ${h.ip} has neither a MAC nor a DUID`);
      const raw = typeof h.ip === 'string' ? parseIp6(h.ip) : null;
      const addr = raw ? addrToBig(raw) : null;
      if (addr === null || !this.inPrefix(addr) || o.reserved(addr) || this.reservedIid(addr)) throw new Error(`dhcp6: bad static host address ${String(h.ip)}`);
      if (this.staticAddrs.has(addr)) throw new Error(`dhcp6: static address ${h.ip} used twice`);
      const st: Static6 = { mac, duid, addr };
      if (h.hostname !== undefined) st.hostname = checkHostname(h.hostname);
      const index = duid ? this.staticsByDuid : this.staticsByMac;
      const k = duid ? duid.toString('hex') : mac!.toString('hex');
      const list = index.get(k) ?? [];
      if (list.some((x) => (x.mac === null ? mac === null : mac !== null && x.mac.equals(mac)))) throw new Error(`dhcp6: static host ${h.mac ?? h.duid} listed twice`);
      list.push(st);
      index.set(k, list);
      this.staticAddrs.add(addr);
    }
    this.capacity = o.maxLeases + this.staticAddrs.size;
    const size = o.range ? o.range.end - o.range.start + 1n : 0n;
    const run = BigInt(this.capacity + 256 + 16); // held + RFC 2526 ids + interface id 0 + the gateway's
    this.maxSteps = size < run ? size : run;
  }

  get hasPool(): boolean { return this.o.range !== null; }
  get hasStatics(): boolean { return this.staticAddrs.size > 0; }
  /** bindings held (any state) */
  get size(): number { return this.byAddr.size; }
  /** held-down (declined) addresses, expired ones included until next looked at */
  get declinedCount(): number { return this.declined.size; }

  // ---- address predicates ----

  /** The MAC an address belongs to now: its static host's (given by MAC), a live lease's or a held advertise's; null: nobody's known. */
  ownerOf(a: bigint): Buffer | null {
    if (this.staticAddrs.has(a)) {
      for (const list of this.staticsByMac.values()) for (const st of list) if (st.addr === a) return st.mac;
    }
    const b = this.byAddr.get(a);
    return b !== undefined && busyUntil(b) > this.now() ? b.mac : null;
  }

  inPrefix(a: bigint): boolean {
    return a >= 0n && a >> 128n === 0n && a >> this.hostBits === this.prefixBits;
  }

  /** RFC 4291 2.6.1 subnet-router anycast (interface id 0) and RFC 2526 reserved anycast ids. */
  private reservedIid(a: bigint): boolean {
    if (this.hostBits >= 2n && (a & ((1n << this.hostBits) - 1n)) === 0n) return true;
    return this.hostBits >= 64n && (a & MASK64) >= 0xfdffffffffffff80n;
  }

  /** A dynamic pool address (in the range, not reserved, not a static host's). */
  inPool(a: bigint): boolean {
    const r = this.o.range;
    return r !== null && a >= r.start && a <= r.end && !this.o.reserved(a) && !this.staticAddrs.has(a) && !this.reservedIid(a);
  }

  staticFor(c: Client6): { addr: bigint; hostname?: string } | undefined {
    for (const s of this.staticsByDuid.get(c.duid.toString('hex')) ?? []) if (s.mac === null || s.mac.equals(c.mac)) return s;
    return this.staticsByMac.get(c.mac.toString('hex', 0, 6))?.[0];
  }

  binding(key: string): Binding6 | undefined { return this.byKey.get(key); }

  // ---- leases API ----

  /** Active (committed, unexpired) leases, static ones included. */
  leases(): Lease6[] {
    const now = this.now();
    const out: Lease6[] = [];
    for (const b of this.byKey.values()) if (b.bound && b.expiresAt > now) out.push(toLease6(b));
    return out;
  }

  /** Every binding that was ever committed (also expired/released ones, for stable addresses). */
  export(): LeaseRecord6[] {
    const out: LeaseRecord6[] = [];
    for (const b of this.byKey.values()) if (b.bound) out.push(toLease6(b));
    return out;
  }

  /** Restores exported leases; invalid or conflicting records are skipped. Returns how many were taken. */
  import(records: unknown): number {
    if (!Array.isArray(records)) return 0;
    let n = 0;
    for (const r of records as unknown[]) {
      if (typeof r !== 'object' || r === null) continue;
      const { mac: ms, duid: ds, iaid, ip, hostname: hn, expiresAt } = r as Record<string, unknown>;
      if (typeof ms !== 'string' || typeof ds !== 'string' || typeof ip !== 'string') continue;
      if (typeof iaid !== 'number' || !Number.isInteger(iaid) || iaid < 0 || iaid > 0xffffffff) continue;
      if (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt)) continue;
      const mac = parseMac(ms);
      const duid = parseDuid(ds);
      const raw = parseIp6(ip);
      if (!mac || !duid || !raw) continue;
      const addr = addrToBig(raw);
      const c = client6(mac, duid);
      const st = this.staticFor(c);
      if (st ? st.addr !== addr : !this.inPool(addr)) continue;
      if (this.byKey.has(c.key) || this.byAddr.has(addr) || this.declined.has(addr) || !this.room(this.now())) continue;
      let hostname: string | undefined;
      if (typeof hn === 'string') hostname = sanitizeHostname(Buffer.from(hn, 'utf8'));
      if (st?.hostname) hostname = st.hostname;
      this.set({ key: c.key, mac: Buffer.from(mac), duid: Buffer.from(duid), iaid, addr, hostname, expiresAt, offerUntil: 0, bound: true });
      n++;
    }
    return n;
  }

  // ---- allocation ----

  private isDeclined(a: bigint, now: number): boolean {
    const until = this.declined.get(a);
    if (until === undefined) return false;
    if (until > now) return true;
    this.declined.delete(a);
    return false;
  }

  /** Room for one more binding (held-down addresses whose time is up are let go first). */
  private room(now: number): boolean {
    if (this.byAddr.size + this.declined.size < this.capacity) return true;
    for (const a of [...this.declined.keys()]) this.isDeclined(a, now);
    return this.byAddr.size + this.declined.size < this.capacity;
  }

  /** Can the client take `a` (which no binding holds) without growing beyond the bound? */
  private roomFor(c: Client6, now: number): boolean {
    return this.byKey.has(c.key) || this.room(now); // the client's own binding moves, it does not add
  }

  /** Is `a` free for the client (not held by another client's binding in use, not held down)? */
  private freeFor(a: bigint, c: Client6, now: number): boolean {
    const o = this.byAddr.get(a);
    if (o && o.key !== c.key && busyUntil(o) > now) return false;
    if (this.isDeclined(a, now)) return false;
    return o !== undefined || this.roomFor(c, now);
  }

  /** May the client have exactly `a` (renewing, rebinding, a hint)? */
  grantable(c: Client6, a: bigint): boolean {
    const st = this.staticFor(c);
    if (st) return st.addr === a;
    return this.inPool(a) && this.freeFor(a, c, this.now());
  }

  /**
   * The address to give the client: static, its binding's, the hint, its MAC's previous one,
   * a freed one, a fresh one, the one out of use longest; null when there is none.
   */
  allocate(c: Client6, hint: bigint | null): bigint | null {
    const st = this.staticFor(c);
    if (st) return st.addr;
    if (!this.o.range) return null;
    const now = this.now();
    const b = this.byKey.get(c.key);
    if (b && this.inPool(b.addr) && !this.isDeclined(b.addr, now)) return b.addr;
    if (hint !== null && this.inPool(hint) && this.freeFor(hint, c, now)) return hint;
    let oldest: Binding6 | null = null;
    for (const o of this.byKey.values()) {
      if (!this.inPool(o.addr) || busyUntil(o) > now) continue;
      if (o.mac.equals(c.mac) && !this.isDeclined(o.addr, now)) return o.addr; // a reinstalled guest
      if (!oldest || busyUntil(o) < busyUntil(oldest)) oldest = o;
    }
    if (this.roomFor(c, now)) {
      const { start, end } = this.o.range;
      for (let k = 0n; k < this.maxSteps; k++) {
        const a = this.next;
        this.next = a >= end ? start : a + 1n;
        if (this.inPool(a) && !this.byAddr.has(a) && !this.isDeclined(a, now)) return a;
      }
    }
    if (oldest && !this.isDeclined(oldest.addr, now)) return oldest.addr;
    return null;
  }

  // ---- binding changes ----

  /** Hold `a` for the client (an Advertise). */
  offer(c: Client6, iaid: number, a: bigint, hostname: string | undefined): Binding6 {
    let b = this.byKey.get(c.key);
    if (!b || b.addr !== a) {
      b = { key: c.key, mac: Buffer.from(c.mac), duid: Buffer.from(c.duid), iaid, addr: a, expiresAt: 0, offerUntil: 0, bound: false };
      this.set(b);
    }
    b.iaid = iaid;
    b.offerUntil = this.now() + this.o.offerHoldMs;
    this.name(b, c, hostname);
    return b;
  }

  /** Commit `a` to the client for `validMs`; `renewed` when it already held it, unexpired. */
  bind(c: Client6, iaid: number, a: bigint, validMs: number, hostname: string | undefined): { binding: Binding6; renewed: boolean } {
    const now = this.now();
    let b = this.byKey.get(c.key);
    const renewed = !!b && b.bound && b.addr === a && b.iaid === iaid && b.expiresAt > now;
    if (!b || b.addr !== a) {
      b = { key: c.key, mac: Buffer.from(c.mac), duid: Buffer.from(c.duid), iaid, addr: a, expiresAt: 0, offerUntil: 0, bound: true };
      this.set(b);
    }
    b.iaid = iaid;
    b.bound = true;
    b.offerUntil = 0;
    b.expiresAt = now + validMs;
    this.name(b, c, hostname);
    return { binding: b, renewed };
  }

  private name(b: Binding6, c: Client6, hostname: string | undefined): void {
    if (hostname) b.hostname = hostname;
    const st = this.staticFor(c);
    if (st?.hostname) b.hostname = st.hostname;
  }

  /** The client's unexpired committed binding for this IA and address, or null. */
  active(key: string, iaid: number, a: bigint): Binding6 | null {
    const b = this.byKey.get(key);
    return b && b.bound && b.iaid === iaid && b.addr === a && b.expiresAt > this.now() ? b : null;
  }

  /** The client gave `a` back; the binding stays for a stable address on return. */
  release(key: string, iaid: number, a: bigint): Binding6 | null {
    const b = this.active(key, iaid, a);
    if (!b) return null;
    b.expiresAt = this.now();
    b.offerUntil = 0;
    return b;
  }

  /** The client found `a` in use (DAD failed): drop its binding, hold the address down. */
  decline(key: string, iaid: number, a: bigint): Binding6 | null {
    const b = this.active(key, iaid, a);
    if (!b) return null;
    this.drop(b);
    if (this.inPool(a)) this.declined.set(a, this.now() + this.o.declineHoldMs);
    return b;
  }

  private set(b: Binding6): void {
    const old = this.byKey.get(b.key);
    if (old) this.drop(old);
    const other = this.byAddr.get(b.addr);
    if (other) this.drop(other);
    this.byKey.set(b.key, b);
    this.byAddr.set(b.addr, b);
  }

  private drop(b: Binding6): void {
    if (this.byKey.get(b.key) === b) this.byKey.delete(b.key);
    if (this.byAddr.get(b.addr) === b) this.byAddr.delete(b.addr);
  }
}
