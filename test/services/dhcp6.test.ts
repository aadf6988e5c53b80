// The DHCPv6 server with real frames: a raw-frame client (test/helpers/dhcp6-client.ts) sends
// Ethernet + IPv6 + UDP from its link-local address to ff02::1:2 into a gateway with IPv6, and
// the frames the gateway sends back are parsed. The gateway is driven directly (as in
// test/stack/gateway.test.ts): its replies are flushed from a microtask, so one macrotask
// tick after a frame every reply is out, and "no reply" is a fact, not a timeout. The
// server's clock is injected; no test sleeps. One test goes through a switch and a stream
// socket (test/services/_harness.ts) to show the same exchange across a real port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Gateway } from '../../src/stack/gateway.ts';
import { ManualClock } from '../../src/stack/timers.ts';
import { parseAddr } from '../../src/stack/addr.ts';
import { parseIp4, parseIp6, parseMac } from '../../src/wire/addr.ts';
import { Dhcp6Server, type Dhcp6Options, type Lease6, type LeaseEvent6 } from '../../src/services/dhcp6.ts';
import { setLogSink } from '../../src/util/log.ts';
import { Bed } from './_harness.ts';
import { prng } from '../helpers/prng.ts';
import {
  Dhcp6TestClient, MSG, OPT, STATUS, duidEN, duidLLOf, opt, parseDhcp6Frame, type Dhcp6Reply, type MsgSpec,
} from '../helpers/dhcp6-client.ts';

const logLines: string[] = [];
setLogSink((l) => logLines.push(l));

const GW_MAC = '52:55:0a:00:02:02';
const PREFIX = parseIp6('fec0::')!;
const ROUTER = parseAddr('fec0::2')!;
const DNS = parseAddr('fec0::3')!;
const LL = parseAddr('fe80::2')!;
const T0 = 1_700_000_000_000;
const SERVER_DUID = duidLLOf(GW_MAC);
const M1 = '52:54:00:12:34:56';
const M2 = '52:54:00:12:34:57';
const M3 = '52:54:00:12:34:58';

interface TestBed {
  gw: Gateway;
  srv: Dhcp6Server;
  clock: { t: number };
  events: [Lease6, LeaseEvent6][];
  /** Send a frame; every DHCPv6 reply the gateway sent for it. */
  send(frame: Buffer): Promise<Dhcp6Reply[]>;
  /** Send a frame that must get exactly one reply. */
  one(frame: Buffer): Promise<Dhcp6Reply>;
  close(): void;
}

function bed(o: Partial<Dhcp6Options> = {}, clock = { t: T0 }): TestBed {
  const gw = new Gateway({
    mac: parseMac(GW_MAC)!, net: parseIp4('10.0.2.0')!, prefix: 24, addrs: [parseIp4('10.0.2.2')!], clock: new ManualClock(0),
    ipv6: { prefix: PREFIX, prefixLen: 64, addrs: [ROUTER, DNS], linkLocal: LL },
  });
  const out: Buffer[] = [];
  gw.onFrame = (f) => { out.push(Buffer.from(f)); };
  const events: [Lease6, LeaseEvent6][] = [];
  const srv = new Dhcp6Server(gw, {
    serverMac: parseMac(GW_MAC)!, serverAddr: LL, prefix: PREFIX, prefixLen: 64,
    range: { start: 'fec0::100', end: 'fec0::1ff' }, dns: [DNS], now: () => clock.t,
    onLease: (l, e) => events.push([l, e]), ...o,
  });
  const send = async (frame: Buffer): Promise<Dhcp6Reply[]> => {
    out.length = 0;
    gw.send(frame);
    await new Promise((r) => setImmediate(r));
    const rs = out.map(parseDhcp6Frame).filter((x): x is Dhcp6Reply => x !== null);
    for (const r of rs) assert.ok(r.checksumOk, 'UDP checksum of the reply');
    return rs;
  };
  return {
    gw, srv, clock, events, send,
    async one(frame) {
      const rs = await send(frame);
      assert.equal(rs.length, 1, 'exactly one reply');
      return rs[0];
    },
    close() { srv.close(); gw.close(); },
  };
}

/** Solicit, Advertise, Request, Reply: the committed address. */
async function lease(b: TestBed, c: Dhcp6TestClient, extra: MsgSpec = {}): Promise<{ adv: Dhcp6Reply; rep: Dhcp6Reply; ip: string }> {
  const adv = await b.one(c.build(MSG.SOLICIT, { ias: [{}], ...extra }));
  assert.equal(adv.type, MSG.ADVERTISE);
  assert.equal(adv.ias.length, 1);
  const ip = adv.ias[0].addrs[0]?.ip;
  assert.ok(ip, `advertised an address (status ${JSON.stringify(adv.status ?? adv.ias[0].status)})`);
  const rep = await b.one(c.build(MSG.REQUEST, { serverId: adv.serverId, ias: [{ addrs: [ip] }], ...extra }));
  assert.equal(rep.type, MSG.REPLY);
  assert.equal(rep.ias[0].addrs[0].ip, ip);
  return { adv, rep, ip };
}

