import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseUserCliOptions } from '../../src/qemu/user-network.ts';

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
  assert.throws(() => parseUserCliOptions('dnsupstream=resolver.example'), /Parameter 'dnsupstream' expects IPv4 address\[:port\]/);
  assert.throws(() => parseUserCliOptions('dnsupstream=127.0.0.1:0'), /dnsupstream/);
  assert.throws(() => parseUserCliOptions('mtu=100'), /Parameter 'mtu' expects an integer 576-65521/);
  assert.throws(() => parseUserCliOptions('smb=/srv/share'), /Parameter 'smb' is not supported by qnet/);
  assert.throws(() => parseUserCliOptions('ipv4=off'), /IPv4 user networks only/);
  assert.throws(() => parseUserCliOptions('nosuchoption=1'), /nosuchoption/);
  assert.match(parseUserCliOptions('ipv6-prefix=fd00::').config.warnings.join('\n'), /does not serve IPv6 yet/);
});
