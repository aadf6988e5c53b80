// The gateway's IPv6 layer with real frames and no switch: NDP (answers for our addresses,
// silence for a guest's DAD, learning, resolution), router advertisements on solicitation
// (prefix, MTU, RDNSS, DNSSL, M/O flags), ICMPv6 echo, UDP demultiplexing and port
// unreachable, source checks, fragments both ways, and TCP handed to the stack with a valid
// pseudo-header sum.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Gateway, type IpPacket } from '../../src/stack/gateway.ts';
import { ManualClock } from '../../src/stack/timers.ts';
import { addr6, addrToString, ip6 } from '../../src/stack/addr.ts';
import { RouterAdvertiser } from '../../src/services/router-adv.ts';
import { ETHERTYPE_IPV6, EthernetHeader, parseEthernet, writeEthernet } from '../../src/wire/ethernet.ts';
import { IPV6_NH_FRAGMENT, Ipv6Header, parseIpv6, writeIpv6, writeIpv6Fragment } from '../../src/wire/ipv6.ts';
import { IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from '../../src/wire/ipv4.ts';
import {
  ICMPV6_DEST_UNREACH, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, Icmpv6Header, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT,
  ND_OPT_DNSSL, ND_OPT_RDNSS, ND_OPT_SOURCE_LINKADDR, ND_ROUTER_ADVERT, finishIcmpv6, parseIcmpv6, writeIcmpv6Echo,
  writeNeighborAdvert, writeNeighborSolicit, writeRouterSolicit,
} from '../../src/wire/icmpv6.ts';
import { finishUdpV6, writeUdp } from '../../src/wire/udp.ts';
import { TCP_SYN, TcpHeader, finishTcpV6, parseTcp, writeTcp } from '../../src/wire/tcp.ts';
import { macToString, parseIp4, parseIp6, parseMac } from '../../src/wire/addr.ts';
import { foldChecksum, pseudoSumV6, sumWords } from '../../src/wire/checksum.ts';

const b6 = (s: string): Buffer => parseIp6(s)!;
const GW_MAC = parseMac('52:55:0a:00:02:02')!;
const GUEST_MAC = parseMac('52:54:00:12:34:56')!;
const ROUTER = addr6(b6('fec0::2'));
const DNS = addr6(b6('fec0::3'));
const LL = addr6(b6('fe80::2'));
const GUEST_LL = b6('fe80::5054:ff:fe12:3456');
const GUEST = b6('fec0::5054:ff:fe12:3456');

function bed(mtu = 1500): { gw: Gateway; out: Buffer[]; tick(): Promise<void>; clock: ManualClock } {
  const clock = new ManualClock(0);
  const gw = new Gateway({
    mac: GW_MAC, net: parseIp4('10.0.2.0')!, prefix: 24, addrs: [parseIp4('10.0.2.2')!], mtu, clock,
    ipv6: { prefix: b6('fec0::'), prefixLen: 64, addrs: [ROUTER, DNS], linkLocal: LL },
  });
  const out: Buffer[] = [];
  gw.onFrame = (f) => out.push(Buffer.from(f));
  return { gw, out, clock, tick: () => new Promise((r) => setImmediate(r)) };
}

/** An IPv6 frame from the guest; the L4 writer gets the buffer and offset. */
function frame6(src: Buffer, dst: Buffer, proto: number, l4len: number, write: (b: Buffer, o: number) => void, o: { hop?: number; dstMac?: Buffer } = {}): Buffer {
  const f = Buffer.alloc(54 + l4len);
  const dstMac = o.dstMac ?? (dst[0] === 0xff ? Buffer.from([0x33, 0x33, dst[12], dst[13], dst[14], dst[15]]) : GW_MAC);
  writeEthernet(f, 0, dstMac, GUEST_MAC, ETHERTYPE_IPV6);
  writeIpv6(f, 14, src, dst, proto, l4len, o.hop ?? 64);
  write(f, 54);
  if (proto === IPPROTO_ICMPV6) finishIcmpv6(f, 54, l4len, 22, 38);
  else if (proto === IPPROTO_UDP) finishUdpV6(f, 54, 22, 38);
  else if (proto === IPPROTO_TCP) finishTcpV6(f, 54, l4len, 22, 38);
  return f;
}

function parse6(f: Buffer): { ip: Ipv6Header; icmp: Icmpv6Header | null } {
  const eth = new EthernetHeader();
  assert.equal(parseEthernet(f, 0, f.length, eth), null);
  assert.equal(eth.ethertype, ETHERTYPE_IPV6);
  const ip = new Ipv6Header();
  assert.equal(parseIpv6(f, 14, f.length, ip), null);
  if (ip.protocol !== IPPROTO_ICMPV6) return { ip, icmp: null };
  const icmp = new Icmpv6Header();
  assert.equal(parseIcmpv6(f, ip.payloadOffset, ip.payloadEnd, icmp, pseudoSumV6(f, ip.srcOffset, ip.dstOffset, IPPROTO_ICMPV6, ip.payloadEnd - ip.payloadOffset)), null);
  assert.ok(icmp.checksumOk, 'ICMPv6 checksum');
  return { ip, icmp };
}

const ns = (src: Buffer, target: Buffer, withLla = true) => frame6(src, Buffer.from('ff0200000000000000000001ff000000', 'hex').fill(target[13], 13, 14).fill(target[14], 14, 15).fill(target[15], 15, 16), IPPROTO_ICMPV6, withLla ? 32 : 24,
  (b, o) => { writeNeighborSolicit(b, o, target, withLla ? GUEST_MAC : null); }, { hop: 255 });

test('ndp: a solicitation for the router address is answered (router, solicited, override, our MAC)', async () => {
  const { gw, out, tick } = bed();
  gw.send(ns(GUEST_LL, b6('fec0::2')));
  await tick();
  assert.equal(out.length, 1);
  const { ip, icmp } = parse6(out[0]);
  assert.equal(icmp!.type, ND_NEIGHBOR_ADVERT);
  assert.equal(ip.hopLimit, 255);
  assert.equal(out[0].toString('hex', ip.dstOffset, ip.dstOffset + 16), GUEST_LL.toString('hex'));
  assert.equal(out[0].readUInt8(icmp!.payloadOffset - 4) & 0xe0, 0xe0);
  assert.equal(macToString(out[0], icmp!.tgtLinkAddrOffset), '52:55:0a:00:02:02');
  assert.equal(macToString(gw.neighbours6.get(addr6(GUEST_LL))!.mac, 0), '52:54:00:12:34:56', 'the solicitor is learned');
});

test('ndp: link-local and DNS addresses are answered too; other targets never', async () => {
  const { gw, out, tick } = bed();
  gw.send(ns(GUEST_LL, b6('fe80::2')));
  gw.send(ns(GUEST_LL, b6('fec0::3')));
  gw.send(ns(GUEST_LL, b6('fec0::99')));
  await tick();
  assert.equal(out.length, 2);
});

test('ndp: DAD for a guest address (source ::) is never answered, so the guest keeps it', async () => {
  const { gw, out, tick } = bed();
  gw.send(ns(b6('::'), GUEST, false));
  await tick();
  assert.equal(out.length, 0);
  assert.equal(gw.ndp!.stats.dadIgnored, 1);
});

test('ndp: NDP with a hop limit other than 255 is dropped (RFC 4861 7.1)', async () => {
  const { gw, out, tick } = bed();
  const f = ns(GUEST_LL, b6('fec0::2'));
  f[21] = 64; // hop limit (the ICMPv6 checksum does not cover it)
  gw.send(f);
  await tick();
  assert.equal(out.length, 0);
  assert.equal(gw.stats.ndpDropped, 1);
});

test('ndp: a packet to an unknown guest is held, solicited, released on the advertisement', async () => {
  const { gw, out, tick } = bed();
  const guest = addr6(GUEST);
  gw.sendUdp(DNS, 53, guest, 5000, Buffer.from('held'));
  await tick();
  assert.equal(out.length, 1);
  const { ip, icmp } = parse6(out[0]);
  assert.equal(icmp!.type, ND_NEIGHBOR_SOLICIT);
  assert.equal(addrToString(addr6(out[0].subarray(ip.dstOffset, ip.dstOffset + 16))), 'ff02::1:ff12:3456', 'the solicited-node group');
  assert.equal(out[0].toString('hex', 0, 6), '3333ff123456');
  out.length = 0;
  gw.send(frame6(GUEST, b6('fe80::2'), IPPROTO_ICMPV6, 32, (b, o) => { writeNeighborAdvert(b, o, GUEST, 0x60, GUEST_MAC); }, { hop: 255 }));
  await tick();
  assert.equal(out.length, 1);
  assert.equal(macToString(out[0], 0), '52:54:00:12:34:56');
  assert.equal(out[0].subarray(62).toString(), 'held');
});

test('echo: to the router, the DNS and the link-local address', async () => {
  const { gw, out, tick } = bed();
  for (const dst of ['fec0::2', 'fec0::3', 'fe80::2']) {
    const src = dst.startsWith('fe80') ? GUEST_LL : GUEST;
    gw.send(frame6(src, b6(dst), IPPROTO_ICMPV6, 12, (b, o) => { Buffer.from('ping').copy(b, o + 8); writeIcmpv6Echo(b, o, ICMPV6_ECHO_REQUEST, 77, 3, 4); }));
  }
  await tick();
  assert.equal(out.length, 3);
  for (const f of out) {
    const { icmp } = parse6(f);
    assert.equal(icmp!.type, ICMPV6_ECHO_REPLY);
    assert.equal(icmp!.id, 77);
    assert.equal(icmp!.seq, 3);
    assert.equal(f.toString('latin1', icmp!.payloadOffset, icmp!.payloadEnd), 'ping');
  }
  assert.deepEqual(out.map((f) => addrToString(addr6(f.subarray(22, 38)))), ['fec0::2', 'fec0::3', 'fe80::2'], 'answered from the address pinged');
});

test('sources: off-link and multicast sources are dropped before reaching anything', async () => {
  const { gw, out, tick } = bed();
  const ping = (src: Buffer) => frame6(src, b6('fec0::2'), IPPROTO_ICMPV6, 8, (b, o) => { writeIcmpv6Echo(b, o, ICMPV6_ECHO_REQUEST, 1, 1, 0); });
  gw.send(ping(b6('2001:db8::1')));
  gw.send(ping(b6('ff02::1')));
  await tick();
  assert.equal(out.length, 0);
  assert.equal(gw.stats.offLinkSource, 1);
  assert.equal(gw.stats.malformed, 1);
  assert.equal(gw.neighbours6.size, 0);
});

test('udp: a bound service gets datagrams for its address; an unbound port of ours answers port unreachable', async () => {
  const { gw, out, tick } = bed();
  const got: string[] = [];
  gw.bindUdp(DNS, 53, (d) => got.push(`${addrToString(d.srcIp)}:${d.srcPort} ${d.payload.toString()}`));
  const udp = (dst: Buffer, port: number) => frame6(GUEST, dst, IPPROTO_UDP, 8 + 3, (b, o) => { Buffer.from('q?!').copy(b, o + 8); writeUdp(b, o, 4444, port, 3); });
  gw.send(udp(b6('fec0::3'), 53));
  gw.send(udp(b6('fec0::3'), 9));
  await tick();
  assert.deepEqual(got, ['fec0::5054:ff:fe12:3456:4444 q?!']);
  const { icmp } = parse6(out[0]);
  assert.equal(icmp!.type, ICMPV6_DEST_UNREACH);
  assert.equal(icmp!.code, 4);
});

test('udp: replies to a guest go out with a valid checksum from the service address', async () => {
  const { gw, out, tick } = bed();
  gw.send(ns(GUEST, b6('fec0::2'))); // learn the guest (it solicits us from its global address)
  await tick();
  out.length = 0;
  gw.sendUdp(DNS, 53, addr6(GUEST), 4444, Buffer.from('answer'));
  await tick();
  const { ip } = parse6(out[0]);
  assert.equal(ip.protocol, IPPROTO_UDP);
  assert.equal(foldChecksum(sumWords(out[0], ip.payloadOffset, ip.payloadEnd - ip.payloadOffset, pseudoSumV6(out[0], ip.srcOffset, ip.dstOffset, IPPROTO_UDP, ip.payloadEnd - ip.payloadOffset))), 0);
  assert.equal(macToString(out[0], 0), '52:54:00:12:34:56');
});

test('fragments: a fragmented datagram from a guest is reassembled before UDP sees it', async () => {
  const { gw, tick } = bed();
  const got: number[] = [];
  gw.bindUdp(DNS, 53, (d) => got.push(d.payload.length));
  const whole = Buffer.alloc(8 + 2000, 9);
  writeUdp(whole, 0, 4444, 53, 2000);
  // the UDP checksum is over the whole datagram: compute it in a scratch IPv6 packet
  const scratch = Buffer.alloc(40 + whole.length);
  writeIpv6(scratch, 0, GUEST, b6('fec0::3'), IPPROTO_UDP, whole.length);
  whole.copy(scratch, 40);
  finishUdpV6(scratch, 40, 8, 24);
  scratch.copy(whole, 0, 40);
  for (const [at, n, more] of [[0, 1232, true], [1232, whole.length - 1232, false]] as const) {
    gw.send(frame6(GUEST, b6('fec0::3'), IPV6_NH_FRAGMENT, 8 + n, (b, o) => { writeIpv6Fragment(b, o, IPPROTO_UDP, at, more, 0x1234); whole.copy(b, o + 8, at, at + n); }));
  }
  await tick();
  assert.deepEqual(got, [2000]);
});

test('fragments: a datagram beyond the MTU goes out in fragments with a fragment header', async () => {
  const { gw, out, tick } = bed(1280);
  gw.send(ns(GUEST, b6('fec0::2')));
  await tick();
  out.length = 0;
  gw.sendUdp(DNS, 53, addr6(GUEST), 4444, Buffer.alloc(3000, 1));
  await tick();
  assert.equal(out.length, 3);
  const frags = out.map((f) => parse6(f).ip);
  assert.ok(frags.every((h) => h.hasFragment && 40 + h.payloadLength <= 1280));
  assert.deepEqual(frags.map((h) => [h.fragmentOffset, h.moreFragments]), [[0, true], [1232, true], [2464, false]]);
});

test('tcp: a SYN from a guest reaches the TCP hook with a pseudo-header sum that verifies', async () => {
  const { gw } = bed();
  let seen: IpPacket | null = null;
  let ok = false;
  gw.onTcp = (p) => {
    seen = p;
    const h = new TcpHeader();
    ok = parseTcp(p.buf, p.l4, p.l4End, h, p.pseudo) === null && h.checksumOk;
  };
  gw.send(frame6(GUEST, b6('2001:db8::80'), IPPROTO_TCP, 20, (b, o) => { writeTcp(b, o, 40000, 80, 1, 0, TCP_SYN, 65535, null); }));
  assert.ok(seen);
  assert.equal((seen as IpPacket).v6, true);
  assert.equal(addrToString((seen as IpPacket).dst), '2001:db8::80');
  assert.ok(ok, 'the TCP checksum verifies with the pseudo-header sum the gateway computed');
});

test('ra: a router solicitation is answered with prefix, MTU, RDNSS, DNSSL and the M/O flags', async () => {
  const { gw, out, tick } = bed(9000);
  const ra = new RouterAdvertiser(gw, { prefix: b6('fec0::'), prefixLen: 64, linkLocal: LL, mtu: 9000, dns: [DNS], search: ['qnet.test'], managed: true, other: true });
  gw.onRouterSolicit = (p) => ra.solicited(p);
  gw.timers.runDue(); // the first unsolicited advertisement, now (a timeout may come after tick under load)
  await tick();
  out.length = 0;
  gw.send(frame6(GUEST_LL, b6('ff02::2'), IPPROTO_ICMPV6, 16, (b, o) => { writeRouterSolicit(b, o, GUEST_MAC); }, { hop: 255 }));
  await tick();
  assert.equal(out.length, 1);
  const { ip, icmp } = parse6(out[0]);
  assert.equal(icmp!.type, ND_ROUTER_ADVERT);
  assert.equal(ip.hopLimit, 255);
  assert.equal(addrToString(addr6(out[0].subarray(ip.srcOffset, ip.srcOffset + 16))), 'fe80::2');
  assert.equal(out[0].toString('hex', ip.dstOffset, ip.dstOffset + 16), GUEST_LL.toString('hex'), 'unicast to the solicitor');
  assert.equal(out[0][icmp!.payloadOffset - 3] & 0xc0, 0xc0, 'M and O');
  assert.equal(icmp!.mtu, 9000);
  const pi = icmp!.prefixInfoOffset;
  assert.equal(out[0][pi + 2], 64);
  assert.equal(out[0][pi + 3] & 0xc0, 0xc0, 'on-link and autonomous');
  assert.equal(out[0].toString('hex', pi + 16, pi + 32), b6('fec0::').toString('hex'));
  const opts: number[] = [];
  for (let p = icmp!.optionsOffset; p < icmp!.optionsEnd; p += out[0][p + 1] * 8) opts.push(out[0][p]);
  assert.ok(opts.includes(ND_OPT_SOURCE_LINKADDR) && opts.includes(ND_OPT_RDNSS) && opts.includes(ND_OPT_DNSSL), `options ${opts}`);
  ra.close();
});

test('ra: unsolicited advertisements go to all nodes; solicitations are rate-limited per guest', async () => {
  const { gw, out, tick, clock } = bed();
  const ra = new RouterAdvertiser(gw, { prefix: b6('fec0::'), prefixLen: 64, linkLocal: LL, mtu: 1500, dns: [DNS], managed: false, other: true });
  gw.onRouterSolicit = (p) => ra.solicited(p);
  gw.timers.runDue();
  await tick();
  assert.equal(out.length, 1);
  assert.equal(addrToString(addr6(out[0].subarray(38, 54))), 'ff02::1');
  assert.equal(out[0].toString('hex', 0, 6), '333300000001');
  out.length = 0;
  const rs = () => frame6(GUEST_LL, b6('ff02::2'), IPPROTO_ICMPV6, 16, (b, o) => { writeRouterSolicit(b, o, GUEST_MAC); }, { hop: 255 });
  gw.send(rs());
  gw.send(rs());
  await tick();
  assert.equal(out.length, 1);
  assert.equal(ra.stats.rateLimited, 1);
  clock.t += 20_000;
  gw.timers.runDue();
  assert.ok(ra.stats.unsolicited >= 2, 'the next unsolicited one within the initial interval');
  ra.close();
});

test('addresses: ids are stable per address, distinct from IPv4, and render as RFC 5952', () => {
  const a = addr6(b6('fec0:0:0:0::15'));
  assert.equal(a, addr6(b6('fec0::15')));
  assert.ok(a >= 2 ** 32);
  assert.equal(addrToString(a), 'fec0::15');
  assert.equal(ip6.bytes(a).toString('hex'), 'fec00000000000000000000000000015');
});