test('dhcp6: information-request gets DNS, search list and boot file URL, to the client at its link-local address', async () => {
  const b = bed({ search: ['example.test', 'lab.example.test'], bootfileUrl: 'tftp://[fec0::2]/pxelinux.0', informationRefreshTime: 3600 });
  try {
    const c = new Dhcp6TestClient(M1);
    const r = await b.one(c.build(MSG.INFORMATION_REQUEST, { xid: 0xabcdef }));
    assert.equal(r.type, MSG.REPLY);
    assert.equal(r.xid, 0xabcdef);
    assert.deepEqual(r.serverId, SERVER_DUID, 'DUID-LL of the gateway MAC');
    assert.deepEqual(r.clientId, c.duid, 'client id echoed');
    assert.deepEqual(r.dns, ['fec0::3']);
    assert.deepEqual(r.search, ['example.test', 'lab.example.test']);
    assert.equal(r.bootfileUrl, 'tftp://[fec0::2]/pxelinux.0');
    assert.equal(r.refreshTime, 3600);
    assert.equal(r.ias.length, 0);
    assert.equal(r.srcIp, 'fe80::2');
    assert.equal(r.dstIp, c.linkLocal);
    assert.equal(r.srcPort, 547);
    assert.equal(r.dstPort, 546);
    assert.equal(r.dstMac, M1);
    assert.equal(r.srcMac, GW_MAC);
    // the client id is optional in an Information-Request (RFC 8415 16.12)
    const r2 = await b.one(c.build(MSG.INFORMATION_REQUEST, { clientId: null }));
    assert.equal(r2.clientId, undefined);
    assert.deepEqual(r2.dns, ['fec0::3']);
    // a server id naming us is fine, another is not; an IA does not belong
    assert.equal((await b.send(c.build(MSG.INFORMATION_REQUEST, { serverId: SERVER_DUID }))).length, 1);
    assert.equal((await b.send(c.build(MSG.INFORMATION_REQUEST, { serverId: duidLLOf(M3) }))).length, 0);
    assert.equal((await b.send(c.build(MSG.INFORMATION_REQUEST, { ias: [{}] }))).length, 0);
    assert.equal(b.srv.stats.informationRequest, 5);
    assert.equal(b.srv.stats.otherServer, 1);
    assert.equal(b.srv.stats.unexpectedOption, 1);
    assert.equal(b.srv.leases().length, 0, 'no lease from an information request');
  } finally { b.close(); }
});

test('dhcp6: solicit, advertise (preference 255), request, reply with lifetimes and T1/T2', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1, { iaid: 0x0a0b0c0d });
    const adv = await b.one(c.build(MSG.SOLICIT, { ias: [{}] }));
    assert.equal(adv.type, MSG.ADVERTISE);
    assert.equal(adv.preference, 255);
    assert.equal(adv.rapidCommit, false);
    assert.deepEqual(adv.serverId, SERVER_DUID);
    assert.deepEqual(adv.clientId, c.duid);
    assert.deepEqual(adv.dns, ['fec0::3']);
    assert.equal(adv.status, undefined);
    const ia = adv.ias[0];
    assert.equal(ia.kind, OPT.IA_NA);
    assert.equal(ia.iaid, 0x0a0b0c0d);
    assert.equal(ia.t1, 7200);
    assert.equal(ia.t2, 11520);
    assert.deepEqual(ia.addrs, [{ ip: 'fec0::100', preferred: 14400, valid: 86400 }]);
    assert.equal(b.srv.leases().length, 0, 'an advertised address is not a lease');
    assert.equal(b.events.length, 0);

    const rep = await b.one(c.build(MSG.REQUEST, { serverId: adv.serverId, ias: [{ addrs: ['fec0::100'] }] }));
    assert.equal(rep.type, MSG.REPLY);
    assert.deepEqual(rep.ias[0].addrs, [{ ip: 'fec0::100', preferred: 14400, valid: 86400 }]);
    assert.equal(rep.ias[0].iaid, 0x0a0b0c0d);
    assert.deepEqual(rep.dns, ['fec0::3']);
    assert.deepEqual(b.srv.leases(), [{ mac: M1, duid: [...c.duid].map((x) => x.toString(16).padStart(2, '0')).join(':'), iaid: 0x0a0b0c0d, ip: 'fec0::100', expiresAt: T0 + 86400_000 }]);
    assert.deepEqual(b.events.map(([l, e]) => [l.ip, e]), [['fec0::100', 'bound']]);
    // a Request again (the client lost the Reply) is the same binding, renewed
    const again = await b.one(c.build(MSG.REQUEST, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::100'] }] }));
    assert.equal(again.ias[0].addrs[0].ip, 'fec0::100');
    assert.deepEqual(b.events.map(([, e]) => e), ['bound', 'renewed']);
    assert.equal(b.srv.stats.advertise, 1);
    assert.equal(b.srv.stats.reply, 2);
    assert.equal(b.srv.stats.errors, 0);
  } finally { b.close(); }
});

