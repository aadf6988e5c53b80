import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { Bed, ip } from './_harness.ts';
import { DnsForwarder } from '../../src/services/dns.ts';
import { serveDnsStream } from '../../src/services/dns-tcp.ts';
import { readName, parseQuestion, buildReply } from '../../src/services/dns-codec.ts';
import { parseResolvConf } from '../../src/services/upstreams.ts';
import { ip4FromBuf, ip4ToBuf } from '../../src/wire/addr.ts';
import { waitFor } from '../helpers/wait.ts';

const GUEST_MAC = '52:54:00:12:34:56';
const GUEST = ip('10.0.2.15');
const DNS = ip('10.0.2.3');

function query(id: number, name: string, type = 1, flags = 0x0100): Buffer {
  const labels = name.split('.').filter(Boolean);
  const q = Buffer.alloc(12 + labels.reduce((s, l) => s + l.length + 1, 0) + 1 + 4);
  q.writeUInt16BE(id, 0);
  q.writeUInt16BE(flags, 2);
  q.writeUInt16BE(1, 4);
  let o = 12;
  for (const l of labels) { q[o++] = l.length; q.write(l, o, 'latin1'); o += l.length; }
  q[o++] = 0;
  q.writeUInt16BE(type, o);
  q.writeUInt16BE(1, o + 2);
  return q;
}

/**
 * A tiny DNS server on 127.0.0.1: A records from `zone`, plus silence/truncation knobs. With
 * `hold`, replies wait until release() (so a test decides when the upstream answers).
 */
async function fakeUpstream(zone: Record<string, string>, opts: { silent?: boolean; tc?: boolean; hold?: boolean } = {}) {
  const sock = dgram.createSocket('udp4');
  const seen: Buffer[] = [];
  /** the source port of each query in `seen` */
  const ports: number[] = [];
  const held: (() => void)[] = [];
  let holding = opts.hold ?? false;
  sock.on('message', (m, r) => {
    seen.push(Buffer.from(m));
    ports.push(r.port);
    if (opts.silent) return;
    const q = parseQuestion(m)!;
    const a = zone[q.name];
    const reply = buildReply(m, q, a ? 0 : 3, a ? [ip(a)] : [], 300);
    if (opts.tc) reply[2] |= 0x02;
    reply[2] &= ~0x04;
    const send = () => sock.send(reply, r.port, r.address);
    if (holding) held.push(send); else send();
  });
  await new Promise<void>((res) => sock.bind(0, '127.0.0.1', () => res()));
  const release = () => { holding = false; for (const f of held.splice(0)) f(); };
  return { sock, port: sock.address().port, seen, ports, release, close: () => sock.close() };
}

/** A TCP DNS server on 127.0.0.1 (length-prefixed). */
async function fakeTcpUpstream(zone: Record<string, string>) {
  const server = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const m = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + m.length);
        const q = parseQuestion(m)!;
        const a = zone[q.name];
        const reply = buildReply(m, q, a ? 0 : 3, a ? [ip(a)] : [], 300);
        const h = Buffer.alloc(2); h.writeUInt16BE(reply.length);
        s.write(Buffer.concat([h, reply]));
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

function answers(m: Buffer): number[] {
  const q = parseQuestion(m)!;
  const out: number[] = [];
  let o = q.end;
  for (let k = 0; k < m.readUInt16BE(6); k++) {
    const n = readName(m, o)!;
    o = n.end;
    const type = m.readUInt16BE(o), rdlen = m.readUInt16BE(o + 8);
    if (type === 1) out.push(ip4FromBuf(m, o + 10));
    o += 10 + rdlen;
  }
  return out;
}

/** A query from the guest and its answer (null after `ms`, a hang guard). */
async function ask(bed: Bed, id: number, name: string, sport = 40000, type = 1, ms = 10_000) {
  bed.sendUdp(GUEST_MAC, GUEST, sport, DNS, 53, query(id, name, type));
  const d = await bed.recvUdp((x) => x.srcPort === 53 && x.dstPort === sport && x.payload.readUInt16BE(0) === id, ms);
  return d;
}

