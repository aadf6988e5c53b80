// Issue 13, case 10, at the level of the lease store and the DHCP server with an injected
// clock: per-port holds, short offer holds, declines that count against their port and are
// reclaimed before a client goes without an address.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LeaseStore } from '../../src/services/dhcp-leases.ts';
import { DhcpServer } from '../../src/services/dhcp.ts';
import { checkHostname } from '../../src/services/dhcp-codec.ts';
import { macKey, parseIp4, parseMac } from '../../src/wire/addr.ts';
import { setLogSink } from '../../src/util/log.ts';
import { Bed, BCAST_MAC } from './_harness.ts';

setLogSink(() => {});
const ip = (s: string) => parseIp4(s)!;
const m = (k: number) => parseMac(`52:54:00:aa:00:${k.toString(16).padStart(2, '0')}`)!;
const key = (k: number) => macKey(m(k), 0);

function store(now: { t: number }, poolSize = 6, maxPerPort = 2) {
  return new LeaseStore({
    poolStart: ip('10.0.2.100'), poolSize, reserved: () => false, isHostAddress: () => true,
    staticHosts: [{ mac: '52:54:00:aa:00:ff', ip: '10.0.2.10' }],
    declineHoldMs: 600_000, offerHoldMs: 10_000, maxPerPort, now: () => now.t,
  }, checkHostname);
}

test('lease store: a port holds at most maxPerPort addresses; its own clients still renew; statics do not count', () => {
  const now = { t: 1_000_000 };
  const s = store(now);
  for (const k of [1, 2]) {
    assert.equal(s.portAllows('p', key(k)), true);
    s.bind(key(k), m(k), s.allocate(key(k), 0), 3_600_000, undefined, 'p');
  }
  assert.equal(s.portAllows('p', key(3)), false, 'a third MAC on the port is refused');
  assert.equal(s.portAllows('p', key(1)), true, 'a client that holds an address may renew it');
  assert.equal(s.portAllows('q', key(3)), true, 'another port is not affected');
  assert.equal(s.portAllows('p', macKey(parseMac('52:54:00:aa:00:ff')!, 0)), true, 'a static host is outside the pool and the limit');
  s.forgetPort('p');
  assert.equal(s.portAllows('p', key(3)), true, 'a closed port\'s holds are forgotten');
});

test('lease store: offers are held only offerHoldMs, then count for nothing', () => {
  const now = { t: 1_000_000 };
  const s = store(now);
  const a = s.allocate(key(1), 0);
  s.offer(key(1), m(1), a, undefined, 'p');
  s.offer(key(2), m(2), s.allocate(key(2), 0), undefined, 'p');
  assert.equal(s.portAllows('p', key(3)), false);
  assert.equal(s.grantable(key(9), a), 0, 'an offered address is held for its client');
  now.t += 10_001;
  assert.equal(s.portAllows('p', key(3)), true, 'lapsed offers no longer count');
  assert.equal(s.grantable(key(9), a), a, 'and their addresses are free again');
});

test('lease store: declines count against the declining port and are reclaimed, oldest first, when nothing else is left', () => {
  const now = { t: 1_000_000 };
  const s = store(now, 4, 2);
  const declined: number[] = [];
  for (const k of [1, 2]) {
    const a = s.allocate(key(k), 0);
    s.bind(key(k), m(k), a, 3_600_000, undefined, 'p');
    now.t += 1;
    assert.ok(s.decline(key(k), a));
    declined.push(a);
  }
  assert.equal(s.portAllows('p', key(3)), false, 'two declines held down: the port is at its limit');
  // another port takes the rest of the pool
  for (const k of [5, 6]) s.bind(key(k), m(k), s.allocate(key(k), 0), 3_600_000, undefined, 'q');
  assert.equal(s.freeCount(), 0);
  // pool exhausted: the oldest declined address is reclaimed rather than refusing the client
  const got = s.allocate(key(7), 0);
  assert.equal(got, declined[0]);
  s.bind(key(7), m(7), got, 3_600_000, undefined, 'r');
  assert.equal(s.allocate(key(8), 0), declined[1]);
  // the hold-down lapses by itself too
  now.t += 600_001;
  assert.equal(s.portAllows('p', key(3)), true);
});

test('DHCP server: the default offer hold is 10 s; a port at its limit gets no answer, counted', async () => {
  const bed = await Bed.create();
  const now = { t: 5_000_000 };
  const srv = new DhcpServer(bed.gw, { poolSize: 10, maxLeasesPerPort: 1, portOf: () => 'the-port', now: () => now.t });
  try {
    const discover = (k: number, xid: number): Buffer => {
      const p = Buffer.alloc(300);
      p[0] = 1; p[1] = 1; p[2] = 6;
      p.writeUInt32BE(xid, 4);
      p.writeUInt16BE(0x8000, 10);
      m(k).copy(p, 28);
      p.writeUInt32BE(0x63825363, 236);
      Buffer.from([53, 1, 1, 255]).copy(p, 240);
      return p;
    };
    const mac = (k: number) => `52:54:00:aa:00:0${k}`;
    bed.sendUdp(mac(1), 0, 68, 0xffffffff, 67, discover(1, 11), BCAST_MAC);
    const o1 = await bed.recvUdp((d) => d.dstPort === 68 && d.payload.readUInt32BE(4) === 11);
    assert.ok(o1, 'the first client gets an offer');
    bed.sendUdp(mac(2), 0, 68, 0xffffffff, 67, discover(2, 12), BCAST_MAC);
    // the refusal is synchronous: the counter moves once the datagram is in
    for (let i = 0; i < 500 && srv.stats.portLimited === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(srv.stats.portLimited, 1);
    assert.equal(srv.stats.offer, 1, 'no offer for the second client');
    now.t += 10_001; // the first offer's hold lapses
    bed.sendUdp(mac(2), 0, 68, 0xffffffff, 67, discover(2, 13), BCAST_MAC);
    const o2 = await bed.recvUdp((d) => d.dstPort === 68 && d.payload.readUInt32BE(4) === 13);
    assert.ok(o2, 'after 10 s the port has room again');
    assert.equal(srv.stats.portLimited, 1);
  } finally { srv.close(); bed.close(); }
});