test('dhcp6: rapid commit gets a committed Reply; a server configured without it advertises', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1);
    const r = await b.one(c.build(MSG.SOLICIT, { ias: [{}], rapidCommit: true }));
    assert.equal(r.type, MSG.REPLY);
    assert.equal(r.rapidCommit, true);
    assert.equal(r.preference, undefined);
    assert.equal(r.ias[0].addrs[0].ip, 'fec0::100');
    assert.equal(b.srv.leases().length, 1);
    assert.deepEqual(b.events.map(([l, e]) => [l.ip, e]), [['fec0::100', 'bound']]);
  } finally { b.close(); }
  const b2 = bed({ rapidCommit: false });
  try {
    const r = await b2.one(new Dhcp6TestClient(M1).build(MSG.SOLICIT, { ias: [{}], rapidCommit: true }));
    assert.equal(r.type, MSG.ADVERTISE);
    assert.equal(r.rapidCommit, false);
    assert.equal(b2.srv.leases().length, 0);
  } finally { b2.close(); }
});

test('dhcp6: renew and rebind extend the binding; a stale address comes back with lifetimes 0', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1);
    const { ip } = await lease(b, c);
    b.clock.t += 7200_000; // T1
    const rn = await b.one(c.build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: [ip] }] }));
    assert.equal(rn.type, MSG.REPLY);
    assert.deepEqual(rn.ias[0].addrs, [{ ip, preferred: 14400, valid: 86400 }]);
    assert.equal(b.srv.leases()[0].expiresAt, b.clock.t + 86400_000);
    b.clock.t += 11520_000; // T2: the client multicasts a Rebind without a server id
    const rb = await b.one(c.build(MSG.REBIND, { ias: [{ addrs: [ip] }] }));
    assert.equal(rb.type, MSG.REPLY);
    assert.deepEqual(rb.ias[0].addrs, [{ ip, preferred: 14400, valid: 86400 }]);
    assert.equal(b.srv.leases()[0].expiresAt, b.clock.t + 86400_000);
    assert.deepEqual(b.events.map(([, e]) => e), ['bound', 'renewed', 'renewed']);
    // the client also lists an address it should not have: that one is withdrawn
    const st = await b.one(c.build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: [ip, 'fec0::1f0'] }] }));
    assert.deepEqual(st.ias[0].addrs, [{ ip, preferred: 14400, valid: 86400 }, { ip: 'fec0::1f0', preferred: 0, valid: 0 }]);
    // a Renew with a server id not ours is not for us; a Rebind with one is invalid
    assert.equal((await b.send(c.build(MSG.RENEW, { serverId: duidLLOf(M3), ias: [{ addrs: [ip] }] }))).length, 0);
    assert.equal((await b.send(c.build(MSG.REBIND, { serverId: SERVER_DUID, ias: [{ addrs: [ip] }] }))).length, 0);
    assert.equal(b.srv.stats.otherServer, 1);
    assert.equal(b.srv.stats.unexpectedOption, 1);
  } finally { b.close(); }
});

test('dhcp6: renew/rebind without a binding: re-created when the address is free, else NoBinding / lifetimes 0', async () => {
  const b = bed();
  try {
    const c1 = new Dhcp6TestClient(M1);
    const c2 = new Dhcp6TestClient(M2);
    const { ip } = await lease(b, c1);
    // c2 renews c1's address it never had: NoBinding, no address in the IA
    const rn = await b.one(c2.build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: [ip] }] }));
    assert.equal(rn.ias[0].status?.code, STATUS.NO_BINDING);
    assert.deepEqual(rn.ias[0].addrs, []);
    assert.equal(rn.status, undefined, 'no top-level status');
    // the same as a Rebind: the address is not valid for c2 here (authoritative)
    const rb = await b.one(c2.build(MSG.REBIND, { ias: [{ addrs: [ip] }] }));
    assert.deepEqual(rb.ias[0].addrs, [{ ip, preferred: 0, valid: 0 }]);
    // a Rebind of an address off the prefix: lifetimes 0 as well
    const off = await b.one(c2.build(MSG.REBIND, { ias: [{ addrs: ['2001:db8::5'] }] }));
    assert.deepEqual(off.ias[0].addrs, [{ ip: '2001:db8::5', preferred: 0, valid: 0 }]);
    // a restarted server without its lease file: a Renew for a free pool address re-creates the binding
    const c3 = new Dhcp6TestClient(M3);
    const back = await b.one(c3.build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::150'] }] }));
    assert.deepEqual(back.ias[0].addrs, [{ ip: 'fec0::150', preferred: 14400, valid: 86400 }]);
    assert.ok(b.srv.leases().some((l) => l.mac === M3 && l.ip === 'fec0::150'));
    // ... but not for an address outside the range
    const out = await b.one(new Dhcp6TestClient('52:54:00:00:00:09').build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::5'] }] }));
    assert.equal(out.ias[0].status?.code, STATUS.NO_BINDING);
    assert.equal(b.srv.stats.noBinding, 2);
  } finally { b.close(); }
});

