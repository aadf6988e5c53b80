import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { Bed, ip, type RxUdp } from './_harness.ts';
import { TftpServer } from '../../src/services/tftp.ts';
import { tmpDir } from '../link/peers.ts';
import { ManualClock } from '../../src/stack/timers.ts';
import { waitFor } from '../helpers/wait.ts';

const GUEST_MAC = '52:54:00:12:34:56';
const GUEST = ip('10.0.2.15');
const HOST = ip('10.0.2.2');

function rrq(name: string, mode = 'octet', opts: Record<string, string> = {}, op = 1): Buffer {
  const parts = [name, mode, ...Object.entries(opts).flat()].map((s) => Buffer.from(s + '\0', 'latin1'));
  return Buffer.concat([Buffer.from([0, op]), ...parts]);
}
function ack(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt16BE(4, 0); b.writeUInt16BE(n, 2); return b; }
const opOf = (d: RxUdp) => d.payload.readUInt16BE(0);

function parseOack(p: Buffer): Record<string, string> {
  const s = p.toString('latin1', 2).split('\0');
  const o: Record<string, string> = {};
  for (let k = 0; k + 1 < s.length; k += 2) o[s[k]] = s[k + 1];
  return o;
}

async function fetchFile(bed: Bed, name: string, cport: number, mode = 'octet', opts: Record<string, string> = {}) {
  bed.sendUdp(GUEST_MAC, GUEST, cport, HOST, 69, rrq(name, mode, opts));
  const chunks: Buffer[] = [];
  let oack: Record<string, string> | null = null;
  let blk = 512;
  let first = await bed.recvUdp((d) => d.dstPort === cport);
  assert.ok(first, 'first reply');
  if (opOf(first) === 5) return { error: first.payload.readUInt16BE(2), msg: first.payload.toString('latin1', 4, first.payload.length - 1) };
  const tid = first.srcPort;
  assert.notEqual(tid, 69);
  assert.equal(first.srcIp, HOST);
  if (opOf(first) === 6) {
    oack = parseOack(first.payload);
    if (oack.blksize) blk = Number(oack.blksize);
    bed.sendUdp(GUEST_MAC, GUEST, cport, HOST, tid, ack(0));
    first = await bed.recvUdp((d) => d.dstPort === cport);
    assert.ok(first);
  }
  let d: RxUdp | null = first;
  let expect = 1;
  const sizes: number[] = [];
  for (;;) {
    assert.ok(d, `block ${expect}`);
    assert.equal(opOf(d), 3);
    assert.equal(d.payload.readUInt16BE(2), expect & 0xffff);
    const data = d.payload.subarray(4);
    chunks.push(data);
    sizes.push(data.length);
    bed.sendUdp(GUEST_MAC, GUEST, cport, HOST, tid, ack(expect));
    if (data.length < blk) break;
    expect++;
    d = await bed.recvUdp((x) => x.dstPort === cport);
  }
  return { data: Buffer.concat(chunks), oack, tid, sizes };
}

async function setup(opts: { retransmitMs?: number; retries?: number; maxPerClient?: number } = {}, clock?: ManualClock) {
  const bed = await Bed.create(undefined, undefined, clock);
  const dir = tmpDir('qnet-tftp-');
  const root = path.join(dir, 'root');
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
  const big = crypto.randomBytes(512 * 7 + 100);
  fs.writeFileSync(path.join(root, 'boot.img'), big);
  fs.writeFileSync(path.join(root, 'exact.bin'), crypto.randomBytes(1024));
  fs.writeFileSync(path.join(root, 'sub', 'text.txt'), 'line1\nline2\rx\n');
  fs.writeFileSync(path.join(dir, 'secret'), 'secret');
  fs.symlinkSync(path.join(dir, 'secret'), path.join(root, 'escape'));
  fs.symlinkSync('/etc/passwd', path.join(root, 'passwd'));
  fs.symlinkSync(path.join(root, 'boot.img'), path.join(root, 'inside'));
  const srv = new TftpServer(bed.gw, { root, ...opts });
  return { bed, srv, big, root, cleanup: () => { srv.close(); bed.close(); fs.rmSync(dir, { recursive: true, force: true }); } };
}

