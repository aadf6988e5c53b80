import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  finishIcmpv6, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_ERROR_QUOTE_MAX, ICMPV6_PACKET_TOO_BIG, Icmpv6Header,
  ND_NA_OVERRIDE, ND_NA_SOLICITED, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, ND_OPT_SOURCE_LINKADDR, ND_ROUTER_ADVERT, ND_ROUTER_SOLICIT,
  parseIcmpv6, writeIcmpv6Echo, writeIcmpv6Error, writeNdLinkAddrOption, writeNdMtuOption, writeNdPrefixOption, writeNeighborAdvert,
  writeNeighborSolicit, writeRouterAdvert, writeRouterSolicit,
} from '../../src/wire/icmpv6.ts';
import { Ipv6Header, parseIpv6, writeIpv6 } from '../../src/wire/ipv6.ts';
import { IPPROTO_ICMPV6 } from '../../src/wire/ipv4.ts';
import { pseudoSumV6 } from '../../src/wire/checksum.ts';
import { ip6ToString, macToString, parseIp6 } from '../../src/wire/addr.ts';
import { FRAMES } from './_vectors.ts';
import { checkTruncations } from './_util.ts';

const GUEST = Buffer.from('525400123456', 'hex');
const GW = Buffer.from('525400123502', 'hex');

function parseIn(b: Buffer, off: number, ic: Icmpv6Header): string | null {
  const ip = new Ipv6Header();
  const r = parseIpv6(b, off, b.length, ip);
  if (r) return r;
  return parseIcmpv6(b, ip.payloadOffset, ip.payloadEnd, ic,
    pseudoSumV6(b, ip.srcOffset, ip.dstOffset, IPPROTO_ICMPV6, ip.payloadEnd - ip.payloadOffset));
}

test('icmpv6: known neighbor solicitation and echo', () => {
  const ic = new Icmpv6Header();
  const ns = FRAMES.icmpv6_ns;
  assert.equal(parseIn(ns, 14, ic), null);
  assert.deepEqual([ic.type, ic.code, ic.checksum, ic.checksumOk, ic.optionsOffset, ic.optionsEnd, ic.tgtLinkAddrOffset],
    [ND_NEIGHBOR_SOLICIT, 0, 0x7220, true, 78, 86, -1]);
  assert.equal(ip6ToString(ns, ic.targetOffset), 'fe80::2');
  assert.equal(macToString(ns, ic.srcLinkAddrOffset), '52:54:00:12:34:56');
  const e = FRAMES.icmpv6_echo;
  assert.equal(parseIn(e, 14, ic), null);
  assert.deepEqual([ic.type, ic.checksumOk, ic.id, ic.seq, ic.payloadOffset, ic.payloadEnd, ic.targetOffset],
    [ICMPV6_ECHO_REQUEST, true, 0x77, 3, 62, 70, -1]);
  const bad = Buffer.from(e);
  bad[65] ^= 0x40;
  assert.equal(parseIn(bad, 14, ic), null);
  assert.equal(ic.checksumOk, false);
});

test('icmpv6: echo reply and NA built from the requests', () => {
  const ic = new Icmpv6Header();
  // Echo reply in place: swap addresses, change the type, refresh the checksum.
  const e = Buffer.from(FRAMES.icmpv6_echo);
  const tmp = Buffer.from(e.subarray(22, 38));
  e.copy(e, 22, 38, 54);
  tmp.copy(e, 38);
  writeIcmpv6Echo(e, 54, ICMPV6_ECHO_REPLY, 0x77, 3, 8);
  finishIcmpv6(e, 54, 16, 22, 38);
  assert.equal(parseIn(e, 14, ic), null);
  assert.deepEqual([ic.type, ic.checksumOk, ic.id, ic.seq], [ICMPV6_ECHO_REPLY, true, 0x77, 3]);
  assert.equal(e.subarray(62, 70).toString(), 'abcdefgh');

  const target = parseIp6('fe80::2')!;
  const b = Buffer.alloc(200);
  let end = writeNeighborAdvert(b, 40, target, ND_NA_SOLICITED | ND_NA_OVERRIDE, GW);
  assert.equal(end, 72);
  writeIpv6(b, 0, target, parseIp6('fe80::5054:ff:fe12:3456')!, IPPROTO_ICMPV6, end - 40, 255);
  finishIcmpv6(b, 40, end - 40, 8, 24);
  assert.equal(parseIn(b, 0, ic), null);
  assert.deepEqual([ic.type, ic.checksumOk, ic.rest >>> 24, ic.srcLinkAddrOffset], [ND_NEIGHBOR_ADVERT, true, 0x60, -1]);
  assert.ok(b.subarray(ic.targetOffset, ic.targetOffset + 16).equals(target));
  assert.equal(macToString(b, ic.tgtLinkAddrOffset), '52:54:00:12:35:02');

  // NS written by us equals the captured one.
  end = writeNeighborSolicit(b, 40, target, GUEST);
  FRAMES.icmpv6_ns.copy(b, 0, 14, 54);
  finishIcmpv6(b, 40, end - 40, 8, 24);
  assert.ok(b.subarray(0, end).equals(FRAMES.icmpv6_ns.subarray(14)));
});

