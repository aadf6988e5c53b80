// DHCP server (RFC 2131/2132) on the gateway, with QEMU user-mode (libslirp bootp.c) semantics
// for what is offered: the router and server id are the gateway's host address, addresses come
// from a pool starting at `dhcpstart` (.15 by default), the lease is 24 hours, and the options
// QEMU exposes (dns, domainname, dnssearch, hostname, tftp-server-name, bootfile) are sent.
//
// Design
// - One binding per client MAC, kept after the lease expires or is released: the same MAC gets
//   the same address again for as long as nobody else took it. A dynamic address is reused for
//   another MAC only when the pool has no never-used (or released/expired) address left; the
//   oldest expired binding is then reclaimed. So memory is bounded by the pool size plus the
//   static hosts, whatever a guest does with random MACs.
// - There are no timers: expiry and DECLINE hold-downs are checked lazily against the clock
//   when an address is allocated (the clock is injectable for tests and persistence).
// - The server is authoritative for its segment (it is the only DHCP server on a virtual
//   network), so an INIT-REBOOT or RENEWING request for an address it has no record of is
//   granted when the address is free in the pool (a restarted qnet keeps guests on their
//   addresses, as libslirp does) and NAKed otherwise, rather than staying silent as RFC 2131
//   4.3.2 suggests for non-authoritative servers: a NAK makes the client re-DISCOVER at once.
// - Replies follow RFC 2131 4.1: NAKs are broadcast; a client with ciaddr (RENEWING, INFORM)
//   gets a unicast to ciaddr; otherwise a broadcast when the client set the BROADCAST flag, and a
//   unicast to yiaddr at the client's chaddr (no ARP needed) when it did not. Relays (giaddr)
//   are not supported: a virtual segment has none, giaddr is echoed and otherwise ignored.
// - Every option is sent whether or not the client listed it in option 55 (as libslirp does):
//   clients ignore what they did not ask for, and it keeps the reply deterministic. Options
//   longer than 255 bytes (a long dnssearch list) are split into several instances (RFC 3396).
//   The reply is padded to the BOOTP minimum of 300 bytes, which some old clients need.
// - Option 119 (domain search, RFC 3397) is encoded once at construction with RFC 1035 name
//   compression, pointers relative to the start of the option data.
// - Hostile input: the fixed header and every option length are bounds-checked; a packet with a
//   wrong op/htype/hlen/magic or a malformed option area is dropped and counted in `stats`.
//   The handler never throws (a bug is caught and counted as `errors`).
// - Plain BOOTP (no option 53) gets a BOOTREPLY with the configuration and an address bound like
//   a DHCP lease, for old PXE ROMs; libslirp answers those too.
//
// Trade-offs: no option overload (52) parsing (a client does not need it to talk to us), no
// relay agent support, no client-id (61) keyed bindings (the MAC is the key, like libslirp and
// passt: a VM's identity on a virtual network is its MAC).
import type { Gateway, UdpDatagram } from '../stack/gateway.ts';
import { inSubnet, ip4FromBuf, ip4ToBuf, ip4ToString, macKey, macToString, maskOf, parseIp4, parseMac } from '../wire/addr.ts';
import { logger } from '../util/log.ts';

const log = logger('dhcp');

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;

export const DHCPDISCOVER = 1;
export const DHCPOFFER = 2;
export const DHCPREQUEST = 3;
export const DHCPDECLINE = 4;
export const DHCPACK = 5;
export const DHCPNAK = 6;
export const DHCPRELEASE = 7;
export const DHCPINFORM = 8;

const MAGIC = 0x63825363;
const FIXED_LEN = 236;
const OPT_START = 240;
const MIN_REPLY = 300;

// option codes
const OPT_PAD = 0, OPT_END = 255;
const OPT_SUBNET = 1, OPT_ROUTER = 3, OPT_DNS = 6, OPT_HOSTNAME = 12, OPT_DOMAIN = 15, OPT_MTU = 26,
  OPT_BROADCAST = 28, OPT_REQ_ADDR = 50, OPT_LEASE = 51, OPT_MSGTYPE = 53, OPT_SERVER_ID = 54,
  OPT_MESSAGE = 56, OPT_T1 = 58, OPT_T2 = 59, OPT_TFTP_SERVER = 66, OPT_BOOTFILE = 67, OPT_SEARCH = 119;

