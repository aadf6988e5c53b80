// DHCPv6 messages and options (RFC 8415), with the options qnet serves: DNS servers (23, RFC
// 3646), domain search list (24), boot file URL (59, RFC 5970), client FQDN (39, RFC 4704).
// The wire format only; nothing about leases.
//
// - parseDhcp6() reads a client message (msg-type, transaction-id, options) into a fresh
//   Dhcp6Message whose Buffers are views on the borrowed payload (valid for the handler call
//   only). It keeps what the server acts on: client and server identifiers, rapid commit, the
//   IA options (IA_NA/IA_TA with their IAADDR options, IA_PD by IAID only), the client FQDN.
//   Every length is bounds-checked and a malformed message returns the reason (a counter
//   name) instead of throwing:
//     short       fewer than the 4 bytes of msg-type and transaction-id
//     badOptions  an option running past its container, or a second Client or Server
//                 Identifier (whose would it be?)
//     badIa       an IA or IAADDR shorter than its fixed part, or a sub-option running past it
//     badDuid     a DUID shorter than 3 or longer than 130 bytes (RFC 8415 11.1: a 2-byte
//                 type and at most 128 more)
//   Limits: nesting is fixed by the format (IA -> IAADDR -> options) and never recursed into
//   further; at most MAX_IAS IA options and MAX_ADDRS_PER_IA addresses in each are kept, the
//   rest are counted (`extraIas`) and skipped, so a message of a thousand IAs costs one linear
//   walk and bounded state. Relay messages are not parsed (a virtual segment has no relays).
//   Unknown options are skipped; a malformed option that the server does not rely on (a
//   client FQDN that is not a domain name) is ignored rather than failing the message.
// - encode*() write single options; writeDhcp6() lays out a server message. Domain names are
//   written uncompressed, as RFC 8415 10 requires.
// - DUIDs: duidLL()/duidLLT() build the server's identifier from its MAC (RFC 8415 11.4, 11.2);
//   duidToString()/parseDuid() convert to and from colon-separated hex.
import { checkHostname, sanitizeHostname } from './dhcp-codec.ts';

export const DHCP6_CLIENT_PORT = 546;
export const DHCP6_SERVER_PORT = 547;
/** All_DHCP_Relay_Agents_and_Servers (ff02::1:2) and All_DHCP_Servers (ff05::1:3) */
export const ALL_DHCP_RELAY_AGENTS_AND_SERVERS = Buffer.from('ff020000000000000000000000010002', 'hex');
export const ALL_DHCP_SERVERS = Buffer.from('ff050000000000000000000000010003', 'hex');

// message types (RFC 8415 7.3)
export const SOLICIT = 1, ADVERTISE = 2, REQUEST = 3, CONFIRM = 4, RENEW = 5, REBIND = 6, REPLY = 7, RELEASE = 8,
  DECLINE = 9, RECONFIGURE = 10, INFORMATION_REQUEST = 11, RELAY_FORW = 12, RELAY_REPL = 13;

// option codes (RFC 8415 21, RFC 3646, RFC 4704, RFC 5970)
export const OPT_CLIENTID = 1, OPT_SERVERID = 2, OPT_IA_NA = 3, OPT_IA_TA = 4, OPT_IAADDR = 5, OPT_ORO = 6,
  OPT_PREFERENCE = 7, OPT_ELAPSED_TIME = 8, OPT_STATUS_CODE = 13, OPT_RAPID_COMMIT = 14, OPT_DNS_SERVERS = 23,
  OPT_DOMAIN_LIST = 24, OPT_IA_PD = 25, OPT_IAPREFIX = 26, OPT_INFORMATION_REFRESH_TIME = 32, OPT_CLIENT_FQDN = 39,
  OPT_BOOTFILE_URL = 59;

// status codes (RFC 8415 21.13)
export const STATUS_SUCCESS = 0, STATUS_UNSPEC_FAIL = 1, STATUS_NO_ADDRS_AVAIL = 2, STATUS_NO_BINDING = 3,
  STATUS_NOT_ON_LINK = 4, STATUS_USE_MULTICAST = 5, STATUS_NO_PREFIX_AVAIL = 6;

/** A lifetime of 0xffffffff is infinity (RFC 8415 7.7). */
export const INFINITY = 0xffffffff;
export const MAX_IAS = 8;
export const MAX_ADDRS_PER_IA = 8;
const DUID_MIN = 3;
const DUID_MAX = 130;

// FQDN flags (RFC 4704 4.1)
export const FQDN_S = 1, FQDN_O = 2, FQDN_N = 4;

/** An IA option of a client message (views on the payload). */
export interface Dhcp6Ia {
  /** OPT_IA_NA, OPT_IA_TA or OPT_IA_PD */
  kind: number;
  iaid: number;
  /** IA_NA and IA_PD only; 0 otherwise */
  t1: number;
  t2: number;
  /** IAADDR addresses (16-byte views), at most MAX_ADDRS_PER_IA; none for IA_PD */
  addrs: Buffer[];
}

