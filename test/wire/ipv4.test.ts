import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  finishIpv4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, ipv4DecTtl, ipv4RewriteAddr, isFragment,
  parseIpv4, parseIpv4Quoted, writeIpv4,
} from '../../src/wire/ipv4.ts';
import { checksum } from '../../src/wire/checksum.ts';
import { FRAMES } from './_vectors.ts';
import { Rng, checkTruncations, naiveChecksum } from './_util.ts';

test('ipv4: known frames', () => {
  const ip = new Ipv4Header();
  const f = FRAMES.tcp_syn;
  assert.equal(parseIpv4(f, 14, f.length, ip), null);
  assert.deepEqual(
    [ip.headerLength, ip.totalLength, ip.id, ip.df, ip.mf, ip.fragmentOffset, ip.ttl, ip.protocol, ip.checksum, ip.checksumOk],
    [20, 60, 0x1c46, true, false, 0, 64, IPPROTO_TCP, 0xdc8c, true]);
  assert.deepEqual([ip.src, ip.dst, ip.payloadOffset, ip.payloadEnd, ip.optionsOffset, ip.optionsEnd],
    [0x0a00020f, 0x5db8d822, 34, 74, 34, 34]);
  assert.ok(!isFragment(ip));
  const u = FRAMES.udp_dns;
  assert.equal(parseIpv4(u, 14, u.length, ip), null);
  assert.deepEqual([ip.protocol, ip.df, ip.checksumOk, ip.payloadEnd], [IPPROTO_UDP, false, true, u.length]);
  // Ethernet padding after total length is excluded.
  const padded = Buffer.concat([FRAMES.icmp_echo, Buffer.alloc(10)]);
  assert.equal(parseIpv4(padded, 14, padded.length, ip), null);
  assert.equal(ip.payloadEnd, FRAMES.icmp_echo.length);
  assert.equal(ip.protocol, IPPROTO_ICMP);
  // A bad checksum is reported, not fatal.
  const bad = Buffer.from(f);
  bad[14 + 8] = 63;
  assert.equal(parseIpv4(bad, 14, bad.length, ip), null);
  assert.equal(ip.checksumOk, false);
});

test('ipv4: options, fragments, write round trip', () => {
  const b = Buffer.alloc(200);
  const p = writeIpv4(b, 2, 0x0a000202, 0x0a00020f, IPPROTO_UDP, 100, 255, 0xabcd, true, 0xb8);
  assert.equal(p, 22);
  const ip = new Ipv4Header();
  assert.equal(parseIpv4(b, 2, 200, ip), null);
  assert.deepEqual(
    [ip.src, ip.dst, ip.protocol, ip.totalLength, ip.ttl, ip.id, ip.df, ip.tos, ip.checksumOk, ip.payloadOffset, ip.payloadEnd],
    [0x0a000202, 0x0a00020f, IPPROTO_UDP, 120, 255, 0xabcd, true, 0xb8, true, 22, 122]);
  assert.equal(naiveChecksum(b, 2, 20), 0);

  // Hand-made header with 8 bytes of options (NOP NOP + record route stub) and MF + offset.
  const h = Buffer.alloc(40);
  h[0] = 0x47;
  h.writeUInt16BE(40, 2);
  h.writeUInt16BE(0x2000 | 185, 6); // MF, offset 185*8 = 1480
  h[8] = 1;
  h[9] = 17;
  h.set([1, 1, 7, 7, 4, 0, 0, 0], 20);
  finishIpv4(h, 0);
  assert.equal(checksum(h, 0, 28), 0);
  assert.equal(parseIpv4(h, 0, 40, ip), null);
  assert.deepEqual([ip.headerLength, ip.optionsOffset, ip.optionsEnd, ip.payloadOffset, ip.mf, ip.fragmentOffset, ip.checksumOk],
    [28, 20, 28, 28, true, 1480, true]);
  assert.ok(isFragment(ip));
});

test('ipv4: incremental rewrite helpers', () => {
  const f = Buffer.from(FRAMES.tcp_syn);
  const old = ipv4RewriteAddr(f, 14, 12, 0xc0a80105);
  assert.equal(old, 0x0a00020f);
  assert.equal(checksum(f, 14, 20), 0);
  ipv4RewriteAddr(f, 14, 16, 0x01020304);
  assert.equal(checksum(f, 14, 20), 0);
  const ip = new Ipv4Header();
  parseIpv4(f, 14, f.length, ip);
  assert.deepEqual([ip.src, ip.dst, ip.checksumOk], [0xc0a80105, 0x01020304, true]);
  for (let t = 64; t > 0; t--) {
    assert.equal(ipv4DecTtl(f, 14), t - 1);
    assert.equal(checksum(f, 14, 20), 0);
  }
  assert.equal(ipv4DecTtl(f, 14), 0);
  const rng = new Rng(7);
  const b = Buffer.alloc(20);
  for (let i = 0; i < 2000; i++) {
    writeIpv4(b, 0, rng.u32(), rng.u32(), rng.int(256), rng.int(1000), 1 + rng.int(255), rng.int(65536));
    ipv4RewriteAddr(b, 0, i & 1 ? 12 : 16, rng.u32());
    ipv4DecTtl(b, 0);
    assert.equal(checksum(b, 0, 20), 0);
  }
});

test('ipv4: malformed', () => {
  const ip = new Ipv4Header();
  const f = FRAMES.tcp_syn;
  checkTruncations('ipv4', parseIpv4, f, 14, f.length, ip, f.length);
  const mut = (i: number, v: number): Buffer => {
    const b = Buffer.from(f);
    b[14 + i] = v;
    return b;
  };
  assert.equal(parseIpv4(mut(0, 0x65), 14, f.length, ip), 'ipv4: bad version');
  assert.equal(parseIpv4(mut(0, 0x44), 14, f.length, ip), 'ipv4: bad header length');
  assert.equal(parseIpv4(mut(0, 0x4f), 14, 14 + 56, ip), 'ipv4: truncated options');
  assert.equal(parseIpv4(mut(0, 0x4f), 14, f.length, ip), null); // 60-byte header, no payload
  assert.equal(parseIpv4(mut(3, 19), 14, f.length, ip), 'ipv4: bad total length');
  assert.equal(parseIpv4(mut(3, 61), 14, f.length, ip), 'ipv4: truncated payload');
  // The quoted variant accepts a total length beyond the data.
  assert.equal(parseIpv4Quoted(f, 14, 14 + 28, ip), null);
  assert.deepEqual([ip.totalLength, ip.payloadOffset, ip.payloadEnd], [60, 34, 42]);
  assert.equal(parseIpv4Quoted(f, 14, 14 + 19, ip), 'ipv4: truncated');
});