export interface StaticHost {
  /** 'aa:bb:cc:dd:ee:ff' */
  mac: string;
  /** dotted quad or u32 */
  ip: string | number;
  hostname?: string;
}

export interface DhcpOptions {
  /** server identifier; also the default router. Default: the gateway's first address. */
  serverIp?: number;
  /** option 3; default serverIp; null sends no router (e.g. restrict=on without a route). */
  router?: number | null;
  /** first pool address (QEMU dhcpstart); default net + 15 */
  poolStart?: number;
  /** number of addresses from poolStart; default: up to the address below broadcast */
  poolSize?: number;
  /** option 6; default: none */
  dns?: number[];
  /** option 15 */
  domainName?: string;
  /** option 119 */
  dnsSearch?: string[];
  /** option 12 for every client without a static hostname (QEMU hostname=) */
  hostname?: string;
  /** option 26; default the gateway MTU when it is not 1500 (then omitted) */
  mtu?: number;
  /** option 66 */
  tftpServerName?: string;
  /** option 67 and the BOOTP `file` field */
  bootfile?: string;
  /** seconds; default 86400 */
  leaseTime?: number;
  staticHosts?: StaticHost[];
  /** how long a DECLINEd address stays unused; default 10 minutes */
  declineHoldMs?: number;
  /** how long an OFFERed address is held for the client; default 60 s */
  offerHoldMs?: number;
  onLease?: (lease: Lease, event: LeaseEvent) => void;
  /** clock in ms since the epoch (tests, persistence); default Date.now */
  now?: () => number;
}

export type LeaseEvent = 'bound' | 'renewed' | 'released' | 'declined';

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

export interface DhcpStats {
  rx: number;
  malformed: number;
  badOp: number;
  badHtype: number;
  badMagic: number;
  badOptions: number;
  discover: number;
  request: number;
  decline: number;
  release: number;
  inform: number;
  bootp: number;
  unknownType: number;
  otherServer: number;
  offer: number;
  ack: number;
  nak: number;
  poolExhausted: number;
  errors: number;
}

interface Binding {
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

/** Parsed request: a view on the borrowed payload, valid for the handler call only. */
interface Request {
  buf: Buffer;
  xid: number;
  flags: number;
  ciaddr: number;
  giaddr: number;
  mac: Buffer;
  key: number;
  type: number; // 0 = BOOTP
  requested: number; // 0 = none
  serverId: number; // 0 = none
  hostname?: string;
}

export class DhcpServer {
  readonly stats: DhcpStats = {
    rx: 0, malformed: 0, badOp: 0, badHtype: 0, badMagic: 0, badOptions: 0, discover: 0, request: 0, decline: 0,
    release: 0, inform: 0, bootp: 0, unknownType: 0, otherServer: 0, offer: 0, ack: 0, nak: 0, poolExhausted: 0, errors: 0,
  };
  onLease: ((lease: Lease, event: LeaseEvent) => void) | null;

  readonly serverIp: number;
  readonly poolStart: number;
  readonly poolSize: number;
  private readonly router: number | null;
  private readonly mask: number;
  private readonly bcast: number;
  private readonly leaseSecs: number;
  private readonly declineHold: number;
  private readonly offerHold: number;
  private readonly now: () => number;
  private readonly byMac = new Map<number, Binding>();
  private readonly byIp = new Map<number, Binding>();
  private readonly declined = new Map<number, number>();
  private readonly statics = new Map<number, { ip: number; hostname?: string }>();
  private readonly staticIps = new Set<number>();
  private exhausted = false;
  private closed = false;
  // encoded option blocks appended to every reply (after type/server id/lease)
  private readonly configOpts: Buffer;
  private readonly defaultHostname: string | undefined;
  private readonly fileField: Buffer | null;
  private readonly handler = (d: UdpDatagram): void => this.input(d);