test('dns: queries are forwarded with rewritten IDs and answered with the guest ID', async () => {
  const bed = await Bed.create();
  const up = await fakeUpstream({ 'example.com': '93.184.216.34', 'qnet.test': '192.0.2.7' });
  const fwd = new DnsForwarder(bed.gw, { listenIp: DNS, upstreams: [{ host: '127.0.0.1', port: up.port }] });
  try {
    const [a, b] = await Promise.all([ask(bed, 0x4242, 'example.com', 40001), ask(bed, 0x4242, 'qnet.test', 40002)]);
    assert.ok(a && b);
    assert.equal(a.srcIp, DNS);
    assert.equal(a.dstIp, GUEST);
    assert.equal(a.payload.readUInt16BE(0), 0x4242);
    assert.deepEqual(answers(a.payload), [ip('93.184.216.34')]);
    assert.deepEqual(answers(b.payload), [ip('192.0.2.7')]);
    assert.equal(up.seen.length, 2);
    assert.notEqual(up.seen[0].readUInt16BE(0), up.seen[1].readUInt16BE(0), 'same guest ID, distinct upstream IDs');
    const nx = await ask(bed, 7, 'nope.test', 40003);
    assert.equal(nx!.payload[3] & 0xf, 3);
    assert.equal(fwd.stats.answered, 3);
    assert.equal(fwd.stats.outstanding, 0);
  } finally { fwd.close(); up.close(); bed.close(); }
});

test('dns: an upstream that never answers yields SERVFAIL; the next upstream is tried', async () => {
  const bed = await Bed.create();
  const dead = await fakeUpstream({}, { silent: true });
  const live = await fakeUpstream({ 'example.com': '93.184.216.34' });
  const fwd = new DnsForwarder(bed.gw, { listenIp: DNS, upstreams: [{ host: '127.0.0.1', port: dead.port }], timeoutMs: 150, attempts: 2 });
  const fwd2Bed = await Bed.create();
  const fwd2 = new DnsForwarder(fwd2Bed.gw, {
    listenIp: DNS, upstreams: [{ host: '127.0.0.1', port: dead.port }, { host: '127.0.0.1', port: live.port }], timeoutMs: 150,
  });
  try {
    const r = await ask(bed, 99, 'example.com', 40010);
    assert.ok(r, 'an answer, never silence');
    assert.equal(r.payload[3] & 0xf, 2, 'SERVFAIL');
    assert.equal(r.payload.readUInt16BE(0), 99);
    assert.equal(parseQuestion(r.payload)!.name, 'example.com');
    // SERVFAIL only after both attempts went unanswered (not at once, not after one)
    assert.equal(dead.seen.length, 2);
    assert.equal(fwd.stats.timeouts, 1);

    const r2 = await ask(fwd2Bed, 100, 'example.com', 40011);
    assert.deepEqual(answers(r2!.payload), [ip('93.184.216.34')]);
  } finally { fwd.close(); fwd2.close(); dead.close(); live.close(); bed.close(); fwd2Bed.close(); }
});

test('dns: local records are answered without upstream', async () => {
  const bed = await Bed.create();
  const fwd = new DnsForwarder(bed.gw, {
    listenIp: DNS, upstreams: [],
    resolveLocal: (name, type) => name === 'vm1.qnet' ? (type === 1 ? [ip('10.0.2.15')] : []) : name.endsWith('.qnet') ? null : undefined,
    localTtl: 30,
  });
  try {
    const a = await ask(bed, 1, 'VM1.qnet');
    assert.deepEqual(answers(a!.payload), [ip('10.0.2.15')]);
    assert.equal(a!.payload[2] & 0x04, 0x04, 'authoritative');
    const q = parseQuestion(a!.payload)!;
    assert.equal(a!.payload.readUInt32BE(q.end + 6), 30, 'ttl');
    const aaaa = await ask(bed, 2, 'vm1.qnet', 40000, 28);
    assert.equal(aaaa!.payload[3] & 0xf, 0);
    assert.equal(aaaa!.payload.readUInt16BE(6), 0, 'NODATA');
    const nx = await ask(bed, 3, 'other.qnet');
    assert.equal(nx!.payload[3] & 0xf, 3);
    const fw = await ask(bed, 4, 'example.com');
    assert.equal(fw!.payload[3] & 0xf, 2, 'no upstream: SERVFAIL');
    assert.equal(fwd.stats.local, 3);
  } finally { fwd.close(); bed.close(); }
});

