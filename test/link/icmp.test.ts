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
const isRoot = process.getuid?.() === 0;

after(() => cleanupNetns());

/** Run a TypeScript module body in a child node inside ns; returns its JSON stdout. */
async function runIn(ns: Netns, body: string): Promise<any> {
  const file = path.join(tmpDir(), 'child.mts');
  fs.writeFileSync(file, `import { IcmpEchoSocket } from ${JSON.stringify(icmpModule)};\n` +
    `import { ipToU32, u32ToIp } from ${JSON.stringify(sysModule)};\n${body}\n`);
  const out = await ns.run([process.execPath, '--import', 'tsx', file], { timeoutMs: 30_000 });
  return JSON.parse(out.trim().split('\n').pop()!);
}

const PING = `
const [dst, wantReplies, wantErrors] = process.argv.slice(2);
const r = IcmpEchoSocket.open();
if (!r.socket) { console.log(JSON.stringify({ reason: r.reason })); process.exit(0); }
const s = r.socket;
const replies: unknown[] = [], errors: unknown[] = [];
s.onReply((src, id, seq, data) => replies.push({ src: u32ToIp(src), id, seq, data: data.toString('hex') }));
s.onError((off, type, code, d, req) => errors.push({ off: u32ToIp(off), type, code, dst: u32ToIp(d), id: req.readUInt16BE(4), seq: req.readUInt16BE(6) }));
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
    assert.equal(r.reason, 'ICMP echo sockets not permitted: run as root or widen net.ipv4.ping_group_range');
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