test('dhcp6: release ends the lease, keeps the binding for a returning client; unknown IAs get NoBinding', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1);
    const { ip } = await lease(b, c);
    const r = await b.one(c.build(MSG.RELEASE, { serverId: SERVER_DUID, ias: [{ addrs: [ip] }] }));
    assert.equal(r.type, MSG.REPLY);
    assert.equal(r.status?.code, STATUS.SUCCESS);
    assert.equal(r.ias.length, 0);
    assert.equal(b.srv.leases().length, 0);
    assert.deepEqual(b.events.map(([l, e]) => [l.ip, e]), [[ip, 'bound'], [ip, 'released']]);
    // released twice: the second finds no binding
    const r2 = await b.one(c.build(MSG.RELEASE, { serverId: SERVER_DUID, ias: [{ addrs: [ip] }] }));
    assert.equal(r2.status?.code, STATUS.SUCCESS);
    assert.equal(r2.ias[0].status?.code, STATUS.NO_BINDING);
    // another client takes a fresh address; the returning one gets its own back
    assert.equal((await lease(b, new Dhcp6TestClient(M2))).ip, 'fec0::101');
    assert.equal((await lease(b, c)).ip, ip);
  } finally { b.close(); }
});

test('dhcp6: decline holds the address down for the hold time, then it is handed out again', async () => {
  const b = bed({ range: { start: 'fec0::100', end: 'fec0::101' }, declineHoldMs: 600_000 });
  try {
    const c1 = new Dhcp6TestClient(M1);
    const { ip } = await lease(b, c1);
    assert.equal(ip, 'fec0::100');
    const r = await b.one(c1.build(MSG.DECLINE, { serverId: SERVER_DUID, ias: [{ addrs: [ip] }] }));
    assert.equal(r.status?.code, STATUS.SUCCESS);
    assert.equal(r.ias.length, 0);
    assert.deepEqual(b.events.map(([, e]) => e), ['bound', 'declined']);
    assert.equal(b.srv.leases().length, 0);
    assert.ok(logLines.some((l) => l.includes('declined')));
    // the declining client gets another address, and nobody gets the declined one
    assert.equal((await lease(b, c1)).ip, 'fec0::101');
    const adv = await b.one(new Dhcp6TestClient(M2).build(MSG.SOLICIT, { ias: [{ addrs: [ip] }] }));
    assert.equal(adv.status?.code, STATUS.NO_ADDRS_AVAIL, 'the declined address is held, the other is leased');
    assert.deepEqual(adv.ias, []);
    b.clock.t += 600_001;
    assert.equal((await lease(b, new Dhcp6TestClient(M2))).ip, ip, 'after the hold it is free again');
    // a Decline naming an address the client does not have changes nothing
    const bad = await b.one(new Dhcp6TestClient(M3).build(MSG.DECLINE, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::101'] }] }));
    assert.equal(bad.ias[0].status?.code, STATUS.NO_BINDING);
    assert.equal(b.srv.leases().length, 2);
  } finally { b.close(); }
});

test('dhcp6: confirm says Success on the prefix, NotOnLink off it, nothing without addresses', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1);
    const on = await b.one(c.build(MSG.CONFIRM, { ias: [{ addrs: ['fec0::1234'] }] }));
    assert.equal(on.type, MSG.REPLY);
    assert.equal(on.status?.code, STATUS.SUCCESS);
    assert.deepEqual(on.serverId, SERVER_DUID);
    assert.deepEqual(on.clientId, c.duid);
    const off = await b.one(c.build(MSG.CONFIRM, { ias: [{ addrs: ['fec0::1234', '2001:db8::1'] }] }));
    assert.equal(off.status?.code, STATUS.NOT_ON_LINK);
    assert.equal((await b.send(c.build(MSG.CONFIRM, { ias: [{}] }))).length, 0, 'no addresses: no reply');
    assert.equal((await b.send(c.build(MSG.CONFIRM, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::1'] }] }))).length, 0, 'a Confirm has no server id');
    assert.equal(b.srv.stats.notOnLink, 1);
  } finally { b.close(); }
});

test('dhcp6: two clients get different addresses; a returning client gets its own after expiry', async () => {
  const b = bed();
  try {
    const c1 = new Dhcp6TestClient(M1);
    const c2 = new Dhcp6TestClient(M2);
    assert.equal((await lease(b, c1)).ip, 'fec0::100');
    assert.equal((await lease(b, c2)).ip, 'fec0::101');
    b.clock.t += 2 * 86400_000; // both expired
    assert.equal(b.srv.leases().length, 0);
    assert.equal((await lease(b, new Dhcp6TestClient(M3))).ip, 'fec0::102', 'a new client takes a fresh address, not an expired one');
    assert.equal((await lease(b, c2)).ip, 'fec0::101');
    assert.equal((await lease(b, c1)).ip, 'fec0::100');
    // a hint is honoured when free
    const c4 = new Dhcp6TestClient('52:54:00:00:00:04');
    const adv = await b.one(c4.build(MSG.SOLICIT, { ias: [{ addrs: ['fec0::1a0'] }] }));
    assert.equal(adv.ias[0].addrs[0].ip, 'fec0::1a0');
    // ... and not when taken
    const adv2 = await b.one(new Dhcp6TestClient('52:54:00:00:00:05').build(MSG.SOLICIT, { ias: [{ addrs: ['fec0::100'] }] }));
    assert.equal(adv2.ias[0].addrs[0].ip, 'fec0::103');
  } finally { b.close(); }
});

test('dhcp6: clones sharing a DUID get different addresses; a reinstalled guest (new DUID) keeps its MAC\'s address', async () => {
  const b = bed();
  try {
    const shared = duidEN(32473, Buffer.from('0123456789abcdef', 'hex'));
    const a = await lease(b, new Dhcp6TestClient(M1, { duid: shared }));
    const z = await lease(b, new Dhcp6TestClient(M2, { duid: shared }));
    assert.notEqual(a.ip, z.ip);
    assert.equal(b.srv.leases().length, 2);
    // M1 releases, is reinstalled and comes back with a new DUID
    await b.one(new Dhcp6TestClient(M1, { duid: shared }).build(MSG.RELEASE, { serverId: SERVER_DUID, ias: [{ addrs: [a.ip] }] }));
    assert.equal((await lease(b, new Dhcp6TestClient(M1, { duid: duidEN(32473, Buffer.from('ffff', 'hex')) }))).ip, a.ip);
  } finally { b.close(); }
});

test('dhcp6: static hosts by MAC and by DUID (with a hostname), never given to others', async () => {
  const duid = duidEN(9, Buffer.from('c0ffee', 'hex'));
  const b = bed({
    staticHosts: [
      { mac: M1, ip: 'fec0::1:10', hostname: 'web' },
      { duid: [...duid].map((x) => x.toString(16).padStart(2, '0')).join(':'), ip: 'fec0::1:20' },
      { mac: M3, duid: '00:02:00:00:00:09:aa', ip: 'fec0::105' },
    ],
  });
  try {
    const s1 = await lease(b, new Dhcp6TestClient(M1));
    assert.equal(s1.ip, 'fec0::1:10');
    assert.equal(b.srv.leases().find((l) => l.mac === M1)?.hostname, 'web');
    // keyed by DUID: any MAC
    assert.equal((await lease(b, new Dhcp6TestClient(M2, { duid }))).ip, 'fec0::1:20');
    // by both: M3 with another DUID is dynamic, and the static address (inside the range) is skipped
    const d = await lease(b, new Dhcp6TestClient(M3));
    assert.equal(d.ip, 'fec0::100');
    assert.equal((await lease(b, new Dhcp6TestClient('52:54:00:00:00:0a'))).ip, 'fec0::101');
    assert.equal((await lease(b, new Dhcp6TestClient('52:54:00:00:00:0b'))).ip, 'fec0::102');
    assert.equal((await lease(b, new Dhcp6TestClient('52:54:00:00:00:0c'))).ip, 'fec0::103');
    assert.equal((await lease(b, new Dhcp6TestClient('52:54:00:00:00:0d'))).ip, 'fec0::104');
    assert.equal((await lease(b, new Dhcp6TestClient('52:54:00:00:00:0e'))).ip, 'fec0::106', 'fec0::105 is static');
    assert.equal((await lease(b, new Dhcp6TestClient(M3, { duid: parseDuidHex('0002000000 09aa') }))).ip, 'fec0::105');
    // a static address asked for by someone else is not given
    const adv = await b.one(new Dhcp6TestClient('52:54:00:00:00:0f').build(MSG.SOLICIT, { ias: [{ addrs: ['fec0::1:10'] }] }));
    assert.equal(adv.ias[0].addrs[0].ip, 'fec0::107');
    // a static host renewing someone else's address is moved to its own
    const rn = await b.one(new Dhcp6TestClient(M1).build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::1:10', 'fec0::100'] }] }));
    assert.deepEqual(rn.ias[0].addrs.map((x) => [x.ip, x.valid]), [['fec0::1:10', 86400], ['fec0::100', 0]]);
  } finally { b.close(); }
  assert.throws(() => bed({ staticHosts: [{ mac: M1, ip: '2001:db8::1' }] }), /static host address/);
  assert.throws(() => bed({ staticHosts: [{ mac: M1, ip: 'fec0::2' }] }), /static host address/, 'the router address');
  assert.throws(() => bed({ staticHosts: [{ ip: 'fec0::9' }] }), /neither a MAC nor a DUID/);
  assert.throws(() => bed({ staticHosts: [{ mac: M1, ip: 'fec0::9' }, { mac: M2, ip: 'fec0::9' }] }), /used twice/);
});

function parseDuidHex(s: string): Buffer { return Buffer.from(s.replace(/\s/g, ''), 'hex'); }

test('dhcp6: pool exhaustion advertises NoAddrsAvail; expired bindings are reclaimed, oldest first', async () => {
  const b = bed({ range: { start: 'fec0::100', end: 'fec0::101' } });
  const logged = logLines.length;
  try {
    const c1 = new Dhcp6TestClient(M1);
    assert.equal((await lease(b, c1)).ip, 'fec0::100');
    b.clock.t += 1000;
    assert.equal((await lease(b, new Dhcp6TestClient(M2))).ip, 'fec0::101');
    const c3 = new Dhcp6TestClient(M3);
    const adv = await b.one(c3.build(MSG.SOLICIT, { ias: [{}] }));
    assert.equal(adv.type, MSG.ADVERTISE);
    assert.equal(adv.status?.code, STATUS.NO_ADDRS_AVAIL);
    assert.deepEqual(adv.ias, [], 'only status, server id and client id (RFC 8415 18.3.9)');
    assert.deepEqual(adv.serverId, SERVER_DUID);
    assert.deepEqual(adv.clientId, c3.duid);
    // a Request anyway: the IA comes back with NoAddrsAvail
    const rep = await b.one(c3.build(MSG.REQUEST, { serverId: SERVER_DUID, ias: [{}] }));
    assert.equal(rep.ias[0].status?.code, STATUS.NO_ADDRS_AVAIL);
    assert.equal(b.srv.stats.poolExhausted, 2);
    assert.equal(logLines.slice(logged).filter((l) => l.includes('pool exhausted')).length, 1, 'logged once');
    b.clock.t += 86400_000; // c1's lease ran out; c2's (1 s younger) too, but later
    assert.equal((await lease(b, c3)).ip, 'fec0::100', 'the longest expired binding is reclaimed');
    // c1 returns: its address is gone, it gets the other expired one
    assert.equal((await lease(b, c1)).ip, 'fec0::101');
  } finally { b.close(); }
});

test('dhcp6: bindings stay bounded by maxLeases whatever a guest sends', async () => {
  const b = bed({ maxLeases: 16 });
  try {
    const r = prng(7);
    let answered = 0;
    for (let k = 0; k < 200; k++) {
      const c = new Dhcp6TestClient(M1, { duid: Buffer.concat([Buffer.from([0, 4]), r.bytes(16)]), iaid: r.u32() });
      const rs = await b.send(c.build(k % 2 ? MSG.SOLICIT : MSG.REQUEST, { serverId: k % 2 ? undefined : SERVER_DUID, ias: [{ addrs: [`fec0::${(0x100 + (r.u32() % 256)).toString(16)}`] }] }));
      if (rs[0]?.ias[0]?.addrs.length) answered++;
      assert.ok(b.srv.store.size + b.srv.store.declinedCount <= 16, 'bounded');
    }
    assert.equal(answered, 16, 'the first 16 clients got addresses, then the pool (bounded) was full');
    assert.equal(b.srv.stats.errors, 0);
  } finally { b.close(); }
});

test('dhcp6: export/import keeps addresses across a restart', async () => {
  const clock = { t: T0 };
  const b1 = bed({}, clock);
  const c1 = new Dhcp6TestClient(M1);
  const c2 = new Dhcp6TestClient(M2, { iaid: 7 });
  let records: unknown;
  try {
    await lease(b1, c1, { fqdn: { name: 'vm-one.example.test' } });
    await lease(b1, c2);
    await lease(b1, new Dhcp6TestClient(M3)); // then released: exported too, for a stable address
    await b1.one(new Dhcp6TestClient(M3).build(MSG.RELEASE, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::102'] }] }));
    records = JSON.parse(JSON.stringify(b1.srv.exportLeases()));
  } finally { b1.close(); }
  assert.equal((records as unknown[]).length, 3);
  const b2 = bed({}, clock);
  try {
    assert.equal(b2.srv.importLeases([...(records as unknown[]), { mac: 'junk' }, null, { mac: M1, duid: '00:03', iaid: 1, ip: 'fec0::100', expiresAt: 1 }, 5]), 3);
    assert.equal(b2.srv.importLeases('not a list'), 0);
    assert.deepEqual(b2.srv.leases().map((l) => [l.mac, l.ip, l.iaid, l.hostname]).sort(), [[M1, 'fec0::100', 1, 'vm-one.example.test'], [M2, 'fec0::101', 7, undefined]]);
    // renewing across the restart works as before
    const rn = await b2.one(c2.build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::101'] }] }));
    assert.deepEqual(rn.ias[0].addrs.map((a) => a.ip), ['fec0::101']);
    assert.deepEqual(b2.events.map(([, e]) => e), ['renewed']);
    // a new client does not get an imported address; the released one comes back to its owner
    assert.equal((await lease(b2, new Dhcp6TestClient('52:54:00:00:00:01'))).ip, 'fec0::103');
    assert.equal((await lease(b2, new Dhcp6TestClient(M3))).ip, 'fec0::102');
    // importing twice takes nothing (conflicts)
    assert.equal(b2.srv.importLeases(records), 0);
  } finally { b2.close(); }
});

test('dhcp6: messages for another server, or missing identifiers, are ignored (RFC 8415 16)', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1);
    const other = duidLLOf(M3);
    const silent = async (type: number, s: MsgSpec): Promise<void> => assert.equal((await b.send(c.build(type, s))).length, 0, `type ${type} ${JSON.stringify(Object.keys(s))}`);
    await silent(MSG.REQUEST, { serverId: other, ias: [{ addrs: ['fec0::100'] }] });
    await silent(MSG.RELEASE, { serverId: other, ias: [{ addrs: ['fec0::100'] }] });
    await silent(MSG.DECLINE, { serverId: other, ias: [{ addrs: ['fec0::100'] }] });
    await silent(MSG.REQUEST, { ias: [{}] });
    await silent(MSG.RENEW, { ias: [{ addrs: ['fec0::100'] }] });
    await silent(MSG.SOLICIT, { serverId: SERVER_DUID, ias: [{}] });
    await silent(MSG.SOLICIT, { clientId: null, ias: [{}] });
    await silent(MSG.REQUEST, { clientId: null, serverId: SERVER_DUID, ias: [{}] });
    await silent(MSG.ADVERTISE, {});
    await silent(MSG.REPLY, {});
    await silent(MSG.RELAY_FORW, {});
    await silent(99, {});
    const s = b.srv.stats;
    assert.deepEqual([s.otherServer, s.missingServerId, s.unexpectedOption, s.missingClientId, s.serverMessage, s.relay, s.unknownType], [3, 2, 1, 2, 2, 1, 1]);
    assert.equal(b.srv.leases().length, 0);
    assert.equal(s.malformed, 0);
    assert.equal(s.errors, 0);
  } finally { b.close(); }
});

test('dhcp6: unicast: Solicit dropped, Request answered UseMulticast; other destinations are not ours', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1);
    assert.equal((await b.send(c.build(MSG.SOLICIT, { ias: [{}] }, { dst: 'fe80::2' }))).length, 0);
    const r = await b.one(c.build(MSG.REQUEST, { serverId: SERVER_DUID, ias: [{}] }, { dst: 'fe80::2' }));
    assert.equal(r.status?.code, STATUS.USE_MULTICAST);
    assert.deepEqual(r.ias, []);
    assert.deepEqual(r.dns, [], 'no other options');
    assert.equal((await b.send(c.build(MSG.SOLICIT, { ias: [{}] }, { dst: 'fec0::99', dstMac: GW_MAC }))).length, 0);
    assert.equal((await b.send(c.build(MSG.SOLICIT, { ias: [{}] }, { dst: 'ff02::1' }))).length, 0);
    assert.equal(b.srv.stats.unicast, 1);
    assert.equal(b.srv.stats.useMulticast, 1);
    // fec0::99 is not the gateway's: the gateway keeps it from port-only bindings; ff02::1 is a group the server ignores
    assert.equal(b.srv.stats.notForUs, 1);
    // on-prefix sources are answered too (a Renew from the leased address)
    const { ip } = await lease(b, c);
    const rn = await b.one(c.build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: [ip] }] }, { src: ip }));
    assert.equal(rn.dstIp, ip);
    assert.equal(rn.ias[0].addrs[0].ip, ip);
  } finally { b.close(); }
});

