// DHCPv6 server (RFC 8415) on the gateway: stateless configuration for every guest (DNS
// servers, domain search list, boot file URL) and, when a range is configured, addresses
// (IA_NA) with leases, static hosts and persistence, as the DHCPv4 server does for IPv4.
//
// Design (the wire format is in dhcp6-codec.ts, the pool and bindings in dhcp6-leases.ts)
// - Listening: bound to port 547 on any address; messages must come over IPv6 to
//   ff02::1:2 (All_DHCP_Relay_Agents_and_Servers) or ff05::1:3, or be unicast to one of the
//   gateway's addresses (else `notForUs`: the gateway also hands us datagrams to port 547 of
//   any destination). Replies go from `serverAddr` (the router's link-local address) to the
//   client's source address, port 546 (RFC 8415 7.2, whatever the source port), at the
//   client's MAC (no neighbour discovery needed). `serverAddr` must stay valid (the gateway
//   pins its link-local address).
// - Identity: the Server Identifier is a DUID-LL of the gateway MAC by default. The MAC is
//   derived from the network's address, so the DUID is stable across restarts and clients
//   renewing with it are still answered; DUID-LLT (`duid: 'llt'`) is offered for clients that
//   insist on it, with its time given (`duidTime`) or taken once from the clock.
// - Addresses: one binding per client (its MAC and DUID: see dhcp6-leases.ts for why both),
//   one address for the first IA_NA of a message; a further IA_NA, IA_TA and IA_PD get their
//   IA back with status NoAddrsAvail / NoPrefixAvail (a virtual segment needs neither
//   temporary addresses nor delegated prefixes). The gateway's IPv6 addresses (as they are at
//   construction) and `serverAddr` are never handed out. Memory is bounded by `maxLeases`; no
//   timers, the injected clock is read lazily.
// - Advertise carries Preference 255, so a client goes on to Request at once instead of
//   waiting a second for other servers (RFC 8415 18.2.1): there are none on a virtual segment.
//   The advertised address is held for the client for `offerHoldMs`. Rapid Commit (RFC 8415
//   21.14) is honoured unless `rapidCommit: false`: the Solicit is answered with a Reply and
//   the binding is committed at once.
// - No addresses to give (no range: a SLAAC network; or the pool used up): a Solicit gets an
//   Advertise holding only a NoAddrsAvail status, server and client ids (RFC 8415 18.3.9)
//   rather than silence. A client ignores it (18.2.9) and keeps soliciting at its backoff, as
//   it would after silence, but the status message in its log says why, and it is what the
//   RFC asks of a server. Information-Request is always answered.
// - Authoritative: the server is the only one on its segment, so Renew and Rebind for a
//   binding it has no record of (a restart without the lease file) re-create the binding when
//   the client's address is still free in the pool (RFC 8415 18.3.4/18.3.5 allow a server
//   configured to do so), as the DHCPv4 server does for INIT-REBOOT. Otherwise: Renew gets
//   NoBinding in the IA (the client then Requests), Rebind gets its addresses back with
//   lifetimes 0 (the client stops using them and solicits). A known binding whose address is
//   no longer in the pool (the range changed) is moved to a new address in the Renew's Reply,
//   the old one listed with lifetimes 0. Confirm: Success when every address is on the prefix,
//   NotOnLink otherwise, no reply when there is no address (18.3.3).
// - Validation (RFC 8415 16): a Solicit, Confirm or Rebind with a Server Identifier, a
//   Request, Renew, Release or Decline without one or with another server's, any of them
//   without a Client Identifier, an Information-Request with an IA option or another
//   server's identifier: dropped and counted. Server and relay messages are dropped (no relay
//   support: a virtual segment has no relays). Unicast (RFC 8415 18.4; the server never sends
//   a Server Unicast option): Solicit, Confirm, Rebind and Information-Request are dropped,
//   Request, Renew, Release and Decline answered with status UseMulticast.
// - Options: DNS servers, domain search list and boot file URL go in every Advertise and
//   every Reply carrying configuration, whether or not the client's Option Request option
//   lists them (as the DHCPv4 server does): clients ignore what they did not ask for, and the
//   reply stays deterministic. Encoded once at construction. A client FQDN (39) is kept as the
//   lease's hostname (sanitised) and answered with S=1 (qnet's DNS serves the name, RFC 4704).
// - Lifetimes: valid 86400 s and preferred 14400 s by default (those of the router
//   advertisement's prefix, so a leased address ages as a SLAAC one), T1 and T2 at 0.5 and 0.8
//   of the preferred lifetime (RFC 8415 21.4).
// - Hostile input: every length is bounds-checked (dhcp6-codec.ts); malformed messages are
//   dropped and counted in `stats` apart from protocol-level drops. The handler never throws
//   (a bug is caught and counted as `errors`).
//
// Trade-offs: no relay agent messages, no Reconfigure (it needs authentication keys the
// guest would have to be given), no IA_TA or prefix delegation, no Server Unicast option
// (multicast costs nothing on a virtual segment), no authentication (RFC 8415 20).
import type { UdpDatagram, UdpHost } from '../stack/output.ts';
import { V6_BASE, ip6 } from '../stack/addr.ts';
import { macToString, parseIp6 } from '../wire/addr.ts';
import { logger } from '../util/log.ts';
import {
  ADVERTISE, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ALL_DHCP_SERVERS, CONFIRM, DECLINE, DHCP6_CLIENT_PORT,
  DHCP6_SERVER_PORT, FQDN_O, FQDN_S, INFINITY, INFORMATION_REQUEST, OPT_BOOTFILE_URL, OPT_CLIENTID,
  OPT_CLIENT_FQDN, OPT_DOMAIN_LIST, OPT_IA_NA, OPT_IA_PD, OPT_INFORMATION_REFRESH_TIME, OPT_PREFERENCE,
  OPT_RAPID_COMMIT, OPT_SERVERID, REBIND, RECONFIGURE, RELAY_FORW, RELAY_REPL, RELEASE, RENEW, REPLY, REQUEST,
  SOLICIT, STATUS_NO_ADDRS_AVAIL, STATUS_NO_BINDING, STATUS_NO_PREFIX_AVAIL, STATUS_NOT_ON_LINK, STATUS_SUCCESS,
  STATUS_USE_MULTICAST, duidLL, duidLLT, duidTimeOf, duidToString, encodeDnsServers, encodeDomainNames, encodeIa,
  encodeIaAddr, encodeOption6, encodeStatus, encodeU32Option, parseDhcp6, writeDhcp6, type Dhcp6Ia, type Dhcp6Message,
} from './dhcp6-codec.ts';
import { checkHostname } from './dhcp-codec.ts';
import {
  LeaseStore6, addrToBig, bigToAddr, bigToString, client6, toLease6, type Binding6, type Client6, type Lease6,
  type LeaseRecord6, type StaticHost6,
} from './dhcp6-leases.ts';

