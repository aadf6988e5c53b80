// A hostile guest against a whole user-mode network (gateway, DHCP, DNS, TFTP, TCP/UDP/ICMP
// NAT) over its real stream socket: random frames, and valid frames of every protocol the
// gateway speaks with random bit flips, truncations, random flags, ports and fragment
// offsets. Afterwards the network must still serve a well-behaved guest (ARP, ping, DHCP),
// have thrown nothing out of a handler, and hold bounded state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { random } from '../helpers/prng.ts';
import path from 'node:path';
import dgram from 'node:dgram';
import fs from 'node:fs';
import { Network } from '../../src/network/network.ts';
import { parseAttach } from '../../src/network/attach.ts';
import { writeEthernet, ETHERTYPE_ARP, ETHERTYPE_IPV4 } from '../../src/wire/ethernet.ts';
import { writeArp, ARP_REQUEST } from '../../src/wire/arp.ts';
import { writeIpv4, IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP } from '../../src/wire/ipv4.ts';
import { writeUdp, finishUdpV4 } from '../../src/wire/udp.ts';
import { writeTcp, finishTcpV4, TcpOptions } from '../../src/wire/tcp.ts';
import { writeIcmpv4Echo, ICMP_ECHO_REQUEST } from '../../src/wire/icmpv4.ts';
import { parseIp4, parseMac } from '../../src/wire/addr.ts';
import { StreamPeer, tmpDir } from '../link/peers.ts';
import { waitFor } from '../helpers/wait.ts';

const ip = (s: string) => parseIp4(s)!;
const GW = parseMac('52:55:0a:00:02:02')!;
const ME = parseMac('52:54:00:fe:00:01')!;
const BCAST = parseMac('ff:ff:ff:ff:ff:ff')!;

/** A valid frame of a random kind, from the guest 10.0.2.15. */
function validFrame(rand: () => number, closedPort: number): Buffer {
  const b = Buffer.alloc(1600);
  const kind = Math.floor(rand() * 6);
  const src = ip('10.0.2.15');
  const dsts = [ip('10.0.2.2'), ip('10.0.2.3'), ip('10.0.2.255'), ip('255.255.255.255'), ip('10.0.2.77')];
  const dst = dsts[Math.floor(rand() * dsts.length)];
  if (kind === 0) {
    writeEthernet(b, 0, BCAST, ME, ETHERTYPE_ARP);
    writeArp(b, 14, Math.floor(rand() * 3), ME, src, Buffer.alloc(6), dst);
    return b.subarray(0, 42);
  }
  let o = writeEthernet(b, 0, rand() < 0.5 ? GW : BCAST, ME, ETHERTYPE_IPV4);
  const ipOff = o;
  if (kind === 1 || kind === 2) {
    // UDP to DHCP, DNS, TFTP or a closed loopback port, random payload
    const ports = [67, 53, 69, closedPort];
    const len = Math.floor(rand() * 600);
    o = writeIpv4(b, o, src, dst, IPPROTO_UDP, 8 + len, 64, Math.floor(rand() * 65536));
    for (let i = 0; i < len; i++) b[o + 8 + i] = Math.floor(rand() * 256);
    if (len > 240 && rand() < 0.5) b.writeUInt32BE(0x63825363, o + 8 + 236); // DHCP magic, to get past it
    writeUdp(b, o, 68, ports[Math.floor(rand() * ports.length)], len);
    finishUdpV4(b, o, src, dst);
    return b.subarray(0, o + 8 + len);
  }
  if (kind === 3 || kind === 4) {
    // TCP with random flags/seq/options to the gateway's services and to NAT destinations
    const opts = new TcpOptions();
    if (rand() < 0.5) { opts.mss = Math.floor(rand() * 70000); opts.wscale = Math.floor(rand() * 20); opts.sackPermitted = rand() < 0.5; }
    const len = Math.floor(rand() * 100);
    o = writeIpv4(b, o, src, dst, IPPROTO_TCP, 60 + len);
    const dports = [53, 80, closedPort, 22];
    const end = writeTcp(b, o, 40000 + Math.floor(rand() * 10), dports[Math.floor(rand() * dports.length)], Math.floor(rand() * 2 ** 32), Math.floor(rand() * 2 ** 32), Math.floor(rand() * 256), Math.floor(rand() * 65536), opts);
    for (let i = 0; i < len; i++) b[end + i] = Math.floor(rand() * 256);
    const tcpLen = end - o + len;
    b.writeUInt16BE(20 + tcpLen, ipOff + 2);
    writeIpv4(b, ipOff, src, dst, IPPROTO_TCP, tcpLen);
    finishTcpV4(b, o, tcpLen, src, dst);
    return b.subarray(0, o + tcpLen);
  }
  // ICMP echo, possibly as a fragment with a random offset
  const len = Math.floor(rand() * 1400);
  o = writeIpv4(b, o, src, dst, IPPROTO_ICMP, 8 + len, 64, Math.floor(rand() * 8));
  writeIcmpv4Echo(b, o, ICMP_ECHO_REQUEST, 7, Math.floor(rand() * 65536), len);
  if (rand() < 0.5) { b.writeUInt16BE((rand() < 0.5 ? 0x2000 : 0) | Math.floor(rand() * 8192), ipOff + 6); writeIpv4Fix(b, ipOff); }
  return b.subarray(0, o + 8 + len);
}