test('dhcp6: one address per client: a second IA_NA, IA_TA and IA_PD are refused in their IA', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1);
    const adv = await b.one(c.build(MSG.SOLICIT, { ias: [{ kind: OPT.IA_PD, iaid: 9 }, { iaid: 1 }, { iaid: 2 }, { kind: OPT.IA_TA, iaid: 3 }] }));
    assert.equal(adv.type, MSG.ADVERTISE);
    assert.deepEqual(adv.ias.map((i) => [i.kind, i.iaid, i.addrs.map((a) => a.ip), i.status?.code]), [
      [OPT.IA_PD, 9, [], STATUS.NO_PREFIX_AVAIL], [OPT.IA_NA, 1, ['fec0::100'], undefined],
      [OPT.IA_NA, 2, [], STATUS.NO_ADDRS_AVAIL], [OPT.IA_TA, 3, [], STATUS.NO_ADDRS_AVAIL],
    ]);
    // a Request with an address off the prefix: NotOnLink in that IA
    const rep = await b.one(c.build(MSG.REQUEST, { serverId: SERVER_DUID, ias: [{ iaid: 1, addrs: ['2001:db8::1'] }] }));
    assert.equal(rep.ias[0].status?.code, STATUS.NOT_ON_LINK);
    assert.equal(b.srv.leases().length, 0);
  } finally { b.close(); }
});

