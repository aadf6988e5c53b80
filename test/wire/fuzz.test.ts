// Fuzz: every parser must survive arbitrary input without throwing and keep every reported offset
// inside [off, end]. Seeded, so a failure reproduces with WIRE_FUZZ_SEED=<seed printed in the error>.
// WIRE_FUZZ_ITERS scales the random-buffer run (default 200k).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EthernetHeader, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parseEthernet } from '../../src/wire/ethernet.ts';
import { ArpPacket, parseArp } from '../../src/wire/arp.ts';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Ipv4Header, parseIpv4, parseIpv4Quoted } from '../../src/wire/ipv4.ts';
import { Ipv6Header, parseIpv6 } from '../../src/wire/ipv6.ts';
import { Icmpv4Header, parseIcmpv4, writeIcmpv4Error, ICMP_DEST_UNREACH } from '../../src/wire/icmpv4.ts';
import { Icmpv6Header, parseIcmpv6 } from '../../src/wire/icmpv6.ts';
import { parseUdp, UdpHeader } from '../../src/wire/udp.ts';
import { parseTcp, TcpHeader, TcpOptions, writeTcp, finishTcpV4, TCP_ACK } from '../../src/wire/tcp.ts';
import { writeIpv4 } from '../../src/wire/ipv4.ts';
import { writeEthernet } from '../../src/wire/ethernet.ts';
import { pseudoSumV4, pseudoSumV6 } from '../../src/wire/checksum.ts';
import { FRAMES } from './_vectors.ts';
import { Rng, seedFromEnv } from './_util.ts';

const SEED = seedFromEnv('WIRE_FUZZ_SEED');

type Parser = (buf: Buffer, off: number, end: number, out: never, pseudo?: number) => string | null;
interface Target { name: string; parse: Parser; out: object; keys: string[]; pseudo: boolean }

function offsetKeys(o: object): string[] {
  // fragmentOffset (IPv4/IPv6) is the protocol field, a position in the original datagram.
  return Object.keys(o).filter((k) => (k.endsWith('Offset') || k.endsWith('End')) && k !== 'fragmentOffset');
}
function target(name: string, parse: unknown, out: object, pseudo = false): Target {
  return { name, parse: parse as Parser, out, keys: offsetKeys(out), pseudo };
}

const eth = new EthernetHeader(), arp = new ArpPacket(), ip4 = new Ipv4Header(), ip6 = new Ipv6Header();
const ic4 = new Icmpv4Header(), ic6 = new Icmpv6Header(), udp = new UdpHeader(), tcp = new TcpHeader();
const TARGETS: Target[] = [
  target('ethernet', parseEthernet, eth),
  target('arp', parseArp, arp),
  target('ipv4', parseIpv4, ip4),
  target('ipv4quoted', parseIpv4Quoted, ip4),
  target('ipv6', parseIpv6, ip6),
  target('icmpv4', parseIcmpv4, ic4),
  target('icmpv6', parseIcmpv6, ic6, true),
  target('udp', parseUdp, udp, true),
  target('tcp', parseTcp, tcp, true),
];

function run(t: Target, buf: Buffer, off: number, end: number, pseudo: number, ctx: () => string): string | null {
  let r: string | null;
  try {
    r = t.pseudo ? t.parse(buf, off, end, t.out as never, pseudo) : t.parse(buf, off, end, t.out as never);
  } catch (err) {
    throw new Error(`${t.name} threw (${ctx()}): ${String(err)}`);
  }
  if (r !== null) {
    if (typeof r !== 'string') throw new Error(`${t.name} returned ${typeof r} (${ctx()})`);
    return r;
  }
  const o = t.out as Record<string, number>;
  for (const k of t.keys) {
    const v = o[k];
    if (v !== -1 && !(v >= off && v <= end)) throw new Error(`${t.name}.${k} = ${v} outside [${off}, ${end}] (${ctx()})`);
  }
  return null;
}

