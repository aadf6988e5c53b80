// Stateful DHCPv6 on a shared network, end to end: `qnet up` with a nat network that has
// subnet6 and a dhcp6 range, and a guest-side DHCPv6 client (a raw-frame one: busybox has no
// DHCPv6 client) on the network's real stream socket. The guest gets an address from the
// range (Solicit with Rapid Commit -> Reply), `qnet leases` lists it, the lease survives a
// daemon restart (persisted with the v4 leases), and qnet's DNS answers the client's name
// with that address (AAAA), as the Client FQDN option's S=1 promised. A static host gets its
// fixed address. The router advertisement says M (addresses by DHCPv6) and O.
//
// Safety: nothing but the daemon's unix sockets; DNS upstream is a port nobody listens on.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/cleanup.ts';
import { Daemon, qnetJson } from '../helpers/qnetd.ts';
import { Dhcp6TestClient, MSG, OPT, parseDhcp6Frame } from '../helpers/dhcp6-client.ts';
import { StreamPeer } from '../link/peers.ts';
import { ETHERTYPE_IPV6, writeEthernet } from '../../src/wire/ethernet.ts';
import { IPPROTO_UDP } from '../../src/wire/ipv4.ts';
import { writeIpv6 } from '../../src/wire/ipv6.ts';
import { finishUdpV6, writeUdp } from '../../src/wire/udp.ts';
import { parseIp6, parseMac } from '../../src/wire/addr.ts';
import { ND_RA_MANAGED, ND_RA_OTHER, ND_ROUTER_ADVERT, finishIcmpv6, writeRouterSolicit } from '../../src/wire/icmpv6.ts';

const MAC = '52:54:00:6d:00:01';
const STATIC_MAC = '52:54:00:6d:00:02';
const GW_MAC = '52:55:0a:28:00:01'; // 52:55 + the IPv4 gateway 10.40.0.1

/** A DNS query (AAAA) as a guest sends it to the IPv6 DNS address. */
function aaaaQuery(client: Dhcp6TestClient, name: string, dns: string): Buffer {
  const q = Buffer.alloc(12 + name.length + 2 + 4);
  q.writeUInt16BE(0x4242, 0); q.writeUInt16BE(0x0100, 2); q.writeUInt16BE(1, 4);
  let o = 12;
  for (const l of name.split('.')) { q[o++] = l.length; o += q.write(l, o, 'ascii'); }
  q[o++] = 0;
  q.writeUInt16BE(28, o); q.writeUInt16BE(1, o + 2);
  const f = Buffer.alloc(62 + q.length);
  writeEthernet(f, 0, parseMac(GW_MAC)!, parseMac(client.mac)!, ETHERTYPE_IPV6);
  writeIpv6(f, 14, parseIp6(client.linkLocal)!, parseIp6(dns)!, IPPROTO_UDP, 8 + q.length);
  writeUdp(f, 54, 5353, 53, q.length);
  q.copy(f, 62);
  finishUdpV6(f, 54, 22, 38);
  return f;
}

