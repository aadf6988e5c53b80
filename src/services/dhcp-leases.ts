// The DHCP server's address pool and bindings, kept apart from the protocol (as
// gvisor-tap-vsock keeps its IP pool): who has which address, until when, and which address
// a client may have next.
//
// - One binding per client MAC, kept after the lease expires or is released: the same MAC gets
//   the same address again for as long as nobody else took it. A dynamic address is reused for
//   another MAC only when the pool has no never-used (or released/expired) address left; the
//   oldest expired binding is then reclaimed. So memory is bounded by the pool size plus the
//   static hosts, whatever a guest does with random MACs.
// - An OFFERed address is held for its client for `offerHoldMs` (short: a client that does
//   not REQUEST within seconds has gone elsewhere); a DECLINEd address is not handed out for
//   `declineHoldMs`, unless the pool has nothing else left: then the oldest decline is
//   reclaimed before a client goes without an address.
// - Per port (the switch port a client's messages arrive on, when the server knows it): every
//   address a port holds counts (unexpired leases and offers of its clients, and the
//   addresses they declined while held down), and a port at `maxPerPort` gets no new address
//   for another MAC. So one port with random MACs cannot take the pool; a client keeps and
//   renews what it holds. Static hosts are outside the pool and do not count. A binding is
//   attributed to the port it was last offered or bound on; forgetPort() drops a closed
//   port's attribution (its bindings then count for the port they next arrive on).
// - There are no timers: expiry and hold-downs are checked lazily against the injected
//   clock when an address is allocated.
// - Static hosts (MAC -> address, optional hostname) always get their address; it is never
//   in the dynamic pool. export()/import() carry bindings across restarts (as JSON records).
import { ip4ToString, macKey, macToString, parseIp4, parseMac } from '../wire/addr.ts';
import { sanitizeHostname } from './dhcp-codec.ts';

export interface StaticHost {
  /** 'aa:bb:cc:dd:ee:ff' */
  mac: string;
  /** dotted quad or u32 */
  ip: string | number;
  hostname?: string;
}

export interface Lease {
  mac: string;
  ip: number;
  hostname?: string;
  /** ms since the epoch */
  expiresAt: number;
}

/** JSON form of a lease for persistence. */
export interface LeaseRecord {
  mac: string;
  ip: string;
  hostname?: string;
  expiresAt: number;
}

export interface Binding {
  key: number;
  mac: Buffer;
  ip: number;
  hostname?: string;
  /** ms; end of the lease (meaningful once bound) */
  expiresAt: number;
  /** ms; an OFFERed address is held for the client until then */
  offerUntil: number;
  /** ever ACKed (else only offered) */
  bound: boolean;
  /** the port this binding counts against (see maxPerPort) */
  port?: string;
}

/** A DECLINEd address held down. */
interface Decline { ip: number; until: number; port?: string }

export interface LeaseStoreOptions {
  poolStart: number;
  poolSize: number;
  /** addresses never handed out (the gateway's own) */
  reserved: (ip: number) => boolean;
  /** a valid host address of the network (for static hosts) */
  isHostAddress: (ip: number) => boolean;
  staticHosts?: StaticHost[];
  declineHoldMs: number;
  offerHoldMs: number;
  /** addresses one port may hold (0: no limit) */
  maxPerPort?: number;
  now: () => number;
}

export function toLease(b: Binding): Lease {
  const l: Lease = { mac: macToString(b.mac, 0), ip: b.ip, expiresAt: b.expiresAt };
  if (b.hostname !== undefined) l.hostname = b.hostname;
  return l;
}

/** Until when the binding's address is taken (lease or offer hold). */
function busyUntil(b: Binding): number {
  return Math.max(b.bound ? b.expiresAt : 0, b.offerUntil);
}

function heldUntil(h: Binding | Decline): number {
  return 'key' in h ? busyUntil(h) : h.until;
}

