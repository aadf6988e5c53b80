// ICMP echo sockets. The root namespace is never touched: the live tests run a child node
// process inside namespaces created (and deleted) here, with ping_group_range widened there.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IcmpEchoSocket } from '../../src/link/icmp.ts';
import { ipToU32, u32ToIp } from '../../src/link/sys.ts';
import { createNetns, cleanupNetns, veth, type Netns } from '../helpers/netns.ts';
import { tmpDir } from './peers.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const icmpModule = path.resolve(here, '../../src/link/icmp.ts');
const sysModule = path.resolve(here, '../../src/link/sys.ts');
const addrModule = path.resolve(here, '../../src/wire/addr.ts');
const isRoot = process.getuid?.() === 0;

after(() => cleanupNetns());

/** Run a TypeScript module body in a child node inside ns; returns its JSON stdout. */
async function runIn(ns: Netns, body: string): Promise<any> {
  const file = path.join(tmpDir(), 'child.mts');
  fs.writeFileSync(file, `import { IcmpEchoSocket, IcmpRawSocket } from ${JSON.stringify(icmpModule)};\n` +
    `import { ipToU32, u32ToIp } from ${JSON.stringify(sysModule)};\n` +
    `import { ip6ToString, parseIp6 } from ${JSON.stringify(addrModule)};\n${body}\n`);
  const out = await ns.run([process.execPath, '--import', 'tsx', file], { timeoutMs: 30_000 });
  return JSON.parse(out.trim().split('\n').pop()!);
}

const PING = `
const [dst, wantReplies, wantErrors] = process.argv.slice(2);
const r = IcmpEchoSocket.open();
if (!r.socket) { console.log(JSON.stringify({ reason: r.reason })); process.exit(0); }
const s = r.socket;
const replies: unknown[] = [], errors: unknown[] = [];
s.onReply((src, _src6, id, seq, data) => replies.push({ src: u32ToIp(src), id, seq, data: data.toString('hex') }));
s.onError((off, _off6, type, code, d, _d6, req) => errors.push({ off: u32ToIp(off), type, code, dst: u32ToIp(d), id: req.readUInt16BE(4), seq: req.readUInt16BE(6) }));
const payload = Buffer.from('qnet ping payload 0123456789');
const sent = [s.send(ipToU32(dst), 1, payload), s.send(ipToU32(dst), 2, payload.subarray(0, 5)), s.send(ipToU32(dst), 65535, Buffer.alloc(0))];
// report once what the test waits for has arrived (the 10 s limit only guards a hang)
const report = () => { console.log(JSON.stringify({ id: s.localId, sent, replies, errors })); s.close(); clearInterval(poll); clearTimeout(guard); };
const poll = setInterval(() => { if (replies.length >= Number(wantReplies) && errors.length >= Number(wantErrors)) report(); }, 5);
const guard = setTimeout(report, 10_000);
`;

test('icmp: ipToU32 / u32ToIp', () => {
  assert.equal(ipToU32('127.0.0.1'), 0x7f000001);
  assert.equal(ipToU32('255.255.255.255'), 0xffffffff);
  assert.equal(u32ToIp(0xc0a80001), '192.168.0.1');
  assert.throws(() => ipToU32('1.2.3'), /bad IPv4/);
});

test('icmp: open() reports missing permission as a reason, not an exception', () => {
  const r = IcmpEchoSocket.open();
  if (r.socket) {
    assert.ok(r.socket.localId > 0);
    r.socket.close();
    r.socket.close();
    assert.equal(r.socket.send(0x7f000001, 1, Buffer.alloc(0)), false);
  } else {
    assert.match(r.reason, /^ICMP echo sockets not permitted: set net\.ipv4\.ping_group_range to include group \d+/);
    assert.equal(r.denied, true);
  }
});

test('icmp: echo to 127.0.0.1 inside a namespace: reply with matching id, seq and data', { skip: !isRoot && 'needs root for ip netns' }, async () => {
  const ns = await createNetns();
  // the kernel default "1 0" admits no group, root included; per namespace
  const denied = await runIn(ns, PING.replace('process.argv.slice(2)', "['127.0.0.1', '0', '0']"));
  assert.match(denied.reason, /not permitted/);
  await ns.sysctl('net.ipv4.ping_group_range', '0 2147483647');
  const r = await runIn(ns, PING.replace('process.argv.slice(2)', "['127.0.0.1', '3', '0']"));
  assert.deepEqual(r.sent, [true, true, true]);
  assert.ok(r.id > 0 && r.id < 65536);
  assert.deepEqual(r.replies, [
    { src: '127.0.0.1', id: r.id, seq: 1, data: Buffer.from('qnet ping payload 0123456789').toString('hex') },
    { src: '127.0.0.1', id: r.id, seq: 2, data: Buffer.from('qnet ').toString('hex') },
    { src: '127.0.0.1', id: r.id, seq: 65535, data: '' },
  ]);
  assert.deepEqual(r.errors, []);
  await ns.delete();
});

test('icmp: an ICMP unreachable from a router arrives through onError', { skip: !isRoot && 'needs root for ip netns' }, async () => {
  const a = await createNetns(), b = await createNetns();
  const v = await veth(a, b, { addrA: '10.231.0.1/24', addrB: '10.231.0.2/24' });
  assert.ok(v.a);
  await a.addRoute('10.232.0.0/16', { via: '10.231.0.2' });
  await b.sysctl('net.ipv4.ip_forward', '1');
  await b.ip('route', 'add', 'unreachable', '10.232.0.0/16');
  await a.sysctl('net.ipv4.ping_group_range', '0 2147483647');
  const r = await runIn(a, PING.replace('process.argv.slice(2)', "['10.232.1.1', '0', '1']"));
  assert.deepEqual(r.replies, []);
  assert.ok(r.errors.length >= 1, JSON.stringify(r));
  assert.deepEqual(r.errors[0], { off: '10.231.0.2', type: 3, code: 1, dst: '10.232.1.1', id: r.id, seq: 1 });
  // and the router itself answers
  const ok = await runIn(a, PING.replace('process.argv.slice(2)', "['10.231.0.2', '3', '0']"));
  assert.equal(ok.replies.length, 3);
  assert.equal(ok.replies[0].src, '10.231.0.2');
  await a.delete();
  await b.delete();
});

