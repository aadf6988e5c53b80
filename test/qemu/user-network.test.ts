import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseUserCliOptions, userNetworkOptions } from '../../src/qemu/user-network.ts';

test('qnet user options: QEMU options plus dnsupstream= and mtu=', () => {
  const o = parseUserCliOptions('net=10.9.0.0/24,dnsupstream=127.0.0.1:5353,dnsupstream=127.0.0.2,mtu=9000,hostfwd=tcp::2222-:22');
  assert.deepEqual(o.dnsUpstreams, [{ host: '127.0.0.1', port: 5353 }, { host: '127.0.0.2', port: 53 }]);
  assert.equal(o.mtu, 9000);
  assert.equal(o.config.net, '10.9.0.0');
  assert.equal(o.config.host, '10.9.0.2');
  assert.equal(o.config.hostfwd[0].hostPort, 2222);
  assert.equal(parseUserCliOptions('').dnsUpstreams, undefined);
});

test('qnet user options: bad values and unserved options are refused with the option named', () => {
  assert.throws(() => parseUserCliOptions('dnsupstream=resolver.example'), /Parameter 'dnsupstream' expects an IPv4 address or \[IPv6 address\]/);
  assert.throws(() => parseUserCliOptions('dnsupstream=127.0.0.1:0'), /dnsupstream/);
  assert.throws(() => parseUserCliOptions('dnsupstream=[::1'), /dnsupstream/);
  assert.throws(() => parseUserCliOptions('mtu=100'), /Parameter 'mtu' expects an integer 576-65521/);
  assert.throws(() => parseUserCliOptions('smb=/srv/share'), /Parameter 'smb' is not supported by qnet/);
  assert.throws(() => parseUserCliOptions('ipv4=off'), /not IPv6 alone; drop ipv4=off/);
  assert.throws(() => parseUserCliOptions('nosuchoption=1'), /nosuchoption/);
  assert.throws(() => parseUserCliOptions('hostfwd=tcp:[nonsense]:80-:80'), /Bad host address/);
});

test('qnet user options: IPv6 is on by default with QEMU 7.2\'s addresses, and off with ipv6=off', () => {
  const n = userNetworkOptions({ config: parseUserCliOptions('').config });
  assert.deepEqual(n.ipv6, { prefix: 'fec0::', prefixLen: 64, router: 'fec0::2', dns: 'fec0::3', linkLocal: 'fe80::2' });
  const m = userNetworkOptions({ config: parseUserCliOptions('ipv6-net=fd00:1::/64,ipv6-host=fd00:1::1,ipv6-dns=fd00:1::53').config });
  assert.deepEqual(m.ipv6, { prefix: 'fd00:1::', prefixLen: 64, router: 'fd00:1::1', dns: 'fd00:1::53', linkLocal: 'fe80::2' });
  assert.equal(userNetworkOptions({ config: parseUserCliOptions('ipv6=off').config }).ipv6, undefined);
  assert.equal(parseUserCliOptions('ipv6-prefix=fd00::').config.warnings.length, 0, 'served, so no warning');
});

test('qnet user options: IPv6 in hostfwd (beyond QEMU) and in dnsupstream', () => {
  const o = parseUserCliOptions('hostfwd=tcp:[::1]:2222-:22,hostfwd=tcp:[::]:8080-[fec0::15]:80,hostfwd=udp:127.0.0.1:5353-[fec0:0::16]:53,dnsupstream=[::1]:5353');
  assert.deepEqual(o.config.hostfwd.map((f) => [f.proto, f.hostAddr, f.hostPort, f.guest, f.guestPort]), [
    ['tcp', '::1', 2222, '', 22], ['tcp', '::', 8080, 'fec0::15', 80], ['udp', '127.0.0.1', 5353, 'fec0::16', 53],
  ]);
  assert.deepEqual(o.dnsUpstreams, [{ host: '::1', port: 5353 }]);
});