export type { Lease6, LeaseRecord6, StaticHost6 };

const log = logger('dhcp6');

export interface Dhcp6Options {
  /** the gateway's MAC: the server's DUID is made of it */
  serverMac: Buffer;
  /** address id replies come from (the router's link-local address) */
  serverAddr: number;
  /** the network's prefix (16 bytes) and its length */
  prefix: Buffer;
  prefixLen: number;
  /** stateful addresses from start to end (on the prefix); absent: stateless only */
  range?: { start: string; end: string };
  /** option 23: DNS server address ids */
  dns?: number[];
  /** option 24 */
  search?: string[];
  /** option 59, e.g. 'tftp://[fec0::2]/pxelinux.0' */
  bootfileUrl?: string;
  /** seconds; default 14400 */
  preferredLifetime?: number;
  /** seconds; default 86400 */
  validLifetime?: number;
  /** answer a Solicit with Rapid Commit by a committed Reply; default true */
  rapidCommit?: boolean;
  /** server DUID type; default 'll' */
  duid?: 'll' | 'llt';
  /** DUID-LLT time (seconds since 2000-01-01 UTC); default from the clock at construction */
  duidTime?: number;
  /** option 32 in replies to Information-Request (seconds); default: not sent (the client's 86400) */
  informationRefreshTime?: number;
  staticHosts?: StaticHost6[];
  /** bindings and held-down addresses at most (static hosts not counted); default 4096 */
  maxLeases?: number;
  /** how long a declined address stays unused; default 10 minutes */
  declineHoldMs?: number;
  /** how long an advertised address is held for the client; default 60 s */
  offerHoldMs?: number;
  onLease?: (lease: Lease6, event: LeaseEvent6) => void;
  /** clock in ms since the epoch (tests, persistence); default Date.now */
  now?: () => number;
}

