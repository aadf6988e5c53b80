import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_FRAG_NEEDED, ICMP_PORT_UNREACH, ICMP_TIME_EXCEEDED,
  Icmpv4Header, parseIcmpv4, writeIcmpv4Echo, writeIcmpv4Error,
} from '../../src/wire/icmpv4.ts';
import { IPPROTO_ICMP, IPPROTO_UDP, Ipv4Header, parseIpv4, parseIpv4Quoted, writeIpv4 } from '../../src/wire/ipv4.ts';
import { checksum } from '../../src/wire/checksum.ts';
import { FRAMES } from './_vectors.ts';
import { checkTruncations } from './_util.ts';

test('icmpv4: known echo request and an in-place reply', () => {
  const f = Buffer.from(FRAMES.icmp_echo);
  const ip = new Ipv4Header();
  assert.equal(parseIpv4(f, 14, f.length, ip), null);
  const ic = new Icmpv4Header();
  assert.equal(parseIcmpv4(f, ip.payloadOffset, ip.payloadEnd, ic), null);
  assert.deepEqual([ic.type, ic.code, ic.checksum, ic.checksumOk, ic.id, ic.seq, ic.embeddedOffset, ic.payloadOffset, ic.payloadEnd],
    [ICMP_ECHO_REQUEST, 0, 0x40ef, true, 0x1234, 1, -1, 42, 90]);
  assert.equal(ic.rest, 0x12340001);
  // Reply in place: swap addresses, rewrite the ICMP header over the same data.
  writeIpv4(f, 14, ip.dst, ip.src, IPPROTO_ICMP, ip.payloadEnd - ip.payloadOffset);
  const end = writeIcmpv4Echo(f, 34, ICMP_ECHO_REPLY, ic.id, ic.seq, ic.payloadEnd - ic.payloadOffset);
  assert.equal(end, 90);
  assert.equal(parseIcmpv4(f, 34, 90, ic), null);
  assert.deepEqual([ic.type, ic.checksumOk, ic.id, ic.seq], [ICMP_ECHO_REPLY, true, 0x1234, 1]);
  // Only the type byte changed, so the checksum moved by exactly 0x0800 (ones' complement).
  assert.equal(ic.checksum, 0x48ef);
  assert.ok(f.subarray(42, 90).equals(FRAMES.icmp_echo.subarray(42, 90)));
});

test('icmpv4: errors quote the original datagram', () => {
  const orig = FRAMES.udp_dns;
  const b = Buffer.alloc(200);
  const ipEnd = 20 + 8 + 28;
  let p = writeIpv4(b, 0, 0x0a000202, 0x0a00020f, IPPROTO_ICMP, 8 + 28);
  const end = writeIcmpv4Error(b, p, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0, orig, 14, orig.length);
  assert.equal(end, ipEnd);
  const ip = new Ipv4Header();
  assert.equal(parseIpv4(b, 0, end, ip), null);
  const ic = new Icmpv4Header();
  assert.equal(parseIcmpv4(b, ip.payloadOffset, ip.payloadEnd, ic), null);
  assert.deepEqual([ic.type, ic.code, ic.checksumOk, ic.embeddedOffset], [ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, true, 28]);
  const q = new Ipv4Header();
  assert.equal(parseIpv4(b, ic.embeddedOffset, ic.payloadEnd, q), 'ipv4: truncated payload');
  assert.equal(parseIpv4Quoted(b, ic.embeddedOffset, ic.payloadEnd, q), null);
  assert.deepEqual([q.src, q.dst, q.protocol, q.checksumOk, q.payloadEnd - q.payloadOffset], [0x0a00020f, 0x0a000203, IPPROTO_UDP, true, 8]);
  assert.equal(b.readUInt16BE(q.payloadOffset + 2), 53);

  // Frag-needed with an MTU, more quoted bytes, and clamping to what exists.
  p = writeIcmpv4Error(b, 0, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 1400, orig, 14, orig.length, 1000);
  assert.equal(p, 8 + (orig.length - 14));
  assert.equal(parseIcmpv4(b, 0, p, ic), null);
  assert.deepEqual([ic.rest & 0xffff, ic.checksumOk], [1400, true]);
  p = writeIcmpv4Error(b, 0, ICMP_TIME_EXCEEDED, 0, 0, orig, 14, 14 + 24);
  assert.equal(p, 32);
  assert.equal(checksum(b, 0, p), 0);
});

test('icmpv4: malformed', () => {
  const ic = new Icmpv4Header();
  const f = FRAMES.icmp_echo;
  checkTruncations('icmpv4 echo', parseIcmpv4, f, 34, f.length, ic, 42);
  const b = Buffer.alloc(36);
  writeIcmpv4Error(b, 0, ICMP_DEST_UNREACH, 1, 0, FRAMES.udp_dns, 14, FRAMES.udp_dns.length);
  checkTruncations('icmpv4 error', parseIcmpv4, b, 0, 36, ic, 28);
  const bad = Buffer.from(f);
  bad[50] ^= 1;
  assert.equal(parseIcmpv4(bad, 34, bad.length, ic), null);
  assert.equal(ic.checksumOk, false);
});
