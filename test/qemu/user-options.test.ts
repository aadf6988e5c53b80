import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseUserNetdev } from '../../src/qemu/user-options.ts';

test('defaults are QEMU\'s 10.0.2.0/24', () => {
  const r = parseUserNetdev('');
  assert.ok(r.ok);
  assert.equal(r.config.net, '10.0.2.0');
  assert.equal(r.config.prefixLength, 24);
  assert.equal(r.config.host, '10.0.2.2');
  assert.equal(r.config.dns, '10.0.2.3');
  assert.equal(r.config.dhcpstart, '10.0.2.15');
  assert.equal(r.config.ipv6Prefix, 'fec0::');
  assert.equal(r.config.ipv6Host, 'fec0::2');
  assert.equal(r.config.ipv4, true);
  assert.equal(r.config.ipv6, true);
});

test('net= moves host, dns and dhcpstart with it', () => {
  const r = parseUserNetdev('net=192.168.76.0/24,hostname=vm1');
  assert.ok(r.ok);
  assert.equal(r.config.host, '192.168.76.2');
  assert.equal(r.config.dns, '192.168.76.3');
  assert.equal(r.config.dhcpstart, '192.168.76.15');
  assert.equal(r.config.hostname, 'vm1');
});

test('hostfwd and guestfwd rules are parsed', () => {
  const r = parseUserNetdev('user,id=n0,hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:5353-10.0.2.15:53,guestfwd=tcp:10.0.2.100:1234-cmd:netcat 127.0.0.1 4321,guestfwd=:10.0.2.101:80-tcp:127.0.0.1:8080');
  assert.ok(r.ok, r.ok ? '' : r.error);
  assert.equal(r.config.id, 'n0');
  assert.deepEqual(r.config.hostfwd.map(({ raw, ...f }) => f), [
    { proto: 'tcp', hostAddr: '', hostPort: 2222, guest: '', guestPort: 22 },
    { proto: 'udp', hostAddr: '127.0.0.1', hostPort: 5353, guest: '10.0.2.15', guestPort: 53 },
  ]);
  assert.deepEqual(r.config.guestfwd[0].target, { kind: 'cmd', command: 'netcat 127.0.0.1 4321' });
  assert.deepEqual(r.config.guestfwd[1].target, { kind: 'tcp', host: '127.0.0.1', port: '8080', options: [] });
});

test('dnssearch repeats into a list; restrict short form warns', () => {
  const r = parseUserNetdev('dnssearch=a.example,dnssearch=b.example,restrict');
  assert.ok(r.ok);
  assert.deepEqual(r.config.dnssearch, ['a.example', 'b.example']);
  assert.equal(r.config.restrict, true);
  assert.match(r.config.warnings[0], /short-form boolean/);
});

test('ipv4=on alone turns IPv6 off, and the reverse', () => {
  const a = parseUserNetdev('ipv4=on');
  assert.ok(a.ok && a.config.ipv6 === false);
  const b = parseUserNetdev('ipv6=on');
  assert.ok(b.ok && b.config.ipv4 === false);
});

const bad: Array<[string, RegExp]> = [
  ['foo=bar', /Invalid parameter 'foo'/],
  ['net=10.0.3.0/24,dhcpstart=10.0.2.15', /dhcpstart: DHCP doesn't belong to network/],
  ['host=10.0.3.2', /host: Host doesn't belong/],
  ['dns=10.0.2.2', /DNS must be different from host/],
  ['dns=203.0.113.53,restrict=on', /DNS doesn't belong/],
  ['net=10.0.2.0/3', /range 4-32/],
  ['restrict=maybe', /'restrict' expects 'on' or 'off'/],
  ['ipv4=off,ipv6=off', /IPv4 and IPv6 disabled/],
  ['ipv4=off,net=10.0.0.0/8', /IPv4 disabled but netmask/],
  ['ipv6-prefixlen=127', /between 0 and 126/],
  ['hostfwd=tcp::70000-:22', /hostfwd: Invalid host forwarding rule 'tcp::70000-:22' \(Bad host port\)/],
  ['hostfwd=hostip:hostport-guestip:guestport', /Bad protocol name/],
  ['hostfwd=tcp::2222:22', /Bad host port separator/],
  ['hostfwd=tcp::2222-22', /Missing guest address/],
  ['hostfwd=tcp::2222-:0', /Bad guest port/],
  ['guestfwd=10.0.2.100:1234', /guestfwd: Invalid guest forwarding rule/],
  ['smbserver=addr', /smbserver: Failed to parse SMB address/],
  ['domainname=', /cannot be empty/],
];
for (const [s, re] of bad) {
  test(`rejects ${s}`, () => {
    const r = parseUserNetdev(s);
    assert.equal(r.ok, false);
    if (!r.ok) assert.match(r.error, re);
  });
}
