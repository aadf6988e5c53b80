// A hostile guest against a whole user-mode network with IPv6, over its real stream socket:
// random IPv6 frames and valid ones of every IPv6 protocol the gateway speaks (NDP
// solicitations and advertisements, router solicitations, ICMPv6 echo and errors, UDP to DNS,
// DHCPv6 and closed ports, TCP with random flags, extension-header chains, fragments), with
// random sources (on-link, off-link, unspecified, multicast), bit flips and truncations.
// Afterwards: no handler threw, state stayed bounded (neighbours, the address table, TCP,
// reassembly), and a well-behaved guest still gets its NDP answer and ping6 reply.
//
// Safety: every destination is the gateway, its segment or multicast. A bit flip in a
// destination breaks the L4 checksum (its pseudo-header covers the addresses), so nothing
// reaches the NAT with an address beyond the segment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import dgram from 'node:dgram';
import { random } from '../helpers/prng.ts';
import { Network } from '../../src/network/network.ts';
import { parseAttach } from '../../src/network/attach.ts';
import { ip6 } from '../../src/stack/addr.ts';
import { ETHERTYPE_IPV6, writeEthernet } from '../../src/wire/ethernet.ts';
import { IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from '../../src/wire/ipv4.ts';
import { IPV6_NH_DSTOPTS, IPV6_NH_FRAGMENT, IPV6_NH_HOPOPTS, writeIpv6, writeIpv6Fragment } from '../../src/wire/ipv6.ts';
import {
  ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, ND_ROUTER_SOLICIT, finishIcmpv6,
  writeIcmpv6Echo, writeNeighborSolicit,
} from '../../src/wire/icmpv6.ts';
import { finishUdpV6, writeUdp } from '../../src/wire/udp.ts';
import { TcpOptions, finishTcpV6, writeTcp } from '../../src/wire/tcp.ts';
import { macToString, parseIp4, parseIp6, parseMac } from '../../src/wire/addr.ts';
import { StreamPeer, tmpDir } from '../link/peers.ts';
import { waitFor } from '../helpers/wait.ts';

const ip = (s: string) => parseIp4(s)!;
const b6 = (s: string) => parseIp6(s)!;
const GW = parseMac('52:55:0a:00:02:02')!;
const ME = parseMac('52:54:00:fe:00:06')!;

function pick<T>(rand: () => number, xs: T[]): T { return xs[Math.floor(rand() * xs.length)]; }

/** A valid IPv6 frame of a random kind from a random source. */
function validFrame(rand: () => number): Buffer {
  const b = Buffer.alloc(1700);
  const sources = ['fe80::5054:ff:fefe:6', 'fec0::5054:ff:fefe:6', '::', 'ff02::1', '2001:db8::bad', `fec0::${Math.floor(rand() * 65536).toString(16)}`];
  // Safety: only the gateway, its segment and multicast, never an address the NAT would carry
  // off this machine (this test runs in the root namespace, which may have a route out)
  const dests = ['fec0::2', 'fec0::3', 'fe80::2', 'ff02::1', 'ff02::2', 'ff02::1:2', 'ff02::1:ff00:2', 'fec0::77'];
  const src = b6(pick(rand, sources));
  const dst = b6(pick(rand, dests));
  const dstMac = dst[0] === 0xff ? Buffer.from([0x33, 0x33, dst[12], dst[13], dst[14], dst[15]]) : GW;
  writeEthernet(b, 0, dstMac, ME, ETHERTYPE_IPV6);
  const kind = Math.floor(rand() * 7);
  const l4 = 54;
  let proto: number;
  let len: number;
  switch (kind) {
    case 0: { // NS / NA / RS with random options
      const type = pick(rand, [ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT, ND_ROUTER_SOLICIT]);
      len = writeNeighborSolicit(b, l4, b6(pick(rand, dests)), rand() < 0.5 ? ME : null) - l4;
      b[l4] = type;
      if (rand() < 0.4) { const extra = 8 * Math.floor(rand() * 4); for (let i = 0; i < extra; i++) b[l4 + len + i] = Math.floor(rand() * 256); len += extra; }
      proto = IPPROTO_ICMPV6;
      break;
    }
    case 1: { // echo request, any size
      const n = Math.floor(rand() * 1400);
      len = writeIcmpv6Echo(b, l4, ICMPV6_ECHO_REQUEST, 5, Math.floor(rand() * 65536), n) - l4;
      proto = IPPROTO_ICMPV6;
      break;
    }
    case 2: { // ICMPv6 of a random type (errors quoting garbage, RAs, redirects)
      len = 8 + Math.floor(rand() * 200);
      for (let i = 0; i < len; i++) b[l4 + i] = Math.floor(rand() * 256);
      b[l4] = pick(rand, [1, 2, 3, 4, 134, 137, 130, 143, Math.floor(rand() * 256)]);
      proto = IPPROTO_ICMPV6;
      break;
    }
    case 3: { // UDP to DNS, DHCPv6, TFTP, a closed port
      const n = Math.floor(rand() * 600);
      for (let i = 0; i < n; i++) b[l4 + 8 + i] = Math.floor(rand() * 256);
      if (rand() < 0.5) b[l4 + 8] = pick(rand, [1, 3, 5, 6, 8, 9, 11]); // a DHCPv6 message type
      writeUdp(b, l4, 546, pick(rand, [53, 547, 69, 9]), n);
      len = 8 + n;
      proto = IPPROTO_UDP;
      break;
    }
    case 4: { // TCP with random flags and options
      const o = new TcpOptions();
      if (rand() < 0.5) { o.mss = Math.floor(rand() * 70000); o.wscale = Math.floor(rand() * 20); o.sackPermitted = rand() < 0.5; }
      len = writeTcp(b, l4, 40000 + Math.floor(rand() * 8), pick(rand, [53, 80, 22]), Math.floor(rand() * 2 ** 32), Math.floor(rand() * 2 ** 32), Math.floor(rand() * 256), Math.floor(rand() * 65536), o) - l4;
      proto = IPPROTO_TCP;
      break;
    }
    case 5: { // a chain of extension headers in front of UDP
      const hops = 1 + Math.floor(rand() * 10);
      let p = l4;
      for (let h = 0; h < hops; h++) {
        b[p] = h === hops - 1 ? IPPROTO_UDP : pick(rand, [IPV6_NH_DSTOPTS, IPV6_NH_HOPOPTS, 43, 60]);
        b[p + 1] = Math.floor(rand() * 3);
        p += (b[p + 1] + 1) * 8;
      }
      writeUdp(b, p, 1, 53, 4);
      len = p + 12 - l4;
      proto = IPV6_NH_DSTOPTS;
      break;
    }
    default: { // a fragment with a random offset and id
      const n = 8 * (1 + Math.floor(rand() * 100));
      writeIpv6Fragment(b, l4, pick(rand, [IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_TCP]), 8 * Math.floor(rand() * 8192), rand() < 0.7, Math.floor(rand() * 16));
      for (let i = 0; i < n; i++) b[l4 + 8 + i] = Math.floor(rand() * 256);
      len = 8 + n;
      proto = IPV6_NH_FRAGMENT;
    }
  }
  writeIpv6(b, 14, src, dst, proto, len, pick(rand, [255, 64, 1]));
  if (proto === IPPROTO_ICMPV6) finishIcmpv6(b, l4, len, 22, 38);
  else if (proto === IPPROTO_UDP) finishUdpV6(b, l4, 22, 38);
  else if (proto === IPPROTO_TCP) finishTcpV6(b, l4, len, 22, 38);
  return b.subarray(0, 54 + len);
}

test('gateway (IPv6): a hostile guest cannot break the network for a good one', { timeout: 90_000 }, async (t) => {
  const seed = Number(process.env.QNET_FUZZ_SEED ?? Date.now() % 1_000_000);
  const rand = random(seed);
  const dir = tmpDir('qnet-gwfuzz6-');
  const sock = path.join(dir, 'u.sock');
  const dns = dgram.createSocket('udp6');
  await new Promise<void>((r) => dns.bind(0, '::1', () => r()));
  const net = await Network.start({
    name: 'fuzz6', mode: 'user', net: ip('10.0.2.0'), prefix: 24, gateway: ip('10.0.2.2'), dns: ip('10.0.2.3'), dhcpStart: ip('10.0.2.15'),
    upstreams: [{ host: '::1', port: dns.address().port }], listen: [parseAttach(`unix:${sock}`)],
    ipv6: { prefix: 'fec0::', prefixLen: 64, router: 'fec0::2', dns: 'fec0::3', linkLocal: 'fe80::2' },
  });
  t.after(() => { net.close(); dns.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const tableBefore = ip6.size;
  const evil = await StreamPeer.connect(sock);
  const N = 20_000;
  for (let i = 0; i < N; i++) {
    let f: Buffer;
    const r = rand();
    if (r < 0.15) {
      f = Buffer.alloc(54 + Math.floor(rand() * 1400));
      for (let j = 14; j < f.length; j++) f[j] = Math.floor(rand() * 256);
      writeEthernet(f, 0, GW, ME, ETHERTYPE_IPV6);
      f[14] = 0x60 | (f[14] & 15);
      b6('fec0::2').copy(f, 38); // random, but never to an address beyond the segment (see validFrame)
    } else {
      f = Buffer.from(validFrame(rand));
      if (r < 0.5) for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) { const p = 14 + Math.floor(rand() * (f.length - 14)); f[p] ^= 1 << Math.floor(rand() * 8); }
      if (r > 0.9) f = f.subarray(0, 14 + Math.floor(rand() * (f.length - 14)));
    }
    evil.send(f);
    // keep the socket's write buffer small: wait for it to drain, now and then
    if (i % 500 === 0) await waitFor(() => evil.sock.writableLength === 0, { what: 'the fuzz writes to drain' });
  }
  // every frame read off the stream (each is at least an Ethernet header, so none is a runt)
  const evilPort = () => (net.stats() as { ports: { macs: string[]; rxFrames: number; rxDropped: number }[] }).ports.find((p) => p.macs.includes(macToString(ME, 0)));
  await waitFor(() => { const p = evilPort(); return p && p.rxFrames + p.rxDropped >= N; }, { what: `${N} fuzz frames read by qnet`, timeoutMs: 60_000, diag: () => JSON.stringify(evilPort()) });
  const st = net.stats() as any;
  assert.equal(st.gateway.handlerErrors, 0, `a handler threw (seed ${seed})`);
  assert.equal(st.dns.errors, 0, `the DNS handler threw (seed ${seed})`);
  assert.ok(st.gateway.malformed > 0, 'nothing was counted as malformed');
  // sources off the prefix never reach the gateway: the port may not send from them
  assert.ok(st.sourceGuard.drops.offSubnet > 0, 'off-prefix sources were not dropped by the source guard');
  assert.ok(st.tcp.connections < 1000, `TCP state grew to ${st.tcp.connections} connections`);
  assert.ok(net.gw.neighbours6.size <= 4096, `${net.gw.neighbours6.size} IPv6 neighbours`);
  assert.ok(net.gw.reassemblies <= 128, `${net.gw.reassemblies} pending reassemblies`);
  assert.ok(ip6.size - tableBefore < 70_000, `the address table grew by ${ip6.size - tableBefore}`);
  if (process.env.QNET_FUZZ_VERBOSE) console.log(JSON.stringify({ gw: st.gateway, ndp: st.ndp, ra: st.ra, tcp: st.tcp, dns: st.dns, table: ip6.size }));

  // a good guest still gets its NDP answer and its ping6 reply
  const good = await StreamPeer.connect(sock);
  const GOOD = parseMac('52:54:00:fe:00:07')!;
  const ll = b6('fe80::5054:ff:fefe:7');
  const ns = Buffer.alloc(54 + 32);
  writeEthernet(ns, 0, Buffer.from([0x33, 0x33, 0xff, 0, 0, 2]), GOOD, ETHERTYPE_IPV6);
  writeIpv6(ns, 14, ll, b6('ff02::1:ff00:2'), IPPROTO_ICMPV6, 32, 255);
  writeNeighborSolicit(ns, 54, b6('fec0::2'), GOOD);
  finishIcmpv6(ns, 54, 32, 22, 38);
  const ping = Buffer.alloc(54 + 8 + 16);
  writeEthernet(ping, 0, GW, GOOD, ETHERTYPE_IPV6);
  writeIpv6(ping, 14, ll, b6('fe80::2'), IPPROTO_ICMPV6, 24);
  writeIcmpv6Echo(ping, 54, ICMPV6_ECHO_REQUEST, 99, 1, 16);
  finishIcmpv6(ping, 54, 24, 22, 38);
  good.send(ns, ping);
  const mineNow = () => good.frames.filter((f) => f.compare(GOOD, 0, 6, 0, 6) === 0 && f.readUInt16BE(12) === ETHERTYPE_IPV6);
  await waitFor(() => mineNow().some((f) => f[54] === ND_NEIGHBOR_ADVERT) && mineNow().some((f) => f[54] === ICMPV6_ECHO_REPLY), { what: `NDP and echo answers after the fuzz (seed ${seed})`, timeoutMs: 15_000 }).catch(() => {});
  const mine = mineNow();
  assert.ok(mine.some((f) => f[54] === ND_NEIGHBOR_ADVERT), `no neighbor advertisement after the fuzz (seed ${seed})`);
  assert.ok(mine.some((f) => f[54] === ICMPV6_ECHO_REPLY), `no echo reply after the fuzz (seed ${seed})`);
  good.close();
  evil.close();
});