test('icmpv6: router solicitation/advertisement and options', () => {
  const ic = new Icmpv6Header();
  const b = Buffer.alloc(200);
  const all = parseIp6('ff02::2')!;
  let end = writeRouterSolicit(b, 40, GUEST);
  writeIpv6(b, 0, parseIp6('fe80::1')!, all, IPPROTO_ICMPV6, end - 40, 255);
  finishIcmpv6(b, 40, end - 40, 8, 24);
  assert.equal(parseIn(b, 0, ic), null);
  assert.deepEqual([ic.type, ic.checksumOk, ic.optionsOffset, ic.targetOffset], [ND_ROUTER_SOLICIT, true, 48, -1]);
  assert.equal(macToString(b, ic.srcLinkAddrOffset), '52:54:00:12:34:56');
  end = writeRouterSolicit(b, 40, null);
  assert.equal(end, 48);

  let p = writeRouterAdvert(b, 40, 64, 0x40, 1800, 0, 0);
  p = writeNdPrefixOption(b, p, parseIp6('fd00::')!, 64, 0xc0, 86400, 14400);
  p = writeNdMtuOption(b, p, 1500);
  end = writeNdLinkAddrOption(b, p, ND_OPT_SOURCE_LINKADDR, GW);
  writeIpv6(b, 0, parseIp6('fe80::2')!, parseIp6('ff02::1')!, IPPROTO_ICMPV6, end - 40, 255);
  finishIcmpv6(b, 40, end - 40, 8, 24);
  assert.equal(parseIn(b, 0, ic), null);
  assert.deepEqual([ic.type, ic.checksumOk, ic.rest >>> 24, (ic.rest >>> 16) & 0xff, ic.rest & 0xffff, ic.mtu, ic.prefixInfoOffset],
    [ND_ROUTER_ADVERT, true, 64, 0x40, 1800, 1500, 56]);
  assert.equal(b[ic.prefixInfoOffset + 2], 64);
  assert.equal(ip6ToString(b, ic.prefixInfoOffset + 16), 'fd00::');
  assert.equal(macToString(b, ic.srcLinkAddrOffset), '52:54:00:12:35:02');
});

test('icmpv6: errors quote up to the minimum MTU', () => {
  const big = Buffer.alloc(2000, 7);
  writeIpv6(big, 0, parseIp6('2001:db8::15')!, parseIp6('2001:db8::1')!, 17, 1960);
  const b = Buffer.alloc(1400);
  const end = writeIcmpv6Error(b, 40, ICMPV6_PACKET_TOO_BIG, 0, 1280, big, 0, big.length);
  assert.equal(end - 40, 8 + ICMPV6_ERROR_QUOTE_MAX);
  writeIpv6(b, 0, parseIp6('2001:db8::1')!, parseIp6('2001:db8::15')!, IPPROTO_ICMPV6, end - 40, 64);
  finishIcmpv6(b, 40, end - 40, 8, 24);
  assert.equal(end, 1280);
  const ic = new Icmpv6Header();
  assert.equal(parseIn(b, 0, ic), null);
  assert.deepEqual([ic.type, ic.checksumOk, ic.rest, ic.embeddedOffset], [ICMPV6_PACKET_TOO_BIG, true, 1280, 48]);
  const q = new Ipv6Header();
  assert.equal(parseIpv6(b, ic.embeddedOffset, ic.payloadEnd, q), 'ipv6: truncated payload');
});

test('icmpv6: malformed', () => {
  const ic = new Icmpv6Header();
  const ns = FRAMES.icmpv6_ns;
  checkTruncations('icmpv6 ns', parseIcmpv6, ns, 54, ns.length, ic, 78);
  const bad = Buffer.from(ns);
  bad[79] = 0;
  assert.equal(parseIcmpv6(bad, 54, bad.length, ic), 'icmpv6: bad nd option length');
  bad[79] = 2;
  assert.equal(parseIcmpv6(bad, 54, bad.length, ic), 'icmpv6: bad nd option length');
  assert.equal(parseIcmpv6(bad, 54, 79, ic), 'icmpv6: truncated nd option');
  const err = Buffer.alloc(47);
  err[0] = 1;
  assert.equal(parseIcmpv6(err, 0, 47, ic), 'icmpv6: truncated error quote');
});
