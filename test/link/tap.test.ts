// Tap devices. Live tests run a child node process inside a namespace created here, so the
// tap device is created there and vanishes with it; the root namespace is never touched.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TapPort } from '../../src/link/tap.ts';
import { createNetns, cleanupNetns } from '../helpers/netns.ts';
import { tmpDir } from './peers.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const tapModule = path.resolve(here, '../../src/link/tap.ts');
const isRoot = process.getuid?.() === 0;

after(() => cleanupNetns());

test('tap: open failures are explained', () => {
  assert.throws(() => TapPort.open('x'.repeat(40)), /cannot open tap x+: path too long/);
});

// In the namespace: open tap qt0, give it 10.66.0.1/24, then as "guest" 10.66.0.2 ask for
// 10.66.0.1 by ARP and ping it; the kernel's replies come back through the port.
const CHILD = `
import { execFileSync } from 'node:child_process';
import { TapPort } from ${JSON.stringify(tapModule)};
const port = TapPort.open('qt0');
const busy = (() => { try { TapPort.open('qt0'); return 'opened twice'; } catch (e) { return (e as Error).message; } })();
execFileSync('ip', ['addr', 'add', '10.66.0.1/24', 'dev', 'qt0']);
execFileSync('ip', ['link', 'set', 'qt0', 'up']);
const guest = Buffer.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const got: { arpReply?: string; echoReply?: string } = {};
let hostMac: Buffer | null = null;
function ipv4Echo(): Buffer {
  const f = Buffer.alloc(14 + 20 + 8 + 4);
  hostMac!.copy(f, 0); guest.copy(f, 6); f.writeUInt16BE(0x0800, 12);
  const ip = f.subarray(14, 34);
  ip[0] = 0x45; ip.writeUInt16BE(32, 2); ip[8] = 64; ip[9] = 1;
  Buffer.from([10, 66, 0, 2]).copy(ip, 12); Buffer.from([10, 66, 0, 1]).copy(ip, 16);
  ip.writeUInt16BE(cksum(ip), 10);
  const icmp = f.subarray(34);
  icmp[0] = 8; icmp.writeUInt16BE(0x4242, 4); icmp.writeUInt16BE(7, 6); icmp.write('qnet', 8);
  icmp.writeUInt16BE(cksum(icmp), 2);
  return f;
}
function cksum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length & 1) s += b[b.length - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
port.onFrame = (f) => {
  const type = f.readUInt16BE(12);
  if (type === 0x0806 && f.readUInt16BE(20) === 2) {
    got.arpReply = f.subarray(28, 32).join('.');
    hostMac = Buffer.from(f.subarray(6, 12));
    port.send(ipv4Echo());
  } else if (type === 0x0800 && f[23] === 1 && f[34] === 0) {
    got.echoReply = \`\${f.subarray(26, 30).join('.')} seq=\${f.readUInt16BE(40)} \${f.subarray(42, 46).toString()}\`;
  }
};
const arp = Buffer.alloc(42);
Buffer.alloc(6, 0xff).copy(arp, 0); guest.copy(arp, 6); arp.writeUInt16BE(0x0806, 12);
arp.writeUInt16BE(1, 14); arp.writeUInt16BE(0x0800, 16); arp[18] = 6; arp[19] = 4; arp.writeUInt16BE(1, 20);
guest.copy(arp, 22); Buffer.from([10, 66, 0, 2]).copy(arp, 28); Buffer.from([10, 66, 0, 1]).copy(arp, 38);
port.send(arp);
// report once the echo reply is in (the 10 s limit only guards a hang)
const report = () => {
  clearInterval(poll); clearTimeout(guard);
  console.log(JSON.stringify({ name: port.ifname, busy, got, counters: port.counters }));
  port.close();
};
const poll = setInterval(() => { if (got.echoReply) report(); }, 5);
const guard = setTimeout(report, 10_000);
`;

test('tap: frames in and out of a tap device inside a namespace', { skip: !isRoot && 'needs root for ip netns' }, async () => {
  const ns = await createNetns();
  const file = path.join(tmpDir(), 'child.mts');
  fs.writeFileSync(file, CHILD);
  const out = await ns.run([process.execPath, '--import', 'tsx', file], { timeoutMs: 30_000 });
  const r = JSON.parse(out.trim().split('\n').pop()!);
  assert.equal(r.name, 'qt0');
  assert.match(r.busy, /cannot open tap qt0: TUNSETIFF qt0: Device or resource busy/);
  assert.equal(r.got.arpReply, '10.66.0.1');
  assert.equal(r.got.echoReply, '10.66.0.1 seq=7 qnet');
  assert.equal(r.counters.txFrames, 2);
  assert.equal(r.counters.txDropped, 0);
  assert.ok(r.counters.rxFrames >= 2);
  await ns.delete();
});
