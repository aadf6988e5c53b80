// DHCP messages (RFC 2131) and options (RFC 2132): the wire format, nothing about leases.
//
// - parseDhcp() reads a client message into a reusable DhcpRequest: the fixed header (op,
//   htype/hlen, xid, flags, ciaddr, giaddr, chaddr) and the options the server acts on
//   (53 type, 50 requested address, 54 server id, 12 hostname). Every length is
//   bounds-checked; a wrong op/htype/hlen/magic or a malformed option area returns the
//   reason (a counter name) instead of throwing. The end option is required unless the area
//   ran out exactly. Option overload (52) is not parsed: a client does not need it with us.
// - encodeOption() writes one option, split into several instances when longer than 255
//   bytes (RFC 3396); encodeDnsSearch() writes option 119 (RFC 3397) with RFC 1035 name
//   compression, pointers relative to the start of the option data.
// - writeDhcpReply() lays out a BOOTREPLY: header fields echoed from the request, the options
//   given, padded to the BOOTP minimum of 300 bytes that some old clients need.
// - sanitizeHostname() reduces a client-supplied name to DNS-safe characters.
import { ip4FromBuf, ip4ToBuf, macKey } from '../wire/addr.ts';

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
export const BOOTP_FLAG_BROADCAST = 0x8000;

// option codes
export const OPT_PAD = 0, OPT_END = 255;
export const OPT_SUBNET = 1, OPT_ROUTER = 3, OPT_DNS = 6, OPT_HOSTNAME = 12, OPT_DOMAIN = 15, OPT_MTU = 26,
  OPT_BROADCAST = 28, OPT_REQ_ADDR = 50, OPT_LEASE = 51, OPT_MSGTYPE = 53, OPT_SERVER_ID = 54,
  OPT_MESSAGE = 56, OPT_T1 = 58, OPT_T2 = 59, OPT_TFTP_SERVER = 66, OPT_BOOTFILE = 67, OPT_SEARCH = 119;

/** A parsed client message: a view on the borrowed payload, valid for the handler call only. */
export interface DhcpRequest {
  buf: Buffer;
  xid: number;
  flags: number;
  ciaddr: number;
  giaddr: number;
  /** chaddr (6 bytes, a view) */
  mac: Buffer;
  /** macKey() of chaddr */
  key: number;
  /** option 53; 0 = plain BOOTP */
  type: number;
  /** option 50; 0 = none */
  requested: number;
  /** option 54; 0 = none */
  serverId: number;
  hostname?: string;
}

/** Why a message was dropped (the server's counter of the same name). */
export type DhcpParseError = 'short' | 'badOp' | 'badHtype' | 'badMagic' | 'badOptions' | 'groupMac';

/** Parse a client message; returns the request or the reason it was dropped. */
export function parseDhcp(p: Buffer): DhcpRequest | DhcpParseError {
  if (p.length < OPT_START) return 'short';
  if (p[0] !== 1) return 'badOp';
  if (p[1] !== 1 || p[2] !== 6) return 'badHtype';
  if (p.readUInt32BE(FIXED_LEN) !== MAGIC) return 'badMagic';
  const mac = p.subarray(28, 34);
  if (mac[0] & 1) return 'groupMac'; // a group address is no client
  const req: DhcpRequest = {
    buf: p, xid: p.readUInt32BE(4), flags: p.readUInt16BE(10), ciaddr: ip4FromBuf(p, 12), giaddr: ip4FromBuf(p, 24),
    mac, key: macKey(p, 28), type: 0, requested: 0, serverId: 0,
  };
  let i = OPT_START;
  let sawEnd = false;
  while (i < p.length) {
    const code = p[i];
    if (code === OPT_PAD) { i++; continue; }
    if (code === OPT_END) { sawEnd = true; break; }
    if (i + 2 > p.length) return 'badOptions';
    const len = p[i + 1];
    const v = i + 2;
    if (v + len > p.length) return 'badOptions';
    switch (code) {
      case OPT_MSGTYPE:
        if (len !== 1) return 'badOptions';
        req.type = p[v];
        break;
      case OPT_REQ_ADDR:
        if (len !== 4) return 'badOptions';
        req.requested = ip4FromBuf(p, v);
        break;
      case OPT_SERVER_ID:
        if (len !== 4) return 'badOptions';
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
  if (!sawEnd && i !== p.length) return 'badOptions';
  return req;
}

export interface DhcpReplyFields {
  /** 0 = BOOTP (no option 53) */
  type: number;
  yiaddr: number;
  /** siaddr: the next server (TFTP) */
  siaddr: number;
  /** the BOOTP `file` field, or null */
  file: Buffer | null;
  /** encoded options, in order; the end option is added */
  options: Buffer[];
}

/** A BOOTREPLY for `req`. */
export function writeDhcpReply(req: DhcpRequest, f: DhcpReplyFields): Buffer {
  const optLen = f.options.reduce((s, b) => s + b.length, 0) + 1;
  const m = Buffer.alloc(Math.max(MIN_REPLY, OPT_START + optLen));
  const nak = f.type === DHCPNAK;
  m[0] = 2; m[1] = 1; m[2] = 6; m[3] = 0;
  m.writeUInt32BE(req.xid, 4);
  m.writeUInt16BE(req.flags & BOOTP_FLAG_BROADCAST, 10);
  if (!nak) ip4ToBuf(req.ciaddr, m, 12);
  ip4ToBuf(f.yiaddr, m, 16);
  if (!nak) ip4ToBuf(f.siaddr, m, 20);
  ip4ToBuf(req.giaddr, m, 24);
  req.buf.copy(m, 28, 28, 44); // chaddr
  if (f.file && !nak) f.file.copy(m, 108);
  m.writeUInt32BE(MAGIC, FIXED_LEN);
  let o = OPT_START;
  for (const b of f.options) { b.copy(m, o); o += b.length; }
  m[o] = OPT_END;
  return m;
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

/** An option holding IPv4 addresses (none: nothing). */
export function encodeIp4Option(code: number, ips: number[]): Buffer {
  if (ips.length === 0) return Buffer.alloc(0);
  const v = Buffer.alloc(4 * ips.length);
  ips.forEach((ip, k) => ip4ToBuf(ip, v, 4 * k));
  return encodeOption(code, v);
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

/** A configured hostname, checked to be a valid domain name (throws otherwise). */
export function checkHostname(h: string): string {
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
export function sanitizeHostname(raw: Buffer): string | undefined {
  let s = '';
  for (let k = 0; k < raw.length && s.length < 63; k++) {
    const c = raw[k];
    if (c === 0) break;
    if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46) s += String.fromCharCode(c);
  }
  s = s.replace(/^[.-]+|[.-]+$/g, '');
  return s.length > 0 ? s : undefined;
}
