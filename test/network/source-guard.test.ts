// The source guard's rules, one frame at a time: which port may send from which address, and
// what changes hands when (no sockets, an injected clock). The end-to-end cases (a flooding
// guest next to a good one, over a network's stream socket) are in hostile-sources.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Port } from '../../src/link/port.ts';
import { Switch } from '../../src/switch/switch.ts';
import { SourceGuard, type SourceGuardOptions } from '../../src/network/source-guard.ts';
import { ManualClock } from '../../src/stack/timers.ts';
import { addr6, addrToString } from '../../src/stack/addr.ts';
import { writeEthernet } from '../../src/wire/ethernet.ts';
import { writeIpv4 } from '../../src/wire/ipv4.ts';
import { writeIpv6 } from '../../src/wire/ipv6.ts';
import { writeArp } from '../../src/wire/arp.ts';
import { macKey, parseIp4, parseIp6, parseMac } from '../../src/wire/addr.ts';

class MemPort extends Port {
  sent: Buffer[] = [];
  constructor(name: string) { super('mem', name); }
  send(frame: Buffer): void { this.sent.push(Buffer.from(frame)); }
  inject(frame: Buffer): void { this.deliver(frame); }
  protected closeTransport(): void {}
}

const ip = (s: string) => parseIp4(s)!;
const mac = (s: string) => parseMac(s)!;
const b6 = (s: string) => parseIp6(s)!;
const GW_MAC = mac('52:55:0a:00:00:01');
const A = mac('52:54:00:00:00:0a');
const B = mac('52:54:00:00:00:0b');
const BCAST = mac('ff:ff:ff:ff:ff:ff');

function v4(src: string, srcMac = A, proto = 6, sport = 1000, dport = 80): Buffer {
  const f = Buffer.alloc(14 + 20 + 8);
  writeEthernet(f, 0, GW_MAC, srcMac, 0x0800);
  writeIpv4(f, 14, ip(src), ip('10.0.0.1'), proto, 8);
  f.writeUInt16BE(sport, 34);
  f.writeUInt16BE(dport, 36);
  return f;
}

function arp(senderIp: string, srcMac = A, senderMac = srcMac): Buffer {
  const f = Buffer.alloc(42);
  writeEthernet(f, 0, BCAST, srcMac, 0x0806);
  writeArp(f, 14, 2, senderMac, ip(senderIp), GW_MAC, ip('10.0.0.1'));
  return f;
}

/** An IPv6 packet with an ICMPv6 message of `type` (and an NA/NS target). */
function v6(src: string, type = 128, target?: string, srcMac = A): Buffer {
  const f = Buffer.alloc(14 + 40 + 24);
  writeEthernet(f, 0, GW_MAC, srcMac, 0x86dd);
  writeIpv6(f, 14, b6(src), b6('fd00::1'), 58, 24);
  f[54] = type;
  if (target) b6(target).copy(f, 62);
  return f;
}

function bed(over: Partial<SourceGuardOptions> = {}) {
  const clock = new ManualClock();
  const sw = new Switch();
  const owners4 = new Map<number, Buffer>();
  const owners6 = new Map<string, Buffer>();
  const released: string[] = [];
  const tooMany: string[] = [];
  const g = new SourceGuard({
    net: ip('10.0.0.0'), prefix: 24,
    gatewayOwns: (a) => a === ip('10.0.0.1') || a === addr6(b6('fd00::1')) || a === addr6(b6('fe80::1')),
    prefix6: { prefix: b6('fd00::'), len: 64 },
    owner4: (a) => { const m = owners4.get(a); return m ? macKey(m, 0) : -1; },
    owner6: (b, o) => owners6.get(addrToString(addr6(b, o))) ?? null,
    portOfMac: (b, o) => sw.portOf(b, o),
    clock,
    onRelease: (a, from, why) => released.push(`${addrToString(a)} from ${from.peer}: ${why}`),
    onTooMany: (p, max, isV6) => tooMany.push(`${p.peer} ${isV6 ? 'v6' : 'v4'} ${max}`),
    ...over,
  });
  const ports = ['pa', 'pb'].map((n) => new MemPort(n));
  const sps = ports.map((p) => { const sp = sw.attach(p); sp.guard = g.add(p, 1).check; return sp; });
  const send = (i: number, f: Buffer): boolean => {
    const before = sps[i].drops.guard;
    ports[i].inject(f);
    return sps[i].drops.guard === before;
  };
  const held = (i: number) => g.addressesOf(ports[i]).map(addrToString).sort();
  return { g, sw, clock, ports, sps, send, held, owners4, owners6, released, tooMany };
}

// ---- IPv4 ----

test('source guard: a port learns the first addresses it sends from; another port may not use them', () => {
  const t = bed();
  assert.equal(t.send(0, v4('10.0.0.50')), true);
  assert.equal(t.send(0, v4('10.0.0.50')), true);
  assert.deepEqual(t.held(0), ['10.0.0.50']);
  assert.equal(t.send(1, v4('10.0.0.50', B)), false, 'taken by port a');
  assert.equal(t.g.portAddrs(t.ports[1])!.drops.taken, 1);
  assert.equal(t.sps[1].drops.guard, 1, 'counted by the switch too');
  assert.deepEqual(t.held(1), []);
  t.sw.close();
});

