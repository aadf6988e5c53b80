import { test } from 'node:test';
import assert from 'node:assert/strict';
import { finishUdpV4, finishUdpV6, parseUdp, UdpHeader, writeUdp } from '../../src/wire/udp.ts';
import { IPPROTO_UDP, Ipv4Header, parseIpv4, writeIpv4 } from '../../src/wire/ipv4.ts';
import { pseudoSumV4, pseudoSumV6 } from '../../src/wire/checksum.ts';
import { parseIp6 } from '../../src/wire/addr.ts';
import { FRAMES } from './_vectors.ts';
import { Rng, checkTruncations } from './_util.ts';

test('udp: known DNS query', () => {
  const f = FRAMES.udp_dns;
  const ip = new Ipv4Header();
  assert.equal(parseIpv4(f, 14, f.length, ip), null);
  const u = new UdpHeader();
  const ps = pseudoSumV4(ip.src, ip.dst, IPPROTO_UDP, ip.payloadEnd - ip.payloadOffset);
  assert.equal(parseUdp(f, ip.payloadOffset, ip.payloadEnd, u, ps), null);
  assert.deepEqual([u.srcPort, u.dstPort, u.length, u.checksum, u.checksumOk, u.payloadOffset, u.payloadEnd],
    [53000, 53, 37, 0x89f7, true, 42, 71]);
  assert.equal(f.readUInt16BE(u.payloadOffset), 0xbeef);
  // Without a pseudo sum the checksum is not verified.
  assert.equal(parseUdp(f, 34, 71, u), null);
  assert.equal(u.checksumOk, false);
  // Wrong pseudo header -> bad checksum.
  assert.equal(parseUdp(f, 34, 71, u, pseudoSumV4(ip.src + 1, ip.dst, IPPROTO_UDP, 37)), null);
  assert.equal(u.checksumOk, false);
  // Checksum 0 = none over IPv4, invalid over IPv6.
  const z = Buffer.from(f);
  z.writeUInt16BE(0, 40);
  assert.equal(parseUdp(z, 34, 71, u, ps), null);
  assert.equal(u.checksumOk, true);
  assert.equal(parseUdp(z, 34, 71, u, ps, true), null);
  assert.equal(u.checksumOk, false);
});

test('udp: write/finish round trip over IPv4 and IPv6', () => {
  const rng = new Rng(99);
  const b = Buffer.alloc(1600);
  const u = new UdpHeader();
  for (let i = 0; i < 500; i++) {
    const n = rng.int(1400);
    const off = rng.int(8);
    const src = rng.u32(), dst = rng.u32();
    const p = writeIpv4(b, off, src, dst, IPPROTO_UDP, 8 + n);
    const q = writeUdp(b, p, 1 + rng.int(65535), 1 + rng.int(65535), n);
    rng.fill(b, q, q + n);
    finishUdpV4(b, p, src, dst);
    assert.notEqual(b.readUInt16BE(p + 6), 0);
    assert.equal(parseUdp(b, p, q + n, u, pseudoSumV4(src, dst, IPPROTO_UDP, 8 + n)), null);
    assert.ok(u.checksumOk, `iter ${i}`);
    assert.deepEqual([u.length, u.payloadOffset, u.payloadEnd], [8 + n, q, q + n]);
  }
  // IPv6: addresses live in the same buffer.
  const a = parseIp6('2001:db8::15')!, d = parseIp6('2001:db8::1')!;
  a.copy(b, 8);
  d.copy(b, 24);
  const q = writeUdp(b, 40, 5353, 5353, 4);
  b.write('ping', q);
  finishUdpV6(b, 40, 8, 24);
  // Same bytes as the captured frame (which also carries a hop-by-hop header before UDP).
  assert.ok(b.subarray(40, 52).equals(FRAMES.ipv6_hbh_udp.subarray(62, 74)));
  assert.equal(parseUdp(b, 40, 52, u, pseudoSumV6(b, 8, 24, IPPROTO_UDP, 12), true), null);
  assert.ok(u.checksumOk);
});

test('udp: a computed checksum of 0 is sent as 0xffff', () => {
  // Find a payload word that makes the sum come out as 0 and check the substitution.
  const b = Buffer.alloc(10);
  writeUdp(b, 0, 1, 2, 2);
  for (let w = 0; w < 65536; w++) {
    b.writeUInt16BE(w, 8);
    finishUdpV4(b, 0, 0, 0);
    if (b.readUInt16BE(6) === 0xffff) {
      const u = new UdpHeader();
      assert.equal(parseUdp(b, 0, 10, u, pseudoSumV4(0, 0, IPPROTO_UDP, 10)), null);
      assert.ok(u.checksumOk);
      return;
    }
  }
  assert.fail('no word produced a zero checksum');
});

test('udp: malformed', () => {
  const f = FRAMES.udp_dns;
  const u = new UdpHeader();
  checkTruncations('udp', parseUdp, f, 34, 71, u, 71);
  const b = Buffer.from(f);
  b.writeUInt16BE(7, 38);
  assert.equal(parseUdp(b, 34, 71, u), 'udp: bad length');
  b.writeUInt16BE(38, 38);
  assert.equal(parseUdp(b, 34, 71, u), 'udp: length beyond packet');
  b.writeUInt16BE(20, 38); // shorter than the IP payload: the rest is ignored
  assert.equal(parseUdp(b, 34, 71, u), null);
  assert.equal(u.payloadEnd, 54);
});