export class LeaseStore {
  private readonly byMac = new Map<number, Binding>();
  private readonly byIp = new Map<number, Binding>();
  private readonly declined = new Map<number, Decline>();
  /** per port: the bindings and declines attributed to it */
  private readonly byPort = new Map<string, Set<Binding | Decline>>();
  private readonly statics = new Map<number, { ip: number; hostname?: string }>();
  private readonly staticIps = new Set<number>();
  /** static address -> its host's MAC key */
  private readonly staticOwners = new Map<number, number>();
  readonly now: () => number;

  constructor(private readonly o: LeaseStoreOptions, checkHostname: (h: string) => string) {
    this.now = o.now;
    for (const h of o.staticHosts ?? []) {
      const mac = parseMac(h.mac);
      const ip = typeof h.ip === 'number' ? h.ip >>> 0 : parseIp4(h.ip);
      if (!mac) throw new Error(`dhcp: bad static host MAC ${h.mac}`);
      if (ip === null || !o.isHostAddress(ip) || o.reserved(ip)) throw new Error(`dhcp: bad static host address ${String(h.ip)}`);
      if (this.staticIps.has(ip)) throw new Error(`dhcp: static address ${ip4ToString(ip)} used twice`);
      const hostname = h.hostname === undefined ? undefined : checkHostname(h.hostname);
      this.statics.set(macKey(mac, 0), { ip, hostname });
      this.staticIps.add(ip);
      this.staticOwners.set(ip, macKey(mac, 0));
    }
  }

  get poolStart(): number { return this.o.poolStart; }
  get poolSize(): number { return this.o.poolSize; }

  staticFor(key: number): { ip: number; hostname?: string } | undefined { return this.statics.get(key); }

  binding(key: number): Binding | undefined { return this.byMac.get(key); }

  /** The MAC key an address belongs to now: its static host's, a live lease's or a held offer's; -1: nobody's. */
  ownerOf(ip: number): number {
    const st = this.staticOwners.get(ip);
    if (st !== undefined) return st;
    const b = this.byIp.get(ip);
    if (b === undefined) return -1;
    const now = this.now();
    return (b.bound && b.expiresAt > now) || b.offerUntil > now ? b.key : -1;
  }

  /** Active (ACKed, unexpired) leases, static ones included once bound. */
  leases(): Lease[] {
    const now = this.now();
    const out: Lease[] = [];
    for (const b of this.byMac.values()) if (b.bound && b.expiresAt > now) out.push(toLease(b));
    return out;
  }

  /** Every known binding that was ever ACKed (also expired/released ones, for stable addresses). */
  export(): LeaseRecord[] {
    const out: LeaseRecord[] = [];
    for (const b of this.byMac.values()) {
      if (!b.bound) continue;
      const r: LeaseRecord = { mac: macToString(b.mac, 0), ip: ip4ToString(b.ip), expiresAt: b.expiresAt };
      if (b.hostname !== undefined) r.hostname = b.hostname;
      out.push(r);
    }
    return out;
  }

  /** Restores exported leases; invalid or conflicting records are skipped. Returns how many were taken. */
  import(records: unknown): number {
    if (!Array.isArray(records)) return 0;
    let n = 0;
    for (const r of records as unknown[]) {
      if (typeof r !== 'object' || r === null) continue;
      const { mac: ms, ip: is, hostname: hn, expiresAt } = r as Record<string, unknown>;
      if (typeof ms !== 'string' || typeof is !== 'string' || typeof expiresAt !== 'number' || !Number.isFinite(expiresAt)) continue;
      const mac = parseMac(ms);
      const ip = parseIp4(is);
      if (!mac || ip === null) continue;
      const key = macKey(mac, 0);
      const st = this.statics.get(key);
      if (st ? st.ip !== ip : !this.inPool(ip)) continue;
      if (this.byMac.has(key) || this.byIp.has(ip)) continue;
      let hostname: string | undefined;
      if (typeof hn === 'string') hostname = sanitizeHostname(Buffer.from(hn, 'utf8'));
      this.set({ key, mac, ip, hostname, expiresAt, offerUntil: 0, bound: true });
      n++;
    }
    return n;
  }

  // ---- allocation ----

