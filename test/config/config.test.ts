import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { parseConfig, loadConfig, defaultConfigText } from '../../src/config/config.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { ip4ToString } from '../../src/wire/addr.ts';
import { tmpDir } from '../link/peers.ts';

const dirs = () => { const d = tmpDir(); return { runtimeDir: path.join(d, 'run'), stateDir: path.join(d, 'state') }; };

test('config: the embedded default is one nat network like libvirt\'s', () => {
  const c = parseConfig(defaultConfigText(), '(default)', dirs());
  assert.equal(c.networks.length, 1);
  const n = c.networks[0];
  assert.equal(n.name, 'default');
  assert.equal(n.mode, 'nat');
  assert.equal(ip4ToString(n.gateway), '192.168.122.1');
  assert.equal(ip4ToString(n.dhcpStart), '192.168.122.2');
  assert.equal(ip4ToString(n.dhcpEnd), '192.168.122.254');
  assert.match(n.attach[0].text, /default\.sock$/);
});

test('config: a full file with every key', () => {
  const c = parseConfig(`
stateDir: /tmp/x/state
runtimeDir: /tmp/x/run
api: { tcp: "127.0.0.1:7071", token: "0123456789abcdef0123" }
networks:
  - name: lab
    mode: nat
    subnet: 10.10.0.0/24
    gateway: 10.10.0.1
    dhcp: { start: 10.10.0.100, end: 10.10.0.199 }
    leaseTime: 600
    domain: lab.test
    hosts: [{ mac: "52:54:00:00:00:10", ip: 10.10.0.10, name: db }]
    records: [{ name: www, ip: 10.10.0.10 }]
    upstreams: [127.0.0.1:5353]
    forwards: [{ proto: tcp, hostPort: 8080, guest: db, guestPort: 80 }]
    mtu: 9000
    attach: [unix:/tmp/x/lab.sock, udp:127.0.0.1:5555]
  - name: quiet
    mode: isolated
    subnet: 10.20.0.0/24
  - name: slirp
    mode: user
    options: "net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:2222-:22,dnsupstream=127.0.0.1:5353"
`, 'qnet.yaml');
  assert.equal(c.stateDir, '/tmp/x/state');
  assert.equal(c.runtimeDir, '/tmp/x/run');
  assert.deepEqual(c.api.tcp, { host: '127.0.0.1', port: 7071, token: '0123456789abcdef0123' });
  assert.deepEqual(c.warnings, []);
  const [lab, quiet, slirp] = c.networks;
  // every key of every network, in readable form
  const plain = (n: (typeof c.networks)[number]) => ({
    name: n.name, mode: n.mode, subnet: `${ip4ToString(n.net)}/${n.prefix}`, gateway: ip4ToString(n.gateway),
    dhcp: n.dhcpEnd ? `${ip4ToString(n.dhcpStart)}-${ip4ToString(n.dhcpEnd)}` : ip4ToString(n.dhcpStart),
    leaseTime: n.leaseTime, domain: n.domain,
    hosts: n.hosts.map((h) => ({ ...h, ip: ip4ToString(h.ip) })), records: n.records.map((r) => ({ ...r, ip: r.ip === undefined ? undefined : ip4ToString(r.ip) })),
    upstreams: n.upstreams, forwards: n.forwards, mtu: n.mtu, attach: n.attach.map((x) => x.text), ipv6: n.ipv6,
  });
  assert.deepEqual(plain(lab), {
    name: 'lab', mode: 'nat', subnet: '10.10.0.0/24', gateway: '10.10.0.1', dhcp: '10.10.0.100-10.10.0.199', leaseTime: 600, domain: 'lab.test',
    hosts: [{ mac: '52:54:00:00:00:10', ip: '10.10.0.10', name: 'db' }], records: [{ name: 'www', ip: '10.10.0.10' }],
    upstreams: [{ host: '127.0.0.1', port: 5353 }], forwards: [{ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 8080, guest: 'db', guestPort: 80 }],
    mtu: 9000, attach: ['unix:/tmp/x/lab.sock', 'udp:127.0.0.1:5555'], ipv6: undefined,
  });
  // the defaults: gateway .1, DHCP from the address after it to the last host, MTU 1500, a socket per network
  assert.deepEqual(plain(quiet), {
    name: 'quiet', mode: 'isolated', subnet: '10.20.0.0/24', gateway: '10.20.0.1', dhcp: '10.20.0.2-10.20.0.254', leaseTime: undefined, domain: undefined,
    hosts: [], records: [], upstreams: undefined, forwards: [], mtu: 1500, attach: ['unix:/tmp/x/run/quiet.sock'], ipv6: undefined,
  });
  // mode user: the addressing comes from QEMU's options (net=, slirp's .2 gateway and .15 DHCP start)
  assert.deepEqual(plain(slirp), {
    name: 'slirp', mode: 'user', subnet: '10.0.2.0/24', gateway: '10.0.2.2', dhcp: '10.0.2.15', leaseTime: undefined, domain: undefined,
    hosts: [], records: [], upstreams: [{ host: '127.0.0.1', port: 5353 }], forwards: [], mtu: 1500, attach: ['unix:/tmp/x/run/slirp.sock'], ipv6: undefined,
  });
  // (the IPv6 keys, subnet6, gateway6, dhcp6, hosts[].ip6 and AAAA records, in ipv6.test.ts)
  assert.deepEqual(slirp.user?.config.hostfwd.map((h) => [h.proto, h.hostAddr, h.hostPort, h.guestPort]), [['tcp', '127.0.0.1', 2222, 22]]);
});

