// A raw-frame DHCPv6 client for tests: builds client messages (RFC 8415) as a guest sends
// them, in Ethernet + IPv6 + UDP from its EUI-64 link-local address to ff02::1:2 (port 546 ->
// 547, UDP checksum over the IPv6 pseudo-header), and parses what comes back. Written apart
// from src/services/dhcp6-codec.ts on purpose: a test oracle that shared the server's codec
// would agree with its bugs.
import { ETHERTYPE_IPV6, EthernetHeader, parseEthernet, writeEthernet } from '../../src/wire/ethernet.ts';
import { Ipv6Header, parseIpv6, writeIpv6 } from '../../src/wire/ipv6.ts';
import { UdpHeader, finishUdpV6, parseUdp, writeUdp } from '../../src/wire/udp.ts';
import { pseudoSumV6 } from '../../src/wire/checksum.ts';
import { IPPROTO_UDP } from '../../src/wire/ipv4.ts';
import { ip6ToString, macToString, parseIp6, parseMac } from '../../src/wire/addr.ts';

export const MSG = {
  SOLICIT: 1, ADVERTISE: 2, REQUEST: 3, CONFIRM: 4, RENEW: 5, REBIND: 6, REPLY: 7, RELEASE: 8, DECLINE: 9,
  RECONFIGURE: 10, INFORMATION_REQUEST: 11, RELAY_FORW: 12, RELAY_REPL: 13,
} as const;
export const OPT = {
  CLIENTID: 1, SERVERID: 2, IA_NA: 3, IA_TA: 4, IAADDR: 5, ORO: 6, PREFERENCE: 7, ELAPSED_TIME: 8, STATUS_CODE: 13,
  RAPID_COMMIT: 14, DNS_SERVERS: 23, DOMAIN_LIST: 24, IA_PD: 25, INFORMATION_REFRESH_TIME: 32, CLIENT_FQDN: 39, BOOTFILE_URL: 59,
} as const;
export const STATUS = { SUCCESS: 0, UNSPEC_FAIL: 1, NO_ADDRS_AVAIL: 2, NO_BINDING: 3, NOT_ON_LINK: 4, USE_MULTICAST: 5, NO_PREFIX_AVAIL: 6 } as const;

export const ALL_DHCP = 'ff02::1:2';

export function opt(code: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(4 + data.length);
  b.writeUInt16BE(code, 0);
  b.writeUInt16BE(data.length, 2);
  data.copy(b, 4);
  return b;
}

/** DUID-LL of a MAC (type 3, hardware type 1). */
export function duidLLOf(mac: string): Buffer {
  return Buffer.concat([Buffer.from([0, 3, 0, 1]), parseMac(mac)!]);
}

/** DUID-EN (type 2) with an enterprise number and an identifier, as systemd-networkd sends. */
export function duidEN(enterprise: number, id: Buffer): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt16BE(2, 0);
  b.writeUInt32BE(enterprise, 2);
  return Buffer.concat([b, id]);
}

/** The EUI-64 link-local address of a MAC (RFC 4291 appendix A). */
export function linkLocalOf(mac: string): string {
  const m = parseMac(mac)!;
  const b = Buffer.alloc(16);
  b[0] = 0xfe; b[1] = 0x80;
  b[8] = m[0] ^ 2; b[9] = m[1]; b[10] = m[2]; b[11] = 0xff; b[12] = 0xfe; b[13] = m[3]; b[14] = m[4]; b[15] = m[5];
  return ip6ToString(b, 0);
}

export interface IaSpec {
  /** default IA_NA */
  kind?: number;
  iaid?: number;
  t1?: number;
  t2?: number;
  /** IAADDR options (lifetimes 0: hints) */
  addrs?: string[];
}

export interface MsgSpec {
  xid?: number;
  /** default the client's DUID; null leaves the option out */
  clientId?: Buffer | null;
  serverId?: Buffer;
  ias?: IaSpec[];
  rapidCommit?: boolean;
  oro?: number[];
  fqdn?: { flags?: number; name: string };
  /** raw options appended */
  extra?: Buffer[];
}

export interface FrameSpec {
  /** destination address; default ff02::1:2 */
  dst?: string;
  /** default the multicast MAC of dst (33:33:...) or the gateway's for unicast */
  dstMac?: string;
  src?: string;
  srcMac?: string;
  sport?: number;
}

export interface RxIaAddr { ip: string; preferred: number; valid: number }
export interface RxStatus { code: number; message: string }
export interface RxIa { kind: number; iaid: number; t1: number; t2: number; addrs: RxIaAddr[]; status?: RxStatus }

