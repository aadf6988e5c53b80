import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  IPV6_NH_AH, IPV6_NH_DSTOPTS, IPV6_NH_ESP, IPV6_NH_FRAGMENT, IPV6_NH_HOPOPTS, IPV6_NH_NONE, IPV6_NH_ROUTING,
  Ipv6Header, parseIpv6, writeIpv6,
} from '../../src/wire/ipv6.ts';
import { IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from '../../src/wire/ipv4.ts';
import { ip6ToString, parseIp6 } from '../../src/wire/addr.ts';
import { FRAMES } from './_vectors.ts';
import { checkTruncations } from './_util.ts';

const A = parseIp6('2001:db8::15')!;
const B = parseIp6('2001:db8::1')!;

test('ipv6: known frames', () => {
  const ip = new Ipv6Header();
  const f = FRAMES.ipv6_hbh_udp;
  assert.equal(parseIpv6(f, 14, f.length, ip), null);
  assert.deepEqual([ip.payloadLength, ip.nextHeader, ip.hopLimit, ip.protocol, ip.payloadOffset, ip.payloadEnd, ip.extCount, ip.hasFragment],
    [20, IPV6_NH_HOPOPTS, 64, IPPROTO_UDP, 62, 74, 1, false]);
  assert.equal(ip6ToString(f, ip.srcOffset), '2001:db8::15');
  assert.equal(ip6ToString(f, ip.dstOffset), '2001:db8::1');
  const ns = FRAMES.icmpv6_ns;
  assert.equal(parseIpv6(ns, 14, ns.length, ip), null);
  assert.deepEqual([ip.protocol, ip.hopLimit, ip.extCount, ip.payloadOffset, ip.payloadEnd], [IPPROTO_ICMPV6, 255, 0, 54, 86]);
  assert.equal(ip6ToString(ns, ip.dstOffset), 'ff02::1:ff00:2');
});

/** Builds an IPv6 packet from a chain of [nextHeaderType, bytes] extension headers + payload. */
function chain(first: number, exts: Buffer[], payload: number): Buffer {
  const body = Buffer.concat([...exts, Buffer.alloc(payload, 0xaa)]);
  const b = Buffer.alloc(40 + body.length + 6); // + some Ethernet padding
  writeIpv6(b, 0, A, B, first, body.length);
  body.copy(b, 40);
  return b;
}
function ext(next: number, len8: number): Buffer {
  const e = Buffer.alloc((len8 + 1) * 8);
  e[0] = next;
  e[1] = len8;
  return e;
}

test('ipv6: extension header walk', () => {
  const ip = new Ipv6Header();
  const frag = Buffer.from([IPPROTO_TCP, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]); // offset 0, M=1
  const ah = Buffer.alloc(16);
  ah[0] = IPV6_NH_FRAGMENT;
  ah[1] = 2; // (2 + 2) * 4 = 16 bytes
  let b = chain(IPV6_NH_HOPOPTS, [ext(IPV6_NH_ROUTING, 0), ext(IPV6_NH_DSTOPTS, 1), ext(IPV6_NH_AH, 0), ah, frag], 20);
  assert.equal(parseIpv6(b, 0, b.length, ip), null);
  assert.deepEqual([ip.protocol, ip.extCount, ip.payloadOffset, ip.payloadEnd, ip.hasFragment, ip.fragmentHeaderOffset,
    ip.fragmentOffset, ip.moreFragments, ip.fragmentId], [IPPROTO_TCP, 5, 40 + 8 + 16 + 8 + 16 + 8, 40 + 56 + 20, true, 88, 0, true, 0xdeadbeef]);
  // Non-first fragment: the walk stops after the fragment header.
  const frag2 = Buffer.from([IPV6_NH_DSTOPTS, 0, 0x05, 0x00, 0, 0, 0, 1]); // offset 0x500 = 1280, M=0
  b = chain(IPV6_NH_FRAGMENT, [frag2], 16);
  assert.equal(parseIpv6(b, 0, b.length, ip), null);
  assert.deepEqual([ip.protocol, ip.payloadOffset, ip.hasFragment, ip.fragmentOffset, ip.moreFragments], [IPV6_NH_DSTOPTS, 48, true, 1280, false]);
  // ESP and no-next-header stop the walk.
  b = chain(IPV6_NH_DSTOPTS, [ext(IPV6_NH_ESP, 0)], 30);
  assert.equal(parseIpv6(b, 0, b.length, ip), null);
  assert.deepEqual([ip.protocol, ip.payloadOffset], [IPV6_NH_ESP, 48]);
  b = chain(IPV6_NH_NONE, [], 0);
  assert.equal(parseIpv6(b, 0, b.length, ip), null);
  assert.deepEqual([ip.protocol, ip.payloadOffset, ip.payloadEnd], [IPV6_NH_NONE, 40, 40]);
});

test('ipv6: malformed', () => {
  const ip = new Ipv6Header();
  const f = FRAMES.ipv6_hbh_udp;
  checkTruncations('ipv6', parseIpv6, f, 14, f.length, ip, f.length);
  let b = chain(IPV6_NH_DSTOPTS, [ext(IPV6_NH_HOPOPTS, 0), ext(IPPROTO_UDP, 0)], 8);
  assert.equal(parseIpv6(b, 0, b.length, ip), 'ipv6: misplaced hop-by-hop header');
  const many: Buffer[] = [];
  for (let k = 0; k < 9; k++) many.push(ext(k === 8 ? IPPROTO_UDP : IPV6_NH_DSTOPTS, 0));
  b = chain(IPV6_NH_DSTOPTS, many, 8);
  assert.equal(parseIpv6(b, 0, b.length, ip), 'ipv6: too many extension headers');
  b = chain(IPV6_NH_DSTOPTS, many.slice(1), 8);
  assert.equal(parseIpv6(b, 0, b.length, ip), null, 'eight are fine');
  b = chain(IPV6_NH_DSTOPTS, [ext(IPPROTO_UDP, 3)], 0); // claims 32 bytes, has 32 -> fine
  assert.equal(parseIpv6(b, 0, b.length, ip), null);
  b[41] = 4; // claims 40 bytes
  assert.equal(parseIpv6(b, 0, b.length, ip), 'ipv6: truncated extension header');
  b = chain(IPV6_NH_FRAGMENT, [Buffer.from([IPV6_NH_FRAGMENT, 0, 0, 1, 0, 0, 0, 1]), Buffer.from([6, 0, 0, 0, 0, 0, 0, 1])], 8);
  assert.equal(parseIpv6(b, 0, b.length, ip), 'ipv6: duplicate fragment header');
  b = chain(IPV6_NH_HOPOPTS, [ext(IPPROTO_UDP, 0)], 8);
  b.writeUInt16BE(0, 4);
  assert.equal(parseIpv6(b, 0, b.length, ip), 'ipv6: jumbogram unsupported');
  b[0] = 0x40;
  assert.equal(parseIpv6(b, 0, b.length, ip), 'ipv6: bad version');
});

test('ipv6: write round trip', () => {
  const b = Buffer.alloc(100);
  assert.equal(writeIpv6(b, 3, A, B, IPPROTO_UDP, 20, 255, 0xb8, 0xabcde), 43);
  const ip = new Ipv6Header();
  assert.equal(parseIpv6(b, 3, 63, ip), null);
  assert.deepEqual([ip.trafficClass, ip.flowLabel, ip.payloadLength, ip.hopLimit, ip.protocol, ip.srcOffset, ip.dstOffset, ip.payloadOffset, ip.payloadEnd],
    [0xb8, 0xabcde, 20, 255, IPPROTO_UDP, 11, 27, 43, 63]);
});