function writeIpv4Fix(b: Buffer, off: number): void {
  b[off + 10] = 0; b[off + 11] = 0;
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(off + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  b.writeUInt16BE(~sum & 0xffff, off + 10);
}

test('gateway: a hostile guest cannot break the network for a good one', { timeout: 90_000 }, async (t) => {
  const seed = Number(process.env.QNET_FUZZ_SEED ?? Date.now() % 1_000_000);
  const rand = random(seed);
  const dir = tmpDir('qnet-gwfuzz-');
  const sock = path.join(dir, 'u.sock');
  const tftp = path.join(dir, 'tftp');
  fs.mkdirSync(tftp);
  fs.writeFileSync(path.join(tftp, 'f'), 'x'.repeat(3000));
  // a DNS upstream that answers nothing (the forwarder then answers SERVFAIL)
  const dns = dgram.createSocket('udp4');
  await new Promise<void>((r) => dns.bind(0, '127.0.0.1', () => r()));
  const closed = dgram.createSocket('udp4');
  await new Promise<void>((r) => closed.bind(0, '127.0.0.1', () => r()));
  const closedPort = closed.address().port;
  closed.close();
  const net = await Network.start({
    name: 'fuzz', mode: 'user', net: ip('10.0.2.0'), prefix: 24, gateway: ip('10.0.2.2'), dns: ip('10.0.2.3'), dhcpStart: ip('10.0.2.15'),
    upstreams: [{ host: '127.0.0.1', port: dns.address().port }], tftp, listen: [parseAttach(`unix:${sock}`)],
  });
  t.after(() => { net.close(); dns.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const evil = await StreamPeer.connect(sock);
  const N = 20_000;
  for (let i = 0; i < N; i++) {
    let f: Buffer;
    const r = rand();
    if (r < 0.2) {
      f = Buffer.alloc(14 + Math.floor(rand() * 1500));
      for (let j = 0; j < f.length; j++) f[j] = Math.floor(rand() * 256);
    } else {
      f = Buffer.from(validFrame(rand, closedPort));
      if (r < 0.6) for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) { const p = 14 + Math.floor(rand() * (f.length - 14)); f[p] ^= 1 << Math.floor(rand() * 8); }
      if (r > 0.9) f = f.subarray(0, 14 + Math.floor(rand() * (f.length - 14)));
    }
    evil.send(f);
    // keep the socket's write buffer small: wait for it to drain, now and then
    if (i % 500 === 0) await waitFor(() => evil.sock.writableLength === 0, { what: 'the fuzz writes to drain' });
  }
  // every frame read off the stream (each is at least an Ethernet header, so none is a runt)
  const evilPort = () => (net.stats() as { ports: { macs: string[]; rxFrames: number; rxDropped: number }[] }).ports.find((p) => p.macs.includes('52:54:00:fe:00:01'));
  await waitFor(() => { const p = evilPort(); return p && p.rxFrames + p.rxDropped >= N; }, { what: `${N} fuzz frames read by qnet`, timeoutMs: 60_000, diag: () => JSON.stringify(evilPort()) });
  const st = net.stats() as Stats;
  if (process.env.QNET_FUZZ_VERBOSE) console.log(JSON.stringify({ gw: st.gateway, tcp: st.tcp, dhcp: st.dhcp, dns: st.dns, tftp: st.tftp, udp: st.udpNat, icmp: st.icmpNat }));
  assert.ok(st.gateway.malformed > 0, 'nothing was counted as malformed');
  assert.ok(st.tcp.connections < 1000, `TCP state grew to ${st.tcp.connections} connections`);

  // a good guest still gets ARP, ping and DHCP answers
  const good = await StreamPeer.connect(sock);
  const GOOD = parseMac('52:54:00:fe:00:02')!;
  const arp = Buffer.alloc(42);
  writeEthernet(arp, 0, BCAST, GOOD, ETHERTYPE_ARP);
  writeArp(arp, 14, ARP_REQUEST, GOOD, ip('10.0.2.16'), Buffer.alloc(6), ip('10.0.2.2'));
  const ping = Buffer.alloc(14 + 20 + 8 + 32);
  let o = writeEthernet(ping, 0, GW, GOOD, ETHERTYPE_IPV4);
  o = writeIpv4(ping, o, ip('10.0.2.16'), ip('10.0.2.2'), IPPROTO_ICMP, 40);
  writeIcmpv4Echo(ping, o, ICMP_ECHO_REQUEST, 99, 1, 32);
  good.send(arp, ping, dhcpDiscover(GOOD, 0x5eed));
  const mine = () => good.frames.filter((f) => f.compare(GOOD, 0, 6, 0, 6) === 0 || f.compare(BCAST, 0, 6, 0, 6) === 0);
  const isArpReply = (f: Buffer) => f.readUInt16BE(12) === ETHERTYPE_ARP && f.readUInt16BE(20) === 2 && f.compare(GOOD, 0, 6, 0, 6) === 0;
  const isEchoReply = (f: Buffer) => f.readUInt16BE(12) === ETHERTYPE_IPV4 && f[23] === IPPROTO_ICMP && f[34] === 0 && f.readUInt16BE(38) === 99;
  // an OFFER to our DISCOVER: UDP 67 -> 68, BOOTREPLY with our xid, message type 2
  const isOffer = (f: Buffer) => f.length > 42 + 243 && f.readUInt16BE(12) === ETHERTYPE_IPV4 && f[23] === IPPROTO_UDP && f.readUInt16BE(34) === 67 && f.readUInt16BE(36) === 68 &&
    f[42] === 2 && f.readUInt32BE(46) === 0x5eed && f.subarray(42 + 240).includes(Buffer.from([53, 1, 2]));
  try {
    await waitFor(() => { const r = mine(); return r.some(isArpReply) && r.some(isEchoReply) && r.some(isOffer); }, { what: `ARP, echo and DHCP answers after the fuzz (seed ${seed})`, timeoutMs: 15_000 });
  } finally {
    good.close();
    evil.close();
  }
  // nothing a handler threw: the gateway's own handlers and timers, DHCP and DNS count theirs
  const end = net.stats() as Stats;
  assert.deepEqual({ gateway: end.gateway.handlerErrors, dhcp: end.dhcp.errors, dns: end.dns.errors }, { gateway: 0, dhcp: 0, dns: 0 }, `a handler threw (seed ${seed})`);
});

type Stats = {
  gateway: { malformed: number; handlerErrors: number };
  tcp: { connections: number };
  dhcp: { errors: number };
  dns: { errors: number };
  tftp: unknown; udpNat: unknown; icmpNat: unknown;
};

/** A DHCP DISCOVER from `mac` (broadcast, from 0.0.0.0). */
function dhcpDiscover(mac: Buffer, xid: number): Buffer {
  const bootp = Buffer.alloc(240 + 4);
  bootp[0] = 1; bootp[1] = 1; bootp[2] = 6;
  bootp.writeUInt32BE(xid, 4);
  bootp.writeUInt16BE(0x8000, 10);
  mac.copy(bootp, 28);
  bootp.writeUInt32BE(0x63825363, 236);
  Buffer.from([53, 1, 1, 255]).copy(bootp, 240);
  const f = Buffer.alloc(14 + 20 + 8 + bootp.length);
  let o = writeEthernet(f, 0, BCAST, mac, ETHERTYPE_IPV4);
  o = writeIpv4(f, o, 0, ip('255.255.255.255'), IPPROTO_UDP, 8 + bootp.length);
  writeUdp(f, o, 68, 67, bootp.length);
  bootp.copy(f, o + 8);
  finishUdpV4(f, o, 0, ip('255.255.255.255'));
  return f;
}
