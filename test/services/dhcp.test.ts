import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../helpers/wait.ts';
import { Bed, ip, mac, BCAST_MAC, type RxUdp } from './_harness.ts';
import { DhcpServer, type Lease } from '../../src/services/dhcp.ts';
import { encodeDnsSearch } from '../../src/services/dhcp-codec.ts';
import { ip4FromBuf, ip4ToBuf, ip4ToString } from '../../src/wire/addr.ts';
import { setLogSink } from '../../src/util/log.ts';

const logLines: string[] = [];
setLogSink((l) => logLines.push(l));

const DISCOVER = 1, OFFER = 2, REQUEST = 3, DECLINE = 4, ACK = 5, NAK = 6, RELEASE = 7, INFORM = 8;
const M1 = '52:54:00:12:34:56';
const M2 = '52:54:00:12:34:57';
const M3 = '52:54:00:12:34:58';

interface MsgOpts { type?: number; mac: string; xid?: number; ciaddr?: number; flags?: number; requested?: number; serverId?: number; hostname?: string; extra?: Buffer }

function dhcpMsg(o: MsgOpts): Buffer {
  const opts: number[] = [];
  if (o.type !== undefined) opts.push(53, 1, o.type);
  if (o.requested !== undefined) { opts.push(50, 4); const b = Buffer.alloc(4); ip4ToBuf(o.requested, b, 0); opts.push(...b); }
  if (o.serverId !== undefined) { opts.push(54, 4); const b = Buffer.alloc(4); ip4ToBuf(o.serverId, b, 0); opts.push(...b); }
  if (o.hostname !== undefined) opts.push(12, o.hostname.length, ...Buffer.from(o.hostname));
  opts.push(55, 4, 1, 3, 6, 15);
  if (o.extra) opts.push(...o.extra);
  opts.push(255);
  const m = Buffer.alloc(Math.max(300, 240 + opts.length));
  m[0] = 1; m[1] = 1; m[2] = 6;
  m.writeUInt32BE(o.xid ?? 0x1234abcd, 4);
  m.writeUInt16BE(o.flags ?? 0, 10);
  ip4ToBuf(o.ciaddr ?? 0, m, 12);
  mac(o.mac).copy(m, 28);
  m.writeUInt32BE(0x63825363, 236);
  Buffer.from(opts).copy(m, 240);
  return m;
}

interface Reply { d: RxUdp; op: number; xid: number; yiaddr: number; ciaddr: number; siaddr: number; file: string; opts: Map<number, Buffer>; type: number }

function parseReply(d: RxUdp): Reply {
  const p = d.payload;
  const opts = new Map<number, Buffer>();
  let i = 240;
  while (i < p.length && p[i] !== 255) {
    if (p[i] === 0) { i++; continue; }
    const code = p[i], len = p[i + 1];
    const v = p.subarray(i + 2, i + 2 + len);
    opts.set(code, opts.has(code) ? Buffer.concat([opts.get(code)!, v]) : Buffer.from(v));
    i += 2 + len;
  }
  const fileEnd = p.indexOf(0, 108);
  return {
    d, op: p[0], xid: p.readUInt32BE(4), yiaddr: ip4FromBuf(p, 16), ciaddr: ip4FromBuf(p, 12), siaddr: ip4FromBuf(p, 20),
    file: p.subarray(108, fileEnd < 0 || fileEnd > 236 ? 236 : fileEnd).toString(), opts, type: opts.get(53)?.[0] ?? 0,
  };
}

/** RFC 1035 names with compression pointers, as a DHCP client decodes option 119. */
function decodeSearch(b: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < b.length) {
    const labels: string[] = [];
    let p = i, jumped = false, hops = 0;
    for (;;) {
      const len = b[p];
      if (len === 0) { if (!jumped) i = p + 1; break; }
      if ((len & 0xc0) === 0xc0) {
        if (!jumped) i = p + 2;
        jumped = true;
        p = ((len & 0x3f) << 8) | b[p + 1];
        assert.ok(++hops < 20);
        continue;
      }
      labels.push(b.subarray(p + 1, p + 1 + len).toString());
      p += 1 + len;
    }
    out.push(labels.join('.'));
  }
  return out;
}