export type LeaseEvent6 = 'bound' | 'renewed' | 'released' | 'declined';

export interface Dhcp6Stats {
  rx: number;
  /** dropped by the codec (the reason is counted too) */
  malformed: number;
  short: number;
  badOptions: number;
  badIa: number;
  badDuid: number;
  /** an IPv4 datagram to port 547 */
  notV6: number;
  /** to neither a DHCP group nor one of our addresses */
  notForUs: number;
  /** from a group MAC */
  badSource: number;
  /** RFC 8415 16 drops */
  missingClientId: number;
  missingServerId: number;
  /** a Server Identifier where none belongs, an IA in an Information-Request */
  unexpectedOption: number;
  otherServer: number;
  /** unicast Solicit/Confirm/Rebind/Information-Request (dropped, RFC 8415 18.4) */
  unicast: number;
  relay: number;
  /** Advertise, Reply, Reconfigure, Relay-reply sent to a server */
  serverMessage: number;
  unknownType: number;
  solicit: number;
  request: number;
  confirm: number;
  renew: number;
  rebind: number;
  release: number;
  decline: number;
  informationRequest: number;
  advertise: number;
  reply: number;
  noAddrsAvail: number;
  noBinding: number;
  notOnLink: number;
  useMulticast: number;
  poolExhausted: number;
  errors: number;
}

const STATUS_TEXT: Record<number, string> = {
  [STATUS_SUCCESS]: 'success',
  [STATUS_NO_ADDRS_AVAIL]: 'no addresses available',
  [STATUS_NO_BINDING]: 'no binding for this IA',
  [STATUS_NOT_ON_LINK]: 'address not on this link',
  [STATUS_USE_MULTICAST]: 'send to ff02::1:2',
  [STATUS_NO_PREFIX_AVAIL]: 'no prefix delegation here',
};

function status(code: number, text = STATUS_TEXT[code] ?? ''): Buffer { return encodeStatus(code, text); }

export class Dhcp6Server {
  readonly stats: Dhcp6Stats = {
    rx: 0, malformed: 0, short: 0, badOptions: 0, badIa: 0, badDuid: 0, notV6: 0, notForUs: 0, badSource: 0,
    missingClientId: 0, missingServerId: 0, unexpectedOption: 0, otherServer: 0, unicast: 0, relay: 0, serverMessage: 0,
    unknownType: 0, solicit: 0, request: 0, confirm: 0, renew: 0, rebind: 0, release: 0, decline: 0, informationRequest: 0,
    advertise: 0, reply: 0, noAddrsAvail: 0, noBinding: 0, notOnLink: 0, useMulticast: 0, poolExhausted: 0, errors: 0,
  };
  onLease: ((lease: Lease6, event: LeaseEvent6) => void) | null;
  readonly store: LeaseStore6;
  /** the Server Identifier's DUID */
  readonly duid: Buffer;
  private readonly serverAddr: number;
  private readonly serverIdOpt: Buffer;
  private readonly configOpts: Buffer[];
  private readonly infoRefreshOpt: Buffer[];
  private readonly preferred: number;
  private readonly valid: number;
  private readonly t1: number;
  private readonly t2: number;
  private readonly rapidCommit: boolean;
  private exhausted = false;
  private closed = false;
  private readonly handler = (d: UdpDatagram): void => this.input(d);