/** A parsed client message: views on the borrowed payload, valid for the handler call only. */
export interface Dhcp6Message {
  type: number;
  /** 24-bit transaction id */
  xid: number;
  /** the Client Identifier option's DUID, or null */
  clientId: Buffer | null;
  serverId: Buffer | null;
  rapidCommit: boolean;
  ias: Dhcp6Ia[];
  /** IA options beyond MAX_IAS (skipped) */
  extraIas: number;
  /** option codes of the Option Request option (at most 64 kept) */
  oro: number[];
  /** client FQDN (39): flags, the name sanitised to a hostname, and the raw option data */
  fqdn: { flags: number; hostname: string | undefined; raw: Buffer } | null;
}

export type Dhcp6ParseError = 'short' | 'badOptions' | 'badIa' | 'badDuid';

/** Parse a client message; returns the message or the reason it was dropped. */
export function parseDhcp6(p: Buffer): Dhcp6Message | Dhcp6ParseError {
  if (p.length < 4) return 'short';
  const m: Dhcp6Message = {
    type: p[0], xid: (p[1] << 16) | (p[2] << 8) | p[3], clientId: null, serverId: null, rapidCommit: false,
    ias: [], extraIas: 0, oro: [], fqdn: null,
  };
  let i = 4;
  while (i < p.length) {
    if (i + 4 > p.length) return 'badOptions';
    const code = p.readUInt16BE(i);
    const len = p.readUInt16BE(i + 2);
    const v = i + 4;
    const end = v + len;
    if (end > p.length) return 'badOptions';
    switch (code) {
      case OPT_CLIENTID:
      case OPT_SERVERID: {
        if (len < DUID_MIN || len > DUID_MAX) return 'badDuid';
        const duid = p.subarray(v, end);
        if (code === OPT_CLIENTID) {
          if (m.clientId) return 'badOptions';
          m.clientId = duid;
        } else {
          if (m.serverId) return 'badOptions';
          m.serverId = duid;
        }
        break;
      }
      case OPT_IA_NA:
      case OPT_IA_TA:
      case OPT_IA_PD: {
        const ia = parseIa(p, code, v, end);
        if (ia === null) return 'badIa';
        if (m.ias.length < MAX_IAS) m.ias.push(ia);
        else m.extraIas++;
        break;
      }
      case OPT_RAPID_COMMIT:
        m.rapidCommit = true;
        break;
      case OPT_ORO:
        for (let k = v; k + 2 <= end && m.oro.length < 64; k += 2) m.oro.push(p.readUInt16BE(k));
        break;
      case OPT_CLIENT_FQDN:
        if (len >= 1 && !m.fqdn) m.fqdn = { flags: p[v], hostname: fqdnHostname(p, v + 1, end), raw: p.subarray(v, end) };
        break;
      default:
        break;
    }
    i = end;
  }
  return m;
}

/** An IA option's fixed part and IAADDR sub-options; null when malformed. */
function parseIa(p: Buffer, kind: number, v: number, end: number): Dhcp6Ia | null {
  const fixed = kind === OPT_IA_TA ? 4 : 12;
  if (end - v < fixed) return null;
  const ia: Dhcp6Ia = {
    kind, iaid: p.readUInt32BE(v), t1: kind === OPT_IA_TA ? 0 : p.readUInt32BE(v + 4), t2: kind === OPT_IA_TA ? 0 : p.readUInt32BE(v + 8), addrs: [],
  };
  let j = v + fixed;
  while (j < end) {
    if (j + 4 > end) return null;
    const code = p.readUInt16BE(j);
    const len = p.readUInt16BE(j + 2);
    const sv = j + 4;
    if (sv + len > end) return null;
    if (code === OPT_IAADDR && kind !== OPT_IA_PD) {
      if (len < 24) return null; // address, preferred and valid lifetimes (its own options are not needed)
      if (ia.addrs.length < MAX_ADDRS_PER_IA) ia.addrs.push(p.subarray(sv, sv + 16));
    }
    j = sv + len;
  }
  return ia;
}

/**
 * A client FQDN's domain name (RFC 4704 4.2: RFC 1035 wire form, uncompressed, possibly
 * partial without the root label) as a sanitised hostname; undefined when it is not a name.
 */
function fqdnHostname(p: Buffer, v: number, end: number): string | undefined {
  const labels: string[] = [];
  let k = v;
  while (k < end) {
    const n = p[k];
    if (n === 0) break;
    if (n > 63 || k + 1 + n > end) return undefined; // no compression here, no overrun
    labels.push(p.toString('latin1', k + 1, k + 1 + n));
    k += 1 + n;
  }
  if (labels.length === 0) return undefined;
  return sanitizeHostname(Buffer.from(labels.join('.'), 'latin1'));
}

// ---- writing ----

