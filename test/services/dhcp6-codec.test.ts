// The DHCPv6 codec and lease store on their own: round trips through the writers and the
// parser, hostile input (truncation at every length, lengths that lie, bad nesting, huge
// counts, random bytes) that must come back as a counted reason and never as an exception,
// and the pool's allocation order and bounds on a huge range.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_ADDRS_PER_IA, MAX_IAS, OPT_CLIENTID, OPT_CLIENT_FQDN, OPT_IAADDR, OPT_IA_NA, OPT_IA_PD, OPT_IA_TA, OPT_ORO,
  OPT_RAPID_COMMIT, OPT_SERVERID, OPT_STATUS_CODE, SOLICIT, duidLL, duidLLT, duidTimeOf, duidToString, encodeDnsServers,
  encodeDomainNames, encodeIa, encodeIaAddr, encodeOption6, encodeStatus, parseDhcp6, parseDuid, writeDhcp6,
  type Dhcp6Message,
} from '../../src/services/dhcp6-codec.ts';
import { LeaseStore6, addrToBig, bigToAddr, bigToString, client6 } from '../../src/services/dhcp6-leases.ts';
import { checkHostname } from '../../src/services/dhcp-codec.ts';
import { parseIp6, parseMac } from '../../src/wire/addr.ts';
import { prng } from '../helpers/prng.ts';

const MAC = parseMac('52:54:00:12:34:56')!;
const A = (s: string): Buffer => parseIp6(s)!;
const CID = duidLL(MAC);

function parsed(p: Buffer): Dhcp6Message {
  const m = parseDhcp6(p);
  assert.equal(typeof m, 'object', `parsed (${String(m)})`);
  return m as Dhcp6Message;
}

function u16(...v: number[]): Buffer {
  const b = Buffer.alloc(2 * v.length);
  v.forEach((x, k) => b.writeUInt16BE(x, 2 * k));
  return b;
}

test('dhcp6 codec: a message round-trips through the writers and the parser', () => {
  const fqdn = Buffer.concat([Buffer.from([0x01, 2]), Buffer.from('vm'), Buffer.from([3]), Buffer.from('lab'), Buffer.from([0])]);
  const p = writeDhcp6(SOLICIT, 0xfedcba, [
    encodeOption6(OPT_CLIENTID, CID),
    encodeOption6(OPT_SERVERID, duidLLT(MAC, 1234)),
    encodeOption6(OPT_ORO, u16(23, 24, 59)),
    encodeOption6(OPT_RAPID_COMMIT),
    encodeIa(OPT_IA_NA, 0x01020304, 100, 200, [encodeIaAddr(A('fec0::100'), 10, 20), encodeStatus(0, 'ok'), encodeIaAddr(A('fec0::101'), 0, 0)]),
    encodeIa(OPT_IA_TA, 5, 0, 0, [encodeIaAddr(A('fec0::200'), 0, 0)]),
    encodeIa(OPT_IA_PD, 6, 1, 2, [encodeOption6(26, Buffer.alloc(25))]),
    encodeOption6(OPT_CLIENT_FQDN, fqdn),
    encodeOption6(0xfff0, Buffer.from('unknown options are skipped')),
  ]);
  const m = parsed(p);
  assert.equal(m.type, SOLICIT);
  assert.equal(m.xid, 0xfedcba);
  assert.deepEqual(m.clientId, CID);
  assert.deepEqual(m.serverId, duidLLT(MAC, 1234));
  assert.deepEqual(m.oro, [23, 24, 59]);
  assert.equal(m.rapidCommit, true);
  assert.deepEqual(m.ias.map((i) => [i.kind, i.iaid, i.t1, i.t2, i.addrs.map((a) => bigToString(addrToBig(a)))]), [
    [OPT_IA_NA, 0x01020304, 100, 200, ['fec0::100', 'fec0::101']],
    [OPT_IA_TA, 5, 0, 0, ['fec0::200']],
    [OPT_IA_PD, 6, 1, 2, []],
  ]);
  assert.equal(m.fqdn?.flags, 1);
  assert.equal(m.fqdn?.hostname, 'vm.lab');
  assert.deepEqual(m.fqdn?.raw, fqdn);
});

