// The DNS message codec the forwarder needs (RFC 1035), nothing more: header fields, names
// with compression-pointer loop protection (pointers must go strictly backwards, at most 255
// bytes of name), the first question, and building A and AAAA (RFC 3596) answers, NODATA,
// NXDOMAIN and SERVFAIL replies. Queries are otherwise passed on as they are: upstream judges
// them.
import { ip4ToBuf } from '../wire/addr.ts';
import { V6_BASE, writeAddr6 } from '../stack/addr.ts';

export const DNS_PORT = 53;
export const TYPE_A = 1;
export const TYPE_AAAA = 28;
export const TYPE_ANY = 255;
export const CLASS_IN = 1;
export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const DNS_HEADER = 12;
const HEADER = DNS_HEADER;

export interface DnsQuestion {
  /** lowercase, dot-separated, no trailing dot ('' for the root) */
  name: string;
  type: number;
  cls: number;
  /** offset just after the question */
  end: number;
}

/**
 * Reads a (possibly compressed) domain name at `off`. Returns the name and the offset after it in
 * the original byte stream, or null when malformed: out of bounds, a reserved label type, a
 * pointer that does not go strictly backwards (which rules out loops), or over 255 bytes.
 */
export function readName(msg: Buffer, off: number): { name: string; end: number } | null {
  const labels: string[] = [];
  let p = off;
  let end = -1;
  let wire = 1;
  let limit = off; // a pointer must point before the start of the current run of labels
  for (let hops = 0; hops < 128; hops++) {
    for (;;) {
      if (p >= msg.length) return null;
      const len = msg[p];
      if (len === 0) {
        if (end < 0) end = p + 1;
        return { name: labels.join('.'), end };
      }
      if ((len & 0xc0) === 0xc0) {
        if (p + 1 >= msg.length) return null;
        const target = ((len & 0x3f) << 8) | msg[p + 1];
        if (end < 0) end = p + 2;
        if (target >= limit) return null;
        p = target;
        limit = target;
        break;
      }
      if (len & 0xc0) return null;
      if (p + 1 + len > msg.length) return null;
      wire += len + 1;
      if (wire > 255) return null;
      labels.push(msg.toString('latin1', p + 1, p + 1 + len).toLowerCase());
      p += 1 + len;
    }
  }
  return null;
}

/** The first question of a message, or null. */
export function parseQuestion(msg: Buffer): DnsQuestion | null {
  if (msg.length < HEADER || msg.readUInt16BE(4) < 1) return null;
  const n = readName(msg, HEADER);
  if (!n || n.end + 4 > msg.length) return null;
  return { name: n.name, type: msg.readUInt16BE(n.end), cls: msg.readUInt16BE(n.end + 2), end: n.end + 4 };
}

/**
 * A reply to `query`: same ID, opcode and RD, QR and RA set, the first question echoed when
 * `q` is given, then one record per address: A for IPv4, AAAA for IPv6 ids (the owner is a
 * pointer to the question name).
 */
export function buildReply(query: Buffer, q: DnsQuestion | null, rcode: number, addrs: number[] = [], ttl = 0, aa = false): Buffer {
  const qlen = q ? q.end - HEADER : 0;
  let size = HEADER + qlen;
  for (const a of addrs) size += a >= V6_BASE ? 28 : 16;
  const out = Buffer.alloc(size);
  query.copy(out, 0, 0, 2);
  const opcode = (query[2] >> 3) & 0xf;
  out[2] = 0x80 | (opcode << 3) | (aa ? 0x04 : 0) | (query[2] & 0x01);
  out[3] = 0x80 | (rcode & 0xf);
  out.writeUInt16BE(q ? 1 : 0, 4);
  out.writeUInt16BE(addrs.length, 6);
  if (q) query.copy(out, HEADER, HEADER, q.end);
  let o = HEADER + qlen;
  for (const a of addrs) {
    const v6 = a >= V6_BASE;
    out.writeUInt16BE(0xc000 | HEADER, o);
    out.writeUInt16BE(v6 ? TYPE_AAAA : TYPE_A, o + 2);
    out.writeUInt16BE(CLASS_IN, o + 4);
    out.writeUInt32BE(ttl >>> 0, o + 6);
    out.writeUInt16BE(v6 ? 16 : 4, o + 10);
    if (v6) writeAddr6(a, out, o + 12); else ip4ToBuf(a, out, o + 12);
    o += v6 ? 28 : 16;
  }
  return out;
}

/** SERVFAIL for a query (question echoed when it parses). */
export function servfail(query: Buffer): Buffer {
  return buildReply(query, parseQuestion(query), RCODE_SERVFAIL);
}