  constructor(private readonly gw: Gateway, opts: DhcpOptions = {}) {
    const first = gw.addrs.values().next().value;
    this.serverIp = opts.serverIp ?? first ?? 0;
    if (!gw.isLocal(this.serverIp)) throw new Error(`dhcp: server address ${ip4ToString(this.serverIp)} is not in the network`);
    this.router = opts.router === undefined ? this.serverIp : opts.router;
    this.mask = maskOf(gw.prefix);
    this.bcast = gw.broadcast;
    this.poolStart = opts.poolStart ?? ((gw.net + 15) >>> 0);
    if (!gw.isLocal(this.poolStart) || this.poolStart === gw.net || this.poolStart === this.bcast) {
      throw new Error(`dhcp: pool start ${ip4ToString(this.poolStart)} is not a host address of the network`);
    }
    const maxSize = this.bcast - this.poolStart;
    this.poolSize = Math.max(0, Math.min(opts.poolSize ?? maxSize, maxSize));
    this.leaseSecs = opts.leaseTime ?? 86400;
    if (!(this.leaseSecs >= 1 && this.leaseSecs <= 0xffffffff)) throw new Error('dhcp: bad lease time');
    this.declineHold = opts.declineHoldMs ?? 600_000;
    this.offerHold = opts.offerHoldMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    this.onLease = opts.onLease ?? null;
    for (const h of opts.staticHosts ?? []) {
      const mac = parseMac(h.mac);
      const ip = typeof h.ip === 'number' ? h.ip >>> 0 : parseIp4(h.ip);
      if (!mac) throw new Error(`dhcp: bad static host MAC ${h.mac}`);
      if (ip === null || !gw.isLocal(ip) || ip === gw.net || ip === this.bcast || gw.addrs.has(ip)) {
        throw new Error(`dhcp: bad static host address ${String(h.ip)}`);
      }
      if (this.staticIps.has(ip)) throw new Error(`dhcp: static address ${ip4ToString(ip)} used twice`);
      const hostname = h.hostname === undefined ? undefined : checkHostname(h.hostname);
      this.statics.set(macKey(mac, 0), { ip, hostname });
      this.staticIps.add(ip);
    }
    this.defaultHostname = opts.hostname === undefined ? undefined : checkHostname(opts.hostname);
    this.configOpts = this.encodeConfig(opts);
    this.fileField = opts.bootfile !== undefined ? Buffer.from(opts.bootfile, 'utf8') : null;
    if (this.fileField && this.fileField.length > 127) throw new Error('dhcp: bootfile longer than 127 bytes');
    gw.bindUdp(0, DHCP_SERVER_PORT, this.handler);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.gw.unbindUdp(0, DHCP_SERVER_PORT);
  }

  // ---- leases API ----

  /** Active (ACKed, unexpired) leases, static ones included once bound. */
  leases(): Lease[] {
    const now = this.now();
    const out: Lease[] = [];
    for (const b of this.byMac.values()) if (b.bound && b.expiresAt > now) out.push(toLease(b));
    return out;
  }

  /** Every known binding that was ever ACKed (also expired/released ones, for stable addresses). */
  exportLeases(): LeaseRecord[] {
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
  importLeases(records: unknown): number {
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
      this.setBinding({ key, mac, ip, hostname, expiresAt, offerUntil: 0, bound: true });
      n++;
    }
    return n;
  }

  // ---- input ----

  private input(d: UdpDatagram): void {
    if (this.closed) return;
    this.stats.rx++;
    try {
      const req = this.parse(d.payload);
      if (req) this.dispatch(req, d);
    } catch (err) {
      this.stats.errors++;
      if (log.enabled('debug')) log.debug('handler error', { err: (err as Error).message });
    }
  }

  private drop(counter: 'badOp' | 'badHtype' | 'badMagic' | 'badOptions' | null): null {
    this.stats.malformed++;
    if (counter) this.stats[counter]++;
    return null;
  }

