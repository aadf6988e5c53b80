// DHCP server (RFC 2131/2132) on the gateway, with QEMU user-mode (libslirp bootp.c) semantics
// for what is offered: the router and server id are the gateway's host address, addresses come
// from a pool starting at `dhcpstart` (.15 by default), the lease is 24 hours, and the options
// QEMU exposes (dns, domainname, dnssearch, hostname, tftp-server-name, bootfile) are sent.
//
// Design (the wire format is in dhcp-codec.ts, the pool and bindings in dhcp-leases.ts)
// - Addresses: one binding per client MAC, stable across expiry and restarts, memory bounded
//   by the pool (see dhcp-leases.ts); no timers, the injectable clock is read lazily.
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
// - The configuration options (subnet, broadcast, router, DNS, domain, MTU, TFTP server, boot
//   file, option 119 domain search) are encoded once at construction.
// - Hostile input: the fixed header and every option length are bounds-checked; a packet with a
//   wrong op/htype/hlen/magic or a malformed option area is dropped and counted in `stats`.
//   The handler never throws (a bug is caught and counted as `errors`).
// - Hostile guests: a port (learned from the frame's source MAC through `portOf`, the switch
//   port it arrived on) holds at most `maxLeasesPerPort` pool addresses, offers are held only
//   `offerHoldMs` (10 s), and declined addresses count against the declining port (see
//   dhcp-leases.ts). A client refused by that limit gets no answer at all (a NAK would only
//   make it DISCOVER again at once); the refusal is counted (`stats.portLimited`) and reported
//   to `limits` (logged once per interval with the port). Hostnames pass `nameAllowed` first:
//   a client whose name belongs to someone else is bound without it (`stats.nameRefused`).
// - Plain BOOTP (no option 53) gets a BOOTREPLY with the configuration and an address bound like
//   a DHCP lease, for old PXE ROMs; libslirp answers those too.
//
// Trade-offs: no option overload (52) parsing (a client does not need it to talk to us), no
// relay agent support, no client-id (61) keyed bindings (the MAC is the key, like libslirp and
// passt: a VM's identity on a virtual network is its MAC).
import type { UdpDatagram, UdpHost } from '../stack/output.ts';
import { inSubnet, ip4ToString, macToString, maskOf } from '../wire/addr.ts';
import { logger } from '../util/log.ts';
import { LimitLog, type LimitReporter } from '../util/limits.ts';
import {
  BOOTP_FLAG_BROADCAST, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DHCPACK, DHCPDECLINE, DHCPDISCOVER, DHCPINFORM, DHCPNAK,
  DHCPOFFER, DHCPRELEASE, DHCPREQUEST, OPT_BOOTFILE, OPT_BROADCAST, OPT_DNS, OPT_DOMAIN, OPT_HOSTNAME, OPT_LEASE,
  OPT_MESSAGE, OPT_MSGTYPE, OPT_MTU, OPT_ROUTER, OPT_SEARCH, OPT_SERVER_ID, OPT_SUBNET, OPT_T1, OPT_T2,
  OPT_TFTP_SERVER, checkHostname, encodeDnsSearch, encodeIp4Option, encodeOption, parseDhcp, writeDhcpReply,
  type DhcpRequest,
} from './dhcp-codec.ts';
import { LeaseStore, toLease, type Binding, type Lease, type LeaseRecord, type StaticHost } from './dhcp-leases.ts';

export type { Lease, LeaseRecord, StaticHost };

const log = logger('dhcp');
const BROADCAST_MAC = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
export const DEFAULT_LEASES_PER_PORT = 8;
/** the port of a client whose source MAC the switch has not learned (its table was full) */
export const UNLEARNED_PORT = '(unlearned)';

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
  /** how long an OFFERed address is held for the client; default 10 s */
  offerHoldMs?: number;
  /** pool addresses one port may hold (leases, offers, declines); 0: no limit; default 8 */
  maxLeasesPerPort?: number;
  /** the switch port a client's frames come from (by their source MAC); a stable name */
  portOf?: (srcMac: Buffer) => string | undefined;
  /** may this client (MAC aa:bb:..) be bound under this hostname? true, or whose the name is; default: yes */
  nameAllowed?: (mac: string, hostname: string) => true | string;
  /** where limit hits are reported (default: logged by the server itself) */
  limits?: LimitReporter;
  onLease?: (lease: Lease, event: LeaseEvent) => void;
  /** clock in ms since the epoch (tests, persistence); default Date.now */
  now?: () => number;
}