test('dhcp6 codec: option writers, domain names, DUIDs', () => {
  assert.deepEqual(encodeStatus(2, 'no'), Buffer.from([0, OPT_STATUS_CODE, 0, 4, 0, 2, 0x6e, 0x6f]));
  assert.deepEqual(encodeDnsServers([A('fec0::3'), A('::1')]).subarray(0, 4), Buffer.from([0, 23, 0, 32]));
  assert.deepEqual(encodeDomainNames(['Example.test.', 'a.b']), Buffer.from('076578616d706c65047465737400' + '0161016200', 'hex'));
  assert.throws(() => encodeDomainNames(['a..b']), /bad domain name/);
  assert.throws(() => encodeOption6(1, Buffer.alloc(70000)), /longer than/);
  assert.deepEqual(encodeIa(OPT_IA_TA, 9, 1, 2, []), Buffer.from([0, 4, 0, 4, 0, 0, 0, 9]));
  assert.equal(duidToString(duidLL(MAC)), '00:03:00:01:52:54:00:12:34:56');
  assert.deepEqual(parseDuid('00:03:00:01:52:54:00:12:34:56'), duidLL(MAC));
  assert.deepEqual(parseDuid('0003000152540012 3456'.replace(' ', '')), duidLL(MAC));
  assert.deepEqual(parseDuid('0-1-2'), Buffer.from([0, 1, 2]));
  for (const bad of ['', '00:01', 'zz:zz:zz', '0003000', '00::01:02', 'aa'.repeat(131)]) assert.equal(parseDuid(bad), null, bad);
  assert.equal(duidTimeOf(Date.UTC(2000, 0, 1) + 5000), 5);
  assert.deepEqual(duidLLT(MAC, 0x01020304).subarray(0, 8), Buffer.from([0, 1, 0, 1, 1, 2, 3, 4]));
});

test('dhcp6 codec: every truncation of a valid message parses or fails with a reason, never throws', () => {
  const p = writeDhcp6(SOLICIT, 1, [
    encodeOption6(OPT_CLIENTID, CID),
    encodeIa(OPT_IA_NA, 1, 0, 0, [encodeIaAddr(A('fec0::100'), 0, 0)]),
    encodeOption6(OPT_CLIENT_FQDN, Buffer.from([0, 2, 0x61, 0x62, 0])),
  ]);
  const reasons = new Set<string>();
  for (let n = 0; n <= p.length; n++) {
    const m = parseDhcp6(p.subarray(0, n));
    if (typeof m === 'string') reasons.add(m);
  }
  assert.deepEqual([...reasons].sort(), ['badOptions', 'short']);
  assert.equal(parseDhcp6(Buffer.alloc(0)), 'short');
  assert.equal(typeof parseDhcp6(Buffer.from([1, 0, 0, 0])), 'object', 'no options at all is well-formed');
});