test('tftp: read a file with default options (512-byte blocks)', async () => {
  const { bed, srv, big, cleanup } = await setup();
  try {
    const r = await fetchFile(bed, 'boot.img', 2000);
    assert.ok(r.data);
    assert.ok(r.data.equals(big));
    assert.equal(r.oack, null);
    assert.deepEqual(r.sizes, [512, 512, 512, 512, 512, 512, 512, 100]);
    // an exact multiple ends with an empty block; leading '/' is stripped
    const e = await fetchFile(bed, '/exact.bin', 2001);
    assert.deepEqual(e.sizes, [512, 512, 0]);
    // the last ACK completes a transfer after the client has its data
    await waitFor(() => srv.stats.completed >= 2, { what: 'two completed transfers' });
    assert.equal(srv.stats.completed, 2);
    assert.equal(srv.stats.active, 0);
  } finally { cleanup(); }
});

test('tftp: negotiated blksize, tsize and timeout', async () => {
  const { bed, srv, big, cleanup } = await setup();
  try {
    const r = await fetchFile(bed, 'boot.img', 2010, 'octet', { blksize: '1024', tsize: '0', timeout: '3' });
    assert.deepEqual(r.oack, { blksize: '1024', tsize: String(big.length), timeout: '3' });
    assert.ok(r.data!.equals(big));
    assert.deepEqual(r.sizes, [1024, 1024, 1024, 612]);
    // too large a blksize is clamped to 1432; unknown options are ignored
    const c = await fetchFile(bed, 'boot.img', 2011, 'OCTET', { BLKSIZE: '9000', frobnicate: '1' });
    assert.deepEqual(c.oack, { blksize: '1432' });
    assert.ok(c.data!.equals(big));
    // an invalid blksize is left out (no OACK at all here)
    const d = await fetchFile(bed, 'boot.img', 2012, 'octet', { blksize: '4' });
    assert.equal(d.oack, null);
    await waitFor(() => srv.stats.completed >= 3, { what: 'three completed transfers' });
    assert.equal(srv.stats.completed, 3);
  } finally { cleanup(); }
});

test('tftp: netascii mode converts line ends', async () => {
  const { bed, cleanup } = await setup();
  try {
    const r = await fetchFile(bed, 'sub/text.txt', 2020, 'netascii');
    assert.equal(r.data!.toString('latin1'), 'line1\r\nline2\r\0x\r\n');
  } finally { cleanup(); }
});

test('tftp: missing files, escapes and write requests get errors', async () => {
  const { bed, srv, cleanup } = await setup();
  try {
    const cases: [string, number][] = [
      ['nothere', 1], ['../secret', 2], ['../../../../etc/passwd', 2], ['sub/../../secret', 2], ['//etc/passwd', 2],
      ['escape', 2], ['passwd', 2], ['sub', 2], ['..\\secret', 2], ['', 2],
    ];
    let port = 2030;
    for (const [name, code] of cases) {
      const r = await fetchFile(bed, name, port++);
      assert.equal(r.error, code, `${name}: ${JSON.stringify(r)}`);
    }
    const inside = await fetchFile(bed, 'inside', port++);
    assert.ok(inside.data, 'symlink within the root is fine');
    bed.sendUdp(GUEST_MAC, GUEST, 2099, HOST, 69, rrq('upload.bin', 'octet', {}, 2));
    const w = await bed.recvUdp((d) => d.dstPort === 2099);
    assert.equal(opOf(w!), 5);
    assert.equal(w!.payload.readUInt16BE(2), 2);
    assert.equal(fs.existsSync(path.join(srv.root, 'upload.bin')), false);
    // garbage on port 69
    bed.sendUdp(GUEST_MAC, GUEST, 2098, HOST, 69, Buffer.from([0, 1, 65, 66]));
    const g = await bed.recvUdp((d) => d.dstPort === 2098);
    assert.equal(g!.payload.readUInt16BE(2), 4);
    bed.sendUdp(GUEST_MAC, GUEST, 2097, HOST, 69, rrq('boot.img', 'mail'));
    const m = await bed.recvUdp((d) => d.dstPort === 2097);
    assert.equal(m!.payload.readUInt16BE(2), 4);
    assert.equal(srv.stats.notFound, 1);
    assert.equal(srv.stats.writeRefused, 1);
  } finally { cleanup(); }
});