const PING6 = `
const [dst, wantReplies] = process.argv.slice(2);
const r = IcmpEchoSocket.open(6);
if (!r.socket) { console.log(JSON.stringify({ reason: r.reason })); process.exit(0); }
const s = r.socket;
const replies: unknown[] = [];
s.onReply((_src, src6, id, seq, data) => replies.push({ src: ip6ToString(src6!, 0), id, seq, data: data.toString() }));
const sent = [s.send(parseIp6(dst)!, 7, Buffer.from('six')), s.send(parseIp6(dst)!, 8, Buffer.alloc(0))];
const report = () => { console.log(JSON.stringify({ id: s.localId, sent, replies })); s.close(); clearInterval(poll); clearTimeout(guard); };
const poll = setInterval(() => { if (replies.length >= Number(wantReplies)) report(); }, 5);
const guard = setTimeout(report, 10_000);
`;

test('icmp: IPv6 echo to ::1 inside a namespace through a ping socket', { skip: !isRoot && 'needs root for ip netns' }, async () => {
  const ns = await createNetns();
  await ns.sysctl('net.ipv4.ping_group_range', '0 2147483647');
  const r = await runIn(ns, PING6.replace('process.argv.slice(2)', "['::1', '2']"));
  assert.deepEqual(r.sent, [true, true]);
  assert.deepEqual(r.replies, [{ src: '::1', id: r.id, seq: 7, data: 'six' }, { src: '::1', id: r.id, seq: 8, data: '' }]);
  await ns.delete();
});

const RAW = `
const [fam, dst, wantReplies, wantErrors] = process.argv.slice(2);
const family = Number(fam) as 4 | 6;
const r = IcmpRawSocket.open(family);
if (!r.socket) { console.log(JSON.stringify({ reason: r.reason })); process.exit(0); }
const s = r.socket;
const replies: unknown[] = [], errors: unknown[] = [];
s.onReply((src, src6, id, seq, data) => replies.push({ src: src6 ? ip6ToString(src6, 0) : u32ToIp(src), id, seq, data: data.toString() }));
s.onError((off, off6, type, code, d, d6, req) => errors.push({ off: off6 ? ip6ToString(off6, 0) : u32ToIp(off), type, code, dst: d6 ? ip6ToString(d6, 0) : u32ToIp(d), id: req.readUInt16BE(4) }));
const to = family === 6 ? parseIp6(dst)! : ipToU32(dst);
const sent = [s.send(to, 0x4242, 1, Buffer.from('raw')), s.send(to, 0x4243, 2, Buffer.from('raw2'))];
const report = () => { console.log(JSON.stringify({ sent, replies, errors })); s.close(); clearInterval(poll); clearTimeout(guard); };
const poll = setInterval(() => { if (replies.length >= Number(wantReplies) && errors.length >= Number(wantErrors)) report(); }, 5);
const guard = setTimeout(report, 10_000);
`;

test('icmp: where ping sockets are not permitted, root gets a raw socket with its own identifiers (both families)', { skip: !isRoot && 'needs root for ip netns' }, async () => {
  const ns = await createNetns(); // ping_group_range is the kernel default "1 0": root excluded
  const denied = await runIn(ns, PING.replace('process.argv.slice(2)', "['127.0.0.1', '0', '0']"));
  assert.match(denied.reason, /ping_group_range/);
  const r4 = await runIn(ns, RAW.replace('process.argv.slice(2)', "['4', '127.0.0.1', '2', '0']"));
  assert.deepEqual(r4.sent, [true, true]);
  // a raw socket also sees its own requests: only the replies count
  assert.deepEqual(r4.replies, [{ src: '127.0.0.1', id: 0x4242, seq: 1, data: 'raw' }, { src: '127.0.0.1', id: 0x4243, seq: 2, data: 'raw2' }]);
  const r6 = await runIn(ns, RAW.replace('process.argv.slice(2)', "['6', '::1', '2', '0']"));
  assert.deepEqual(r6.replies, [{ src: '::1', id: 0x4242, seq: 1, data: 'raw' }, { src: '::1', id: 0x4243, seq: 2, data: 'raw2' }]);
  await ns.delete();
});

test('icmp: a raw socket reports an unreachable that quotes its request', { skip: !isRoot && 'needs root for ip netns' }, async () => {
  const a = await createNetns(), b = await createNetns();
  await veth(a, b, { addrA: '10.233.0.1/24', addrB: '10.233.0.2/24' });
  await a.addRoute('10.234.0.0/16', { via: '10.233.0.2' });
  await b.sysctl('net.ipv4.ip_forward', '1');
  await b.ip('route', 'add', 'unreachable', '10.234.0.0/16');
  const r = await runIn(a, RAW.replace('process.argv.slice(2)', "['4', '10.234.1.1', '0', '1']"));
  assert.deepEqual(r.replies, []);
  assert.deepEqual(r.errors[0], { off: '10.233.0.2', type: 3, code: 1, dst: '10.234.1.1', id: 0x4242 });
  await a.delete();
  await b.delete();
});

