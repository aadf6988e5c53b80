// DNS forwarder on the gateway's DNS address (QEMU user-mode `dns=`, 10.0.2.3 by default): guest
// queries are relayed to the host's resolvers through ordinary host sockets, like libslirp,
// which forwards to the addresses of /etc/resolv.conf.
//
// Design
// - UDP: one host socket per address family, shared by every guest. Each forwarded query gets a
//   fresh random ID (not one in use), so queries from different guests that happen to use the
//   same ID cannot collide, and an off-path host cannot answer with a guessable ID. A response is
//   accepted only when its ID is outstanding, it comes from an upstream that query was sent to
//   (address and port), it is a response (QR), and its question matches the query's. The guest's
//   own ID is restored before the answer goes back. Truncated (TC) answers are passed through
//   unchanged: the guest then retries over TCP, which serveDnsStream() handles.
// - Timeouts run on the gateway's shared timer queue: after `timeoutMs` without an answer the
//   query goes to the next upstream (cycling, `attempts` sends in all); when every attempt timed
//   out, or there is no upstream at all, the guest gets SERVFAIL: never silence, so its
//   resolver moves on at once instead of waiting for its own timeout.
// - Limits: at most `maxOutstanding` queries in flight overall and `maxPerClient` per guest
//   address; beyond that the query is answered SERVFAIL and counted (`stats.limited`).
// - Local records: `resolveLocal(name, type)` is asked first (the shared-network daemon answers
//   guest hostnames): an address list is answered directly (A or AAAA records, authoritative, TTL
//   `localTtl`, 0..60 s), `[]` is NODATA, `null` is NXDOMAIN and `undefined` means "not mine,
//   forward it".
// - TCP: a query that arrived over TCP (dns-tcp.ts) is forwarded over its own TCP
//   connection to an upstream (a guest uses TCP after a truncated UDP answer, so UDP upstream
//   would truncate again).
// - The codec is in dns-codec.ts, DNS over TCP from guests in dns-tcp.ts.
//
// Trade-offs: no cache (the host's resolver has one; a cache would have to honour TTLs and
// negative caching); no EDNS rewriting (the guest's OPT record goes upstream as is, but local
// answers carry no OPT); queries are not validated beyond the header, since upstream judges them.
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import type { UdpDatagram, UdpHost } from '../stack/output.ts';
import { Timer } from '../stack/timers.ts';
import { ip6ToString, parseIp6 } from '../wire/addr.ts';
import { readResolvConf, type Upstream } from './upstreams.ts';
import { CLASS_IN, DNS_HEADER as HEADER, DNS_PORT, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_SERVFAIL, buildReply, parseQuestion, servfail, type DnsQuestion } from './dns-codec.ts';
import { logger } from '../util/log.ts';

export type { Upstream } from './upstreams.ts';
export { TYPE_A } from './dns-codec.ts';

const log = logger('dns');

export interface DnsForwarderOptions {
  /** gateway address to serve on; default the gateway's second address (slirp's .3), else its first */
  listenIp?: number;
  /** more addresses to serve on (the IPv6 DNS address) */
  listenIps?: number[];
  /** default: the nameservers of /etc/resolv.conf */
  upstreams?: Upstream[];
  /** per attempt; default 2000 ms */
  timeoutMs?: number;
  /** sends per query, cycling through the upstreams; default max(2, upstreams) */
  attempts?: number;
  /** queries in flight overall; default 1024 */
  maxOutstanding?: number;
  /** queries in flight per guest address; default 256 */
  maxPerClient?: number;
  resolveLocal?: (name: string, type: number) => number[] | null | undefined;
  /** TTL of local answers, 0..60 s; default 10 */
  localTtl?: number;
}