test('dhcp6 codec: lying lengths, bad nesting, bad DUIDs and duplicates are reasons', () => {
  const head = Buffer.from([SOLICIT, 0, 0, 1]);
  const msg = (...opts: Buffer[]): Buffer => Buffer.concat([head, ...opts]);
  const raw = (code: number, len: number, data: Buffer): Buffer => Buffer.concat([u16(code, len), data]);
  assert.equal(parseDhcp6(msg(raw(OPT_CLIENTID, 200, CID))), 'badOptions', 'length past the message');
  assert.equal(parseDhcp6(msg(Buffer.from([0, 1, 0]))), 'badOptions', 'a header cut short');
  assert.equal(parseDhcp6(msg(encodeOption6(OPT_CLIENTID, Buffer.from([0, 3])))), 'badDuid');
  assert.equal(parseDhcp6(msg(encodeOption6(OPT_SERVERID, Buffer.alloc(131)))), 'badDuid');
  assert.equal(typeof parseDhcp6(msg(encodeOption6(OPT_SERVERID, Buffer.alloc(130)))), 'object');
  assert.equal(parseDhcp6(msg(encodeOption6(OPT_CLIENTID, CID), encodeOption6(OPT_CLIENTID, CID))), 'badOptions', 'two client ids');
  assert.equal(parseDhcp6(msg(encodeOption6(OPT_IA_NA, Buffer.alloc(11)))), 'badIa', 'IA_NA shorter than its fixed part');
  assert.equal(parseDhcp6(msg(encodeOption6(OPT_IA_TA, Buffer.alloc(3)))), 'badIa');
  const iaHead = Buffer.alloc(12);
  assert.equal(parseDhcp6(msg(encodeOption6(OPT_IA_NA, Buffer.concat([iaHead, raw(OPT_IAADDR, 24, Buffer.alloc(10))])))), 'badIa', 'sub-option past the IA');
  assert.equal(parseDhcp6(msg(encodeOption6(OPT_IA_NA, Buffer.concat([iaHead, encodeOption6(OPT_IAADDR, Buffer.alloc(16))])))), 'badIa', 'IAADDR without lifetimes');
  assert.equal(parseDhcp6(msg(encodeOption6(OPT_IA_NA, Buffer.concat([iaHead, Buffer.from([0, 5])])))), 'badIa', 'a sub-option header cut short');
  // an IA inside an IA is just an unknown sub-option: not recursed into
  const nested = encodeIa(OPT_IA_NA, 1, 0, 0, [encodeIa(OPT_IA_NA, 2, 0, 0, [encodeIaAddr(A('fec0::1'), 0, 0)])]);
  const n = parsed(msg(nested));
  assert.equal(n.ias.length, 1);
  assert.deepEqual(n.ias[0].addrs, []);
  // a client FQDN that is no name is ignored, not fatal
  for (const data of [Buffer.from([0]), Buffer.from([0, 0xc0, 4]), Buffer.from([0, 9, 0x61]), Buffer.from([0, 64, ...Buffer.alloc(64, 0x61)])]) {
    const m = parsed(msg(encodeOption6(OPT_CLIENT_FQDN, data)));
    assert.equal(m.fqdn?.hostname, undefined);
  }
  assert.equal(parsed(msg(encodeOption6(OPT_CLIENT_FQDN))).fqdn, null, 'empty FQDN option');
});

test('dhcp6 codec: huge counts are bounded', () => {
  const ias: Buffer[] = [];
  for (let k = 0; k < 5000; k++) ias.push(encodeIa(OPT_IA_NA, k, 0, 0, []));
  const addrs: Buffer[] = [];
  for (let k = 0; k < 2000; k++) addrs.push(encodeIaAddr(A('fec0::1'), 0, 0));
  const big = encodeIa(OPT_IA_NA, 1, 0, 0, addrs); // 48 kB of addresses in one IA
  const m = parsed(writeDhcp6(SOLICIT, 1, [big, ...ias, encodeOption6(OPT_ORO, Buffer.alloc(4000))]));
  assert.equal(m.ias.length, MAX_IAS);
  assert.equal(m.extraIas, 5001 - MAX_IAS);
  assert.equal(m.ias[0].addrs.length, MAX_ADDRS_PER_IA);
  assert.equal(m.oro.length, 64);
});

test('dhcp6 codec: random bytes never throw', () => {
  const r = prng(0x6);
  const seen = new Set<string>();
  for (let k = 0; k < 20000; k++) {
    const p = r.bytes(r.int(0, 120));
    // bias towards plausible option headers
    if (p.length > 8 && r.chance(0.5)) { p[4] = 0; p[5] = r.int(1, 40); p[6] = 0; p[7] = r.int(0, 60); }
    const m = parseDhcp6(p);
    seen.add(typeof m === 'string' ? m : 'ok');
  }
  assert.ok(seen.has('ok') && seen.has('badOptions') && seen.has('short'));
});

// ---- the lease store ----

function store(o: Partial<ConstructorParameters<typeof LeaseStore6>[0]> = {}, clock = { t: 1000 }): LeaseStore6 {
  return new LeaseStore6({
    prefix: A('fd00::'), prefixLen: 64, range: { start: addrToBig(A('fd00::')), end: addrToBig(A('fd00::ffff:ffff:ffff:ffff')) },
    reserved: (a) => a === addrToBig(A('fd00::1')), maxLeases: 8, declineHoldMs: 1000, offerHoldMs: 100, now: () => clock.t, ...o,
  }, checkHostname);
}

const mac = (k: number): Buffer => parseMac(`52:54:00:00:00:${k.toString(16).padStart(2, '0')}`)!;