test('dns: truncated answers pass through; outstanding limit answers SERVFAIL', async () => {
  const bed = await Bed.create();
  const up = await fakeUpstream({ 'big.test': '192.0.2.1' }, { tc: true, hold: true });
  const fwd = new DnsForwarder(bed.gw, { listenIp: DNS, upstreams: [{ host: '127.0.0.1', port: up.port }], maxOutstanding: 1 });
  try {
    const p1 = ask(bed, 1, 'big.test', 40020);
    // the first query is outstanding once the upstream has it (its answer is held back)
    await waitFor(() => up.seen.length === 1, { what: 'the first query at the upstream' });
    const r2 = await ask(bed, 2, 'big.test', 40021);
    assert.equal(r2!.payload[3] & 0xf, 2);
    assert.equal(fwd.stats.limited, 1);
    up.release();
    const r1 = await p1;
    assert.equal(r1!.payload[2] & 0x02, 0x02, 'TC passed through');
    assert.equal(fwd.stats.truncated, 1);
  } finally { fwd.close(); up.close(); bed.close(); }
});

test('dns: spoofed or foreign responses are ignored', async () => {
  const bed = await Bed.create();
  const up = await fakeUpstream({ 'example.com': '93.184.216.34' }, { hold: true });
  const fwd = new DnsForwarder(bed.gw, { listenIp: DNS, upstreams: [{ host: '127.0.0.1', port: up.port }] });
  const evil = dgram.createSocket('udp4');
  try {
    const p = ask(bed, 5, 'example.com', 40030);
    await waitFor(() => up.seen.length === 1, { what: 'the query at the upstream' });
    // answer from another port with the right upstream ID, before the real answer
    const sent = up.seen[0];
    const q = parseQuestion(sent)!;
    const fake = buildReply(sent, q, 0, [ip('6.6.6.6')], 300);
    const sockPort = up.ports[0];
    await new Promise<void>((r) => evil.send(fake, sockPort, '127.0.0.1', () => r()));
    await waitFor(() => fwd.stats.unmatched === 1, { what: 'the forged answer to be seen and ignored' });
    up.release();
    const r = await p;
    assert.deepEqual(answers(r!.payload), [ip('93.184.216.34')]);
    assert.equal(fwd.stats.unmatched, 1);
  } finally { evil.close(); fwd.close(); up.close(); bed.close(); }
});