export interface DnsStats {
  queries: number;
  tcpQueries: number;
  local: number;
  forwarded: number;
  answered: number;
  truncated: number;
  servfail: number;
  timeouts: number;
  limited: number;
  malformed: number;
  unmatched: number;
  upstreamErrors: number;
  outstanding: number;
  /** handler bugs (never bad input) */
  errors: number;
}

interface Pending {
  id: number;
  origId: number;
  query: Buffer;
  /** question of the query (null when it does not parse) */
  q: DnsQuestion | null;
  attempt: number;
  /** indexes of the upstreams this query was sent to */
  tried: Set<number>;
  timer: Timer;
  client: number;
  done: (answer: Buffer) => void;
}

interface Target { host: string; port: number; v6: boolean; key: string }

function addrKey(host: string, port: number): string {
  if (host.includes(':')) {
    const b = parseIp6(host.replace(/%.*$/, ''));
    if (b) host = ip6ToString(b, 0);
  }
  return `${host}|${port}`;
}

export class DnsForwarder {
  readonly stats: DnsStats = {
    queries: 0, tcpQueries: 0, local: 0, forwarded: 0, answered: 0, truncated: 0, servfail: 0, timeouts: 0,
    limited: 0, malformed: 0, unmatched: 0, upstreamErrors: 0, outstanding: 0, errors: 0,
  };
  readonly listenIp: number;
  private readonly listenAlso: number[];
  resolveLocal: ((name: string, type: number) => number[] | null | undefined) | null;
  private readonly upstreams: Target[];
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly maxOutstanding: number;
  private readonly maxPerClient: number;
  private readonly localTtl: number;
  private readonly pending = new Map<number, Pending>();
  private readonly perClient = new Map<number, number>();
  private sock4: dgram.Socket | null = null;
  private sock6: dgram.Socket | null = null;
  private readonly tcpConns = new Set<net.Socket>();
  private closed = false;

  constructor(private readonly gw: UdpHost, opts: DnsForwarderOptions = {}) {
    const addrs = [...gw.addrs];
    this.listenIp = opts.listenIp ?? addrs[1] ?? addrs[0] ?? 0;
    const ups = opts.upstreams ?? readResolvConf();
    this.upstreams = ups.map((u) => {
      if (!net.isIP(u.host)) throw new Error(`dns: upstream ${u.host} is not an IP address`);
      const port = u.port ?? DNS_PORT;
      return { host: u.host, port, v6: net.isIPv6(u.host), key: addrKey(u.host, port) };
    });
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.attempts = opts.attempts ?? Math.max(2, this.upstreams.length);
    this.maxOutstanding = opts.maxOutstanding ?? 1024;
    this.maxPerClient = opts.maxPerClient ?? 256;
    this.localTtl = Math.max(0, Math.min(60, opts.localTtl ?? 10));
    this.resolveLocal = opts.resolveLocal ?? null;
    this.listenAlso = (opts.listenIps ?? []).filter((a) => a !== this.listenIp);
    gw.bindUdp(this.listenIp, DNS_PORT, this.onGuestUdp);
    for (const a of this.listenAlso) gw.bindUdp(a, DNS_PORT, this.onGuestUdp);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.gw.unbindUdp(this.listenIp, DNS_PORT);
    for (const a of this.listenAlso) this.gw.unbindUdp(a, DNS_PORT);
    for (const p of this.pending.values()) this.gw.timers.cancel(p.timer);
    this.pending.clear();
    this.perClient.clear();
    this.stats.outstanding = 0;
    this.sock4?.close();
    this.sock6?.close();
    this.sock4 = this.sock6 = null;
    for (const s of this.tcpConns) s.destroy();
    this.tcpConns.clear();
  }

  private readonly onGuestUdp = (d: UdpDatagram): void => {
    if (this.closed) return;
    const src = d.srcIp;
    const sport = d.srcPort;
    const dst = d.dstIp;
    try {
      this.query(Buffer.from(d.payload), src, (answer) => {
        if (!this.closed) this.gw.sendUdp(dst, DNS_PORT, src, sport, answer);
      });
    } catch (err) {
      // a bug, not bad input: counted apart from malformed queries, the first one logged
      if (this.stats.errors++ === 0) log.error('query handler error (a qnet bug; the query was dropped)', { err: (err as Error).stack });
    }
  };