  constructor(private readonly host: UdpHost, opts: Dhcp6Options) {
    if (!(opts.serverAddr >= V6_BASE)) throw new Error('dhcp6: the server address is not an IPv6 address');
    if (!Buffer.isBuffer(opts.serverMac) || opts.serverMac.length !== 6) throw new Error('dhcp6: bad server MAC');
    this.serverAddr = opts.serverAddr;
    const now = opts.now ?? Date.now;
    this.duid = opts.duid === 'llt' ? duidLLT(opts.serverMac, opts.duidTime ?? duidTimeOf(now())) : duidLL(opts.serverMac);
    this.serverIdOpt = encodeOption6(OPT_SERVERID, this.duid);

    this.valid = opts.validLifetime ?? 86400;
    this.preferred = opts.preferredLifetime ?? Math.min(14400, this.valid);
    const lifetimeOk = (s: number): boolean => Number.isInteger(s) && s >= 1 && s <= INFINITY;
    if (!lifetimeOk(this.valid) || !lifetimeOk(this.preferred) || this.preferred > this.valid) {
      throw new Error('dhcp6: lifetimes must be whole seconds, preferred <= valid');
    }
    this.t1 = this.preferred === INFINITY ? INFINITY : Math.floor(this.preferred * 0.5);
    this.t2 = this.preferred === INFINITY ? INFINITY : Math.floor(this.preferred * 0.8);
    this.rapidCommit = opts.rapidCommit ?? true;

    let range: { start: bigint; end: bigint } | null = null;
    if (opts.range) {
      const s = parseIp6(opts.range.start);
      const e = parseIp6(opts.range.end);
      if (!s || !e) throw new Error(`dhcp6: bad range ${opts.range.start}-${opts.range.end}`);
      range = { start: addrToBig(s), end: addrToBig(e) };
    }
    const reserved = new Set<bigint>();
    for (const a of [...host.addrs, opts.serverAddr]) if (a >= V6_BASE) reserved.add(addrToBig(ip6.bytes(a)));
    this.store = new LeaseStore6({
      prefix: opts.prefix, prefixLen: opts.prefixLen, range, reserved: (a) => reserved.has(a),
      staticHosts: opts.staticHosts, maxLeases: opts.maxLeases ?? 4096,
      declineHoldMs: opts.declineHoldMs ?? 600_000, offerHoldMs: opts.offerHoldMs ?? 60_000, now,
    }, checkHostname);
    this.onLease = opts.onLease ?? null;
    this.configOpts = this.encodeConfig(opts);
    this.infoRefreshOpt = [];
    if (opts.informationRefreshTime !== undefined) {
      const t = opts.informationRefreshTime;
      if (!(Number.isInteger(t) && t >= 600 && t <= INFINITY)) throw new Error('dhcp6: the information refresh time must be at least 600 s (RFC 8415 21.23)');
      this.infoRefreshOpt.push(encodeU32Option(OPT_INFORMATION_REFRESH_TIME, t));
    }
    host.bindUdp(0, DHCP6_SERVER_PORT, this.handler);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.host.unbindUdp(0, DHCP6_SERVER_PORT);
  }

  /** addresses are handed out (a range or static hosts): what the router advertisement's M flag should say */
  get managed(): boolean { return this.store.hasPool || this.store.hasStatics; }

  // ---- leases API ----

  /** Active (committed, unexpired) leases, static ones included. */
  leases(): Lease6[] { return this.store.leases(); }
  /** Every binding ever committed (also expired/released ones, for stable addresses). */
  exportLeases(): LeaseRecord6[] { return this.store.export(); }
  /** Restores exported leases; invalid or conflicting records are skipped. Returns how many were taken. */
  importLeases(records: unknown): number { return this.store.import(records); }

  // ---- input ----

