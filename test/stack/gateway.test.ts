// The gateway as a port, driven with real frames and no switch: ARP (replies, learning,
// resolution with held frames and its limits), ICMP echo, the send contract (checksums,
// fragmentation, ICMP errors quoting a packet or a rebuilt flow), and the input counters
// (malformed input apart from handler bugs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Gateway } from '../../src/stack/gateway.ts';
import { ManualClock } from '../../src/stack/timers.ts';
import { ARP_REPLY, ARP_REQUEST, ArpPacket, parseArp, writeArp } from '../../src/wire/arp.ts';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetHeader, parseEthernet, writeEthernet } from '../../src/wire/ethernet.ts';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, parseIpv4, parseIpv4Quoted, writeIpv4 } from '../../src/wire/ipv4.ts';
import { ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HOST_UNREACH, ICMP_PORT_UNREACH, Icmpv4Header, parseIcmpv4, writeIcmpv4Echo } from '../../src/wire/icmpv4.ts';
import { finishUdpV4, writeUdp } from '../../src/wire/udp.ts';
import { TcpHeader, parseTcp, writeTcp, TCP_SYN } from '../../src/wire/tcp.ts';
import { pseudoSumV4 } from '../../src/wire/checksum.ts';
import { macToString, parseIp4, parseMac } from '../../src/wire/addr.ts';

const ip = (s: string): number => parseIp4(s)!;
const GW_MAC = parseMac('52:55:0a:00:02:02')!;
const GUEST_MAC = parseMac('52:54:00:12:34:56')!;
const GW = ip('10.0.2.2');
const GUEST = ip('10.0.2.15');

function bed(mtu = 1500): { gw: Gateway; out: Buffer[]; tick(): Promise<void>; clock: ManualClock } {
  const clock = new ManualClock(0);
  const gw = new Gateway({ mac: GW_MAC, net: ip('10.0.2.0'), prefix: 24, addrs: [GW, ip('10.0.2.3')], mtu, clock });
  const out: Buffer[] = [];
  gw.onFrame = (f) => out.push(Buffer.from(f));
  return { gw, out, clock, tick: () => new Promise((r) => setImmediate(r)) };
}

function arpFrame(op: number, senderMac: Buffer, senderIp: number, targetIp: number, dst: Buffer = Buffer.alloc(6, 0xff)): Buffer {
  const f = Buffer.alloc(42);
  writeEthernet(f, 0, dst, senderMac, ETHERTYPE_ARP);
  writeArp(f, 14, op, senderMac, senderIp, Buffer.alloc(6), targetIp);
  return f;
}

function ipFrame(src: number, dst: number, proto: number, l4: Buffer, srcMac = GUEST_MAC): Buffer {
  const f = Buffer.alloc(34 + l4.length);
  writeEthernet(f, 0, GW_MAC, srcMac, ETHERTYPE_IPV4);
  writeIpv4(f, 14, src, dst, proto, l4.length);
  l4.copy(f, 34);
  return f;
}

function udp(src: number, dst: number, sport: number, dport: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(8 + payload.length);
  payload.copy(b, 8);
  writeUdp(b, 0, sport, dport, payload.length);
  finishUdpV4(b, 0, src, dst);
  return b;
}

function parseIp(f: Buffer): { eth: EthernetHeader; ip: Ipv4Header } {
  const eth = new EthernetHeader();
  assert.equal(parseEthernet(f, 0, f.length, eth), null);
  assert.equal(eth.ethertype, ETHERTYPE_IPV4);
  const h = new Ipv4Header();
  assert.equal(parseIpv4(f, eth.payloadOffset, f.length, h), null);
  assert.ok(h.checksumOk, 'IPv4 header checksum');
  return { eth, ip: h };
}

test('arp: a request for a gateway address is answered, and the sender learned', async () => {
  const { gw, out, tick } = bed();
  gw.send(arpFrame(ARP_REQUEST, GUEST_MAC, GUEST, ip('10.0.2.3')));
  await tick();
  assert.equal(out.length, 1);
  const a = new ArpPacket();
  assert.equal(parseArp(out[0], 14, out[0].length, a), null);
  assert.equal(a.op, ARP_REPLY);
  assert.equal(a.senderIp, ip('10.0.2.3'));
  assert.equal(a.targetIp, GUEST);
  assert.equal(macToString(out[0], 0), '52:54:00:12:34:56');
  assert.equal(macToString(gw.neighbours.get(GUEST)!.mac, 0), '52:54:00:12:34:56');
  assert.equal(gw.arp.stats.replies, 1);
});

