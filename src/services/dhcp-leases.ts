// The DHCP server's address pool and bindings, kept apart from the protocol (as
// gvisor-tap-vsock keeps its IP pool): who has which address, until when, and which address
// a client may have next.
//
// - One binding per client MAC, kept after the lease expires or is released: the same MAC gets
//   the same address again for as long as nobody else took it. A dynamic address is reused for
//   another MAC only when the pool has no never-used (or released/expired) address left; the
//   oldest expired binding is then reclaimed. So memory is bounded by the pool size plus the
//   static hosts, whatever a guest does with random MACs.
// - An OFFERed address is held for its client for `offerHoldMs`; a DECLINEd address is not
//   handed out for `declineHoldMs`.
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
}

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

export class LeaseStore {
  private readonly byMac = new Map<number, Binding>();
  private readonly byIp = new Map<number, Binding>();
  private readonly declined = new Map<number, number>();
  private readonly statics = new Map<number, { ip: number; hostname?: string }>();
  private readonly staticIps = new Set<number>();
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
    }
  }

  get poolStart(): number { return this.o.poolStart; }
  get poolSize(): number { return this.o.poolSize; }

  staticFor(key: number): { ip: number; hostname?: string } | undefined { return this.statics.get(key); }

  binding(key: number): Binding | undefined { return this.byMac.get(key); }

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
    const until = this.declined.get(ip);
    if (until === undefined) return false;
    if (until > now) return true;
    this.declined.delete(ip);
    return false;
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
    // a never-used address first, then the binding that expired longest ago
    let oldest: Binding | null = null;
    for (let k = 0; k < this.o.poolSize; k++) {
      const ip = (this.o.poolStart + k) >>> 0;
      if (!this.inPool(ip) || this.isDeclined(ip, now)) continue;
      const o = this.byIp.get(ip);
      if (!o) return ip;
      if (busyUntil(o) <= now && (!oldest || busyUntil(o) < busyUntil(oldest))) oldest = o;
    }
    if (oldest) { this.drop(oldest); return oldest.ip; }
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

  /** Hold `ip` for the client (an OFFER). */
  offer(key: number, mac: Buffer, ip: number, hostname: string | undefined): void {
    let b = this.byMac.get(key);
    if (!b || b.ip !== ip) {
      b = { key, mac: Buffer.from(mac), ip, expiresAt: 0, offerUntil: 0, bound: false };
      this.set(b);
    }
    b.offerUntil = this.now() + this.o.offerHoldMs;
    if (hostname) b.hostname = hostname;
  }

  /** Bind `ip` to the client for `leaseMs` (an ACK); `renewed` when it already held it. */
  bind(key: number, mac: Buffer, ip: number, leaseMs: number, hostname: string | undefined): { binding: Binding; renewed: boolean } {
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
    return { binding: b, renewed };
  }

  /** The client said `ip` is in use by someone else: drop its binding, hold the address down. */
  decline(key: number, ip: number): Binding | null {
    const b = this.byMac.get(key);
    if (!b || ip === 0 || b.ip !== ip) return null;
    this.drop(b);
    this.declined.set(ip, this.now() + this.o.declineHoldMs);
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
  }
}