export type LeaseEvent = 'bound' | 'renewed' | 'released' | 'declined';

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
  /** a port already held maxLeasesPerPort addresses: the client was not answered */
  portLimited: number;
  /** a hostname refused by nameAllowed (the address was granted without the name) */
  nameRefused: number;
  errors: number;
}

export class DhcpServer {
  readonly stats: DhcpStats = {
    rx: 0, malformed: 0, badOp: 0, badHtype: 0, badMagic: 0, badOptions: 0, discover: 0, request: 0, decline: 0,
    release: 0, inform: 0, bootp: 0, unknownType: 0, otherServer: 0, offer: 0, ack: 0, nak: 0, poolExhausted: 0,
    portLimited: 0, nameRefused: 0, errors: 0,
  };
  onLease: ((lease: Lease, event: LeaseEvent) => void) | null;

  readonly serverIp: number;
  readonly store: LeaseStore;
  private readonly router: number | null;
  private readonly leaseSecs: number;
  private exhausted = false;
  private closed = false;
  /** encoded option blocks appended to every reply (after type/server id/lease) */
  private readonly configOpts: Buffer;
  private readonly defaultHostname: string | undefined;
  private readonly fileField: Buffer | null;
  private readonly maxPerPort: number;
  private readonly portOf: ((srcMac: Buffer) => string | undefined) | null;
  private readonly nameAllowed: ((mac: string, hostname: string) => true | string) | null;
  private readonly limits: LimitReporter;
  private readonly handler = (d: UdpDatagram): void => this.input(d);

  constructor(private readonly gw: UdpHost, opts: DhcpOptions = {}) {
    const first = gw.addrs.values().next().value;
    this.serverIp = opts.serverIp ?? first ?? 0;
    if (!gw.isLocal(this.serverIp)) throw new Error(`dhcp: server address ${ip4ToString(this.serverIp)} is not in the network`);
    this.router = opts.router === undefined ? this.serverIp : opts.router;
    const bcast = gw.broadcast;
    const poolStart = opts.poolStart ?? ((gw.net + 15) >>> 0);
    if (!gw.isLocal(poolStart) || poolStart === gw.net || poolStart === bcast) {
      throw new Error(`dhcp: pool start ${ip4ToString(poolStart)} is not a host address of the network`);
    }
    const maxSize = bcast - poolStart;
    this.leaseSecs = opts.leaseTime ?? 86400;
    this.maxPerPort = opts.maxLeasesPerPort ?? DEFAULT_LEASES_PER_PORT;
    this.portOf = opts.portOf ?? null;
    this.nameAllowed = opts.nameAllowed ?? null;
    this.limits = opts.limits ?? new LimitLog(log);
    if (!(this.leaseSecs >= 1 && this.leaseSecs <= 0xffffffff)) throw new Error('dhcp: bad lease time');
    this.store = new LeaseStore({
      poolStart,
      poolSize: Math.max(0, Math.min(opts.poolSize ?? maxSize, maxSize)),
      reserved: (ip) => gw.addrs.has(ip),
      isHostAddress: (ip) => gw.isLocal(ip) && ip !== gw.net && ip !== bcast,
      staticHosts: opts.staticHosts,
      declineHoldMs: opts.declineHoldMs ?? 600_000,
      offerHoldMs: opts.offerHoldMs ?? 10_000,
      maxPerPort: this.portOf ? this.maxPerPort : 0,
      now: opts.now ?? Date.now,
    }, checkHostname);
    this.onLease = opts.onLease ?? null;
    this.defaultHostname = opts.hostname === undefined ? undefined : checkHostname(opts.hostname);
    this.configOpts = this.encodeConfig(opts);
    this.fileField = opts.bootfile !== undefined ? Buffer.from(opts.bootfile, 'utf8') : null;
    if (this.fileField && this.fileField.length > 127) throw new Error('dhcp: bootfile longer than 127 bytes');
    gw.bindUdp(0, DHCP_SERVER_PORT, this.handler);
  }