test('fuzz: random buffers through every parser', (tc) => {
  const seed = SEED;
  const iters = Number(process.env.WIRE_FUZZ_ITERS ?? 200_000);
  tc.diagnostic(`seed ${seed}, ${iters} buffers`);
  const rng = new Rng(seed);
  const buf = Buffer.alloc(2000);
  const accepted = new Map<string, number>();
  for (let i = 0; i < iters; i++) {
    const len = rng.int(2001);
    const b = buf.subarray(0, len);
    rng.fill(b);
    const off = rng.int(3) === 0 ? 0 : rng.int(Math.min(len, 64) + 1);
    const end = rng.int(2) === 0 ? len : off + rng.int(len - off + 1);
    // Hints at off so deeper code paths are reached more often than pure noise allows.
    const n = end - off;
    const hint = rng.int(10);
    if (hint === 0 && n > 0) b[off] = 0x40 | (b[off] & 15); // IPv4 version, any IHL
    else if (hint === 1 && n > 3) { b[off] = 0x45; b.writeUInt16BE(rng.int(n + 1), off + 2); }
    else if (hint === 2 && n > 6) { b[off] = 0x60; b.writeUInt16BE(rng.int(n - 39 > 0 ? n - 39 : 1), off + 4); b[off + 6] = [0, 43, 44, 60, 51][rng.int(5)]; }
    else if (hint === 3 && n > 13) { b[off + 12] = 0x81; b[off + 13] = 0; }
    else if (hint === 4 && n > 5) b.writeUInt16BE(rng.int(n + 1), off + 4); // plausible UDP length
    else if (hint === 5 && n > 6) b.set([0, 1, 8, 0, 6, 4], off); // ARP
    else if (hint === 6 && n > 12) b[off + 12] = (5 + rng.int(11)) << 4; // TCP data offset
    else if (hint === 7 && n > 0) b[off] = [133, 134, 135, 136, 137][rng.int(5)]; // ND types
    const pseudo = rng.int(2) === 0 ? -1 : rng.u32() % 0x40000;
    for (const t of TARGETS) {
      const r = run(t, b, off, end, pseudo, () => `seed ${seed} iter ${i} len ${len} off ${off} end ${end}`);
      if (r === null) accepted.set(t.name, (accepted.get(t.name) ?? 0) + 1);
    }
    // Bytes outside [off, end) must not influence the result: re-randomize them and compare.
    if ((i & 15) === 0) {
      const before = TARGETS.map((t) => {
        const r = run(t, b, off, end, pseudo, () => `seed ${seed} iter ${i}`);
        return JSON.stringify([r, t.out]);
      });
      rng.fill(b, 0, off);
      rng.fill(b, end, len);
      TARGETS.forEach((t, k) => {
        const r = run(t, b, off, end, pseudo, () => `seed ${seed} iter ${i}`);
        if (JSON.stringify([r, t.out]) !== before[k]) {
          assert.fail(`${t.name} depends on bytes outside [off, end) (seed ${seed} iter ${i} len ${len} off ${off} end ${end})`);
        }
      });
    }
    // Out-of-range arguments must be refused, not read.
    if ((i & 1023) === 0) {
      for (const t of TARGETS) {
        assert.equal(typeof run(t, b, 0, len + 1 + rng.int(100), pseudo, () => `seed ${seed} end beyond buffer`), 'string');
        assert.equal(typeof run(t, b, -1 - rng.int(10), len, pseudo, () => `seed ${seed} negative off`), 'string');
      }
    }
  }
  tc.diagnostic(`accepted: ${[...accepted].map(([k, v]) => `${k} ${v}`).join(', ')}`);
});