test('config: api.tokenFile is read (and its contents trimmed)', () => {
  const f = path.join(tmpDir(), 'token');
  fs.writeFileSync(f, 'fedcba9876543210fedcba\n');
  const c = parseConfig(`api: { tcp: "127.0.0.1:7072", tokenFile: ${f} }\nnetworks:\n  - name: a\n    subnet: 10.0.0.0/24\n`, 'qnet.yaml', dirs());
  assert.deepEqual(c.api.tcp, { host: '127.0.0.1', port: 7072, token: 'fedcba9876543210fedcba' });
  assert.throws(() => parseConfig(`api: { tcp: "127.0.0.1:7072", tokenFile: ${f}.missing }\nnetworks:\n  - name: a\n    subnet: 10.0.0.0/24\n`, 'qnet.yaml', dirs()), /qnet\.yaml:1:\d+: api\.tokenFile: cannot read/);
});

const bad: [string, RegExp][] = [
  ['networks: []', /qnet\.yaml:1:\d+: networks: expected a non-empty list/],
  ['networks:\n  - name: a\n    subnet: 10.0.0.0/24\n    colour: red\n', /qnet\.yaml:4:5: networks\[0\]\.colour: unknown key 'colour'/],
  ['networks:\n  - name: a\n    subnet: 10.0.0.1/24\n', /qnet\.yaml:3:13: networks\[0\]\.subnet: .*host bits set; did you mean 10\.0\.0\.0\/24/],
  ['networks:\n  - name: a\n    subnet: 10.0.0.0/24\n    gateway: 10.0.1.1\n', /:4:14: networks\[0\]\.gateway: gateway 10\.0\.1\.1 is not a host address/],
  ['networks:\n  - name: a\n    mode: wild\n    subnet: 10.0.0.0/24\n', /:3:11: networks\[0\]\.mode: unknown mode 'wild'/],
  ['networks:\n  - name: a\n    mode: bridge\n    subnet: 10.0.0.0/24\n', /:3:11: networks\[0\]\.mode: mode bridge needs a kernel bridge: add bridge: NAME/],
  ['networks:\n  - name: a\n    subnet: 10.0.0.0/24\n    dhcp: 10.0.0.1-10.0.0.9\n', /contains the gateway/],
  ['networks:\n  - name: a\n    subnet: 10.0.0.0/24\n    hosts: [{ mac: "01:00:5e:00:00:01", ip: 10.0.0.5 }]\n', /:4:\d+: networks\[0\]\.hosts\[0\]\.mac: .*multicast/],
  ['networks:\n  - name: a\n    subnet: 10.0.0.0/24\n    attach: [unix:/tmp/s.sock]\n  - name: b\n    subnet: 10.0.0.0/25\n    attach: [unix:/tmp/s.sock]\n', /:7:14: networks\[1\]\.attach\[0\]: attach point unix:\/tmp\/s\.sock is already used by network 'a' \(and the subnets 10\.0\.0\.0\/24 and 10\.0\.0\.0\/25 overlap/],
  ['networks:\n  - name: a\n    subnet: 10.0.0.0/24\n  - name: a\n    subnet: 10.1.0.0/24\n', /:4:\d+: networks\[1\]\.name: network 'a' is defined twice/],
  ['api: { tcp: "0.0.0.0:7070", token: "0123456789abcdef" }\nnetworks:\n  - name: a\n    subnet: 10.0.0.0/24\n', /:1:\d+: api\.tcp: .*loopback only/],
  ['api: { tcp: "127.0.0.1:7070" }\nnetworks:\n  - name: a\n    subnet: 10.0.0.0/24\n', /api\.token: the TCP API needs a token/],
  ['networks:\n  - name: u\n    mode: user\n    options: "net=10.0.2.0/24,dhcpstart=10.0.3.15"\n', /:4:14: networks\[0\]\.options: .*dhcpstart/i],
  ['networks:\n  - name: i\n    mode: isolated\n    subnet: 10.0.0.0/24\n    upstreams: [127.0.0.1]\n', /no way out/],
  ['networks:\n  - name: a\n    subnet: [oops\n', /qnet\.yaml:\d+:\d+: YAML syntax error/],
];
for (const [text, re] of bad) {
  test(`config: rejected with file:line: ${re.source.slice(0, 60)}`, () => {
    assert.throws(() => parseConfig(text, 'qnet.yaml', dirs()), re);
  });
}

test('config: a network whose socket path is taken fails at start with the file position', async () => {
  const d = dirs();
  fs.mkdirSync(d.runtimeDir, { recursive: true });
  const sock = path.join(d.runtimeDir, 'busy.sock');
  const other = net.createServer().listen(sock);
  await new Promise((r) => other.once('listening', r));
  const file = path.join(path.dirname(d.runtimeDir), 'qnet.yaml');
  fs.writeFileSync(file, `networks:\n  - name: a\n    subnet: 10.0.0.0/24\n    attach: [unix:${sock}]\n`);
  const cfg = loadConfig(file, d);
  await assert.rejects(Daemon.start(cfg), (e: Error) => e.message.includes(`network 'a' (${file}:4:13)`) && /in use/.test(e.message));
  other.close();
});