/** One option: code, length, data. */
export function encodeOption6(code: number, data: Buffer = Buffer.alloc(0)): Buffer {
  if (data.length > 0xffff) throw new Error(`dhcp6: option ${code} longer than 65535 bytes`);
  const b = Buffer.alloc(4 + data.length);
  b.writeUInt16BE(code, 0);
  b.writeUInt16BE(data.length, 2);
  data.copy(b, 4);
  return b;
}

export function encodeStatus(code: number, message: string): Buffer {
  const msg = Buffer.from(message, 'utf8');
  const d = Buffer.alloc(2 + msg.length);
  d.writeUInt16BE(code, 0);
  msg.copy(d, 2);
  return encodeOption6(OPT_STATUS_CODE, d);
}

export function encodeIaAddr(addr: Buffer, preferred: number, valid: number): Buffer {
  const d = Buffer.alloc(24);
  addr.copy(d, 0, 0, 16);
  d.writeUInt32BE(preferred >>> 0, 16);
  d.writeUInt32BE(valid >>> 0, 20);
  return encodeOption6(OPT_IAADDR, d);
}

/** IA_NA / IA_PD (iaid, T1, T2, options) or IA_TA (iaid, options). */
export function encodeIa(kind: number, iaid: number, t1: number, t2: number, options: Buffer[]): Buffer {
  const fixed = kind === OPT_IA_TA ? 4 : 12;
  const d = Buffer.alloc(fixed);
  d.writeUInt32BE(iaid >>> 0, 0);
  if (fixed === 12) {
    d.writeUInt32BE(t1 >>> 0, 4);
    d.writeUInt32BE(t2 >>> 0, 8);
  }
  return encodeOption6(kind, Buffer.concat([d, ...options]));
}

/** Option 23: IPv6 addresses given as 16-byte buffers. */
export function encodeDnsServers(addrs: Buffer[]): Buffer {
  return encodeOption6(OPT_DNS_SERVERS, Buffer.concat(addrs.map((a) => a.subarray(0, 16))));
}

/** Domain names in uncompressed wire form (RFC 8415 10); throws on a name that is not valid. */
export function encodeDomainNames(names: string[]): Buffer {
  const out: Buffer[] = [];
  for (const name of names) {
    checkHostname(name);
    const n = name.endsWith('.') ? name.slice(0, -1) : name;
    for (const l of n.split('.')) {
      const b = Buffer.from(l.toLowerCase(), 'utf8');
      out.push(Buffer.from([b.length]), b);
    }
    out.push(Buffer.from([0]));
  }
  return Buffer.concat(out);
}

export function encodeU32Option(code: number, v: number): Buffer {
  const d = Buffer.alloc(4);
  d.writeUInt32BE(v >>> 0);
  return encodeOption6(code, d);
}

/** A server message: msg-type, transaction-id, options in order. */
export function writeDhcp6(type: number, xid: number, options: Buffer[]): Buffer {
  const head = Buffer.from([type, (xid >>> 16) & 0xff, (xid >>> 8) & 0xff, xid & 0xff]);
  return Buffer.concat([head, ...options]);
}

// ---- DUIDs ----

/** DUID-LL (RFC 8415 11.4): type 3, hardware type 1 (Ethernet), the MAC. */
export function duidLL(mac: Buffer): Buffer {
  const d = Buffer.alloc(10);
  d.writeUInt16BE(3, 0);
  d.writeUInt16BE(1, 2);
  mac.copy(d, 4, 0, 6);
  return d;
}

/** DUID-LLT (RFC 8415 11.2): type 1, hardware type 1, seconds since 2000-01-01 UTC mod 2^32, the MAC. */
export function duidLLT(mac: Buffer, time: number): Buffer {
  const d = Buffer.alloc(14);
  d.writeUInt16BE(1, 0);
  d.writeUInt16BE(1, 2);
  d.writeUInt32BE(time >>> 0, 4);
  mac.copy(d, 8, 0, 6);
  return d;
}

/** Seconds since 2000-01-01T00:00:00Z, modulo 2^32, for DUID-LLT. */
export function duidTimeOf(ms: number): number {
  return Math.floor((ms - Date.UTC(2000, 0, 1)) / 1000) >>> 0;
}

/** 'xx:xx:...' lowercase hex. */
export function duidToString(d: Buffer): string {
  return [...d].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** A DUID from hex text (colons or dashes between bytes allowed); null when not a DUID. */
export function parseDuid(s: string): Buffer | null {
  const t = s.trim();
  let b: Buffer;
  if (/[:-]/.test(t)) {
    const parts = t.split(/[:-]/);
    if (!parts.every((x) => /^[0-9a-fA-F]{1,2}$/.test(x))) return null;
    b = Buffer.from(parts.map((x) => parseInt(x, 16)));
  } else {
    if (t.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(t)) return null;
    b = Buffer.from(t, 'hex');
  }
  return b.length >= DUID_MIN && b.length <= DUID_MAX ? b : null;
}
