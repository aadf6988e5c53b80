// Ethernet II frames with up to two VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, legacy QinQ 0x9100).
//
// Design: the parser only records offsets and the outer/inner tag fields, so the switch can forward
// a frame without copying it. A third tag is reported as malformed rather than skipped: nothing in
// this project produces one, and silently peeling it would let a guest smuggle frames across VLANs.
// Ethertype values below 0x0600 are 802.3 length fields; they are returned as-is and the caller
// decides (everything here speaks Ethernet II only). The FCS is never present (QEMU strips it), and
// trailing padding to the 60-byte minimum is left for the IP layer to ignore via its own lengths.
// pushVlan/popVlan allocate a new frame: tagging changes the length, and the switch needs the
// untouched original for other ports anyway.

export const ETH_HEADER_LEN = 14;
export const ETH_ALEN = 6;
export const ETH_MIN_FRAME = 60; // without FCS

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_IPV6 = 0x86dd;
export const ETHERTYPE_QINQ = 0x88a8;
export const ETHERTYPE_QINQ_OLD = 0x9100;
export const ETHERTYPE_LLDP = 0x88cc;

export function isVlanTpid(t: number): boolean {
  return t === ETHERTYPE_VLAN || t === ETHERTYPE_QINQ || t === ETHERTYPE_QINQ_OLD;
}

export class EthernetHeader {
  dstOffset = 0;
  srcOffset = 0;
  /** Number of VLAN tags, 0..2. */
  tagCount = 0;
  /** TPID of the outer tag, 0 when untagged. */
  tpid = 0;
  /** Outer tag VLAN id (0..4095), or -1 when untagged. */
  vlanId = -1;
  /** Outer tag priority (0..7), or -1 when untagged. */
  pcp = -1;
  /** Outer tag drop-eligible bit, false when untagged. */
  dei = false;
  /** Inner tag VLAN id when two tags are present, else -1. */
  innerVlanId = -1;
  /** Ethertype after all tags. */
  ethertype = 0;
  payloadOffset = 0;
  payloadEnd = 0;
}

export function parseEthernet(buf: Buffer, off: number, end: number, out: EthernetHeader): string | null {
  if (off < 0 || end > buf.length || end - off < ETH_HEADER_LEN) return 'ethernet: truncated';
  out.dstOffset = off;
  out.srcOffset = off + 6;
  out.tagCount = 0;
  out.tpid = 0;
  out.vlanId = -1;
  out.pcp = -1;
  out.dei = false;
  out.innerVlanId = -1;
  let p = off + 12;
  let type = (buf[p] << 8) | buf[p + 1];
  while (isVlanTpid(type)) {
    if (out.tagCount === 2) return 'ethernet: too many vlan tags';
    if (end - p < 6) return 'ethernet: truncated vlan tag';
    const tci = (buf[p + 2] << 8) | buf[p + 3];
    if (out.tagCount === 0) {
      out.tpid = type;
      out.vlanId = tci & 0xfff;
      out.pcp = tci >>> 13;
      out.dei = (tci & 0x1000) !== 0;
    } else {
      out.innerVlanId = tci & 0xfff;
    }
    out.tagCount++;
    p += 4;
    type = (buf[p] << 8) | buf[p + 1];
  }
  out.ethertype = type;
  out.payloadOffset = p + 2;
  out.payloadEnd = end;
  return null;
}

/** Writes an untagged (vid < 0) or 802.1Q-tagged Ethernet header; returns the payload offset.
 *  dst and src are read from offset 0 of their buffers. */
export function writeEthernet(buf: Buffer, off: number, dst: Buffer, src: Buffer, ethertype: number,
  vid = -1, pcp = 0): number {
  for (let k = 0; k < 6; k++) {
    buf[off + k] = dst[k];
    buf[off + 6 + k] = src[k];
  }
  let p = off + 12;
  if (vid >= 0) {
    buf[p] = 0x81;
    buf[p + 1] = 0x00;
    const tci = ((pcp & 7) << 13) | (vid & 0xfff);
    buf[p + 2] = tci >>> 8;
    buf[p + 3] = tci;
    p += 4;
  }
  buf[p] = ethertype >>> 8;
  buf[p + 1] = ethertype;
  return p + 2;
}

/** New frame with an outer tag inserted after the MACs (a trunk port egress). The frame must hold
 *  at least the two MACs (12 bytes); throws RangeError otherwise, which is a caller bug. */
export function pushVlan(frame: Buffer, vid: number, pcp = 0, tpid = ETHERTYPE_VLAN): Buffer {
  if (frame.length < 12) throw new RangeError('pushVlan: frame shorter than 12 bytes');
  const out = Buffer.allocUnsafe(frame.length + 4);
  frame.copy(out, 0, 0, 12);
  out[12] = tpid >>> 8;
  out[13] = tpid;
  const tci = ((pcp & 7) << 13) | (vid & 0xfff);
  out[14] = tci >>> 8;
  out[15] = tci;
  frame.copy(out, 16, 12);
  return out;
}

/** New frame without its outer tag (an access port egress). Returns the same buffer when the
 *  frame carries no tag (or is too short to carry one), so callers can compare identities. */
export function popVlan(frame: Buffer): Buffer {
  if (frame.length < 18 || !isVlanTpid((frame[12] << 8) | frame[13])) return frame;
  const out = Buffer.allocUnsafe(frame.length - 4);
  frame.copy(out, 0, 0, 12);
  frame.copy(out, 12, 16);
  return out;
}