test('dhcp6 leases: a /64 range is never scanned: reserved ids are skipped, the bound holds', () => {
  const clock = { t: 1000 };
  const s = store({}, clock);
  const got: string[] = [];
  for (let k = 0; k < 8; k++) {
    const c = client6(mac(k), duidLL(mac(k)));
    const a = s.allocate(c, null)!;
    s.bind(c, 1, a, 10_000, undefined);
    got.push(bigToString(a));
  }
  // fd00:: (interface id 0) and fd00::1 (the gateway's) are skipped
  assert.deepEqual(got, ['fd00::2', 'fd00::3', 'fd00::4', 'fd00::5', 'fd00::6', 'fd00::7', 'fd00::8', 'fd00::9']);
  const c9 = client6(mac(9), duidLL(mac(9)));
  assert.equal(s.allocate(c9, null), null, 'maxLeases reached, every binding in use');
  assert.equal(s.grantable(c9, addrToBig(A('fd00::77'))), false, 'a hint cannot grow beyond the bound either');
  clock.t += 10_001;
  assert.equal(bigToString(s.allocate(c9, null)!), 'fd00::2', 'the oldest expired binding');
  assert.equal(s.size, 8);
  // the top of the range: RFC 2526 anycast ids are never handed out
  const top = store({ range: { start: addrToBig(A('fd00::fdff:ffff:ffff:ff7f')), end: addrToBig(A('fd00::ffff:ffff:ffff:ffff')) } });
  const c = client6(mac(1), duidLL(mac(1)));
  assert.equal(bigToString(top.allocate(c, null)!), 'fd00::fdff:ffff:ffff:ff7f');
  top.bind(c, 1, addrToBig(A('fd00::fdff:ffff:ffff:ff7f')), 1000, undefined);
  assert.equal(top.allocate(client6(mac(2), duidLL(mac(2))), null), null);
  assert.equal(top.inPool(addrToBig(A('fd00::fdff:ffff:ffff:ff80'))), false);
});

test('dhcp6 leases: addresses freed behind the cursor are found on the next lap', () => {
  const clock = { t: 1000 };
  const s = store({ range: { start: addrToBig(A('fd00::10')), end: addrToBig(A('fd00::13')) } }, clock);
  const cs = [0, 1, 2, 3].map((k) => client6(mac(k), duidLL(mac(k))));
  for (const c of cs) s.bind(c, 1, s.allocate(c, null)!, 100_000, undefined);
  // client 1 declines its address (dropped, held down), the hold runs out: fd00::11 is nobody's
  assert.ok(s.decline(cs[1].key, 1, addrToBig(A('fd00::11'))));
  const c5 = client6(mac(5), duidLL(mac(5)));
  assert.equal(s.allocate(c5, null), null, 'held down');
  clock.t += 1001;
  assert.equal(bigToString(s.allocate(c5, null)!), 'fd00::11');
  assert.deepEqual(bigToAddr(addrToBig(A('fd00::11'))), A('fd00::11'));
});

test('dhcp6 leases: import validates every field', () => {
  const s = store();
  const ok = { mac: '52:54:00:00:00:01', duid: '00:03:00:01:52:54:00:00:00:01', iaid: 1, ip: 'fd00::20', expiresAt: 5000 };
  assert.equal(s.import([
    { ...ok, iaid: -1 }, { ...ok, iaid: 1.5 }, { ...ok, ip: 'fd01::1' }, { ...ok, ip: 'fd00::1' }, { ...ok, duid: 'x' },
    { ...ok, mac: 'x' }, { ...ok, expiresAt: Infinity }, { ...ok, ip: 'fd00::' }, ok,
    { ...ok, ip: 'fd00::21' }, { ...ok, mac: '52:54:00:00:00:02', ip: 'fd00::20' },
    { ...ok, mac: '52:54:00:00:00:03', ip: 'fd00::22', hostname: '<b>x' }, { ...ok, mac: '52:54:00:00:00:04', ip: 'fd00::23', hostname: 7 },
  ]), 3);
  assert.deepEqual(s.export().map((l) => [l.mac, l.ip, l.hostname]).sort(), [
    ['52:54:00:00:00:01', 'fd00::20', undefined], ['52:54:00:00:00:03', 'fd00::22', 'bx'], ['52:54:00:00:00:04', 'fd00::23', undefined],
  ]);
});
