// TCP sequence-number arithmetic (RFC 9293 3.4): 32-bit values compared modulo 2^32, so
// "a before b" means the signed difference a - b is negative. Valid while the two are less
// than 2^31 apart, which every window here guarantees.

export const seqLt = (a: number, b: number): boolean => ((a - b) | 0) < 0;
export const seqLe = (a: number, b: number): boolean => ((a - b) | 0) <= 0;
export const seqGt = (a: number, b: number): boolean => ((a - b) | 0) > 0;
export const seqGe = (a: number, b: number): boolean => ((a - b) | 0) >= 0;
/** a + n, wrapped to 32 bits */
export const seqAdd = (a: number, n: number): number => (a + n) >>> 0;
/** a - b as a signed distance */
export const seqDiff = (a: number, b: number): number => (a - b) | 0;
/** lo <= x < hi, modulo 2^32 */
export const seqInRange = (x: number, lo: number, hi: number): boolean => seqLe(lo, x) && seqLt(x, hi);