  private input(d: UdpDatagram): void {
    if (this.closed) return;
    this.stats.rx++;
    try {
      if (d.srcIp < V6_BASE || d.dstIp < V6_BASE) { this.stats.notV6++; return; }
      if (d.srcMac[0] & 1) { this.stats.badSource++; return; }
      const dst = ip6.bytes(d.dstIp);
      const multicast = dst[0] === 0xff;
      if (multicast
        ? !(dst.equals(ALL_DHCP_RELAY_AGENTS_AND_SERVERS) || dst.equals(ALL_DHCP_SERVERS))
        : !(this.host.addrs.has(d.dstIp) || d.dstIp === this.serverAddr)) {
        this.stats.notForUs++;
        return;
      }
      const m = parseDhcp6(d.payload);
      if (typeof m === 'string') {
        this.stats.malformed++;
        this.stats[m]++;
        return;
      }
      this.dispatch(m, d, multicast);
    } catch (err) {
      this.stats.errors++;
      if (this.stats.errors === 1) log.error('handler error (a qnet bug; the message was dropped)', { err: (err as Error).stack });
    }
  }

  private dispatch(m: Dhcp6Message, d: UdpDatagram, multicast: boolean): void {
    switch (m.type) {
      case SOLICIT:
        this.stats.solicit++;
        if (!this.valid16(m, 'none') || !this.multicastOnly(multicast)) return;
        return this.solicit(m, d);
      case REQUEST:
        this.stats.request++;
        if (!this.valid16(m, 'ours')) return;
        if (!multicast) return this.useMulticast(m, d);
        return this.request(m, d);
      case CONFIRM:
        this.stats.confirm++;
        if (!this.valid16(m, 'none') || !this.multicastOnly(multicast)) return;
        return this.confirm(m, d);
      case RENEW:
        this.stats.renew++;
        if (!this.valid16(m, 'ours')) return;
        if (!multicast) return this.useMulticast(m, d);
        return this.extend(m, d, false);
      case REBIND:
        this.stats.rebind++;
        if (!this.valid16(m, 'none') || !this.multicastOnly(multicast)) return;
        return this.extend(m, d, true);
      case RELEASE:
        this.stats.release++;
        if (!this.valid16(m, 'ours')) return;
        if (!multicast) return this.useMulticast(m, d);
        return this.release(m, d);
      case DECLINE:
        this.stats.decline++;
        if (!this.valid16(m, 'ours')) return;
        if (!multicast) return this.useMulticast(m, d);
        return this.decline(m, d);
      case INFORMATION_REQUEST:
        this.stats.informationRequest++;
        if (!this.valid16(m, 'optional') || !this.multicastOnly(multicast)) return;
        return this.information(m, d);
      case ADVERTISE: case REPLY: case RECONFIGURE: case RELAY_REPL:
        this.stats.serverMessage++;
        return;
      case RELAY_FORW:
        this.stats.relay++;
        return;
      default:
        this.stats.unknownType++;
    }
  }

  /** RFC 8415 16: identifiers present or absent as the message type requires. */
  private valid16(m: Dhcp6Message, serverId: 'none' | 'ours' | 'optional'): boolean {
    if (serverId === 'optional') {
      // Information-Request: the client id is optional, an IA is not allowed
      if (m.ias.length > 0 || m.extraIas > 0) { this.stats.unexpectedOption++; return false; }
      if (m.serverId && !m.serverId.equals(this.duid)) { this.stats.otherServer++; return false; }
      return true;
    }
    if (!m.clientId) { this.stats.missingClientId++; return false; }
    if (serverId === 'none') {
      if (m.serverId) { this.stats.unexpectedOption++; return false; }
      return true;
    }
    if (!m.serverId) { this.stats.missingServerId++; return false; }
    if (!m.serverId.equals(this.duid)) { this.stats.otherServer++; return false; }
    return true;
  }

  private multicastOnly(multicast: boolean): boolean {
    if (!multicast) this.stats.unicast++;
    return multicast;
  }

  // ---- the exchanges ----