  get poolStart(): number { return this.store.poolStart; }
  get poolSize(): number { return this.store.poolSize; }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.gw.unbindUdp(0, DHCP_SERVER_PORT);
  }

  // ---- leases API ----

  /** Active (ACKed, unexpired) leases, static ones included once bound. */
  leases(): Lease[] { return this.store.leases(); }
  /** Every known binding that was ever ACKed (also expired/released ones, for stable addresses). */
  exportLeases(): LeaseRecord[] { return this.store.export(); }
  /** Restores exported leases; invalid or conflicting records are skipped. Returns how many were taken. */
  importLeases(records: unknown): number { return this.store.import(records); }
  /** A switch port closed: what its clients hold no longer counts against it. */
  forgetPort(port: string): void { this.store.forgetPort(port); }

  // ---- input ----

  private input(d: UdpDatagram): void {
    if (this.closed) return;
    this.stats.rx++;
    try {
      const req = parseDhcp(d.payload);
      if (typeof req === 'string') {
        this.stats.malformed++;
        if (req !== 'short' && req !== 'groupMac') this.stats[req]++;
        return;
      }
      this.dispatch(req, d, this.portOf ? this.portOf(d.srcMac) ?? UNLEARNED_PORT : undefined);
    } catch (err) {
      this.stats.errors++;
      if (this.stats.errors === 1) log.error('handler error (a qnet bug; the message was dropped)', { err: (err as Error).stack });
    }
  }

  private dispatch(req: DhcpRequest, d: UdpDatagram, port: string | undefined): void {
    switch (req.type) {
      case DHCPDISCOVER: this.stats.discover++; return this.discover(req, port);
      case DHCPREQUEST: this.stats.request++; return this.request(req, port);
      case DHCPDECLINE: this.stats.decline++; return this.decline(req);
      case DHCPRELEASE: this.stats.release++; return this.release(req);
      case DHCPINFORM: this.stats.inform++; return this.inform(req, d);
      case 0: this.stats.bootp++; return this.bootp(req, port);
      default: this.stats.unknownType++;
    }
  }

  /** Does the client's port still have room for an address this client does not hold? */
  private portRoom(req: DhcpRequest, port: string | undefined): boolean {
    if (port === undefined || this.store.portAllows(port, req.key)) return true;
    this.stats.portLimited++;
    this.limits.hit('dhcp.leasesPerPort', this.maxPerPort, port,
      'one port asked for more DHCP addresses than it may hold (random MACs?); raise the network\'s limits.leasesPerPort if one port really carries that many guests',
      () => ({ mac: macToString(req.mac, 0) }));
    return false;
  }

  /** The hostname the client may be bound under (undefined: none or refused). */
  private hostnameFor(req: DhcpRequest, port: string | undefined, binding: boolean): string | undefined {
    const h = req.hostname;
    if (h === undefined || !this.nameAllowed || this.store.staticFor(req.key)) return h;
    const mac = macToString(req.mac, 0);
    const ok = this.nameAllowed(mac, h);
    if (ok === true) return h;
    this.store.clearHostname(req.key);
    if (binding) { // counted once per handshake, on the REQUEST
      this.stats.nameRefused++;
      this.limits.hit('dhcp.nameTaken', 1, port ?? mac,
        'a guest asked DHCP for a name that belongs to another VM; it got an address but not the name (give each VM its own name)',
        { name: h.toLowerCase(), mac, owner: ok });
    }
    return undefined;
  }

  private discover(req: DhcpRequest, port: string | undefined): void {
    if (!this.portRoom(req, port)) return;
    const ip = this.store.allocate(req.key, req.requested);
    if (ip === 0) return this.exhaustedEvent(req);
    this.store.offer(req.key, req.mac, ip, this.hostnameFor(req, port, false), port);
    this.reply(req, DHCPOFFER, ip, true);
  }

  private request(req: DhcpRequest, port: string | undefined): void {
    let want: number;
    if (req.serverId !== 0) {
      // SELECTING
      if (req.serverId !== this.serverIp) {
        this.stats.otherServer++;
        this.store.withdrawOffer(req.key);
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
    if (!this.portRoom(req, port)) return;
    const ip = this.store.grantable(req.key, want);
    if (ip === 0) {
      if (this.store.freeCount() === 0) this.exhaustedEvent(req);
      return this.nak(req, 'address not available');
    }
    const { binding, renewed } = this.store.bind(req.key, req.mac, ip, this.leaseSecs * 1000, this.hostnameFor(req, port, true), port);
    this.exhausted = false;
    this.reply(req, DHCPACK, ip, true);
    this.notify(binding, renewed ? 'renewed' : 'bound');
  }

  private decline(req: DhcpRequest): void {
    if (req.serverId !== 0 && req.serverId !== this.serverIp) { this.stats.otherServer++; return; }
    const b = this.store.decline(req.key, req.requested);
    if (!b) return;
    log.warn('address declined by client (in use?)', { ip: ip4ToString(b.ip), mac: macToString(b.mac, 0) });
    this.notify(b, 'declined');
  }

  private release(req: DhcpRequest): void {
    if (req.serverId !== 0 && req.serverId !== this.serverIp) { this.stats.otherServer++; return; }
    const b = this.store.release(req.key, req.ciaddr);
    if (!b) return;
    this.exhausted = false;
    this.notify(b, 'released');
  }

  private inform(req: DhcpRequest, d: UdpDatagram): void {
    const ci = req.ciaddr || d.srcIp;
    if (ci === 0 || !inSubnet(ci, this.gw.net, this.gw.prefix)) return;
    req.ciaddr = ci;
    this.reply(req, DHCPACK, 0, false);
  }

  private bootp(req: DhcpRequest, port: string | undefined): void {
    if (!this.portRoom(req, port)) return;
    const ip = this.store.allocate(req.key, req.requested);
    if (ip === 0) return this.exhaustedEvent(req);
    const { binding } = this.store.bind(req.key, req.mac, ip, this.leaseSecs * 1000, undefined, port);
    this.reply(req, 0, ip, true);
    this.notify(binding, 'bound');
  }

  private nak(req: DhcpRequest, why: string): void {
    if (log.enabled('debug')) log.debug('NAK', { mac: macToString(req.mac, 0), why });
    this.reply(req, DHCPNAK, 0, false, why);
  }

  private exhaustedEvent(req: DhcpRequest): void {
    this.stats.poolExhausted++;
    if (this.exhausted) return;
    this.exhausted = true;
    log.warn('address pool exhausted', {
      pool: `${ip4ToString(this.store.poolStart)}+${this.store.poolSize}`, mac: macToString(req.mac, 0),
    });
  }

  private notify(b: Binding, ev: LeaseEvent): void {
    if (!this.onLease) return;
    try { this.onLease(toLease(b), ev); } catch (err) { log.warn('onLease callback failed', { err: (err as Error).message }); }
  }

  // ---- replies ----

  private encodeConfig(o: DhcpOptions): Buffer {
    const parts: Buffer[] = [
      encodeIp4Option(OPT_SUBNET, [maskOf(this.gw.prefix)]),
      encodeIp4Option(OPT_BROADCAST, [this.gw.broadcast]),
    ];
    if (this.router !== null) parts.push(encodeIp4Option(OPT_ROUTER, [this.router]));
    parts.push(encodeIp4Option(OPT_DNS, o.dns ?? []));
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

  private reply(req: DhcpRequest, type: number, yiaddr: number, withLease: boolean, message?: string): void {
    const opts: Buffer[] = [];
    if (type !== 0) opts.push(encodeOption(OPT_MSGTYPE, Buffer.from([type])));
    opts.push(encodeIp4Option(OPT_SERVER_ID, [this.serverIp]));
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
      const hn = this.store.staticFor(req.key)?.hostname ?? this.defaultHostname;
      if (hn) opts.push(encodeOption(OPT_HOSTNAME, Buffer.from(hn, 'utf8')));
    }
    // siaddr: the next server (TFTP) is us, as libslirp does
    const m = writeDhcpReply(req, { type, yiaddr, siaddr: this.serverIp, file: this.fileField, options: opts });

    if (type === DHCPOFFER) this.stats.offer++;
    else if (type === DHCPACK || type === 0) this.stats.ack++;
    else if (type === DHCPNAK) this.stats.nak++;

    // RFC 2131 4.1 destination selection (no relays)
    let dst: number;
    let dstMac: Buffer;
    if (type === DHCPNAK || (req.ciaddr === 0 && req.flags & BOOTP_FLAG_BROADCAST)) {
      dst = 0xffffffff;
      dstMac = BROADCAST_MAC;
    } else {
      dst = req.ciaddr !== 0 ? req.ciaddr : yiaddr;
      dstMac = req.mac;
    }
    this.gw.sendUdp(this.serverIp, DHCP_SERVER_PORT, dst, DHCP_CLIENT_PORT, m, dstMac);
  }
}