test('arp: requests for other addresses and gratuitous ARP are not answered', async () => {
  const { gw, out, tick } = bed();
  gw.send(arpFrame(ARP_REQUEST, GUEST_MAC, GUEST, ip('10.0.2.99')));
  gw.send(arpFrame(ARP_REQUEST, GUEST_MAC, GW, GW));
  await tick();
  assert.equal(out.length, 0);
  assert.equal(gw.neighbours.has(GW), false, 'a guest claiming the gateway address is not learned');
});

test('arp: at most 4096 neighbours are learned; off-link and multicast senders never', async () => {
  const { gw } = bed();
  // 10.0.2.0/24 has 254 hosts: a /16 shows the limit
  const wide = new Gateway({ mac: GW_MAC, net: ip('10.0.0.0'), prefix: 16, addrs: [ip('10.0.0.1')], clock: new ManualClock() });
  for (let k = 0; k < 5000; k++) {
    const mac = Buffer.from([0x52, 0x54, 0, 0, k >> 8, k & 0xff]);
    wide.send(arpFrame(ARP_REQUEST, mac, ip('10.0.0.0') + 2 + k, ip('10.0.0.1')));
  }
  assert.equal(wide.neighbours.size, 4096);
  gw.send(arpFrame(ARP_REQUEST, GUEST_MAC, ip('192.168.1.5'), GW));
  gw.send(arpFrame(ARP_REQUEST, Buffer.from([0x01, 0, 0x5e, 0, 0, 1]), ip('10.0.2.50'), GW));
  assert.equal(gw.neighbours.size, 0);
  wide.close();
});

test('arp: a packet to an unknown guest is held, ARP asked once per second, released on the answer', async () => {
  const { gw, out, tick, clock } = bed();
  gw.sendUdp(GW, 53, GUEST, 5000, Buffer.from('a'));
  gw.sendUdp(GW, 53, GUEST, 5000, Buffer.from('b'));
  await tick();
  assert.equal(out.length, 1, 'one ARP request, no IP packet yet');
  assert.equal(out[0].readUInt16BE(12), ETHERTYPE_ARP);
  clock.t += 1001;
  gw.sendUdp(GW, 53, GUEST, 5000, Buffer.from('c'));
  await tick();
  assert.equal(out.length, 2, 'asked again after a second');
  out.length = 0;
  gw.send(arpFrame(ARP_REPLY, GUEST_MAC, GUEST, GW, GW_MAC));
  await tick();
  assert.deepEqual(out.map((f) => f.subarray(42).toString()), ['a', 'b', 'c']);
  for (const f of out) assert.equal(macToString(f, 0), '52:54:00:12:34:56', 'held frames get the learned MAC');
});

test('arp: held frames are bounded per destination and dropped when nobody answers', async () => {
  const { gw, out, tick, clock } = bed();
  for (let k = 0; k < 20; k++) gw.sendUdp(GW, 53, GUEST, 5000, Buffer.from([k]));
  assert.equal(gw.arp.stats.heldDropped, 4, '16 held');
  clock.t += 3001;
  gw.timers.runDue();
  assert.equal(gw.arp.stats.heldDropped, 20);
  await tick();
  out.length = 0;
  gw.send(arpFrame(ARP_REPLY, GUEST_MAC, GUEST, GW, GW_MAC));
  await tick();
  assert.equal(out.length, 0, 'nothing left to release');
});