  private solicit(m: Dhcp6Message, d: UdpDatagram): void {
    const c = client6(d.srcMac, m.clientId!);
    let grant: { ia: Dhcp6Ia; addr: bigint } | null = null;
    for (const ia of m.ias) {
      if (ia.kind !== OPT_IA_NA || grant) continue;
      const a = this.store.allocate(c, this.hint(ia));
      if (a === null) { this.exhaustedEvent(c); break; }
      grant = { ia, addr: a };
    }
    if (!grant) {
      this.stats.noAddrsAvail++;
      const text = this.store.hasPool ? 'no addresses available' : 'no stateful addresses on this network (SLAAC); ask for information';
      return this.send(d, ADVERTISE, m, [status(STATUS_NO_ADDRS_AVAIL, text)]);
    }
    const commit = m.rapidCommit && this.rapidCommit;
    let b: Binding6;
    let renewed = false;
    if (commit) ({ binding: b, renewed } = this.store.bind(c, grant.ia.iaid, grant.addr, this.valid * 1000, m.fqdn?.hostname));
    else b = this.store.offer(c, grant.ia.iaid, grant.addr, m.fqdn?.hostname);
    const opts: Buffer[] = [commit ? encodeOption6(OPT_RAPID_COMMIT) : encodeOption6(OPT_PREFERENCE, Buffer.from([255]))];
    for (const ia of m.ias) opts.push(ia === grant.ia ? this.iaWith(ia, grant.addr, []) : this.iaRefused(ia));
    this.send(d, commit ? REPLY : ADVERTISE, m, [...opts, ...this.configOpts, ...this.fqdnReply(m)]);
    if (commit) { this.exhausted = false; this.notify(b, renewed ? 'renewed' : 'bound'); }
  }

  private request(m: Dhcp6Message, d: UdpDatagram): void {
    const c = client6(d.srcMac, m.clientId!);
    const opts: Buffer[] = [];
    let given = false;
    const events: [Binding6, LeaseEvent6][] = [];
    for (const ia of m.ias) {
      if (ia.kind !== OPT_IA_NA || given) { opts.push(this.iaRefused(ia)); continue; }
      if (ia.addrs.some((a) => !this.store.inPrefix(addrToBig(a)))) {
        this.stats.notOnLink++;
        opts.push(encodeIa(ia.kind, ia.iaid, 0, 0, [status(STATUS_NOT_ON_LINK)]));
        continue;
      }
      const a = this.store.allocate(c, this.hint(ia));
      if (a === null) {
        this.exhaustedEvent(c);
        opts.push(this.iaRefused(ia));
        continue;
      }
      const { binding, renewed } = this.store.bind(c, ia.iaid, a, this.valid * 1000, m.fqdn?.hostname);
      events.push([binding, renewed ? 'renewed' : 'bound']);
      given = true;
      this.exhausted = false;
      opts.push(this.iaWith(ia, a, []));
    }
    this.send(d, REPLY, m, [...opts, ...this.configOpts, ...this.fqdnReply(m)]);
    for (const [b, ev] of events) this.notify(b, ev);
  }

