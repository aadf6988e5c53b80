import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checksum, csumAdjust16, csumAdjust32, foldChecksum, pseudoSumV4, pseudoSumV6, sumWords,
} from '../../src/wire/checksum.ts';
import { Rng, hex, naiveChecksum, seedFromEnv } from './_util.ts';

test('checksum: RFC 1071 example and a known IPv4 header', () => {
  // RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
  const b = hex('0001f203f4f5f6f7');
  assert.equal(foldChecksum(sumWords(b, 0, 8)), ~0xddf2 & 0xffff);
  // Widely quoted header with checksum b861.
  const h = hex('450000730000400040110000c0a80001c0a800c7');
  assert.equal(checksum(h, 0, 20), 0xb861);
  h.writeUInt16BE(0xb861, 10);
  assert.equal(checksum(h, 0, 20), 0);
});

test('checksum: zero length, odd lengths, offsets, and chaining', () => {
  const b = Buffer.from([0xab]);
  assert.equal(checksum(b, 0, 0), 0xffff);
  assert.equal(checksum(b, 0, 1), ~0xab00 & 0xffff);
  assert.equal(checksum(b, 1, 0, 0x1234), ~0x1234 & 0xffff);
  const x = hex('00 01 02 03 04 05 06');
  assert.equal(checksum(x, 1, 3), naiveChecksum(x, 1, 3));
  // Chaining: even-length first segment, then the rest.
  const big = Buffer.alloc(301);
  for (let i = 0; i < big.length; i++) big[i] = (i * 37 + 11) & 0xff;
  assert.equal(checksum(big, 150, 151, sumWords(big, 0, 150)), naiveChecksum(big, 0, 301));
});

test('checksum: matches the naive reference on random buffers', () => {
  const seed = seedFromEnv('WIRE_SEED');
  const rng = new Rng(seed);
  const pool = Buffer.allocUnsafe(70000);
  rng.fill(pool);
  for (let iter = 0; iter < 3000; iter++) {
    const len = iter < 300 ? iter : iter % 10 === 0 ? rng.int(65536) : rng.int(2000);
    const off = rng.int(16);
    const init = iter % 3 === 0 ? rng.u32() % 0x3ffff : 0;
    const got = checksum(pool, off, len, init);
    const want = naiveChecksum(pool, off, len, init);
    if (got !== want) assert.fail(`seed ${seed} iter ${iter}: len ${len} off ${off}: ${got} != ${want}`);
  }
  // A subarray view whose byteOffset is not aligned in its ArrayBuffer (DataView path).
  const view = pool.subarray(3, 3 + 4000);
  assert.equal(checksum(view, 1, 3001), naiveChecksum(view, 1, 3001));
  // All-0xff worst case for carries, 64 KiB.
  const ff = Buffer.alloc(65535, 0xff);
  assert.equal(checksum(ff, 0, 65535), naiveChecksum(ff, 0, 65535));
});

test('checksum: pseudo headers', () => {
  const src = 0x0a00020f, dst = 0x5db8d822;
  const ph = Buffer.alloc(12);
  ph.writeUInt32BE(src, 0);
  ph.writeUInt32BE(dst, 4);
  ph[9] = 6;
  ph.writeUInt16BE(40, 10);
  assert.equal(foldChecksum(pseudoSumV4(src, dst, 6, 40)), naiveChecksum(ph, 0, 12));
  const b = Buffer.alloc(40);
  for (let i = 0; i < 40; i++) b[i] = i * 7;
  const ph6 = Buffer.alloc(40);
  b.copy(ph6, 0, 0, 32);
  ph6.writeUInt32BE(70000, 32);
  ph6[39] = 17;
  assert.equal(foldChecksum(pseudoSumV6(b, 0, 16, 17, 70000)), naiveChecksum(ph6, 0, 40));
});

test('checksum: RFC 1624 incremental updates equal recomputation', () => {
  const rng = new Rng(12345);
  const b = Buffer.alloc(64);
  for (let iter = 0; iter < 5000; iter++) {
    rng.fill(b);
    if (iter % 50 === 0) {
      // Data summing to ones' complement -0 (checksum field 0). All-zero data is the one case
      // RFC 1624 eqn. 3 gets "wrong" (0 instead of 0xffff); real headers never are all zero.
      b.fill(0);
      b.writeUInt16BE(0xffff, 40 + (iter % 3) * 2);
    }
    b.writeUInt16BE(0, 10);
    b.writeUInt16BE(checksum(b, 0, 64), 10);
    const w = rng.int(2) === 0 ? 0 : rng.u32() & 0xffff;
    const old16 = b.readUInt16BE(20);
    const c16 = csumAdjust16(b.readUInt16BE(10), old16, w);
    b.writeUInt16BE(w, 20);
    b.writeUInt16BE(c16, 10);
    assert.equal(checksum(b, 0, 64), 0, `adjust16 iter ${iter}`);
    const v = rng.u32();
    const old32 = b.readUInt32BE(12);
    const c32 = csumAdjust32(b.readUInt16BE(10), old32, v);
    b.writeUInt32BE(v, 12);
    b.writeUInt16BE(c32, 10);
    assert.equal(checksum(b, 0, 64), 0, `adjust32 iter ${iter}`);
  }
});