  private parse(p: Buffer): Request | null {
    if (p.length < OPT_START) return this.drop(null);
    if (p[0] !== 1) return this.drop('badOp');
    if (p[1] !== 1 || p[2] !== 6) return this.drop('badHtype');
    if (p.readUInt32BE(FIXED_LEN) !== MAGIC) return this.drop('badMagic');
    const mac = p.subarray(28, 34);
    if (mac[0] & 1) return this.drop(null); // a group address is no client
    const req: Request = {
      buf: p, xid: p.readUInt32BE(4), flags: p.readUInt16BE(10), ciaddr: ip4FromBuf(p, 12), giaddr: ip4FromBuf(p, 24),
      mac, key: macKey(p, 28), type: 0, requested: 0, serverId: 0,
    };
    let i = OPT_START;
    let sawEnd = false;
    while (i < p.length) {
      const code = p[i];
      if (code === OPT_PAD) { i++; continue; }
      if (code === OPT_END) { sawEnd = true; break; }
      if (i + 2 > p.length) return this.drop('badOptions');
      const len = p[i + 1];
      const v = i + 2;
      if (v + len > p.length) return this.drop('badOptions');
      switch (code) {
        case OPT_MSGTYPE:
          if (len !== 1) return this.drop('badOptions');
          req.type = p[v];
          break;
        case OPT_REQ_ADDR:
          if (len !== 4) return this.drop('badOptions');
          req.requested = ip4FromBuf(p, v);
          break;
        case OPT_SERVER_ID:
          if (len !== 4) return this.drop('badOptions');
          req.serverId = ip4FromBuf(p, v);
          break;
        case OPT_HOSTNAME: {
          const h = sanitizeHostname(p.subarray(v, v + len));
          if (h) req.hostname = h;
          break;
        }
        default:
          break;
      }
      i = v + len;
    }
    // RFC 2131 requires the end option; tolerate its absence only when the area ran out exactly
    if (!sawEnd && i !== p.length) return this.drop('badOptions');
    return req;
  }

  private dispatch(req: Request, d: UdpDatagram): void {
    switch (req.type) {
      case DHCPDISCOVER: this.stats.discover++; return this.discover(req);
      case DHCPREQUEST: this.stats.request++; return this.request(req);
      case DHCPDECLINE: this.stats.decline++; return this.decline(req);
      case DHCPRELEASE: this.stats.release++; return this.release(req);
      case DHCPINFORM: this.stats.inform++; return this.inform(req, d);
      case 0: this.stats.bootp++; return this.bootp(req);
      default: this.stats.unknownType++;
    }
  }

  private discover(req: Request): void {
    const ip = this.allocate(req);
    if (ip === 0) return this.exhaustedEvent(req);
    const now = this.now();
    let b = this.byMac.get(req.key);
    if (!b || b.ip !== ip) {
      b = { key: req.key, mac: Buffer.from(req.mac), ip, expiresAt: 0, offerUntil: 0, bound: false };
      this.setBinding(b);
    }
    b.offerUntil = now + this.offerHold;
    if (req.hostname) b.hostname = req.hostname;
    this.reply(req, DHCPOFFER, ip, true);
  }

  private request(req: Request): void {
    let want: number;
    if (req.serverId !== 0) {
      // SELECTING
      if (req.serverId !== this.serverIp) {
        this.stats.otherServer++;
        const b = this.byMac.get(req.key);
        if (b && !b.bound) this.dropBinding(b);
        return;
      }
      want = req.requested || req.ciaddr;
    } else if (req.requested !== 0) {
      want = req.requested; // INIT-REBOOT
    } else if (req.ciaddr !== 0) {
      want = req.ciaddr; // RENEWING / REBINDING
    } else {
      return this.nak(req, 'no address requested');
    }
    if (!inSubnet(want, this.gw.net, this.gw.prefix)) return this.nak(req, 'wrong network');
    const ip = this.grantable(req, want);
    if (ip === 0) {
      if (this.freeCount() === 0) this.exhaustedEvent(req);
      return this.nak(req, 'address not available');
    }
    const now = this.now();
    let b = this.byMac.get(req.key);
    const renew = !!b && b.bound && b.ip === ip && b.expiresAt > now;
    if (!b || b.ip !== ip) {
      b = { key: req.key, mac: Buffer.from(req.mac), ip, expiresAt: 0, offerUntil: 0, bound: true };
      this.setBinding(b);
    }
    b.bound = true;
    b.expiresAt = now + this.leaseSecs * 1000;
    if (req.hostname) b.hostname = req.hostname;
    const st = this.statics.get(req.key);
    if (st?.hostname) b.hostname = st.hostname;
    this.exhausted = false;
    this.reply(req, DHCPACK, ip, true);
    this.notify(b, renew ? 'renewed' : 'bound');
  }