  /** Renew (rebind false) or Rebind. */
  private extend(m: Dhcp6Message, d: UdpDatagram, rebind: boolean): void {
    const c = client6(d.srcMac, m.clientId!);
    const opts: Buffer[] = [];
    let given = false;
    const events: [Binding6, LeaseEvent6][] = [];
    for (const ia of m.ias) {
      if (ia.kind !== OPT_IA_NA) { opts.push(this.noBinding(ia)); continue; }
      const hints = ia.addrs.map((a) => addrToBig(a));
      const b = this.store.binding(c.key);
      const mine = !given && b && b.bound && b.iaid === ia.iaid ? b : null;
      let target: bigint | null = null;
      let moved = false;
      if (mine) {
        if (this.store.grantable(c, mine.addr)) target = mine.addr;
        else { target = this.store.allocate(c, null); moved = true; }
      } else if (!given) {
        for (const h of hints) if (this.store.inPrefix(h) && this.store.grantable(c, h)) { target = h; break; }
      }
      const zeroed = hints.filter((h) => h !== target);
      if (moved && mine && !zeroed.includes(mine.addr)) zeroed.push(mine.addr);
      const zeros = zeroed.map((h) => encodeIaAddr(bigToAddr(h), 0, 0));
      if (target !== null) {
        const { binding, renewed } = this.store.bind(c, ia.iaid, target, this.valid * 1000, m.fqdn?.hostname);
        events.push([binding, renewed ? 'renewed' : 'bound']);
        given = true;
        opts.push(this.iaWith(ia, target, zeros));
      } else if (moved) {
        this.exhaustedEvent(c);
        this.stats.noAddrsAvail++;
        opts.push(encodeIa(ia.kind, ia.iaid, 0, 0, [...zeros, status(STATUS_NO_ADDRS_AVAIL)]));
      } else if (rebind && zeros.length > 0) {
        opts.push(encodeIa(ia.kind, ia.iaid, 0, 0, zeros)); // authoritative: these are not valid here
      } else {
        opts.push(this.noBinding(ia));
      }
    }
    this.send(d, REPLY, m, [...opts, ...this.configOpts, ...this.fqdnReply(m)]);
    for (const [b, ev] of events) this.notify(b, ev);
  }

  private release(m: Dhcp6Message, d: UdpDatagram): void {
    const done = this.giveBack(m, d, (key, iaid, a) => this.store.release(key, iaid, a));
    if (done.length) this.exhausted = false;
    for (const b of done) this.notify(b, 'released');
  }

  private decline(m: Dhcp6Message, d: UdpDatagram): void {
    for (const b of this.giveBack(m, d, (key, iaid, a) => this.store.decline(key, iaid, a))) {
      log.warn('address declined by client (in use?)', { ip: bigToString(b.addr), mac: macToString(b.mac, 0), duid: duidToString(b.duid) });
      this.notify(b, 'declined');
    }
  }

  /**
   * RELEASE and DECLINE (RFC 8415 18.3.7, 18.3.8): `take` each address of each IA_NA; a Reply
   * with Success, plus NoBinding for every IA the client has none of. Returns the bindings taken.
   */
  private giveBack(m: Dhcp6Message, d: UdpDatagram, take: (key: string, iaid: number, a: bigint) => Binding6 | null): Binding6[] {
    const c = client6(d.srcMac, m.clientId!);
    const opts: Buffer[] = [status(STATUS_SUCCESS)];
    const done: Binding6[] = [];
    for (const ia of m.ias) {
      let found = false;
      if (ia.kind === OPT_IA_NA) {
        for (const a of ia.addrs) {
          const b = take(c.key, ia.iaid, addrToBig(a));
          if (b) { found = true; done.push(b); }
        }
      }
      if (!found) opts.push(this.noBinding(ia));
    }
    this.send(d, REPLY, m, opts);
    return done;
  }

  private confirm(m: Dhcp6Message, d: UdpDatagram): void {
    let n = 0;
    let onLink = true;
    for (const ia of m.ias) {
      if (ia.kind === OPT_IA_PD) continue;
      for (const a of ia.addrs) {
        n++;
        if (!this.store.inPrefix(addrToBig(a))) onLink = false;
      }
    }
    if (n === 0) return; // nothing to confirm: no reply (RFC 8415 18.3.3)
    if (!onLink) this.stats.notOnLink++;
    this.send(d, REPLY, m, [status(onLink ? STATUS_SUCCESS : STATUS_NOT_ON_LINK)]);
  }

  private information(m: Dhcp6Message, d: UdpDatagram): void {
    this.send(d, REPLY, m, [...this.configOpts, ...this.infoRefreshOpt]);
  }

  private useMulticast(m: Dhcp6Message, d: UdpDatagram): void {
    this.stats.useMulticast++;
    this.send(d, REPLY, m, [status(STATUS_USE_MULTICAST)]);
  }