  inPool(ip: number): boolean {
    return ip >= this.o.poolStart && ip < this.o.poolStart + this.o.poolSize && !this.o.reserved(ip) && !this.staticIps.has(ip);
  }

  private isDeclined(ip: number, now: number): boolean {
    const d = this.declined.get(ip);
    if (d === undefined) return false;
    if (d.until > now) return true;
    this.undecline(d);
    return false;
  }

  private undecline(d: Decline): void {
    if (this.declined.get(d.ip) === d) this.declined.delete(d.ip);
    this.attribute(d, undefined);
  }

  // ---- per-port accounting ----

  /** Count `h` against `port` (undefined: against none). */
  private attribute(h: Binding | Decline, port: string | undefined): void {
    if (h.port === port) return;
    if (h.port !== undefined) {
      const set = this.byPort.get(h.port);
      set?.delete(h);
      if (set && set.size === 0) this.byPort.delete(h.port);
    }
    h.port = port;
    if (port !== undefined) {
      let set = this.byPort.get(port);
      if (!set) { set = new Set(); this.byPort.set(port, set); }
      set.add(h);
    }
  }

  /** Pool addresses `port` holds now, not counting the client `exceptKey`'s own binding. */
  heldBy(port: string, exceptKey: number): number {
    const set = this.byPort.get(port);
    if (!set) return 0;
    const now = this.now();
    let n = 0;
    for (const h of [...set]) {
      if (heldUntil(h) <= now) { this.attribute(h, undefined); continue; } // lapsed: no longer counts
      if ('key' in h && (h.key === exceptKey || this.statics.has(h.key))) continue;
      n++;
    }
    return n;
  }

  /** May client `key` on `port` get an address it does not hold yet? */
  portAllows(port: string, key: number): boolean {
    const max = this.o.maxPerPort ?? 0;
    if (max <= 0 || this.statics.has(key)) return true;
    return this.heldBy(port, key) < max;
  }

  /** A port went away: what it held counts for no port until its clients come back. */
  forgetPort(port: string): void {
    const set = this.byPort.get(port);
    if (!set) return;
    for (const h of set) h.port = undefined;
    this.byPort.delete(port);
  }

  /** Is `ip` free for the client `key` (not held by an unexpired binding of another MAC)? */
  private freeFor(ip: number, key: number, now: number): boolean {
    const o = this.byIp.get(ip);
    if (o && o.key !== key && busyUntil(o) > now) return false;
    return !this.isDeclined(ip, now);
  }

  /** The address the client may have if it asks for `want`, or 0. */
  grantable(key: number, want: number): number {
    const st = this.statics.get(key);
    if (st) return st.ip === want ? want : 0;
    return this.inPool(want) && this.freeFor(want, key, this.now()) ? want : 0;
  }

  /** Address to offer: static, previous binding, requested, a fresh one, a reclaimed one; 0 if none. */
  allocate(key: number, requested: number): number {
    const st = this.statics.get(key);
    if (st) return st.ip;
    const now = this.now();
    const b = this.byMac.get(key);
    if (b && this.inPool(b.ip) && !this.isDeclined(b.ip, now)) return b.ip;
    if (requested && this.inPool(requested) && this.freeFor(requested, key, now)) return requested;
    // a never-used address first, then the binding that expired longest ago, then the
    // address declined longest ago (a decline must not leave a client without an address)
    let oldest: Binding | null = null;
    let oldestDecline: Decline | null = null;
    for (let k = 0; k < this.o.poolSize; k++) {
      const ip = (this.o.poolStart + k) >>> 0;
      if (!this.inPool(ip)) continue;
      if (this.isDeclined(ip, now)) {
        const d = this.declined.get(ip)!;
        const o = this.byIp.get(ip);
        if ((!o || busyUntil(o) <= now) && (!oldestDecline || d.until < oldestDecline.until)) oldestDecline = d;
        continue;
      }
      const o = this.byIp.get(ip);
      if (!o) return ip;
      if (busyUntil(o) <= now && (!oldest || busyUntil(o) < busyUntil(oldest))) oldest = o;
    }
    if (oldest) { this.drop(oldest); return oldest.ip; }
    if (oldestDecline) {
      this.undecline(oldestDecline);
      const o = this.byIp.get(oldestDecline.ip);
      if (o) this.drop(o);
      return oldestDecline.ip;
    }
    return 0;
  }

