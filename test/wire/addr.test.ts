import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  inSubnet, ip4FromBuf, ip4ToBuf, ip4ToString, ip6ToString, isBroadcastMac, isMulticastMac, macFromKey,
  macKey, macKeyToBuf, macToString, maskOf, parseCidr, parseIp4, parseIp6, parseMac,
} from '../../src/wire/addr.ts';

test('addr: IPv4 parse/format', () => {
  assert.equal(parseIp4('10.0.2.15'), 0x0a00020f);
  assert.equal(parseIp4('255.255.255.255'), 0xffffffff);
  assert.equal(parseIp4('0.0.0.0'), 0);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.4 ', 'a.b.c.d', '1..2.3', '1.2.3.', '1234.1.1.1']) {
    assert.equal(parseIp4(bad), null, bad);
  }
  assert.equal(ip4ToString(0xc0a80001), '192.168.0.1');
  assert.equal(ip4ToString(0xffffffff), '255.255.255.255');
  const b = Buffer.alloc(6);
  ip4ToBuf(0xdeadbeef, b, 1);
  assert.equal(b.toString('hex'), '00deadbeef00');
  assert.equal(ip4FromBuf(b, 1), 0xdeadbeef);
});

test('addr: CIDR, masks and subnets', () => {
  assert.deepEqual(parseCidr('10.0.2.0/24'), { addr: 0x0a000200, prefix: 24 });
  assert.deepEqual(parseCidr('10.0.2.15/32'), { addr: 0x0a00020f, prefix: 32 });
  assert.deepEqual(parseCidr('0.0.0.0/0'), { addr: 0, prefix: 0 });
  for (const bad of ['10.0.2.0', '10.0.2.0/33', '10.0.2.0/', '10.0.2.0/024', 'x/8', '10.0.2.0/8/8']) {
    assert.equal(parseCidr(bad), null, bad);
  }
  assert.equal(maskOf(0), 0);
  assert.equal(maskOf(24), 0xffffff00);
  assert.equal(maskOf(32), 0xffffffff);
  assert.equal(maskOf(1), 0x80000000);
  assert.ok(inSubnet(0x0a00020f, 0x0a000200, 24));
  assert.ok(!inSubnet(0x0a00030f, 0x0a000200, 24));
  assert.ok(inSubnet(0xc0a80001, 0, 0));
  assert.ok(inSubnet(0xffffffff, 0xffffffff, 32));
});

test('addr: MACs', () => {
  const m = parseMac('52:54:00:12:34:56')!;
  assert.equal(m.toString('hex'), '525400123456');
  assert.equal(parseMac('52-54-00-AB-cd-EF')!.toString('hex'), '525400abcdef');
  for (const bad of ['52:54:00:12:34', '52:54:00:12:34:567', '52:54-00:12:34:56', 'zz:54:00:12:34:56', '']) {
    assert.equal(parseMac(bad), null, bad);
  }
  assert.equal(macToString(m, 0), '52:54:00:12:34:56');
  const ff = Buffer.alloc(6, 0xff);
  assert.equal(macKey(ff, 0), 2 ** 48 - 1);
  assert.equal(macKey(m, 0), 0x525400123456);
  assert.equal(macFromKey(macKey(m, 0)).toString('hex'), '525400123456');
  assert.equal(macFromKey(2 ** 48 - 1).toString('hex'), 'ffffffffffff');
  const b = Buffer.alloc(8);
  macKeyToBuf(0x0102030405aa, b, 1);
  assert.equal(b.toString('hex'), '000102030405aa00');
  assert.ok(isBroadcastMac(ff, 0) && isMulticastMac(ff, 0));
  assert.ok(isMulticastMac(Buffer.from('3333ff000002', 'hex'), 0));
  assert.ok(!isMulticastMac(m, 0) && !isBroadcastMac(m, 0));
  assert.ok(!isBroadcastMac(Buffer.from('fffffffffffe', 'hex'), 0));
});

test('addr: IPv6 parse/format (RFC 5952)', () => {
  const cases: [string, string][] = [
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single 0 group is not compressed
    ['2001:0db8:0000:0000:0001:0000:0000:0000', '2001:db8:0:0:1::'], // longest run wins
    ['fe80::5054:ff:fe12:3456', 'fe80::5054:ff:fe12:3456'],
    ['::ffff:10.0.2.15', '::ffff:10.0.2.15'],
    ['64:ff9b::192.0.2.1', '64:ff9b::c000:201'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ];
  for (const [input, want] of cases) {
    const b = parseIp6(input);
    assert.ok(b, input);
    assert.equal(ip6ToString(b, 0), want, input);
    assert.deepEqual(parseIp6(want), b);
  }
  for (const bad of ['', ':', ':1', '1:', '1:::2', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '12345::',
    'g::', '::1.2.3', '::1.2.3.4:1', '1:2:3:4:5:6:7:8::', 'fe80::1%eth0']) {
    assert.equal(parseIp6(bad), null, bad);
  }
  const b = Buffer.alloc(20);
  parseIp6('2001:db8::1')!.copy(b, 3);
  assert.equal(ip6ToString(b, 3), '2001:db8::1');
});