test('icmp: echo requests to gateway addresses are answered with the same id, seq and data', async () => {
  const { gw, out, tick } = bed();
  const m = Buffer.alloc(8 + 5);
  Buffer.from('hello').copy(m, 8);
  writeIcmpv4Echo(m, 0, ICMP_ECHO_REQUEST, 0x1234, 7, 5);
  gw.send(ipFrame(GUEST, ip('10.0.2.3'), IPPROTO_ICMP, m));
  await tick();
  const { ip: h } = parseIp(out[0]);
  assert.equal(h.src, ip('10.0.2.3'));
  const icmp = new Icmpv4Header();
  assert.equal(parseIcmpv4(out[0], h.payloadOffset, h.payloadEnd, icmp), null);
  assert.ok(icmp.checksumOk);
  assert.equal(icmp.type, ICMP_ECHO_REPLY);
  assert.equal(icmp.id, 0x1234);
  assert.equal(icmp.seq, 7);
  assert.equal(out[0].toString('latin1', icmp.payloadOffset, icmp.payloadEnd), 'hello');
});

test('send contract: sendIp finishes the TCP checksum over the pseudo-header', async () => {
  const { gw, out, tick } = bed();
  gw.send(arpFrame(ARP_REQUEST, GUEST_MAC, GUEST, GW));
  await tick();
  out.length = 0;
  gw.sendIp(GW, GUEST, IPPROTO_TCP, 60, (b, o) => writeTcp(b, o, 80, 40000, 1, 0, TCP_SYN, 1000, null));
  await tick();
  const { ip: h } = parseIp(out[0]);
  const t = new TcpHeader();
  assert.equal(parseTcp(out[0], h.payloadOffset, h.payloadEnd, t, pseudoSumV4(GW, GUEST, IPPROTO_TCP, h.payloadEnd - h.payloadOffset)), null);
  assert.ok(t.checksumOk);
});

test('send contract: a writer that writes more than it reserved is a bug, caught loudly', () => {
  const { gw } = bed();
  assert.throws(() => gw.sendIp(GW, GUEST, IPPROTO_UDP, 8, (_b, o) => o + 20), /wrote 20 bytes, more than the 8/);
});

test('send contract: packets beyond the MTU are fragmented (8-byte multiples, MF, offsets)', async () => {
  const { gw, out, tick } = bed(576);
  gw.send(arpFrame(ARP_REQUEST, GUEST_MAC, GUEST, GW));
  await tick();
  out.length = 0;
  gw.sendUdp(GW, 69, GUEST, 1000, Buffer.alloc(1400, 7));
  await tick();
  assert.equal(out.length, 3);
  const offs = out.map((f) => parseIp(f).ip).map((h) => [h.fragmentOffset, h.mf, h.payloadEnd - h.payloadOffset]);
  assert.deepEqual(offs, [[0, true, 552], [552, true, 552], [1104, false, 304]]);
  assert.equal(gw.stats.fragmentsSent, 3);
});

test('icmp errors: UDP to a gateway address without a service -> port unreachable quoting the packet', async () => {
  const { gw, out, tick } = bed();
  gw.send(ipFrame(GUEST, GW, IPPROTO_UDP, udp(GUEST, GW, 5555, 9999, Buffer.from('x'))));
  await tick();
  const { ip: h } = parseIp(out[0]);
  const icmp = new Icmpv4Header();
  assert.equal(parseIcmpv4(out[0], h.payloadOffset, h.payloadEnd, icmp), null);
  assert.ok(icmp.checksumOk);
  assert.equal(icmp.type, ICMP_DEST_UNREACH);
  assert.equal(icmp.code, ICMP_PORT_UNREACH);
  const q = new Ipv4Header();
  assert.equal(parseIpv4Quoted(out[0], icmp.embeddedOffset, h.payloadEnd, q), null);
  assert.equal(q.src, GUEST);
  assert.equal(q.dst, GW);
  assert.equal(out[0].readUInt16BE(q.payloadOffset + 2), 9999, 'the quoted UDP header');
  assert.equal(gw.stats.udpNoService, 1);
});

