// Seeded pseudo-random numbers for fuzz and loss tests, so a failure's seed reproduces it.

/** mulberry32: small, fast, good enough to drive a fuzzer reproducibly. */
export function prng(seed: number): { u32(): number; int(lo: number, hi: number): number; chance(p: number): boolean; bytes(n: number): Buffer } {
  let a = seed >>> 0;
  const u32 = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return {
    u32,
    int: (lo, hi) => lo + (u32() % (hi - lo + 1)), // inclusive
    chance: (p) => u32() / 2 ** 32 < p,
    bytes: (n) => {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i += 4) {
        const v = u32();
        for (let j = 0; j < 4 && i + j < n; j++) b[i + j] = (v >>> (8 * j)) & 0xff;
      }
      return b;
    },
  };
}

/** A float in [0, 1) per call, from the same generator. */
export function random(seed: number): () => number {
  const p = prng(seed);
  return () => p.u32() / 2 ** 32;
}