  // ---- pieces of replies ----

  /** The first IAADDR hint on the prefix, as a bigint. */
  private hint(ia: Dhcp6Ia): bigint | null {
    for (const a of ia.addrs) {
      const v = addrToBig(a);
      if (this.store.inPrefix(v)) return v;
    }
    return null;
  }

  private iaWith(ia: Dhcp6Ia, a: bigint, extra: Buffer[]): Buffer {
    return encodeIa(ia.kind, ia.iaid, this.t1, this.t2, [encodeIaAddr(bigToAddr(a), this.preferred, this.valid), ...extra]);
  }

  /** An IA we give nothing in: NoAddrsAvail (NoPrefixAvail for IA_PD). */
  private iaRefused(ia: Dhcp6Ia): Buffer {
    if (ia.kind === OPT_IA_PD) return encodeIa(ia.kind, ia.iaid, 0, 0, [status(STATUS_NO_PREFIX_AVAIL)]);
    this.stats.noAddrsAvail++;
    return encodeIa(ia.kind, ia.iaid, 0, 0, [status(STATUS_NO_ADDRS_AVAIL)]);
  }

  private noBinding(ia: Dhcp6Ia): Buffer {
    this.stats.noBinding++;
    return encodeIa(ia.kind, ia.iaid, 0, 0, [status(STATUS_NO_BINDING)]);
  }

  /** RFC 4704: the client's name back, with S=1 (qnet's DNS serves it), O=1 when the client wanted S=0. */
  private fqdnReply(m: Dhcp6Message): Buffer[] {
    const f = m.fqdn;
    if (!f || f.hostname === undefined) return [];
    const data = Buffer.from(f.raw);
    data[0] = FQDN_S | (f.flags & FQDN_S ? 0 : FQDN_O);
    return [encodeOption6(OPT_CLIENT_FQDN, data)];
  }

  private send(d: UdpDatagram, type: number, m: Dhcp6Message, opts: Buffer[]): void {
    const head = [this.serverIdOpt];
    if (m.clientId) head.push(encodeOption6(OPT_CLIENTID, m.clientId));
    const msg = writeDhcp6(type, m.xid, [...head, ...opts]);
    if (type === ADVERTISE) this.stats.advertise++;
    else this.stats.reply++;
    this.host.sendUdp(this.serverAddr, DHCP6_SERVER_PORT, d.srcIp, DHCP6_CLIENT_PORT, msg, d.srcMac);
  }

  private encodeConfig(o: Dhcp6Options): Buffer[] {
    const out: Buffer[] = [];
    const dns = o.dns ?? [];
    for (const a of dns) if (!(a >= V6_BASE)) throw new Error('dhcp6: a DNS server is not an IPv6 address');
    if (dns.length) out.push(encodeDnsServers(dns.map((a) => Buffer.from(ip6.bytes(a)))));
    if (o.search && o.search.length) out.push(encodeOption6(OPT_DOMAIN_LIST, encodeDomainNames(o.search)));
    if (o.bootfileUrl !== undefined) {
      const url = Buffer.from(o.bootfileUrl, 'utf8');
      if (url.length === 0 || url.length > 1024 || !/^[a-z][a-z0-9+.-]*:\/\//i.test(o.bootfileUrl)) throw new Error(`dhcp6: bad boot file URL '${o.bootfileUrl}'`);
      out.push(encodeOption6(OPT_BOOTFILE_URL, url));
    }
    return out;
  }

  private exhaustedEvent(c: Client6): void {
    if (!this.store.hasPool) return;
    this.stats.poolExhausted++;
    if (this.exhausted) return;
    this.exhausted = true;
    log.warn('address pool exhausted', { mac: macToString(c.mac, 0), duid: duidToString(c.duid) });
  }

  private notify(b: Binding6, ev: LeaseEvent6): void {
    if (!this.onLease) return;
    try { this.onLease(toLease6(b), ev); } catch (err) { log.warn('onLease callback failed', { err: (err as Error).message }); }
  }
}
