// Addresses as the stack and everything above it see them: one number for either family.
//
// An IPv4 address is its u32 value. An IPv6 address is an id at or above 2^32, interned in
// one process-wide table. So flow tables keep numeric keys (addr * 65536 + port stays below
// 2^53), comparisons stay `===`, and the packet path allocates nothing for either family:
// looking up a 16-byte address hashes its four words and compares bytes in place. The bytes
// behind an id are read only where a header is written or a host socket is opened.
//
// Bounds: the table holds at most MAX_ENTRIES addresses. Whoever keeps an id beyond the call
// that produced it (a flow, a neighbour, a lease, a rule) holds a reference (ref/unref); an
// entry nobody references stays cached until its slot is needed for a new address, oldest
// first, never one touched since the current packet began (tick()), so the ids a packet handler
// holds stay valid for the call. Gateway addresses are pinned. A hostile guest therefore cannot
// grow the table beyond what its flow limits let it reference.
import { equal16, ip4ToString, ip6ToString, parseIp4, parseIp6 } from '../wire/addr.ts';

/** The first IPv6 id; everything below is an IPv4 address. */
export const V6_BASE = 0x100000000;
const MAX_ENTRIES = 1 << 18;
const PINNED = 0x3fffffff;

export function isV6(a: number): boolean { return a >= V6_BASE; }

function hash(b: Buffer, o: number): number {
  const w0 = b.readUInt32BE(o), w1 = b.readUInt32BE(o + 4), w2 = b.readUInt32BE(o + 8), w3 = b.readUInt32BE(o + 12);
  let h = Math.imul(w0 ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ w1 ^ (h >>> 13), 0xc2b2ae35);
  h = Math.imul(h ^ w2 ^ (h >>> 16), 0x27d4eb2f);
  h = Math.imul(h ^ w3 ^ (h >>> 15), 0x165667b1);
  return (h ^ (h >>> 16)) >>> 0;
}

class Ip6Table {
  private store = Buffer.alloc(16 * 1024);
  private refs = new Int32Array(1024);
  private chain = new Int32Array(1024).fill(-1);
  private hashes = new Uint32Array(1024);
  private touched = new Uint32Array(1024);
  /** slot is in the idle queue (each slot at most once, so the queue is bounded by the table) */
  private queued = new Uint8Array(1024);
  private epoch = 1;
  private used = 0;
  private readonly heads = new Map<number, number>();
  /** slots whose references dropped to zero, oldest first (may since have been re-referenced) */
  private idle: number[] = [];
  private idleHead = 0;

  get size(): number { return this.used; }

  /** A new packet begins: ids touched before may be recycled from now on (if unreferenced). */
  tick(): void { this.epoch = (this.epoch + 1) >>> 0 || 1; }

  /** The id of the address at b[o, o+16), or -1 when it is not in the table. */
  lookup(b: Buffer, o: number): number {
    const h = hash(b, o);
    for (let s = this.heads.get(h) ?? -1; s >= 0; s = this.chain[s]) {
      if (equal16(this.store, s * 16, b, o)) { this.touched[s] = this.epoch; return V6_BASE + s; }
    }
    return -1;
  }

  /** The id of the address at b[o, o+16), adding it if needed; -1 when the table is full of referenced addresses. */
  intern(b: Buffer, o: number): number {
    const found = this.lookup(b, o);
    if (found >= 0) return found;
    const s = this.freeSlot();
    if (s < 0) return -1;
    b.copy(this.store, s * 16, o, o + 16);
    const h = hash(b, o);
    this.hashes[s] = h;
    this.chain[s] = this.heads.get(h) ?? -1;
    this.heads.set(h, s);
    this.refs[s] = 0;
    this.touched[s] = this.epoch;
    this.makeIdle(s); // unreferenced until someone refs it
    return V6_BASE + s;
  }

  private freeSlot(): number {
    if (this.used < MAX_ENTRIES) {
      if (this.used === this.refs.length) this.grow();
      return this.used++;
    }
    // oldest unreferenced first; one touched by the current packet is put back (bounded pass)
    for (let left = this.idle.length - this.idleHead; left > 0; left--) {
      const s = this.idle[this.idleHead++];
      this.queued[s] = 0;
      if (this.refs[s] !== 0) continue;
      if (this.touched[s] === this.epoch) { this.makeIdle(s); continue; }
      this.compactIdle();
      this.unlink(s);
      return s;
    }
    this.compactIdle();
    return -1;
  }

