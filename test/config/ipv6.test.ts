// IPv6 keys of qnet.yaml: subnet6, gateway6, dhcp6, hosts[].ip6, IPv6 records and upstreams,
// and the errors they give (file:line:col, the key, what is wrong).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/config.ts';
import { networkOptions } from '../../src/daemon/daemon.ts';
import { addrToString } from '../../src/stack/addr.ts';

const base = (extra: string) => `networks:\n  - name: lab\n    subnet: 10.10.0.0/24\n${extra}`;

test('ipv6 config: subnet6 with the default gateway6 (::1) and SLAAC', () => {
  const c = parseConfig(base('    subnet6: fd00:10::/64\n'), 'q.yaml', { runtimeDir: '/tmp/r', stateDir: '/tmp/s' });
  assert.deepEqual(c.networks[0].ipv6, { prefix: 'fd00:10::', prefixLen: 64, gateway: 'fd00:10::1', dhcpRange: undefined });
  const o = networkOptions(c.networks[0]);
  assert.deepEqual(o.ipv6, { prefix: 'fd00:10::', prefixLen: 64, router: 'fd00:10::1', dns: 'fd00:10::1', dhcpRange: undefined, hosts: [] });
});

test('ipv6 config: gateway6, a stateful dhcp6 range, static ip6, AAAA records and an IPv6 upstream', () => {
  const c = parseConfig(base(`    subnet6: fd00:10::/64
    gateway6: fd00:10::53
    dhcp6: fd00:10::100-fd00:10::1ff
    hosts: [{ mac: "52:54:00:00:00:10", ip: 10.10.0.10, ip6: "fd00:10::10", name: db }]
    records: [{ name: www, ip: "fd00:10::80" }, { name: www, ip: 10.10.0.80 }]
    upstreams: ["[::1]:5353", "127.0.0.1"]
`), 'q.yaml', { runtimeDir: '/tmp/r', stateDir: '/tmp/s' });
  const n = c.networks[0];
  assert.deepEqual(n.ipv6, { prefix: 'fd00:10::', prefixLen: 64, gateway: 'fd00:10::53', dhcpRange: { start: 'fd00:10::100', end: 'fd00:10::1ff' } });
  assert.equal(n.hosts[0].ip6, 'fd00:10::10');
  assert.deepEqual(n.upstreams, [{ host: '::1', port: 5353 }, { host: '127.0.0.1', port: 53 }]);
  const o = networkOptions(n);
  assert.deepEqual(o.ipv6?.hosts, [{ mac: '52:54:00:00:00:10', ip: 'fd00:10::10', hostname: 'db' }]);
  assert.deepEqual(o.records?.map((r) => [r.name, addrToString(r.ip)]), [['www', 'fd00:10::80'], ['www', '10.10.0.80']]);
});

test('ipv6 config: errors name the file, line, key and what is wrong', () => {
  const bad: [string, RegExp][] = [
    ['    subnet6: fd00:10::/40\n', /q\.yaml:4:14: networks\[0\]\.subnet6: 'fd00:10::\/40' is not an IPv6 prefix of length 48-120/],
    ['    subnet6: fd00:10::1/64\n', /networks\[0\]\.subnet6: 'fd00:10::1\/64' has host bits set; did you mean fd00:10::\/64\?/],
    ['    subnet6: fe80::/64\n', /is multicast or link-local/],
    ['    subnet6: fd00:10::/56\n', /SLAAC needs a \/64 prefix/],
    ['    subnet6: fd00:10::/64\n    gateway6: fd00:11::1\n', /networks\[0\]\.gateway6: gateway6 fd00:11::1 is not a host address in fd00:10::\/64/],
    ['    subnet6: fd00:10::/64\n    dhcp6: fd00:10::200-fd00:10::100\n', /DHCPv6 range fd00:10::200-fd00:10::100 ends before it starts/],
    ['    subnet6: fd00:10::/64\n    dhcp6: fd00:10::0-fd00:10::100\n', /DHCPv6 range start fd00:10::0 is not a host address/],
    ['    dhcp6: fd00:10::100-fd00:10::1ff\n', /networks\[0\]\.dhcp6: 'dhcp6' needs subnet6/],
    ['    hosts: [{ mac: "52:54:00:00:00:10", ip: 10.10.0.10, ip6: "fd00:10::10" }]\n', /hosts\[0\]\.ip6: an IPv6 address needs subnet6/],
    ['    upstreams: ["[::1"]\n', /is not IPv4\[:PORT\] or \[IPv6\]\[:PORT\]/],
  ];
  for (const [extra, re] of bad) assert.throws(() => parseConfig(base(extra), 'q.yaml'), re, extra);
});

test('ipv6 config: mode user takes IPv6 in its QEMU options, not subnet6', () => {
  assert.throws(() => parseConfig('networks:\n  - name: u\n    mode: user\n    subnet6: fd00::/64\n', 'q.yaml'), /mode user takes QEMU's -netdev user options in 'options'.*not 'subnet6'/);
  const c = parseConfig('networks:\n  - name: u\n    mode: user\n    options: "ipv6-net=fd00:5::/64"\n    upstreams: ["[::1]:53"]\n', 'q.yaml', { runtimeDir: '/tmp/r', stateDir: '/tmp/s' });
  const o = networkOptions(c.networks[0]);
  assert.equal(o.ipv6?.prefix, 'fd00:5::');
  assert.equal(o.ipv6?.router, 'fd00:5::2');
  assert.deepEqual(o.upstreams, [{ host: '::1', port: 53 }]);
});