test('dhcp6: client FQDN becomes the lease hostname (sanitised) and is answered with S=1', async () => {
  const b = bed();
  try {
    const c = new Dhcp6TestClient(M1);
    const { rep } = await lease(b, c, { fqdn: { flags: 0, name: 'my_vm!.lab' } });
    assert.equal(b.srv.leases()[0].hostname, 'myvm.lab');
    assert.equal(rep.fqdn?.flags, 1 | 2, 'S=1, O=1 (the client asked S=0)');
    assert.equal(rep.fqdn?.name, 'my_vm!.lab', 'the name as the client sent it');
    // a name with a compression pointer is no name: ignored, the message is still served
    const bad = opt(OPT.CLIENT_FQDN, Buffer.from([1, 0xc0, 0x0c]));
    const r = await b.one(new Dhcp6TestClient(M2).build(MSG.SOLICIT, { ias: [{}], extra: [bad] }));
    assert.equal(r.type, MSG.ADVERTISE);
    assert.equal(r.fqdn, undefined);
  } finally { b.close(); }
});

test('dhcp6: stateless (no range): Solicit gets NoAddrsAvail, information is served, Renew finds no binding', async () => {
  const b = bed({ range: undefined });
  try {
    assert.equal(b.srv.managed, false);
    const c = new Dhcp6TestClient(M1);
    const adv = await b.one(c.build(MSG.SOLICIT, { ias: [{}], rapidCommit: true }));
    assert.equal(adv.type, MSG.ADVERTISE);
    assert.equal(adv.status?.code, STATUS.NO_ADDRS_AVAIL);
    assert.match(adv.status!.message, /SLAAC/);
    assert.deepEqual((await b.one(c.build(MSG.INFORMATION_REQUEST))).dns, ['fec0::3']);
    const rn = await b.one(c.build(MSG.RENEW, { serverId: SERVER_DUID, ias: [{ addrs: ['fec0::100'] }] }));
    assert.equal(rn.ias[0].status?.code, STATUS.NO_BINDING);
    assert.equal(b.srv.stats.poolExhausted, 0, 'no pool, so nothing is exhausted');
  } finally { b.close(); }
  // static hosts are served without a range
  const b2 = bed({ range: undefined, staticHosts: [{ mac: M1, ip: 'fec0::50' }] });
  try {
    assert.equal(b2.srv.managed, true);
    assert.equal((await lease(b2, new Dhcp6TestClient(M1))).ip, 'fec0::50');
    assert.equal((await b2.one(new Dhcp6TestClient(M2).build(MSG.SOLICIT, { ias: [{}] }))).status?.code, STATUS.NO_ADDRS_AVAIL);
  } finally { b2.close(); }
});

