// Internet checksum (RFC 1071) with incremental update (RFC 1624).
//
// Design: sumWords() adds big-endian 16-bit words into a plain JS number and never folds;
// foldChecksum() folds once at the end and complements. Chaining sumWords() calls (pseudo-header,
// header, payload) is therefore just passing the previous sum as `initial`. Every segment except
// the last must have an even length, since an odd byte is summed as the high byte of a word.
//
// Speed (measured with test/wire/checksum.bench.ts, Node 20, x86-64): Buffer.readUInt32BE is the
// slowest option (~0.5 GB/s: it is a bounds-checked JS function), 16-bit byte pairs run ~1.6 GB/s,
// byte pairs unrolled 8x ~2.5-3 GB/s, and DataView.getUint32 unrolled 4x ~7 GB/s at 1500 bytes and
// ~8-10 GB/s at 64 KiB. A DataView costs an allocation, so we keep one for the last ArrayBuffer
// seen (frames of a read batch share their chunk's ArrayBuffer) and use it only from 128 bytes up;
// below that the unrolled byte loop wins. Adding whole 32-bit words gives the same ones' complement
// sum as adding their two halves, because 2^16 ≡ 1 (mod 2^16 - 1); the double accumulator stays
// exact up to 2^53, i.e. inputs up to ~8 MiB per chain, far beyond any IP packet. The cache pins
// one ArrayBuffer until the next call with another one, an acceptable cost for a read chunk.
//
// Natively (the qnet_sys addon's sum16: 32-bit words into a 64-bit accumulator, which the C
// compiler vectorises) from NATIVE_MIN bytes up: beyond the call's fixed cost it is several
// times faster still, and it never allocates, whereas the DataView cache above thrashes when
// segments alternate between the transmit arena and read chunks. The JS loop remains for short
// regions and for a machine where the addon is not built.
import { loadNative } from '../util/native.ts';

const NATIVE_MIN = 256;
const native = loadNative<{ sum16(buf: Buffer, off: number, len: number, initial: number): number }>();
const sum16 = native?.sum16 ?? null;

let cachedAb: ArrayBufferLike | null = null;
let cachedDv: DataView = new DataView(new ArrayBuffer(0));

/** Unfolded ones' complement partial sum of buf[off, off+len) added to `initial`. */
export function sumWords(buf: Buffer, off: number, len: number, initial = 0): number {
  if (len >= NATIVE_MIN && sum16 !== null) return sum16(buf, off, len, initial);
  return sumWordsJs(buf, off, len, initial);
}

/** The JS loop of sumWords() (also its reference in tests). */
export function sumWordsJs(buf: Buffer, off: number, len: number, initial = 0): number {
  let s = initial;
  let i = off;
  const end = off + len;
  if (len >= 128) {
    const ab = buf.buffer;
    if (ab !== cachedAb) {
      cachedAb = ab;
      cachedDv = new DataView(ab);
    }
    const dv = cachedDv;
    const base = buf.byteOffset;
    let j = base + off;
    const e16 = j + (len & ~15);
    for (; j < e16; j += 16) {
      s += dv.getUint32(j) + dv.getUint32(j + 4) + dv.getUint32(j + 8) + dv.getUint32(j + 12);
    }
    i = j - base;
  } else {
    const e16 = off + (len & ~15);
    for (; i < e16; i += 16) {
      s += ((buf[i] << 8) | buf[i + 1]) + ((buf[i + 2] << 8) | buf[i + 3]) +
        ((buf[i + 4] << 8) | buf[i + 5]) + ((buf[i + 6] << 8) | buf[i + 7]) +
        ((buf[i + 8] << 8) | buf[i + 9]) + ((buf[i + 10] << 8) | buf[i + 11]) +
        ((buf[i + 12] << 8) | buf[i + 13]) + ((buf[i + 14] << 8) | buf[i + 15]);
    }
  }
  for (; i + 1 < end; i += 2) s += (buf[i] << 8) | buf[i + 1];
  if (i < end) s += buf[i] << 8;
  return s;
}

/** Fold a partial sum to 16 bits and complement it: the value to store in a checksum field. */
export function foldChecksum(sum: number): number {
  // One division-based fold brings any safe integer below 2^38; bit ops finish the job.
  if (sum > 0xffffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  if (sum > 0xffffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Complemented checksum of buf[off, off+len) plus `initial`; 0 when verifying a valid region. */
export function checksum(buf: Buffer, off: number, len: number, initial = 0): number {
  return foldChecksum(sumWords(buf, off, len, initial));
}

/** Partial sum of the IPv4 pseudo-header (RFC 793/768). Addresses are u32. */
export function pseudoSumV4(src: number, dst: number, proto: number, l4len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + l4len;
}

/** Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1); addresses are read from buf. */
export function pseudoSumV6(buf: Buffer, srcOff: number, dstOff: number, proto: number, l4len: number): number {
  let s = proto + (l4len >>> 16) + (l4len & 0xffff);
  for (let k = 0; k < 16; k += 2) {
    s += ((buf[srcOff + k] << 8) | buf[srcOff + k + 1]) + ((buf[dstOff + k] << 8) | buf[dstOff + k + 1]);
  }
  return s;
}

/** RFC 1624 eqn. 3: new checksum field after one 16-bit word changes from oldWord to newWord.
 *  Exact except when all covered data is zero (it yields 0, not 0xffff), which no IP, UDP or TCP
 *  checksum can hit since their headers or pseudo-headers always contain non-zero words. */
export function csumAdjust16(csum: number, oldWord: number, newWord: number): number {
  let s = (~csum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** As csumAdjust16 for a 32-bit field (e.g. an IPv4 address rewritten by NAT). */
export function csumAdjust32(csum: number, oldU32: number, newU32: number): number {
  let s = (~csum & 0xffff) + (~(oldU32 >>> 16) & 0xffff) + (~oldU32 & 0xffff) +
    (newU32 >>> 16) + (newU32 & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