  /**
   * Answer one DNS message from guest `client` (u32; per-client limits): `done` is called exactly
   * once with the answer, unless the message is not a query at all (then it is dropped).
   * `tcp` forwards over TCP. Returns false when the message was dropped.
   */
  query(msg: Buffer, client: number, done: (answer: Buffer) => void, tcp = false): boolean {
    if (this.closed) return false;
    if (msg.length < HEADER || msg[2] & 0x80) { this.stats.malformed++; return false; }
    this.stats.queries++;
    if (tcp) this.stats.tcpQueries++;
    const q = parseQuestion(msg);
    if (q && this.resolveLocal && ((msg[2] >> 3) & 0xf) === 0 && q.cls === CLASS_IN) {
      let r: number[] | null | undefined;
      try { r = this.resolveLocal(q.name, q.type); } catch { r = undefined; }
      if (r !== undefined) {
        this.stats.local++;
        if (r === null) { done(buildReply(msg, q, RCODE_NXDOMAIN, [], 0, true)); return true; }
        // the resolver answers for the question's type: A addresses, or AAAA ones
        const addrs = r.filter((a) => Number.isInteger(a) && a >= 0).slice(0, 32);
        done(buildReply(msg, q, RCODE_NOERROR, addrs, this.localTtl, true));
        return true;
      }
    }
    if (this.upstreams.length === 0) { this.fail(msg, done); return true; }
    const n = this.perClient.get(client) ?? 0;
    if (this.stats.outstanding >= this.maxOutstanding || n >= this.maxPerClient) {
      this.stats.limited++;
      this.fail(msg, done);
      return true;
    }
    this.stats.outstanding++;
    this.perClient.set(client, n + 1);
    let finished = false;
    const finish = (answer: Buffer): void => {
      if (finished) return;
      finished = true;
      this.stats.outstanding--;
      const c = (this.perClient.get(client) ?? 1) - 1;
      if (c <= 0) this.perClient.delete(client); else this.perClient.set(client, c);
      done(answer);
    };
    if (tcp) this.forwardTcp(msg, 0, finish);
    else this.forwardUdp(msg, q, client, finish);
    return true;
  }

  private fail(msg: Buffer, done: (answer: Buffer) => void): void {
    this.stats.servfail++;
    done(servfail(msg));
  }

  // ---- UDP upstream ----

  private socket(v6: boolean): dgram.Socket {
    let s = v6 ? this.sock6 : this.sock4;
    if (s) return s;
    s = dgram.createSocket(v6 ? 'udp6' : 'udp4');
    s.on('message', (m, rinfo) => this.onUpstream(m, rinfo));
    s.on('error', (err) => { this.stats.upstreamErrors++; log.warn('upstream socket error', { err: err.message }); });
    s.unref();
    if (v6) this.sock6 = s; else this.sock4 = s;
    return s;
  }

  private forwardUdp(msg: Buffer, q: DnsQuestion | null, client: number, done: (answer: Buffer) => void): void {
    let id = randomInt(65536);
    while (this.pending.has(id)) id = (id + 1) & 0xffff;
    const origId = msg.readUInt16BE(0);
    msg.writeUInt16BE(id, 0);
    const p: Pending = {
      id, origId, query: msg, q, attempt: 0, tried: new Set(), client, done,
      timer: new Timer(() => this.onTimeout(p)),
    };
    this.pending.set(id, p);
    this.stats.forwarded++;
    this.sendAttempt(p);
  }

