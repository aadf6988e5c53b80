// Shared test helpers for the wire codecs: a seeded PRNG, hex decoding and a naive checksum
// reference that deliberately shares no code with src/wire/checksum.ts.

/** xorshift32: tiny, fast and reproducible from a printed seed. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = (seed >>> 0) || 0x9e3779b9;
  }
  u32(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return this.u32() % n;
  }
  fill(buf: Buffer, off = 0, end = buf.length): void {
    let i = off;
    for (; i + 4 <= end; i += 4) buf.writeUInt32LE(this.u32(), i);
    for (; i < end; i++) buf[i] = this.u32() & 0xff;
  }
}

export function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

/** Textbook RFC 1071: 16-bit words, carry folded after every addition. */
export function naiveChecksum(buf: Buffer, off: number, len: number, initial = 0): number {
  let s = initial;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  for (let i = 0; i < len; i += 2) {
    const w = i + 1 < len ? buf[off + i] * 256 + buf[off + i + 1] : buf[off + i] * 256;
    s += w;
    if (s > 0xffff) s = (s & 0xffff) + 1;
  }
  return ~s & 0xffff;
}

export function seedFromEnv(name: string): number {
  const v = process.env[name];
  return v ? Number(v) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** Parses buf[off, e) for every e in [off, fullEnd): never throws; must fail below mustFailBelow;
 *  otherwise reported offsets (fields named *Offset / *End, -1 meaning absent) stay in [off, e]. */
export function checkTruncations<T extends object>(name: string, parse: (b: Buffer, o: number, e: number, out: T) => string | null,
  buf: Buffer, off: number, fullEnd: number, out: T, mustFailBelow: number): void {
  for (let e = off; e < fullEnd; e++) {
    let r: string | null;
    try {
      r = parse(buf, off, e, out);
    } catch (err) {
      throw new Error(`${name}: threw at end ${e}: ${String(err)}`);
    }
    if (e < mustFailBelow && typeof r !== 'string') throw new Error(`${name}: accepted truncation at ${e - off} bytes`);
    if (r === null) assertOffsets(name, out, off, e);
  }
}

export function assertOffsets(name: string, out: object, off: number, end: number): void {
  for (const [k, v] of Object.entries(out)) {
    if (typeof v !== 'number' || !(k.endsWith('Offset') || k.endsWith('End')) || k === 'fragmentOffset') continue;
    if (v === -1) continue;
    if (!(v >= off && v <= end)) throw new Error(`${name}: ${k} = ${v} outside [${off}, ${end}]`);
  }
}