test('dhcp6: DUID-LLT server identifier when asked for', async () => {
  const b = bed({ duid: 'llt', duidTime: 0x01020304 });
  try {
    const r = await b.one(new Dhcp6TestClient(M1).build(MSG.INFORMATION_REQUEST));
    assert.equal(r.serverId?.toString('hex'), '0001000101020304' + GW_MAC.replace(/:/g, ''));
  } finally { b.close(); }
});

test('dhcp6: configuration errors throw at construction', () => {
  assert.throws(() => bed({ range: { start: 'fec0::200', end: 'fec0::100' } }), /ends before/);
  assert.throws(() => bed({ range: { start: 'fec0::100', end: 'fec1::1' } }), /not on the prefix/);
  assert.throws(() => bed({ range: { start: 'nonsense', end: 'fec0::1' } }), /bad range/);
  assert.throws(() => bed({ preferredLifetime: 100, validLifetime: 50 }), /lifetimes/);
  assert.throws(() => bed({ bootfileUrl: 'pxelinux.0' }), /boot file URL/);
  assert.throws(() => bed({ search: ['bad..name'] }), /domain name/);
  assert.throws(() => bed({ dns: [parseIp4('10.0.2.3')!] }), /DNS server/);
  assert.throws(() => bed({ serverAddr: parseIp4('10.0.2.2')! }), /server address/);
});