export interface Dhcp6Reply {
  dstMac: string;
  srcMac: string;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  checksumOk: boolean;
  type: number;
  xid: number;
  /** every option, in order */
  options: { code: number; data: Buffer }[];
  serverId?: Buffer;
  clientId?: Buffer;
  status?: RxStatus;
  ias: RxIa[];
  dns: string[];
  search: string[];
  bootfileUrl?: string;
  preference?: number;
  rapidCommit: boolean;
  fqdn?: { flags: number; name: string };
  refreshTime?: number;
}

function encodeName(name: string, terminate = true): Buffer {
  const parts: Buffer[] = [];
  for (const l of name.split('.').filter((x) => x.length > 0)) parts.push(Buffer.from([l.length]), Buffer.from(l));
  if (terminate) parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function decodeNames(b: Buffer): string[] {
  const out: string[] = [];
  let labels: string[] = [];
  for (let i = 0; i < b.length;) {
    const n = b[i];
    if (n === 0) { out.push(labels.join('.')); labels = []; i++; continue; }
    labels.push(b.toString('latin1', i + 1, i + 1 + n));
    i += 1 + n;
  }
  if (labels.length) out.push(labels.join('.'));
  return out;
}

function walk(b: Buffer, from: number, to: number): { code: number; data: Buffer }[] {
  const out: { code: number; data: Buffer }[] = [];
  for (let i = from; i + 4 <= to;) {
    const code = b.readUInt16BE(i), len = b.readUInt16BE(i + 2);
    if (i + 4 + len > to) throw new Error(`option ${code} runs past its container`);
    out.push({ code, data: Buffer.from(b.subarray(i + 4, i + 4 + len)) });
    i += 4 + len;
  }
  return out;
}

function statusOf(d: Buffer): RxStatus { return { code: d.readUInt16BE(0), message: d.toString('utf8', 2) }; }

/** Parse a server message (the UDP payload). */
export function parseServerMessage(p: Buffer): Omit<Dhcp6Reply, 'dstMac' | 'srcMac' | 'srcIp' | 'dstIp' | 'srcPort' | 'dstPort' | 'checksumOk'> {
  const r: ReturnType<typeof parseServerMessage> = {
    type: p[0], xid: (p[1] << 16) | (p[2] << 8) | p[3], options: walk(p, 4, p.length), ias: [], dns: [], search: [], rapidCommit: false,
  };
  for (const { code, data } of r.options) {
    switch (code) {
      case OPT.SERVERID: r.serverId = data; break;
      case OPT.CLIENTID: r.clientId = data; break;
      case OPT.STATUS_CODE: r.status = statusOf(data); break;
      case OPT.PREFERENCE: r.preference = data[0]; break;
      case OPT.RAPID_COMMIT: r.rapidCommit = true; break;
      case OPT.DNS_SERVERS: for (let i = 0; i + 16 <= data.length; i += 16) r.dns.push(ip6ToString(data, i)); break;
      case OPT.DOMAIN_LIST: r.search = decodeNames(data); break;
      case OPT.BOOTFILE_URL: r.bootfileUrl = data.toString('utf8'); break;
      case OPT.INFORMATION_REFRESH_TIME: r.refreshTime = data.readUInt32BE(0); break;
      case OPT.CLIENT_FQDN: r.fqdn = { flags: data[0], name: decodeNames(data.subarray(1))[0] ?? '' }; break;
      case OPT.IA_NA: case OPT.IA_TA: case OPT.IA_PD: {
        const fixed = code === OPT.IA_TA ? 4 : 12;
        const ia: RxIa = { kind: code, iaid: data.readUInt32BE(0), t1: fixed === 12 ? data.readUInt32BE(4) : 0, t2: fixed === 12 ? data.readUInt32BE(8) : 0, addrs: [] };
        for (const s of walk(data, fixed, data.length)) {
          if (s.code === OPT.IAADDR) ia.addrs.push({ ip: ip6ToString(s.data, 0), preferred: s.data.readUInt32BE(16), valid: s.data.readUInt32BE(20) });
          else if (s.code === OPT.STATUS_CODE) ia.status = statusOf(s.data);
        }
        r.ias.push(ia);
        break;
      }
      default: break;
    }
  }
  return r;
}

/** A DHCPv6 reply in a frame from the gateway, or null when the frame is something else. */
export function parseDhcp6Frame(f: Buffer): Dhcp6Reply | null {
  const eth = new EthernetHeader();
  if (parseEthernet(f, 0, f.length, eth) || eth.ethertype !== ETHERTYPE_IPV6) return null;
  const ip = new Ipv6Header();
  if (parseIpv6(f, eth.payloadOffset, f.length, ip) || ip.protocol !== IPPROTO_UDP) return null;
  const u = new UdpHeader();
  if (parseUdp(f, ip.payloadOffset, ip.payloadEnd, u, pseudoSumV6(f, ip.srcOffset, ip.dstOffset, IPPROTO_UDP, ip.payloadEnd - ip.payloadOffset), true)) return null;
  if (u.srcPort !== 547) return null;
  return {
    dstMac: macToString(f, 0), srcMac: macToString(f, 6), srcIp: ip6ToString(f, ip.srcOffset), dstIp: ip6ToString(f, ip.dstOffset),
    srcPort: u.srcPort, dstPort: u.dstPort, checksumOk: u.checksumOk,
    ...parseServerMessage(f.subarray(u.payloadOffset, u.payloadEnd)),
  };
}

export class Dhcp6TestClient {
  readonly mac: string;
  duid: Buffer;
  iaid: number;
  readonly linkLocal: string;
  /** the link destination of unicast frames */
  readonly gatewayMac: string;
  private nextXid = 0x10000;

  constructor(mac: string, o: { duid?: Buffer; iaid?: number; linkLocal?: string; gatewayMac?: string } = {}) {
    this.mac = mac;
    this.duid = o.duid ?? duidLLOf(mac);
    this.iaid = o.iaid ?? 1;
    this.linkLocal = o.linkLocal ?? linkLocalOf(mac);
    this.gatewayMac = o.gatewayMac ?? '52:55:0a:00:02:02';
  }

  /** A client message (the UDP payload). */
  message(type: number, s: MsgSpec = {}): Buffer {
    const xid = s.xid ?? (this.nextXid++ & 0xffffff);
    const parts: Buffer[] = [Buffer.from([type, (xid >> 16) & 0xff, (xid >> 8) & 0xff, xid & 0xff])];
    const cid = s.clientId === undefined ? this.duid : s.clientId;
    if (cid) parts.push(opt(OPT.CLIENTID, cid));
    if (s.serverId) parts.push(opt(OPT.SERVERID, s.serverId));
    parts.push(opt(OPT.ELAPSED_TIME, Buffer.alloc(2)));
    const oro = s.oro ?? [OPT.DNS_SERVERS, OPT.DOMAIN_LIST];
    const ob = Buffer.alloc(2 * oro.length);
    oro.forEach((c, k) => ob.writeUInt16BE(c, 2 * k));
    parts.push(opt(OPT.ORO, ob));
    if (s.rapidCommit) parts.push(opt(OPT.RAPID_COMMIT));
    for (const ia of s.ias ?? []) parts.push(this.ia(ia));
    if (s.fqdn) parts.push(opt(OPT.CLIENT_FQDN, Buffer.concat([Buffer.from([s.fqdn.flags ?? 0]), encodeName(s.fqdn.name)])));
    parts.push(...(s.extra ?? []));
    return Buffer.concat(parts);
  }

  ia(s: IaSpec = {}): Buffer {
    const kind = s.kind ?? OPT.IA_NA;
    const fixed = kind === OPT.IA_TA ? 4 : 12;
    const head = Buffer.alloc(fixed);
    head.writeUInt32BE(s.iaid ?? this.iaid, 0);
    if (fixed === 12) { head.writeUInt32BE(s.t1 ?? 0, 4); head.writeUInt32BE(s.t2 ?? 0, 8); }
    const subs = (s.addrs ?? []).map((a) => {
      const d = Buffer.alloc(24);
      parseIp6(a)!.copy(d, 0);
      return opt(OPT.IAADDR, d);
    });
    return opt(kind, Buffer.concat([head, ...subs]));
  }

  /** Ethernet + IPv6 + UDP around a payload. */
  frame(payload: Buffer, f: FrameSpec = {}): Buffer {
    const dst = parseIp6(f.dst ?? ALL_DHCP)!;
    const src = parseIp6(f.src ?? this.linkLocal)!;
    const dstMac = f.dstMac ? parseMac(f.dstMac)! : dst[0] === 0xff ? Buffer.concat([Buffer.from([0x33, 0x33]), dst.subarray(12)]) : parseMac(this.gatewayMac)!;
    const out = Buffer.alloc(14 + 40 + 8 + payload.length);
    writeEthernet(out, 0, dstMac, parseMac(f.srcMac ?? this.mac)!, ETHERTYPE_IPV6);
    writeIpv6(out, 14, src, dst, IPPROTO_UDP, 8 + payload.length, dst[0] === 0xff ? 1 : 64);
    writeUdp(out, 54, f.sport ?? 546, 547, payload.length);
    payload.copy(out, 62);
    finishUdpV6(out, 54, 22, 38);
    return out;
  }

  /** frame(message(type, s), f) */
  build(type: number, s: MsgSpec = {}, f: FrameSpec = {}): Buffer { return this.frame(this.message(type, s), f); }
}