test('tftp: lost ACK -> retransmission, duplicate ACKs ignored, give up after retries', async () => {
  // the gateway's timers run on a manual clock: a retransmission happens when the test moves
  // the clock past the interval, never because the machine was slow
  const clock = new ManualClock(1000);
  const { bed, srv, big, cleanup } = await setup({ retransmitMs: 150, retries: 2 }, clock);
  const elapse = (ms: number) => bed.gw.timers.runUntil(clock, clock.t + ms);
  const to2100 = (d: RxUdp) => d.dstPort === 2100;
  try {
    bed.sendUdp(GUEST_MAC, GUEST, 2100, HOST, 69, rrq('boot.img'));
    const d1 = await bed.recvUdp(to2100);
    assert.equal(d1!.payload.readUInt16BE(2), 1);
    const tid = d1!.srcPort;
    // do not ACK: block 1 comes again once the interval is over
    elapse(149);
    assert.equal(srv.stats.retransmits, 0, 'not before the interval');
    elapse(1);
    const again = await bed.recvUdp(to2100);
    assert.ok(again);
    assert.equal(again.payload.readUInt16BE(2), 1);
    assert.ok(again.payload.equals(d1!.payload));
    assert.equal(srv.stats.retransmits, 1);
    // a retransmitted RRQ does not start a second transfer
    bed.sendUdp(GUEST_MAC, GUEST, 2100, HOST, 69, rrq('boot.img'));
    // ACK 1 twice: only one block 2 (no sorcerer's apprentice)
    bed.sendUdp(GUEST_MAC, GUEST, 2100, HOST, tid, ack(1));
    bed.sendUdp(GUEST_MAC, GUEST, 2100, HOST, tid, ack(1));
    const b2 = await bed.recvUdp(to2100);
    assert.equal(opOf(b2!), 3);
    assert.equal(b2!.payload.readUInt16BE(2), 2);
    assert.ok(b2!.payload.subarray(4).equals(big.subarray(512, 1024)));
    await waitFor(() => srv.stats.duplicateAcks >= 1, { what: 'the second ACK 1 to be seen' });
    assert.equal(srv.stats.duplicateAcks, 1);
    assert.equal(srv.stats.started, 1);
    // a packet from another port to the TID: error 5, the transfer goes on
    bed.sendUdp(GUEST_MAC, GUEST, 2101, HOST, tid, ack(2));
    const u = await bed.recvUdp((d) => d.dstPort === 2101);
    assert.equal(u!.payload.readUInt16BE(2), 5);
    // stop ACKing: two retransmissions, then an error and the transfer is gone
    const rest: RxUdp[] = [];
    for (let k = 0; k < 3; k++) {
      elapse(150);
      rest.push((await bed.recvUdp(to2100))!);
    }
    await bed.sync();
    rest.push(...await bed.collectUdp(0, to2100));
    assert.deepEqual(rest.map((d) => [opOf(d), d.payload.readUInt16BE(2)]), [[3, 2], [3, 2], [5, 0]]);
    assert.equal(srv.stats.gaveUp, 1);
    assert.equal(srv.stats.active, 0);
  } finally { cleanup(); }
});

test('tftp: concurrent transfers per client are limited', async () => {
  const { bed, srv, cleanup } = await setup({ maxPerClient: 2 });
  try {
    for (const p of [2200, 2201, 2202]) bed.sendUdp(GUEST_MAC, GUEST, p, HOST, 69, rrq('boot.img'));
    const a = await bed.recvUdp((d) => d.dstPort === 2200);
    const b = await bed.recvUdp((d) => d.dstPort === 2201);
    const c = await bed.recvUdp((d) => d.dstPort === 2202);
    assert.equal(opOf(a!), 3);
    assert.equal(opOf(b!), 3);
    assert.equal(opOf(c!), 5);
    assert.equal(srv.stats.limited, 1);
  } finally { cleanup(); }
});