test('dns: DNS over TCP streams, several messages split across writes', async () => {
  const bed = await Bed.create();
  const tup = await fakeTcpUpstream({ 'a.test': '192.0.2.1', 'b.test': '192.0.2.2' });
  const fwd = new DnsForwarder(bed.gw, {
    listenIp: DNS, upstreams: [{ host: '127.0.0.1', port: tup.port }],
    resolveLocal: (n) => (n === 'local.qnet' ? [ip('10.0.2.15')] : undefined),
  });
  try {
    const frame = (m: Buffer) => { const h = Buffer.alloc(2); h.writeUInt16BE(m.length); return Buffer.concat([h, m]); };
    const all = Buffer.concat([frame(query(11, 'a.test')), frame(query(12, 'b.test')), frame(query(13, 'local.qnet'))]);
    const readAnswers = (s: NodeJS.ReadableStream, n: number) => new Promise<Map<number, Buffer>>((resolve) => {
      let buf = Buffer.alloc(0);
      const got = new Map<number, Buffer>();
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const m = Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0)));
          buf = buf.subarray(2 + m.length);
          got.set(m.readUInt16BE(0), m);
          if (got.size === n) resolve(got);
        }
      });
    });
    // form 1: an endpoint Duplex (what the TCP layer attaches)
    const ep = serveDnsStream(fwd);
    const got1 = readAnswers(ep, 3);
    for (let k = 0; k < all.length; k += 5) ep.write(all.subarray(k, k + 5));
    const m1 = await got1;
    assert.deepEqual(answers(m1.get(11)!), [ip('192.0.2.1')]);
    assert.deepEqual(answers(m1.get(12)!), [ip('192.0.2.2')]);
    assert.deepEqual(answers(m1.get(13)!), [ip('10.0.2.15')]);
    const ended = new Promise<void>((r) => ep.on('end', () => r()));
    ep.end();
    await ended;

    // form 2: serving an existing duplex (a PassThrough pair standing in for a socket)
    const toServer = new PassThrough();
    const toClient = new PassThrough();
    const duplex = new (await import('node:stream')).Duplex({
      read() {},
      write(c, _e, cb) { toClient.write(c); cb(); },
      final(cb) { toClient.end(); cb(); },
    });
    toServer.on('data', (d) => duplex.push(d));
    toServer.on('end', () => duplex.push(null));
    serveDnsStream(duplex, fwd);
    const got2 = readAnswers(toClient, 3);
    toServer.write(all.subarray(0, 7));
    toServer.write(all.subarray(7));
    const m2 = await got2;
    assert.equal(m2.size, 3);
    assert.equal(fwd.stats.tcpQueries, 6);
    toServer.end();
  } finally { fwd.close(); tup.close(); bed.close(); }
});

test('dns: codec rejects compression loops and bad names', () => {
  const m = Buffer.alloc(20);
  m.writeUInt16BE(1, 4);
  m.writeUInt16BE(0xc00c, 12); // points at itself
  assert.equal(readName(m, 12), null);
  assert.equal(parseQuestion(m), null);
  const fwdRef = Buffer.from([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 0xc0, 12]);
  assert.equal(readName(fwdRef, 12), null, 'forward pointer');
  const trunc = Buffer.from([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 97, 98]);
  assert.equal(readName(trunc, 12), null);
  const ok = query(1, 'a.b.c');
  assert.deepEqual(parseQuestion(ok), { name: 'a.b.c', type: 1, cls: 1, end: ok.length });
  assert.deepEqual(parseResolvConf('# x\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\nnameserver bogus\nsearch a\n'),
    [{ host: '192.0.2.1', port: 53 }, { host: 'fe80::1', port: 53 }]);
  void ip4ToBuf;
});

test('dns: garbage from the guest is dropped and counted', async () => {
  const bed = await Bed.create();
  const fwd = new DnsForwarder(bed.gw, { listenIp: DNS, upstreams: [] });
  try {
    bed.sendUdp(GUEST_MAC, GUEST, 40040, DNS, 53, Buffer.alloc(3));
    const resp = query(9, 'x.test'); resp[2] |= 0x80;
    bed.sendUdp(GUEST_MAC, GUEST, 40040, DNS, 53, resp);
    await waitFor(() => fwd.stats.malformed === 2, { what: 'two malformed queries counted' });
    // a good query behind them: its answer (SERVFAIL, no upstream) comes back on the same
    // ordered stream, so anything sent for the garbage would have arrived before it
    const good = await ask(bed, 10, 'y.test', 40041);
    assert.equal(good!.payload[3] & 0xf, 2);
    assert.deepEqual(await bed.collectUdp(0), [], 'nothing but the good answer came back');
    assert.equal(fwd.stats.malformed, 2);
  } finally { fwd.close(); bed.close(); }
});