/** Send m; the server's answer must come (null would mean it did not within the hang guard). */
async function exchange(bed: Bed, m: Buffer, srcIp = 0, ms = 10_000, from?: string): Promise<Reply | null> {
  const src = from ?? `${[...m.subarray(28, 34)].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
  const xid = m.readUInt32BE(4);
  bed.sendUdp(src, srcIp, 68, srcIp === 0 ? 0xffffffff : ip('10.0.2.2'), 67, m, srcIp === 0 ? BCAST_MAC : undefined);
  const d = await bed.recvUdp((x) => x.srcPort === 67 && x.dstPort === 68 && x.payload.readUInt32BE(4) === xid, ms);
  return d ? parseReply(d) : null;
}

/** Send m (broadcast, from 0.0.0.0) and return the answer if the server gave one: null is silence. */
async function unanswered(bed: Bed, m: Buffer): Promise<Reply | null> {
  const src = [...m.subarray(28, 34)].map((x) => x.toString(16).padStart(2, '0')).join(':');
  const xid = m.readUInt32BE(4);
  bed.sendUdp(src, 0, 68, 0xffffffff, 67, m, BCAST_MAC);
  await bed.sync();
  const d = await bed.collectUdp(0, (x) => x.srcPort === 67 && x.dstPort === 68 && x.payload.readUInt32BE(4) === xid);
  return d.length ? parseReply(d[0]) : null;
}

async function dora(bed: Bed, m: string, extra: Partial<MsgOpts> = {}): Promise<Reply> {
  const offer = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: m, ...extra }));
  assert.ok(offer, 'offer');
  assert.equal(offer.type, OFFER);
  const ack = await exchange(bed, dhcpMsg({ type: REQUEST, mac: m, requested: offer.yiaddr, serverId: ip('10.0.2.2'), ...extra }));
  assert.ok(ack, 'ack');
  assert.equal(ack.type, ACK);
  assert.equal(ack.yiaddr, offer.yiaddr);
  return ack;
}

test('dhcp: full DORA with every configured option', async () => {
  const bed = await Bed.create(1400);
  const leases: [Lease, string][] = [];
  const srv = new DhcpServer(bed.gw, {
    dns: [ip('10.0.2.3')], domainName: 'example.test', dnsSearch: ['a.example.test', 'b.example.test', 'example.org'],
    hostname: 'vm', tftpServerName: '10.0.2.2', bootfile: 'pxelinux.0', onLease: (l, e) => leases.push([l, e]),
  });
  try {
    const offer = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M1, flags: 0x8000 }));
    assert.ok(offer);
    assert.equal(offer.op, 2);
    assert.equal(offer.type, OFFER);
    assert.equal(ip4ToString(offer.yiaddr), '10.0.2.15');
    assert.equal(offer.d.dstIp, 0xffffffff, 'broadcast flag -> broadcast');
    assert.equal(offer.d.dstMac, BCAST_MAC);
    assert.equal(offer.d.srcIp, ip('10.0.2.2'));
    const o = offer.opts;
    assert.equal(ip4FromBuf(o.get(54)!, 0), ip('10.0.2.2'));
    assert.equal(ip4FromBuf(o.get(1)!, 0), ip('255.255.255.0'));
    assert.equal(ip4FromBuf(o.get(28)!, 0), ip('10.0.2.255'));
    assert.equal(ip4FromBuf(o.get(3)!, 0), ip('10.0.2.2'));
    assert.equal(ip4FromBuf(o.get(6)!, 0), ip('10.0.2.3'));
    assert.equal(o.get(51)!.readUInt32BE(0), 86400);
    assert.equal(o.get(15)!.toString(), 'example.test');
    assert.equal(o.get(12)!.toString(), 'vm');
    assert.equal(o.get(26)!.readUInt16BE(0), 1400);
    assert.equal(o.get(66)!.toString(), '10.0.2.2');
    assert.equal(o.get(67)!.toString(), 'pxelinux.0');
    assert.equal(offer.file, 'pxelinux.0');
    const search = o.get(119)!;
    assert.deepEqual(search, encodeDnsSearch(['a.example.test', 'b.example.test', 'example.org']));
    assert.deepEqual(decodeSearch(search), ['a.example.test', 'b.example.test', 'example.org']);
    // "b" + pointer to example.test: compression was used
    assert.ok(search.length < 'a.example.test'.length + 2 + 'b.example.test'.length + 2 + 'example.org'.length + 2);
    assert.ok(offer.d.payload.length >= 300);

    const ack = await exchange(bed, dhcpMsg({ type: REQUEST, mac: M1, requested: offer.yiaddr, serverId: ip('10.0.2.2'), hostname: 'guest1' }));
    assert.ok(ack);
    assert.equal(ack.type, ACK);
    assert.equal(ack.yiaddr, offer.yiaddr);
    assert.equal(ack.d.dstIp, offer.yiaddr, 'no broadcast flag -> unicast to yiaddr');
    assert.equal(ack.d.dstMac, M1);
    const ls = srv.leases();
    assert.equal(ls.length, 1);
    assert.equal(ls[0].mac, M1);
    assert.equal(ls[0].ip, offer.yiaddr);
    assert.equal(ls[0].hostname, 'guest1');
    assert.ok(ls[0].expiresAt > Date.now() + 86000_000);
    assert.deepEqual(leases.map(([l, e]) => [l.ip, e]), [[offer.yiaddr, 'bound']]);

    // renew (RENEWING: ciaddr, no server id / requested address) -> unicast ACK to ciaddr
    const renew = await exchange(bed, dhcpMsg({ type: REQUEST, mac: M1, ciaddr: offer.yiaddr, xid: 77 }), offer.yiaddr);
    assert.ok(renew);
    assert.equal(renew.type, ACK);
    assert.equal(renew.d.dstIp, offer.yiaddr);
    assert.equal(renew.ciaddr, offer.yiaddr);
    assert.equal(leases.at(-1)![1], 'renewed');
    assert.equal(srv.stats.offer, 1);
    assert.equal(srv.stats.ack, 2);
  } finally { srv.close(); bed.close(); }
});

test('dhcp: stable address across DISCOVERs and expiry, different MACs get different addresses', async () => {
  const bed = await Bed.create();
  let now = 1_000_000;
  const srv = new DhcpServer(bed.gw, { leaseTime: 100, now: () => now });
  try {
    const a1 = await dora(bed, M1);
    const again = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M1, xid: 5 }));
    assert.equal(again!.yiaddr, a1.yiaddr);
    const b = await dora(bed, M2);
    assert.notEqual(b.yiaddr, a1.yiaddr);
    now += 1_000_000; // both leases expired; nobody else took M1's address
    const later = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M1, xid: 6 }));
    assert.equal(later!.yiaddr, a1.yiaddr);
    assert.equal(srv.leases().length, 0);
    assert.equal(srv.exportLeases().length, 2);
    // INIT-REBOOT for the old address is granted
    const reboot = await exchange(bed, dhcpMsg({ type: REQUEST, mac: M1, requested: a1.yiaddr, xid: 7 }));
    assert.equal(reboot!.type, ACK);
  } finally { srv.close(); bed.close(); }
});

test('dhcp: static host gets its address and hostname; NAK for a wrong REQUEST', async () => {
  const bed = await Bed.create();
  const srv = new DhcpServer(bed.gw, { staticHosts: [{ mac: M3, ip: '10.0.2.100', hostname: 'fixed' }] });
  try {
    const s = await dora(bed, M3);
    assert.equal(ip4ToString(s.yiaddr), '10.0.2.100');
    assert.equal(s.opts.get(12)!.toString(), 'fixed');
    // the static host asking for another address is refused
    const nak1 = await exchange(bed, dhcpMsg({ type: REQUEST, mac: M3, requested: ip('10.0.2.20'), xid: 9 }));
    assert.equal(nak1!.type, NAK);
    assert.equal(nak1!.d.dstIp, 0xffffffff);
    assert.equal(nak1!.yiaddr, 0);

    const a = await dora(bed, M1);
    // M2 asks for M1's address (INIT-REBOOT): NAK
    const nak2 = await exchange(bed, dhcpMsg({ type: REQUEST, mac: M2, requested: a.yiaddr, xid: 10 }));
    assert.equal(nak2!.type, NAK);
    // an address from another network: NAK
    const nak3 = await exchange(bed, dhcpMsg({ type: REQUEST, mac: M2, requested: ip('192.168.1.7'), xid: 11 }));
    assert.equal(nak3!.type, NAK);
    // the static address is never handed out dynamically
    const b = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M2, requested: ip('10.0.2.100'), xid: 12 }));
    assert.notEqual(ip4ToString(b!.yiaddr), '10.0.2.100');
    // SELECTING another server: silence, the offer is dropped
    const other = await unanswered(bed, dhcpMsg({ type: REQUEST, mac: M2, requested: b!.yiaddr, serverId: ip('10.0.2.9'), xid: 13 }));
    assert.equal(other, null);
    assert.equal(srv.stats.otherServer, 1);
    assert.equal(srv.stats.nak, 3);
  } finally { srv.close(); bed.close(); }
});

test('dhcp: DECLINE marks the address unusable, RELEASE keeps it for the same MAC', async () => {
  const bed = await Bed.create();
  const events: string[] = [];
  const srv = new DhcpServer(bed.gw, { onLease: (_l, e) => events.push(e) });
  try {
    const a = await dora(bed, M1);
    bed.sendUdp(M1, 0, 68, 0xffffffff, 67, dhcpMsg({ type: DECLINE, mac: M1, requested: a.yiaddr, serverId: ip('10.0.2.2') }), BCAST_MAC);
    const next = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M1, xid: 21 }));
    assert.notEqual(next!.yiaddr, a.yiaddr);
    const other = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M2, xid: 22, requested: a.yiaddr }));
    assert.notEqual(other!.yiaddr, a.yiaddr, 'declined address is not offered to anyone');
    assert.equal(srv.stats.decline, 1);

    const b = await exchange(bed, dhcpMsg({ type: REQUEST, mac: M1, xid: 23, requested: next!.yiaddr, serverId: ip('10.0.2.2') }));
    assert.equal(b!.type, ACK);
    bed.sendUdp(M1, b!.yiaddr, 68, ip('10.0.2.2'), 67, dhcpMsg({ type: RELEASE, mac: M1, ciaddr: b!.yiaddr, serverId: ip('10.0.2.2') }));
    await waitFor(() => srv.stats.release >= 1, { what: 'the RELEASE to be handled' });
    assert.equal(srv.stats.release, 1);
    assert.equal(srv.leases().length, 0);
    const back = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M1, xid: 24 }));
    assert.equal(back!.yiaddr, b!.yiaddr, 'same address after release');
    assert.deepEqual(events, ['bound', 'declined', 'bound', 'released']);
  } finally { srv.close(); bed.close(); }
});

test('dhcp: INFORM gets the configuration without a lease', async () => {
  const bed = await Bed.create();
  const srv = new DhcpServer(bed.gw, { dns: [ip('10.0.2.3')] });
  try {
    const r = await exchange(bed, dhcpMsg({ type: INFORM, mac: M1, ciaddr: ip('10.0.2.50'), xid: 31 }), ip('10.0.2.50'));
    assert.ok(r);
    assert.equal(r.type, ACK);
    assert.equal(r.yiaddr, 0);
    assert.equal(r.d.dstIp, ip('10.0.2.50'));
    assert.equal(r.d.dstMac, M1);
    assert.equal(r.opts.has(51), false);
    assert.equal(ip4FromBuf(r.opts.get(6)!, 0), ip('10.0.2.3'));
    assert.equal(srv.leases().length, 0);
  } finally { srv.close(); bed.close(); }
});

test('dhcp: pool exhaustion: no OFFER, NAK for REQUEST, one log line per event', async () => {
  const bed = await Bed.create();
  const srv = new DhcpServer(bed.gw, { poolStart: ip('10.0.2.15'), poolSize: 2 });
  logLines.length = 0;
  try {
    await dora(bed, M1);
    await dora(bed, M2);
    const none = await unanswered(bed, dhcpMsg({ type: DISCOVER, mac: M3, xid: 41 }));
    assert.equal(none, null);
    const none2 = await unanswered(bed, dhcpMsg({ type: DISCOVER, mac: M3, xid: 42 }));
    assert.equal(none2, null);
    const nak = await exchange(bed, dhcpMsg({ type: REQUEST, mac: M3, requested: ip('10.0.2.15'), xid: 43 }));
    assert.equal(nak!.type, NAK);
    assert.ok(srv.stats.poolExhausted >= 2);
    assert.equal(logLines.filter((l) => l.includes('pool exhausted')).length, 1);
  } finally { srv.close(); bed.close(); }
});

test('dhcp: pool skips the gateway addresses', async () => {
  const bed = await Bed.create();
  const srv = new DhcpServer(bed.gw, { poolStart: ip('10.0.2.2'), poolSize: 3 });
  try {
    const a = await dora(bed, M1);
    assert.equal(ip4ToString(a.yiaddr), '10.0.2.4');
  } finally { srv.close(); bed.close(); }
});

test('dhcp: garbage and truncated packets are dropped and counted, never crash', async () => {
  const bed = await Bed.create();
  const srv = new DhcpServer(bed.gw);
  try {
    const good = dhcpMsg({ type: DISCOVER, mac: M1 });
    const bad: Buffer[] = [];
    bad.push(Buffer.alloc(0), Buffer.alloc(10), good.subarray(0, 239));
    const op = Buffer.from(good); op[0] = 2; bad.push(op);
    const ht = Buffer.from(good); ht[1] = 6; bad.push(ht);
    const hl = Buffer.from(good); hl[2] = 16; bad.push(hl);
    const mg = Buffer.from(good); mg[236] = 0; bad.push(mg);
    // option length running past the end
    const ol = Buffer.from(good.subarray(0, 244)); ol[240] = 53; ol[241] = 1; ol[242] = 1; ol[243] = 12; bad.push(Buffer.concat([ol, Buffer.from([200, 1, 2])]));
    const tl = Buffer.from(good.subarray(0, 241)); tl[240] = 50; bad.push(tl);
    // wrong-length message type / requested address
    const wl = Buffer.from(good); wl[240] = 53; wl[241] = 2; bad.push(wl);
    for (let k = 0; k < 50; k++) {
      const r = Buffer.from(good);
      for (let j = 240; j < r.length; j++) r[j] = (Math.random() * 256) | 0;
      bad.push(r);
    }
    const before = bed.gatewayInput;
    for (const b of bad) bed.sendUdp(M1, 0, 68, 0xffffffff, 67, b, BCAST_MAC);
    // the gateway handles a frame as it takes it: once it took them all, the counters are final
    await bed.delivered(before + bad.length);
    assert.ok(srv.stats.malformed >= 10, `malformed ${srv.stats.malformed}`);
    assert.equal(srv.stats.badOp, 1);
    assert.equal(srv.stats.badHtype, 2);
    assert.equal(srv.stats.badMagic, 1);
    assert.equal(srv.stats.errors, 0);
    assert.equal(bed.gw.stats.malformed, 0, 'nothing escaped to the gateway');
    // still serving
    const offer = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M2, xid: 99 }));
    assert.equal(offer!.type, OFFER);
  } finally { srv.close(); bed.close(); }
});

test('dhcp: leases export/import round trip', async () => {
  const bed = await Bed.create();
  const srv = new DhcpServer(bed.gw);
  const a = await dora(bed, M1, { hostname: 'one' });
  const saved = JSON.parse(JSON.stringify(srv.exportLeases()));
  srv.close();
  const srv2 = new DhcpServer(bed.gw);
  try {
    assert.equal(srv2.importLeases(saved), 1);
    assert.equal(srv2.importLeases([{ mac: 'nope', ip: '1.2.3.4', expiresAt: 1 }, null, 5]), 0);
    assert.equal(srv2.leases()[0].ip, a.yiaddr);
    assert.equal(srv2.leases()[0].hostname, 'one');
    const b = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M2, requested: a.yiaddr, xid: 55 }));
    assert.notEqual(b!.yiaddr, a.yiaddr);
    const c = await exchange(bed, dhcpMsg({ type: DISCOVER, mac: M1, xid: 56 }));
    assert.equal(c!.yiaddr, a.yiaddr);
  } finally { srv2.close(); bed.close(); }
});

test('dhcp: plain BOOTP request gets a reply', async () => {
  const bed = await Bed.create();
  const srv = new DhcpServer(bed.gw, { bootfile: 'boot.img' });
  try {
    const r = await exchange(bed, dhcpMsg({ mac: M1, flags: 0x8000, xid: 61 }));
    assert.ok(r);
    assert.equal(r.type, 0);
    assert.equal(ip4ToString(r.yiaddr), '10.0.2.15');
    assert.equal(r.file, 'boot.img');
  } finally { srv.close(); bed.close(); }
});