  freeCount(): number {
    const now = this.now();
    let n = 0;
    for (let k = 0; k < this.o.poolSize; k++) {
      const ip = (this.o.poolStart + k) >>> 0;
      if (this.inPool(ip) && !this.isDeclined(ip, now)) {
        const o = this.byIp.get(ip);
        if (!o || busyUntil(o) <= now) n++;
      }
    }
    return n;
  }

  // ---- binding changes ----

  /** Hold `ip` for the client (an OFFER), counted against `port`. */
  offer(key: number, mac: Buffer, ip: number, hostname: string | undefined, port?: string): void {
    let b = this.byMac.get(key);
    if (!b || b.ip !== ip) {
      b = { key, mac: Buffer.from(mac), ip, expiresAt: 0, offerUntil: 0, bound: false };
      this.set(b);
    }
    b.offerUntil = this.now() + this.o.offerHoldMs;
    if (hostname) b.hostname = hostname;
    if (port !== undefined) this.attribute(b, port);
  }

  /** Bind `ip` to the client for `leaseMs` (an ACK), counted against `port`; `renewed` when it already held it. */
  bind(key: number, mac: Buffer, ip: number, leaseMs: number, hostname: string | undefined, port?: string): { binding: Binding; renewed: boolean } {
    const now = this.now();
    let b = this.byMac.get(key);
    const renewed = !!b && b.bound && b.ip === ip && b.expiresAt > now;
    if (!b || b.ip !== ip) {
      b = { key, mac: Buffer.from(mac), ip, expiresAt: 0, offerUntil: 0, bound: true };
      this.set(b);
    }
    b.bound = true;
    b.expiresAt = now + leaseMs;
    if (hostname) b.hostname = hostname;
    const st = this.statics.get(key);
    if (st?.hostname) b.hostname = st.hostname;
    if (port !== undefined) this.attribute(b, port);
    return { binding: b, renewed };
  }

  /** Drop the client's hostname (it asked for a name that belongs to someone else). */
  clearHostname(key: number): void {
    const b = this.byMac.get(key);
    if (b) delete b.hostname;
  }

  /**
   * The client said `ip` is in use by someone else: drop its binding, hold the address down.
   * The hold counts against the binding's port, so declining cannot drain the pool.
   */
  decline(key: number, ip: number): Binding | null {
    const b = this.byMac.get(key);
    if (!b || ip === 0 || b.ip !== ip) return null;
    const port = b.port;
    this.drop(b);
    if (!this.inPool(ip)) return b; // a static address: nothing to hold down
    const old = this.declined.get(ip);
    if (old) this.undecline(old);
    const d: Decline = { ip, until: this.now() + this.o.declineHoldMs };
    this.declined.set(ip, d);
    this.attribute(d, port);
    return b;
  }

  /** The client gave `ip` back; the binding stays for a stable address on return. */
  release(key: number, ip: number): Binding | null {
    const b = this.byMac.get(key);
    if (!b || b.ip !== ip || !b.bound) return null;
    b.expiresAt = Math.min(b.expiresAt, this.now());
    b.offerUntil = 0;
    return b;
  }

  /** Forget an offer made to the client (it chose another server). */
  withdrawOffer(key: number): void {
    const b = this.byMac.get(key);
    if (b && !b.bound) this.drop(b);
  }

  private set(b: Binding): void {
    const old = this.byMac.get(b.key);
    if (old) this.drop(old);
    const other = this.byIp.get(b.ip);
    if (other) this.drop(other);
    this.byMac.set(b.key, b);
    this.byIp.set(b.ip, b);
  }

  private drop(b: Binding): void {
    if (this.byMac.get(b.key) === b) this.byMac.delete(b.key);
    if (this.byIp.get(b.ip) === b) this.byIp.delete(b.ip);
    this.attribute(b, undefined);
  }
}