  private sendAttempt(p: Pending): void {
    const idx = p.attempt % this.upstreams.length;
    const u = this.upstreams[idx];
    p.attempt++;
    p.tried.add(idx);
    this.gw.timers.arm(p.timer, this.timeoutMs);
    try {
      this.socket(u.v6).send(p.query, u.port, u.host, (err) => {
        if (err && this.pending.get(p.id) === p) {
          this.stats.upstreamErrors++;
          this.onTimeout(p); // do not wait for an answer that cannot come
        }
      });
    } catch {
      this.stats.upstreamErrors++;
      queueMicrotask(() => { if (this.pending.get(p.id) === p) this.onTimeout(p); });
    }
  }

  private onTimeout(p: Pending): void {
    if (this.pending.get(p.id) !== p) return;
    this.gw.timers.cancel(p.timer);
    if (p.attempt < this.attempts) { this.sendAttempt(p); return; }
    this.stats.timeouts++;
    this.pending.delete(p.id);
    p.query.writeUInt16BE(p.origId, 0);
    this.stats.servfail++;
    p.done(buildReply(p.query, p.q, RCODE_SERVFAIL));
  }

  private onUpstream(m: Buffer, rinfo: dgram.RemoteInfo): void {
    if (m.length < HEADER || !(m[2] & 0x80)) { this.stats.unmatched++; return; }
    const p = this.pending.get(m.readUInt16BE(0));
    if (!p) { this.stats.unmatched++; return; }
    const key = addrKey(rinfo.address, rinfo.port);
    let from = false;
    for (const i of p.tried) if (this.upstreams[i].key === key) { from = true; break; }
    if (!from) { this.stats.unmatched++; return; }
    if (p.q && m.readUInt16BE(4) >= 1) {
      const rq = parseQuestion(m);
      if (!rq || rq.name !== p.q.name || rq.type !== p.q.type || rq.cls !== p.q.cls) { this.stats.unmatched++; return; }
    }
    this.pending.delete(p.id);
    this.gw.timers.cancel(p.timer);
    this.stats.answered++;
    if (m[2] & 0x02) this.stats.truncated++;
    const answer = Buffer.from(m);
    answer.writeUInt16BE(p.origId, 0);
    p.done(answer);
  }

  // ---- TCP upstream ----

  private forwardTcp(msg: Buffer, attempt: number, done: (answer: Buffer) => void): void {
    if (this.closed) return;
    if (attempt >= this.attempts) {
      this.stats.timeouts++;
      this.stats.servfail++;
      done(servfail(msg));
      return;
    }
    this.stats.forwarded++;
    const u = this.upstreams[attempt % this.upstreams.length];
    const s = net.connect({ host: u.host, port: u.port });
    this.tcpConns.add(s);
    let buf = Buffer.alloc(0);
    let over = false;
    const timer = new Timer(() => next(true));
    const next = (timedOut: boolean): void => {
      if (over) return;
      over = true;
      this.gw.timers.cancel(timer);
      this.tcpConns.delete(s);
      s.destroy();
      if (!timedOut) this.stats.upstreamErrors++;
      this.forwardTcp(msg, attempt + 1, done);
    };
    this.gw.timers.arm(timer, this.timeoutMs);
    const hdr = Buffer.alloc(2);
    hdr.writeUInt16BE(msg.length);
    s.write(Buffer.concat([hdr, msg]));
    s.on('data', (d: Buffer) => {
      if (over) return;
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2) return;
      const len = buf.readUInt16BE(0);
      if (buf.length < 2 + len) return;
      const answer = Buffer.from(buf.subarray(2, 2 + len));
      if (len < HEADER || answer.readUInt16BE(0) !== msg.readUInt16BE(0) || !(answer[2] & 0x80)) { next(false); return; }
      over = true;
      this.gw.timers.cancel(timer);
      this.tcpConns.delete(s);
      s.destroy();
      this.stats.answered++;
      done(answer);
    });
    s.on('error', () => next(false));
    s.on('close', () => next(false));
  }
}