  private decline(req: Request): void {
    if (req.serverId !== 0 && req.serverId !== this.serverIp) { this.stats.otherServer++; return; }
    const ip = req.requested;
    const b = this.byMac.get(req.key);
    if (!b || ip === 0 || b.ip !== ip) return;
    this.dropBinding(b);
    this.declined.set(ip, this.now() + this.declineHold);
    log.warn('address declined by client (in use?)', { ip: ip4ToString(ip), mac: macToString(b.mac, 0) });
    this.notify(b, 'declined');
  }

  private release(req: Request): void {
    if (req.serverId !== 0 && req.serverId !== this.serverIp) { this.stats.otherServer++; return; }
    const b = this.byMac.get(req.key);
    if (!b || b.ip !== req.ciaddr || !b.bound) return;
    b.expiresAt = Math.min(b.expiresAt, this.now()); // kept for a stable address on return
    b.offerUntil = 0;
    this.exhausted = false;
    this.notify(b, 'released');
  }

  private inform(req: Request, d: UdpDatagram): void {
    const ci = req.ciaddr || d.srcIp;
    if (ci === 0 || !inSubnet(ci, this.gw.net, this.gw.prefix)) return;
    req.ciaddr = ci;
    this.reply(req, DHCPACK, 0, false);
  }

  private bootp(req: Request): void {
    const ip = this.allocate(req);
    if (ip === 0) return this.exhaustedEvent(req);
    let b = this.byMac.get(req.key);
    if (!b || b.ip !== ip) {
      b = { key: req.key, mac: Buffer.from(req.mac), ip, expiresAt: 0, offerUntil: 0, bound: true };
      this.setBinding(b);
    }
    b.bound = true;
    b.expiresAt = this.now() + this.leaseSecs * 1000;
    this.reply(req, 0, ip, true);
    this.notify(b, 'bound');
  }

  private nak(req: Request, why: string): void {
    if (log.enabled('debug')) log.debug('NAK', { mac: macToString(req.mac, 0), why });
    this.reply(req, DHCPNAK, 0, false, why);
  }

  private exhaustedEvent(req: Request): void {
    this.stats.poolExhausted++;
    if (this.exhausted) return;
    this.exhausted = true;
    log.warn('address pool exhausted', {
      pool: `${ip4ToString(this.poolStart)}+${this.poolSize}`, mac: macToString(req.mac, 0),
    });
  }

  private notify(b: Binding, ev: LeaseEvent): void {
    if (!this.onLease) return;
    try { this.onLease(toLease(b), ev); } catch (err) { log.warn('onLease callback failed', { err: (err as Error).message }); }
  }

  // ---- allocation ----