describe('stateful DHCPv6 on a shared network through qnet up', { timeout: 600_000 }, () => {
  const dir = makeTempDir('e2e-dhcp6-');
  const sock = join(dir.path, 'lab.sock');
  const api = join(dir.path, 'run', 'api.sock');
  const conf = join(dir.path, 'qnet.yaml');
  let d: Daemon;
  let peer: StreamPeer;
  let addr = '';
  const client = new Dhcp6TestClient(MAC, { gatewayMac: GW_MAC });

  before(async () => {
    fs.writeFileSync(conf, `runtimeDir: ${dir.path}/run
stateDir: ${dir.path}/state
networks:
  - name: lab
    subnet: 10.40.0.0/24
    domain: lab.test
    subnet6: fd00:40::/64
    dhcp6: fd00:40::100-fd00:40::1ff
    hosts: [{ mac: "${STATIC_MAC}", ip: 10.40.0.20, ip6: "fd00:40::20", name: fixed }]
    upstreams: [127.0.0.1:9]
    attach: [unix:${sock}]
`);
    d = await Daemon.start({ config: conf, api });
    peer = await StreamPeer.connect(sock);
  });

  after(async () => {
    peer?.close();
    await d?.stop();
  });

  test('the router advertisement announces DHCPv6 for addresses (M) and other information (O)', async () => {
    const rs = Buffer.alloc(54 + 16);
    writeEthernet(rs, 0, Buffer.from([0x33, 0x33, 0, 0, 0, 2]), parseMac(MAC)!, ETHERTYPE_IPV6);
    writeIpv6(rs, 14, parseIp6(client.linkLocal)!, parseIp6('ff02::2')!, 58, 16, 255);
    writeRouterSolicit(rs, 54, parseMac(MAC)!);
    finishIcmpv6(rs, 54, 16, 22, 38);
    const before = peer.frames.length;
    peer.send(rs);
    await peer.waitFrames(before + 1, 5000);
    const ra = peer.frames.slice(before).find((f) => f.readUInt16BE(12) === ETHERTYPE_IPV6 && f[20] === 58 && f[54] === ND_ROUTER_ADVERT);
    assert.ok(ra, 'an RA in answer to the solicitation');
    assert.equal(ra[54 + 5] & (ND_RA_MANAGED | ND_RA_OTHER), ND_RA_MANAGED | ND_RA_OTHER);
  });

  test('Solicit with Rapid Commit gets a committed Reply with an address from the range', async () => {
    const before = peer.frames.length;
    peer.send(client.build(MSG.SOLICIT, { rapidCommit: true, ias: [{}], fqdn: { name: 'vm6.lab.test', flags: 1 } }));
    await peer.waitFrames(before + 1, 5000);
    const reply = peer.frames.slice(before).map(parseDhcp6Frame).find((r) => r && r.type === MSG.REPLY);
    assert.ok(reply, 'a Reply');
    assert.equal(reply.dstIp, client.linkLocal);
    const ia = reply.ias.find((x) => x.kind === OPT.IA_NA)!;
    assert.equal(ia.addrs.length, 1);
    addr = ia.addrs[0].ip;
    assert.match(addr, /^fd00:40::1[0-9a-f]{2}$/, `from the range: ${addr}`);
  });

  test('qnet leases lists the IPv6 lease beside the IPv4 ones', async () => {
    const leases = await qnetJson<{ mac: string; ip: string; hostname?: string; network: string }[]>(api, ['leases']);
    const l = leases.find((x) => x.ip === addr);
    assert.ok(l, JSON.stringify(leases));
    assert.equal(l.mac, MAC);
    assert.equal(l.network, 'lab');
  });

  test('qnet DNS answers the client name with its DHCPv6 address (AAAA)', async () => {
    const before = peer.frames.length;
    peer.send(aaaaQuery(client, 'vm6.lab.test', 'fd00:40::1'));
    await peer.waitFrames(before + 1, 5000);
    const ans = peer.frames.slice(before).find((f) => f.readUInt16BE(12) === ETHERTYPE_IPV6 && f[20] === IPPROTO_UDP && f.readUInt16BE(54) === 53);
    assert.ok(ans, 'a DNS answer');
    const dns = ans.subarray(62);
    assert.equal(dns[3] & 0xf, 0, `rcode ${dns[3] & 0xf}`);
    assert.equal(dns.readUInt16BE(6), 1, 'one answer');
    // the answer is the last record: type (AAAA), class, TTL, length 16, then the address
    const rr = dns.length - 16 - 10;
    assert.equal(dns.readUInt16BE(rr), 28, 'AAAA');
    assert.equal(dns.readUInt16BE(rr + 8), 16);
    assert.equal(dns.subarray(dns.length - 16).toString('hex'), parseIp6(addr)!.toString('hex'));
  });

  test('a static host gets its fixed IPv6 address', async () => {
    const fixed = new Dhcp6TestClient(STATIC_MAC, { gatewayMac: GW_MAC });
    const before = peer.frames.length;
    peer.send(fixed.build(MSG.SOLICIT, { rapidCommit: true, ias: [{}] }));
    await peer.waitFrames(before + 1, 5000);
    const reply = peer.frames.slice(before).map(parseDhcp6Frame).find((r) => r && r.type === MSG.REPLY);
    assert.deepEqual(reply?.ias[0].addrs.map((a) => a.ip), ['fd00:40::20']);
  });

  test('the lease survives a daemon restart', async () => {
    peer.close();
    await d.stop();
    d = await Daemon.start({ config: conf, api });
    peer = await StreamPeer.connect(sock);
    const leases = await qnetJson<{ mac: string; ip: string }[]>(api, ['leases', 'lab']);
    assert.ok(leases.some((l) => l.mac === MAC && l.ip === addr), JSON.stringify(leases));
  });
});