test('source guard: off-subnet, multicast, broadcast, network and gateway sources are dropped; 169.254/16 is learned', () => {
  const t = bed();
  for (const s of ['192.0.2.7', '10.0.1.5', '224.0.0.5', '255.255.255.255']) assert.equal(t.send(0, v4(s)), false, s);
  for (const s of ['10.0.0.0', '10.0.0.255', '10.0.0.1']) assert.equal(t.send(0, v4(s)), false, s);
  const d = t.g.portAddrs(t.ports[0])!.drops;
  assert.deepEqual([d.offSubnet, d.reserved], [4, 3]);
  assert.equal(t.send(0, v4('169.254.3.4')), true);
  assert.deepEqual(t.held(0), ['169.254.3.4']);
  t.sw.close();
});

test('source guard: 0.0.0.0 only for DHCP (UDP 68 -> 67)', () => {
  const t = bed();
  assert.equal(t.send(0, v4('0.0.0.0', A, 17, 68, 67)), true);
  assert.equal(t.send(0, v4('0.0.0.0', A, 17, 68, 53)), false);
  assert.equal(t.send(0, v4('0.0.0.0', A, 6, 68, 67)), false);
  assert.equal(t.g.portAddrs(t.ports[0])!.drops.unspecified, 2);
  assert.deepEqual(t.held(0), [], 'nothing learned from 0.0.0.0');
  t.sw.close();
});

test('source guard: a leased or static address belongs to its MAC\'s port; it moves there and the old holder\'s flows are closed', () => {
  const t = bed();
  assert.equal(t.send(0, v4('10.0.0.60')), true, 'port a uses .60 first');
  t.owners4.set(ip('10.0.0.60'), B); // then DHCP gives .60 to B (on port b)
  assert.equal(t.send(1, v4('10.0.0.60', B)), true, 'the owner gets it');
  assert.deepEqual(t.released, ['10.0.0.60 from pa: its address was leased to a guest on another port']);
  assert.deepEqual([t.held(0), t.held(1)], [[], ['10.0.0.60']]);
  assert.equal(t.send(0, v4('10.0.0.60')), false, 'port a may no longer send from it');
  assert.equal(t.g.portAddrs(t.ports[0])!.drops.taken, 1);
  // a MAC that is not the owner cannot take an owned address, even unused
  t.owners4.set(ip('10.0.0.61'), B);
  assert.equal(t.send(0, v4('10.0.0.61')), false);
  // the owner's MAC behind another MAC on the same port (a nested guest) may
  t.ports[1].inject(v4('10.0.0.60', B)); // B is learned on port b
  assert.equal(t.send(1, v4('10.0.0.61', mac('52:54:00:00:00:0c'))), true);
  t.sw.close();
});

test('source guard: at most max4 learned addresses per port; an idle one is given up for a new one, a busy one is not', () => {
  const t = bed({ max4: 2, evictIdleMs: 60_000 });
  assert.equal(t.send(0, v4('10.0.0.10')), true);
  t.clock.t += 10_000;
  assert.equal(t.send(0, v4('10.0.0.11')), true);
  assert.equal(t.send(0, v4('10.0.0.12')), false, 'over the cap while both are in use');
  assert.deepEqual(t.tooMany, ['pa v4 2']);
  assert.equal(t.g.portAddrs(t.ports[0])!.drops.tooMany, 1);
  t.clock.t += 55_000; // .10 idle 65 s, .11 idle 55 s
  assert.equal(t.send(0, v4('10.0.0.12')), true, 'the idle .10 makes room');
  assert.deepEqual(t.held(0), ['10.0.0.11', '10.0.0.12']);
  assert.deepEqual(t.released, ['10.0.0.10 from pa: the port used more addresses than it may hold']);
  // leased addresses do not count against the cap
  t.owners4.set(ip('10.0.0.90'), A);
  assert.equal(t.send(0, v4('10.0.0.90')), true);
  assert.deepEqual(t.held(0), ['10.0.0.11', '10.0.0.12', '10.0.0.90']);
  t.sw.close();
});

test('source guard: a port that goes frees its addresses for others', () => {
  const t = bed();
  t.send(0, v4('10.0.0.70'));
  assert.equal(t.g.holderOf(ip('10.0.0.70')), t.ports[0]);
  t.ports[0].close('test');
  // the network removes a closed port (Network.portGone)
  assert.deepEqual(t.g.remove(t.ports[0]).map(addrToString), ['10.0.0.70']);
  assert.equal(t.g.holderOf(ip('10.0.0.70')), null);
  assert.equal(t.send(1, v4('10.0.0.70', B)), true);
  assert.equal(t.g.holderOf(ip('10.0.0.70')), t.ports[1]);
  t.sw.close();
});

