// ARP (RFC 826) for Ethernet/IPv4 only: htype 1, ptype 0x0800, hlen 6, plen 4.
//
// Any other hardware/protocol combination is reported as unsupported: the gateway only resolves
// IPv4 over Ethernet, and a stricter parser is a smaller attack surface. The opcode is returned as
// is (request 1, reply 2; RARP and others are left for the caller to ignore). MACs stay in the
// buffer and are reported as offsets; IPv4 addresses are read into u32s.

export const ARP_LEN = 28;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

export class ArpPacket {
  op = 0;
  senderMacOffset = 0;
  senderIp = 0;
  targetMacOffset = 0;
  targetIp = 0;
  /** End of the 28 ARP bytes (Ethernet padding may follow). */
  payloadEnd = 0;
}

export function parseArp(buf: Buffer, off: number, end: number, out: ArpPacket): string | null {
  if (off < 0 || end > buf.length || end - off < ARP_LEN) return 'arp: truncated';
  if (buf[off] !== 0 || buf[off + 1] !== 1 || buf[off + 2] !== 0x08 || buf[off + 3] !== 0x00 ||
    buf[off + 4] !== 6 || buf[off + 5] !== 4) {
    return 'arp: unsupported hardware or protocol type';
  }
  out.op = (buf[off + 6] << 8) | buf[off + 7];
  out.senderMacOffset = off + 8;
  out.senderIp = ((buf[off + 14] << 24) | (buf[off + 15] << 16) | (buf[off + 16] << 8) | buf[off + 17]) >>> 0;
  out.targetMacOffset = off + 18;
  out.targetIp = ((buf[off + 24] << 24) | (buf[off + 25] << 16) | (buf[off + 26] << 8) | buf[off + 27]) >>> 0;
  out.payloadEnd = off + ARP_LEN;
  return null;
}

/** Writes a 28-byte ARP packet; MACs are read from offset 0 of their buffers (pass a zero MAC
 *  as targetMac for requests). Returns off + 28. */
export function writeArp(buf: Buffer, off: number, op: number, senderMac: Buffer, senderIp: number,
  targetMac: Buffer, targetIp: number): number {
  buf[off] = 0;
  buf[off + 1] = 1;
  buf[off + 2] = 0x08;
  buf[off + 3] = 0x00;
  buf[off + 4] = 6;
  buf[off + 5] = 4;
  buf[off + 6] = op >>> 8;
  buf[off + 7] = op;
  for (let k = 0; k < 6; k++) {
    buf[off + 8 + k] = senderMac[k];
    buf[off + 18 + k] = targetMac[k];
  }
  buf.writeUInt32BE(senderIp >>> 0, off + 14);
  buf.writeUInt32BE(targetIp >>> 0, off + 24);
  return off + ARP_LEN;
}