test('dhcp6: hostile payloads through the gateway: nothing throws, drops are counted', async () => {
  const b = bed({ maxLeases: 32 });
  try {
    const r = prng(0xd6);
    const c = new Dhcp6TestClient(M1);
    const valid = c.message(MSG.SOLICIT, { ias: [{ addrs: ['fec0::100'] }], fqdn: { name: 'x.y' } });
    for (let k = 0; k < 3000; k++) {
      let p: Buffer;
      switch (k % 4) {
        case 0: p = r.bytes(r.int(0, 300)); break;
        case 1: p = Buffer.from(valid.subarray(0, r.int(0, valid.length))); break;
        case 2: { p = Buffer.from(valid); for (let j = 0; j < 4; j++) p[r.int(0, p.length - 1)] = r.u32() & 0xff; break; }
        default: p = Buffer.concat([Buffer.from([r.int(1, 13), 1, 2, 3]), r.bytes(r.int(0, 200))]);
      }
      await b.send(c.frame(p));
    }
    const s = b.srv.stats;
    assert.equal(s.errors, 0);
    assert.equal(b.gw.stats.handlerErrors, 0);
    assert.equal(s.rx, 3000);
    assert.ok(s.malformed > 0 && s.malformed === s.short + s.badOptions + s.badIa + s.badDuid);
    assert.ok(b.srv.store.size <= 32);
  } finally { b.close(); }
});

test('dhcp6: an exchange through a switch and a stream socket', async () => {
  const bed2 = await Bed.create(undefined, { prefix: PREFIX, prefixLen: 64, addrs: [ROUTER, DNS], linkLocal: LL });
  const srv = new Dhcp6Server(bed2.gw, {
    serverMac: parseMac(GW_MAC)!, serverAddr: LL, prefix: PREFIX, prefixLen: 64, range: { start: 'fec0::100', end: 'fec0::1ff' }, dns: [DNS],
  });
  try {
    const c = new Dhcp6TestClient(M1);
    bed2.sendFrame(c.build(MSG.SOLICIT, { xid: 0x123456, ias: [{}], rapidCommit: true }));
    const r = await bed2.recvFrame((f) => { const x = parseDhcp6Frame(f); return x && x.xid === 0x123456 ? x : null; });
    assert.ok(r, 'a reply came back through the switch');
    assert.equal(r.type, MSG.REPLY);
    assert.equal(r.dstMac, M1);
    assert.equal(r.ias[0].addrs[0].ip, 'fec0::100');
    assert.equal(srv.leases()[0].mac, M1);
  } finally {
    srv.close();
    bed2.close();
  }
});