test('source guard: ARP needs the frame\'s own MAC as sender and a held (or probing) sender address', () => {
  const t = bed();
  assert.equal(t.send(0, arp('0.0.0.0')), true, 'a probe');
  assert.equal(t.send(0, arp('10.0.0.20')), true, 'a gratuitous ARP claims a free address');
  assert.deepEqual(t.held(0), ['10.0.0.20']);
  assert.equal(t.send(1, arp('10.0.0.20', B)), false, 'poisoning: another port announcing it');
  assert.equal(t.send(1, arp('10.0.0.21', B, A)), false, 'a sender MAC that is not the frame\'s');
  assert.equal(t.g.portAddrs(t.ports[1])!.drops.malformed, 1);
  assert.equal(t.send(0, arp('10.0.0.1')), false, 'the gateway\'s address');
  t.sw.close();
});

test('source guard: other VLANs and other ethertypes pass unchecked; a port without a guard is not checked', () => {
  const t = bed();
  const tagged = Buffer.alloc(14 + 4 + 20);
  writeEthernet(tagged, 0, GW_MAC, A, 0x0800, 7);
  writeIpv4(tagged, 18, ip('192.0.2.1'), ip('10.0.0.1'), 6, 0);
  const sw = new Switch();
  const trunk = new MemPort('trunk');
  const sp = sw.attach(trunk, { vlan: { mode: 'trunk', allowed: [7] } });
  sp.guard = t.g.add(trunk, 1).check;
  trunk.inject(tagged);
  assert.equal(sp.drops.guard, 0, 'VLAN 7 never reaches the gateway');
  const other = Buffer.alloc(60);
  writeEthernet(other, 0, GW_MAC, A, 0x88b5);
  assert.equal(t.send(0, other), true);
  sw.close();
  t.sw.close();
});

// ---- IPv6 ----

test('source guard (IPv6): link-local and on-prefix sources are learned; off-prefix, multicast and the gateway\'s are dropped', () => {
  const t = bed();
  assert.equal(t.send(0, v6('fe80::5054:ff:fe00:a')), true);
  assert.equal(t.send(0, v6('fd00::5054:ff:fe00:a')), true);
  assert.deepEqual(t.held(0), ['fd00::5054:ff:fe00:a', 'fe80::5054:ff:fe00:a']);
  for (const s of ['2001:db8::1', 'fd01::1', 'ff02::1']) assert.equal(t.send(0, v6(s)), false, s);
  assert.equal(t.send(0, v6('fd00::1')), false, 'the router address');
  assert.equal(t.send(0, v6('fe80::1')), false, 'the router\'s link-local address');
  const d = t.g.portAddrs(t.ports[0])!.drops;
  assert.deepEqual([d.offSubnet, d.reserved], [3, 2]);
  assert.equal(t.send(1, v6('fe80::5054:ff:fe00:a', 128, undefined, B)), false, 'port a\'s link-local address');
  t.sw.close();
});

test('source guard (IPv6): :: only for DAD, router solicitations and MLD', () => {
  const t = bed();
  assert.equal(t.send(0, v6('::', 135, 'fd00::99')), true, 'DAD');
  assert.equal(t.send(0, v6('::', 133)), true, 'RS');
  assert.equal(t.send(0, v6('::', 143)), true, 'MLDv2 report');
  assert.equal(t.send(0, v6('::', 128)), false, 'an echo request from ::');
  assert.equal(t.g.portAddrs(t.ports[0])!.drops.unspecified, 1);
  assert.deepEqual(t.held(0), [], 'a DAD probe claims nothing');
  t.sw.close();
});

test('source guard (IPv6): a neighbour advertisement must advertise a held target; DHCPv6 addresses belong to their MAC', () => {
  const t = bed();
  t.send(0, v6('fd00::a'));
  assert.equal(t.send(1, v6('fe80::b', 136, 'fd00::a', B)), false, 'advertising port a\'s address');
  assert.equal(t.g.portAddrs(t.ports[1])!.drops.taken, 1);
  assert.equal(t.send(1, v6('fe80::b', 136, 'fd00::b', B)), true, 'its own');
  assert.deepEqual(t.held(1), ['fd00::b', 'fe80::b']);
  t.owners6.set('fd00::a', B);
  assert.equal(t.send(1, v6('fd00::a', 128, undefined, B)), true, 'DHCPv6 gave fd00::a to B');
  assert.deepEqual(t.released, ['fd00::a from pa: its address was leased to a guest on another port']);
  t.sw.close();
});

test('source guard (IPv6): at most max6 learned addresses per port', () => {
  const t = bed({ max6: 3 });
  for (let i = 1; i <= 3; i++) assert.equal(t.send(0, v6(`fd00::${i}:1`)), true);
  assert.equal(t.send(0, v6('fd00::4:1')), false);
  assert.deepEqual(t.tooMany, ['pa v6 3']);
  assert.equal(t.send(0, v4('10.0.0.5')), true, 'IPv4 has its own cap');
  t.sw.close();
});
