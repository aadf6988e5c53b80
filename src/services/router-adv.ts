// Router advertisements (RFC 4861 6.2, RFC 4862 SLAAC, RFC 8106 DNS options): how guests on a
// network with IPv6 configure themselves.
//
// What an RA says: the prefix (on-link, autonomous: guests form their own addresses), the
// router's lifetime (the gateway is the default router), the MTU (the network's, so guests
// never send more than the gateway takes), the DNS server(s) (RDNSS) and search domains
// (DNSSL), and the M/O flags: M when the network hands out addresses by DHCPv6 (stateful), O
// when DHCPv6 answers information requests (DNS, boot file URL). The source is the router's
// link-local address (fe80::2 in user mode, as slirp).
//
// When: in answer to a router solicitation (to the soliciting guest, or to all nodes when it
// has no address yet), at most one per destination every MIN_SOLICITED_GAP_MS; and
// unsolicited to all nodes every `intervalMs` (jittered by a quarter, RFC 4861 6.2.4), with
// the first three at a short interval so a guest that missed its solicitation's answer is
// configured soon. Time is the gateway's timer queue.
import { Timer } from '../stack/timers.ts';
import { ip6 } from '../stack/addr.ts';
import type { IpPacket } from '../stack/gateway.ts';
import {
  ND_OPT_SOURCE_LINKADDR, ND_PREFIX_AUTONOMOUS, ND_PREFIX_ONLINK, ND_RA_MANAGED, ND_RA_OTHER, ndDnsslLength,
  writeNdDnsslOption, writeNdLinkAddrOption, writeNdMtuOption, writeNdPrefixOption, writeNdRdnssOption, writeRouterAdvert,
} from '../wire/icmpv6.ts';
import type { TimerQueue } from '../stack/timers.ts';

const ALL_NODES = Buffer.from('ff020000000000000000000000000001', 'hex');
const MIN_SOLICITED_GAP_MS = 3000;
const INITIAL_INTERVAL_MS = 16_000;
const INITIAL_COUNT = 3;

export interface RouterAdvOptions {
  prefix: Buffer;
  prefixLen: number;
  /** the source of the advertisements */
  linkLocal: number;
  mtu: number;
  /** RDNSS: DNS server address ids */
  dns: number[];
  /** DNSSL */
  search?: string[];
  /** M flag: addresses by DHCPv6 */
  managed: boolean;
  /** O flag: other configuration by DHCPv6 */
  other: boolean;
  /** also form addresses by SLAAC (the A flag of the prefix); default true */
  autonomous?: boolean;
  /** seconds; default 1800 */
  routerLifetime?: number;
  /** seconds; defaults 86400 / 14400 (slirp's) */
  validLifetime?: number;
  preferredLifetime?: number;
  /** ms between unsolicited advertisements; default 200 s */
  intervalMs?: number;
}

/** What the RA service needs from the gateway. */
export interface RaHost {
  readonly mac: Buffer;
  readonly timers: TimerQueue;
  sendNd(src: number, dst: Buffer, maxLen: number, write: (buf: Buffer, off: number) => number, dstMac: Buffer | null): void;
}

export class RouterAdvertiser {
  readonly stats = { solicited: 0, unsolicited: 0, rateLimited: 0 };
  private readonly timer: Timer;
  private readonly lastTo = new Map<number, number>();
  private sentUnsolicited = 0;
  private readonly len: number;
  private readonly dnsBytes: Buffer[];

  constructor(private readonly host: RaHost, private readonly o: RouterAdvOptions) {
    this.dnsBytes = o.dns.map((d) => Buffer.from(ip6.bytes(d)));
    this.len = 16 + 8 + 32 + 8 + (this.dnsBytes.length ? 8 + 16 * this.dnsBytes.length : 0) + (o.search?.length ? ndDnsslLength(o.search) : 0);
    this.timer = new Timer(() => this.periodic());
    host.timers.arm(this.timer, 0);
  }

  /** A router solicitation from a guest (src -1: it has no address yet). */
  solicited(p: IpPacket): void {
    const now = this.host.timers.now();
    const key = p.src;
    const last = this.lastTo.get(key);
    if (last !== undefined && now - last < MIN_SOLICITED_GAP_MS) { this.stats.rateLimited++; return; }
    if (this.lastTo.size >= 1024) this.lastTo.clear();
    this.lastTo.set(key, now);
    this.stats.solicited++;
    if (p.src < 0) this.send(ALL_NODES, null);
    else this.send(Buffer.from(ip6.bytes(p.src)), Buffer.from(p.srcMac));
  }

  private periodic(): void {
    this.stats.unsolicited++;
    this.send(ALL_NODES, null);
    const base = this.sentUnsolicited++ < INITIAL_COUNT ? INITIAL_INTERVAL_MS : (this.o.intervalMs ?? 200_000);
    this.host.timers.arm(this.timer, base * (0.75 + Math.random() / 4));
  }

  private send(dst: Buffer, dstMac: Buffer | null): void {
    const o = this.o;
    const flags = (o.managed ? ND_RA_MANAGED : 0) | (o.other ? ND_RA_OTHER : 0);
    const life = o.routerLifetime ?? 1800;
    const valid = o.validLifetime ?? 86400;
    const pref = o.preferredLifetime ?? 14400;
    const mac = this.host.mac;
    const dns = this.dnsBytes;
    this.host.sendNd(o.linkLocal, dst, this.len, (b, off) => {
      let p = writeRouterAdvert(b, off, 64, flags, life);
      p = writeNdLinkAddrOption(b, p, ND_OPT_SOURCE_LINKADDR, mac);
      p = writeNdMtuOption(b, p, o.mtu);
      p = writeNdPrefixOption(b, p, o.prefix, o.prefixLen, ND_PREFIX_ONLINK | ((o.autonomous ?? true) ? ND_PREFIX_AUTONOMOUS : 0), valid, pref);
      if (dns.length) p = writeNdRdnssOption(b, p, life, dns);
      if (o.search?.length) p = writeNdDnsslOption(b, p, life, o.search);
      return p;
    }, dstMac);
  }

  close(): void { this.host.timers.cancel(this.timer); }
}