  private inPool(ip: number): boolean {
    return ip >= this.poolStart && ip < this.poolStart + this.poolSize && !this.gw.addrs.has(ip) && !this.staticIps.has(ip);
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
  private grantable(req: Request, want: number): number {
    const st = this.statics.get(req.key);
    if (st) return st.ip === want ? want : 0;
    const now = this.now();
    return this.inPool(want) && this.freeFor(want, req.key, now) ? want : 0;
  }

  /** Address to offer: static, previous binding, requested, a fresh one, a reclaimed one; 0 if none. */
  private allocate(req: Request): number {
    const st = this.statics.get(req.key);
    if (st) return st.ip;
    const now = this.now();
    const b = this.byMac.get(req.key);
    if (b && this.inPool(b.ip) && !this.isDeclined(b.ip, now)) return b.ip;
    if (req.requested && this.inPool(req.requested) && this.freeFor(req.requested, req.key, now)) return req.requested;
    // a never-used address first, then the binding that expired longest ago
    let oldest: Binding | null = null;
    for (let k = 0; k < this.poolSize; k++) {
      const ip = (this.poolStart + k) >>> 0;
      if (!this.inPool(ip) || this.isDeclined(ip, now)) continue;
      const o = this.byIp.get(ip);
      if (!o) return ip;
      if (busyUntil(o) <= now && (!oldest || busyUntil(o) < busyUntil(oldest))) oldest = o;
    }
    if (oldest) { this.dropBinding(oldest); return oldest.ip; }
    return 0;
  }

  private freeCount(): number {
    const now = this.now();
    let n = 0;
    for (let k = 0; k < this.poolSize; k++) {
      const ip = (this.poolStart + k) >>> 0;
      if (this.inPool(ip) && !this.isDeclined(ip, now)) {
        const o = this.byIp.get(ip);
        if (!o || busyUntil(o) <= now) n++;
      }
    }
    return n;
  }

  private setBinding(b: Binding): void {
    const old = this.byMac.get(b.key);
    if (old) this.dropBinding(old);
    const other = this.byIp.get(b.ip);
    if (other) this.dropBinding(other);
    this.byMac.set(b.key, b);
    this.byIp.set(b.ip, b);
  }

  private dropBinding(b: Binding): void {
    if (this.byMac.get(b.key) === b) this.byMac.delete(b.key);
    if (this.byIp.get(b.ip) === b) this.byIp.delete(b.ip);
  }

  // ---- replies ----

  private encodeConfig(o: DhcpOptions): Buffer {
    const parts: Buffer[] = [];
    const ip4 = (code: number, ips: number[]): void => {
      if (ips.length === 0) return;
      const v = Buffer.alloc(4 * ips.length);
      ips.forEach((ip, k) => ip4ToBuf(ip, v, 4 * k));
      parts.push(encodeOption(code, v));
    };
    ip4(OPT_SUBNET, [this.mask]);
    ip4(OPT_BROADCAST, [this.bcast]);
    if (this.router !== null) ip4(OPT_ROUTER, [this.router]);
    ip4(OPT_DNS, o.dns ?? []);
    if (o.domainName) parts.push(encodeOption(OPT_DOMAIN, Buffer.from(o.domainName, 'utf8')));
    const mtu = o.mtu ?? (this.gw.mtu !== 1500 ? this.gw.mtu : 0);
    if (mtu) {
      if (mtu < 68 || mtu > 65535) throw new Error('dhcp: bad MTU');
      const v = Buffer.alloc(2);
      v.writeUInt16BE(mtu);
      parts.push(encodeOption(OPT_MTU, v));
    }
    if (o.tftpServerName) parts.push(encodeOption(OPT_TFTP_SERVER, Buffer.from(o.tftpServerName, 'utf8')));
    if (o.bootfile) parts.push(encodeOption(OPT_BOOTFILE, Buffer.from(o.bootfile, 'utf8')));
    if (o.dnsSearch && o.dnsSearch.length > 0) parts.push(encodeOption(OPT_SEARCH, encodeDnsSearch(o.dnsSearch)));
    return Buffer.concat(parts);
  }

  private reply(req: Request, type: number, yiaddr: number, withLease: boolean, message?: string): void {
    const opts: Buffer[] = [];
    if (type !== 0) opts.push(encodeOption(OPT_MSGTYPE, Buffer.from([type])));
    const sid = Buffer.alloc(4);
    ip4ToBuf(this.serverIp, sid, 0);
    opts.push(encodeOption(OPT_SERVER_ID, sid));
    if (type === DHCPNAK) {
      if (message) opts.push(encodeOption(OPT_MESSAGE, Buffer.from(message)));
    } else {
      if (withLease) {
        const v = Buffer.alloc(12);
        const secs = this.leaseSecs;
        v.writeUInt32BE(secs, 0);
        v.writeUInt32BE(Math.floor(secs / 2), 4);
        v.writeUInt32BE(Math.floor((secs * 7) / 8), 8);
        opts.push(encodeOption(OPT_LEASE, v.subarray(0, 4)), encodeOption(OPT_T1, v.subarray(4, 8)), encodeOption(OPT_T2, v.subarray(8, 12)));
      }
      opts.push(this.configOpts);
      const hn = this.statics.get(req.key)?.hostname ?? this.defaultHostname;
      if (hn) opts.push(encodeOption(OPT_HOSTNAME, Buffer.from(hn, 'utf8')));
    }
    opts.push(Buffer.from([OPT_END]));
    const optLen = opts.reduce((s, b) => s + b.length, 0);
    const m = Buffer.alloc(Math.max(MIN_REPLY, OPT_START + optLen));
    const p = req.buf;
    m[0] = 2; m[1] = 1; m[2] = 6; m[3] = 0;
    m.writeUInt32BE(req.xid, 4);
    m.writeUInt16BE(req.flags & 0x8000, 10);
    if (type !== DHCPNAK) ip4ToBuf(req.ciaddr, m, 12);
    ip4ToBuf(yiaddr, m, 16);
    if (type !== DHCPNAK) ip4ToBuf(this.serverIp, m, 20); // siaddr: next server (TFTP), as libslirp
    ip4ToBuf(req.giaddr, m, 24);
    p.copy(m, 28, 28, 44); // chaddr
    if (this.fileField && type !== DHCPNAK) this.fileField.copy(m, 108);
    m.writeUInt32BE(MAGIC, FIXED_LEN);
    let o = OPT_START;
    for (const b of opts) { b.copy(m, o); o += b.length; }

    if (type === DHCPOFFER) this.stats.offer++;
    else if (type === DHCPACK || type === 0) this.stats.ack++;
    else if (type === DHCPNAK) this.stats.nak++;

    // RFC 2131 4.1 destination selection (no relays)
    let dst: number;
    let dstMac: Buffer | undefined;
    if (type === DHCPNAK) {
      dst = 0xffffffff;
      dstMac = BROADCAST_MAC;
    } else if (req.ciaddr !== 0) {
      dst = req.ciaddr;
      dstMac = Buffer.from(req.mac);
    } else if (req.flags & 0x8000) {
      dst = 0xffffffff;
      dstMac = BROADCAST_MAC;
    } else {
      dst = yiaddr;
      dstMac = Buffer.from(req.mac);
    }
    this.gw.sendUdp(this.serverIp, DHCP_SERVER_PORT, dst, DHCP_CLIENT_PORT, m, dstMac);
  }
}

const BROADCAST_MAC = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

/** Until when the binding's address is taken (lease or offer hold). */
function busyUntil(b: Binding): number {
  return Math.max(b.bound ? b.expiresAt : 0, b.offerUntil);
}

function toLease(b: Binding): Lease {
  const l: Lease = { mac: macToString(b.mac, 0), ip: b.ip, expiresAt: b.expiresAt };
  if (b.hostname !== undefined) l.hostname = b.hostname;
  return l;
}

/** One option, split into several instances of at most 255 bytes (RFC 3396) when longer. */
export function encodeOption(code: number, data: Buffer): Buffer {
  if (data.length === 0) return Buffer.from([code, 0]);
  const parts: Buffer[] = [];
  for (let at = 0; at < data.length; at += 255) {
    const n = Math.min(255, data.length - at);
    parts.push(Buffer.from([code, n]), data.subarray(at, at + n));
  }
  return Buffer.concat(parts);
}

function checkName(name: string): string[] {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  const labels = n.split('.');
  if (n.length === 0 || n.length > 253) throw new Error(`dhcp: bad domain name '${name}'`);
  for (const l of labels) {
    if (l.length === 0 || l.length > 63 || !/^[\x21-\x7e]+$/.test(l)) throw new Error(`dhcp: bad domain name '${name}'`);
  }
  return labels;
}

function checkHostname(h: string): string {
  checkName(h);
  return h;
}

/**
 * RFC 3397 domain search list: names in RFC 1035 wire form, a suffix already written earlier in
 * the option replaced by a compression pointer (offsets from the start of the option data).
 */
export function encodeDnsSearch(names: string[]): Buffer {
  const out: number[] = [];
  const seen = new Map<string, number>();
  for (const name of names) {
    const labels = checkName(name).map((l) => l.toLowerCase());
    let k = 0;
    for (; k < labels.length; k++) {
      const suffix = labels.slice(k).join('.');
      const at = seen.get(suffix);
      if (at !== undefined) {
        out.push(0xc0 | (at >> 8), at & 0xff);
        break;
      }
      if (out.length < 0x4000) seen.set(suffix, out.length);
      const b = Buffer.from(labels[k], 'utf8');
      out.push(b.length, ...b);
    }
    if (k === labels.length) out.push(0);
  }
  return Buffer.from(out);
}

/** A client-supplied hostname reduced to DNS-safe characters (letters, digits, '-', '.'), or undefined. */
function sanitizeHostname(raw: Buffer): string | undefined {
  let s = '';
  for (let k = 0; k < raw.length && s.length < 63; k++) {
    const c = raw[k];
    if (c === 0) break;
    if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46) s += String.fromCharCode(c);
  }
  s = s.replace(/^[.-]+|[.-]+$/g, '');
  return s.length > 0 ? s : undefined;
}