/** Parses a whole frame layer by layer, checking offsets at each step; returns layers parsed. */
function parseFrame(b: Buffer, ctx: () => string): number {
  const T = Object.fromEntries(TARGETS.map((t) => [t.name, t]));
  if (run(T.ethernet, b, 0, b.length, -1, ctx) !== null) return 0;
  const po = eth.payloadOffset, pe = eth.payloadEnd;
  if (eth.ethertype === ETHERTYPE_ARP) return run(T.arp, b, po, pe, -1, ctx) === null ? 2 : 1;
  let proto: number, lo: number, le: number, ps4 = -1;
  let v6 = false;
  if (eth.ethertype === ETHERTYPE_IPV4) {
    if (run(T.ipv4, b, po, pe, -1, ctx) !== null) return 1;
    proto = ip4.protocol; lo = ip4.payloadOffset; le = ip4.payloadEnd;
    ps4 = pseudoSumV4(ip4.src, ip4.dst, proto, le - lo);
  } else if (eth.ethertype === ETHERTYPE_IPV6) {
    if (run(T.ipv6, b, po, pe, -1, ctx) !== null) return 1;
    proto = ip6.protocol; lo = ip6.payloadOffset; le = ip6.payloadEnd; v6 = true;
    ps4 = pseudoSumV6(b, ip6.srcOffset, ip6.dstOffset, proto, le - lo);
  } else {
    return 1;
  }
  let r: string | null = 'none';
  if (proto === IPPROTO_TCP) r = run(T.tcp, b, lo, le, ps4, ctx);
  else if (proto === IPPROTO_UDP) r = v6 ? runUdp6(b, lo, le, ps4, ctx) : run(T.udp, b, lo, le, ps4, ctx);
  else if (proto === IPPROTO_ICMP) {
    r = run(T.icmpv4, b, lo, le, -1, ctx);
    if (r === null && ic4.embeddedOffset >= 0) run(T.ipv4quoted, b, ic4.embeddedOffset, ic4.payloadEnd, -1, ctx);
  } else if (proto === IPPROTO_ICMPV6) r = run(T.icmpv6, b, lo, le, ps4, ctx);
  return r === null ? 3 : 2;
}
function runUdp6(b: Buffer, lo: number, le: number, ps: number, ctx: () => string): string | null {
  try {
    const r = parseUdp(b, lo, le, udp, ps, true);
    if (r === null && (udp.payloadOffset < lo || udp.payloadEnd > le)) throw new Error('udp6 offsets');
    return r;
  } catch (err) {
    throw new Error(`udp6 (${ctx()}): ${String(err)}`);
  }
}

function extraFrames(): Buffer[] {
  // TCP with SACK blocks, and an ICMP error quoting a UDP datagram, to widen the corpus.
  const mac = Buffer.from('525400123456', 'hex');
  const b = Buffer.alloc(120);
  let p = writeEthernet(b, 0, mac, mac, ETHERTYPE_IPV4);
  const o = new TcpOptions();
  o.tsPresent = true;
  o.sackCount = 2;
  o.sackBlocks.set([1, 2, 3, 4]);
  const tcpOff = p + 20;
  const q = writeTcp(b, tcpOff, 1, 2, 3, 4, TCP_ACK, 5, o);
  writeIpv4(b, p, 1, 2, IPPROTO_TCP, q - tcpOff + 10);
  finishTcpV4(b, tcpOff, q - tcpOff + 10, 1, 2);
  const sack = b.subarray(0, q + 10);
  const c = Buffer.alloc(100);
  p = writeEthernet(c, 0, mac, mac, ETHERTYPE_IPV4);
  const end = writeIcmpv4Error(c, p + 20, ICMP_DEST_UNREACH, 3, 0, FRAMES.udp_dns, 14, FRAMES.udp_dns.length);
  writeIpv4(c, p, 2, 1, IPPROTO_ICMP, end - p - 20);
  return [Buffer.from(sack), c.subarray(0, end)];
}

test('fuzz: mutated valid frames through the full parse chain', (tc) => {
  const seed = SEED;
  tc.diagnostic(`seed ${seed}`);
  const rng = new Rng(seed ^ 0x5bd1e995);
  const corpus = [...Object.values(FRAMES), ...extraFrames()];
  // Every unmutated frame parses through all its layers.
  for (const f of corpus) assert.ok(parseFrame(f, () => 'corpus') >= 2);
  let deep = 0;
  const iters = 100_000;
  for (let i = 0; i < iters; i++) {
    const src = corpus[rng.int(corpus.length)];
    let m = Buffer.from(src);
    const kind = rng.int(4);
    if (kind === 0) {
      for (let n = 1 + rng.int(8); n > 0; n--) m[rng.int(m.length)] ^= 1 << rng.int(8);
    } else if (kind === 1) {
      m = m.subarray(0, rng.int(m.length + 1));
    } else if (kind === 2) {
      for (let n = 1 + rng.int(4); n > 0; n--) m[rng.int(m.length)] = rng.int(256);
      m = m.subarray(0, m.length - rng.int(Math.min(m.length, 8) + 1));
    } else {
      const grown = Buffer.alloc(m.length + rng.int(64));
      m.copy(grown);
      rng.fill(grown, m.length);
      m = grown;
      m[rng.int(m.length)] ^= 1 << rng.int(8);
    }
    if (parseFrame(m, () => `seed ${seed} iter ${i} kind ${kind} frame ${m.toString('hex')}`) === 3) deep++;
  }
  tc.diagnostic(`${deep} of ${iters} mutated frames parsed down to layer 4`);
  assert.ok(deep > iters / 10, 'mutations should often leave frames parseable');
});