test('icmp errors: for a flow, the quoted header is rebuilt (guest -> dst, proto) with the L4 start', async () => {
  const { gw, out, tick } = bed();
  gw.send(arpFrame(ARP_REQUEST, GUEST_MAC, GUEST, GW));
  await tick();
  out.length = 0;
  const head = Buffer.from([0x9c, 0x40, 0x00, 0x50, 1, 2, 3, 4]);
  gw.sendIcmpErrorForFlow(ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, GW, GUEST, ip('203.0.113.9'), IPPROTO_TCP, head, 20);
  await tick();
  const { ip: h } = parseIp(out[0]);
  assert.equal(h.dst, GUEST);
  const icmp = new Icmpv4Header();
  assert.equal(parseIcmpv4(out[0], h.payloadOffset, h.payloadEnd, icmp), null);
  assert.ok(icmp.checksumOk);
  assert.equal(icmp.code, ICMP_HOST_UNREACH);
  const q = new Ipv4Header();
  assert.equal(parseIpv4Quoted(out[0], icmp.embeddedOffset, h.payloadEnd, q), null);
  assert.ok(q.checksumOk, 'the rebuilt header has a valid checksum');
  assert.equal(q.src, GUEST);
  assert.equal(q.dst, ip('203.0.113.9'));
  assert.equal(q.protocol, IPPROTO_TCP);
  assert.deepEqual([...out[0].subarray(q.payloadOffset, q.payloadOffset + 8)], [...head]);
});

test('input: malformed frames are counted as malformed, a throwing service as a handler error', async () => {
  const { gw } = bed();
  gw.send(Buffer.alloc(10));
  const badIp = ipFrame(GUEST, GW, IPPROTO_UDP, Buffer.alloc(4));
  badIp[14] = 0x44; // IHL 4
  gw.send(badIp);
  assert.equal(gw.stats.malformed, 2);
  assert.equal(gw.stats.handlerErrors, 0);
  gw.bindUdp(GW, 7, () => { throw new Error('bug'); });
  gw.send(ipFrame(GUEST, GW, IPPROTO_UDP, udp(GUEST, GW, 1, 7, Buffer.from('x'))));
  gw.send(ipFrame(GUEST, GW, IPPROTO_UDP, udp(GUEST, GW, 1, 7, Buffer.from('x'))));
  assert.equal(gw.stats.handlerErrors, 2);
  assert.equal(gw.stats.malformed, 2, 'a bug is not bad input');
});

test('input: frames for another MAC and bad IPv4 checksums are counted and dropped', () => {
  const { gw } = bed();
  const f = ipFrame(GUEST, GW, IPPROTO_UDP, udp(GUEST, GW, 1, 7, Buffer.from('x')));
  f[0] = 0x52; f[5] = 0x99;
  gw.send(f);
  assert.equal(gw.stats.notForUs, 1);
  const g = ipFrame(GUEST, GW, IPPROTO_UDP, udp(GUEST, GW, 1, 7, Buffer.from('x')));
  g[24] ^= 0xff;
  gw.send(g);
  assert.equal(gw.stats.badChecksum, 1);
});

test('input: UDP to a bound service gets the datagram; to the broadcast address nothing is answered', async () => {
  const { gw, out, tick } = bed();
  const got: string[] = [];
  gw.bindUdp(0, 67, (d) => got.push(`${d.srcPort}>${d.dstPort}:${d.payload.toString()}`));
  gw.send(ipFrame(GUEST, ip('10.0.2.255'), IPPROTO_UDP, udp(GUEST, ip('10.0.2.255'), 68, 67, Buffer.from('hi'))));
  gw.send(ipFrame(GUEST, ip('10.0.2.255'), IPPROTO_UDP, udp(GUEST, ip('10.0.2.255'), 68, 4444, Buffer.from('x'))));
  await tick();
  assert.deepEqual(got, ['68>67:hi']);
  assert.equal(out.length, 0, 'no port unreachable for a broadcast');
});

test('input: a service bound to any address gets UDP to the gateway and to broadcast, never UDP on its way elsewhere', async () => {
  const { gw } = bed();
  const got: string[] = [];
  gw.bindUdp(0, 67, (d) => got.push(`to ${d.dstIp === ip('10.0.2.2') ? 'gw' : d.dstIp === ip('255.255.255.255') ? 'bcast' : 'other'}`));
  let natted = 0;
  gw.onUdp = () => { natted++; };
  gw.natAddrs.add(GW);
  for (const dst of ['10.0.2.2', '255.255.255.255', '203.0.113.9']) gw.send(ipFrame(GUEST, ip(dst), IPPROTO_UDP, udp(GUEST, ip(dst), 68, 67, Buffer.from('x'))));
  assert.deepEqual(got, ['to gw', 'to bcast']);
  assert.equal(natted, 1, 'the datagram to a remote host went to the NAT');
});