  private makeIdle(s: number): void {
    if (this.queued[s]) return;
    this.queued[s] = 1;
    this.idle.push(s);
  }

  private compactIdle(): void {
    if (this.idleHead > 4096 && this.idleHead * 2 > this.idle.length) { this.idle = this.idle.slice(this.idleHead); this.idleHead = 0; }
  }

  private unlink(s: number): void {
    const h = this.hashes[s];
    let prev = -1;
    for (let t = this.heads.get(h) ?? -1; t >= 0; prev = t, t = this.chain[t]) {
      if (t !== s) continue;
      if (prev < 0) { if (this.chain[s] < 0) this.heads.delete(h); else this.heads.set(h, this.chain[s]); }
      else this.chain[prev] = this.chain[s];
      return;
    }
  }

  private grow(): void {
    const n = Math.min(MAX_ENTRIES, this.refs.length * 2);
    const store = Buffer.alloc(16 * n);
    this.store.copy(store);
    this.store = store;
    const refs = new Int32Array(n); refs.set(this.refs); this.refs = refs;
    const chain = new Int32Array(n).fill(-1); chain.set(this.chain); this.chain = chain;
    const hashes = new Uint32Array(n); hashes.set(this.hashes); this.hashes = hashes;
    const touched = new Uint32Array(n); touched.set(this.touched); this.touched = touched;
    const queued = new Uint8Array(n); queued.set(this.queued); this.queued = queued;
  }

  ref(id: number): void {
    const s = id - V6_BASE;
    if (this.refs[s] !== PINNED) this.refs[s]++;
  }

  unref(id: number): void {
    const s = id - V6_BASE;
    if (this.refs[s] === PINNED || this.refs[s] <= 0) return;
    if (--this.refs[s] === 0) this.makeIdle(s);
  }

  pin(id: number): void { this.refs[id - V6_BASE] = PINNED; }

  /** The 16 bytes of an id (a view: copy it to keep it). */
  bytes(id: number): Buffer {
    const s = id - V6_BASE;
    return this.store.subarray(s * 16, s * 16 + 16);
  }

  /**
   * The packet path's view (no subarray per use): the table's memory, where id's 16 bytes are at
   * offset(id). Valid until the next intern() (the table may grow).
   */
  get memory(): Buffer { return this.store; }
  offset(id: number): number { return (id - V6_BASE) * 16; }
  /** The first byte of id's address (0xff: multicast). */
  firstByte(id: number): number { return this.store[(id - V6_BASE) * 16]; }

  references(id: number): number { return this.refs[id - V6_BASE]; }
}

export const ip6 = new Ip6Table();

/** Intern an IPv6 address given as 16 bytes; throws when the table is full of referenced addresses. */
export function addr6(b: Buffer, o = 0): number {
  const id = ip6.intern(b, o);
  if (id < 0) throw new Error('the IPv6 address table is full');
  return id;
}

/** Hold / release an address kept beyond the current call (no-ops for IPv4). */
export function refAddr(a: number): void { if (a >= V6_BASE) ip6.ref(a); }
export function unrefAddr(a: number): void { if (a >= V6_BASE) ip6.unref(a); }

/** An address for good (the gateway's own). */
export function pinAddr(a: number): number { if (a >= V6_BASE) ip6.pin(a); return a; }

/** Text form: dotted quad, or RFC 5952. */
export function addrToString(a: number): string {
  return a >= V6_BASE ? ip6ToString(ip6.bytes(a), 0) : ip4ToString(a);
}

/** Either family from text ('[...]' accepted around IPv6); null when neither. */
export function parseAddr(s: string): number | null {
  const v4 = parseIp4(s);
  if (v4 !== null) return v4;
  const t = s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s;
  const b = parseIp6(t);
  return b ? addr6(b) : null;
}

/** Write the 16 bytes of an IPv6 id into buf at off. */
export function writeAddr6(a: number, buf: Buffer, off: number): void {
  const m = ip6.memory;
  const o = ip6.offset(a);
  for (let k = 0; k < 16; k++) buf[off + k] = m[o + k];
}

/** Is `a` inside prefix/len (both IPv6)? */
export function inPrefix6(a: number, prefix: Buffer, len: number): boolean {
  if (a < V6_BASE) return false;
  const b = ip6.memory;
  const o = ip6.offset(a);
  const full = len >> 3;
  for (let k = 0; k < full; k++) if (b[o + k] !== prefix[k]) return false;
  const rest = len & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (b[o + full] & mask) === (prefix[full] & mask);
}
