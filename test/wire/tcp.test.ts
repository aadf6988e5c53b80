import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  finishTcpV4, finishTcpV6, parseTcp, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, TcpHeader, TcpOptions, writeTcp,
} from '../../src/wire/tcp.ts';
import { IPPROTO_TCP, Ipv4Header, parseIpv4 } from '../../src/wire/ipv4.ts';
import { checksum, pseudoSumV4, pseudoSumV6 } from '../../src/wire/checksum.ts';
import { FRAMES } from './_vectors.ts';
import { Rng, checkTruncations } from './_util.ts';

test('tcp: known SYN with options', () => {
  const f = FRAMES.tcp_syn;
  const ip = new Ipv4Header();
  assert.equal(parseIpv4(f, 14, f.length, ip), null);
  const t = new TcpHeader();
  const ps = pseudoSumV4(ip.src, ip.dst, IPPROTO_TCP, ip.payloadEnd - ip.payloadOffset);
  assert.equal(parseTcp(f, ip.payloadOffset, ip.payloadEnd, t, ps), null);
  assert.deepEqual(
    [t.srcPort, t.dstPort, t.seq, t.ack, t.headerLength, t.flags, t.window, t.checksum, t.checksumOk, t.urgent],
    [45678, 80, 0x11223344, 0, 40, TCP_SYN, 64240, 0xdda8, true, 0]);
  assert.deepEqual([t.mss, t.wscale, t.sackPermitted, t.tsPresent, t.tsVal, t.tsEcr, t.sackCount],
    [1460, 7, true, true, 0x0a1b2c3d, 0, 0]);
  assert.deepEqual([t.optionsOffset, t.optionsEnd, t.payloadOffset, t.payloadEnd], [54, 74, 74, 74]);
  // Writing the parsed fields back reproduces the captured segment byte for byte.
  const b = Buffer.alloc(40);
  assert.equal(writeTcp(b, 0, t.srcPort, t.dstPort, t.seq, t.ack, t.flags, t.window, t), 40);
  finishTcpV4(b, 0, 40, ip.src, ip.dst);
  assert.ok(b.equals(f.subarray(34, 74)));
});

test('tcp: write/parse round trip with every option mix', () => {
  const rng = new Rng(2024);
  const b = Buffer.alloc(1600);
  const o = new TcpOptions();
  const t = new TcpHeader();
  for (let i = 0; i < 2000; i++) {
    o.clear();
    if (rng.int(2)) o.mss = rng.int(65536);
    if (rng.int(2)) o.wscale = rng.int(15);
    o.sackPermitted = rng.int(2) === 1;
    if (rng.int(2)) {
      o.tsPresent = true;
      o.tsVal = rng.u32();
      o.tsEcr = rng.u32();
    }
    o.sackCount = rng.int(5);
    for (let k = 0; k < 8; k++) o.sackBlocks[k] = rng.u32();
    const n = rng.int(1000);
    const src = rng.u32(), dst = rng.u32();
    const off = rng.int(7);
    const seq = rng.u32(), ack = rng.u32(), flags = rng.int(256), win = rng.int(65536);
    const p = writeTcp(b, off, 1000, 2000, seq, ack, flags, win, o);
    const hl = p - off;
    assert.equal(hl % 4, 0);
    assert.ok(hl <= 60);
    rng.fill(b, p, p + n);
    finishTcpV4(b, off, hl + n, src, dst);
    assert.equal(parseTcp(b, off, p + n, t, pseudoSumV4(src, dst, IPPROTO_TCP, hl + n)), null);
    assert.ok(t.checksumOk);
    assert.deepEqual([t.seq, t.ack, t.flags, t.window, t.headerLength, t.payloadOffset, t.payloadEnd],
      [seq, ack, flags, win, hl, p, p + n]);
    assert.deepEqual([t.mss, t.wscale, t.sackPermitted, t.tsPresent, t.tsVal, t.tsEcr],
      [o.mss, o.wscale, o.sackPermitted, o.tsPresent, o.tsPresent ? o.tsVal : 0, o.tsPresent ? o.tsEcr : 0]);
    // SACK blocks are cut to what fits in 40 option bytes.
    const used = (o.mss >= 0 ? 4 : 0) + (o.tsPresent ? 12 : o.sackPermitted ? 4 : 0) + (o.wscale >= 0 ? 4 : 0);
    const fit = Math.min(o.sackCount, Math.floor((40 - used - 4) / 8));
    assert.equal(t.sackCount, Math.max(0, fit));
    for (let k = 0; k < 2 * t.sackCount; k++) assert.equal(t.sackBlocks[k], o.sackBlocks[k]);
  }
  // No options: a plain 20-byte ACK.
  assert.equal(writeTcp(b, 0, 1, 2, 3, 4, TCP_ACK | TCP_PSH | TCP_FIN, 5), 20);
  assert.equal(parseTcp(b, 0, 20, t), null);
  assert.deepEqual([t.headerLength, t.mss, t.wscale, t.sackPermitted, t.tsPresent, t.checksumOk], [20, -1, -1, false, false, false]);
});

test('tcp: IPv6 checksum', () => {
  const b = Buffer.alloc(100);
  for (let i = 0; i < 32; i++) b[i] = i * 13;
  const p = writeTcp(b, 32, 443, 50000, 1, 2, TCP_ACK, 1000);
  b.write('hello', p);
  finishTcpV6(b, 32, 25, 0, 16);
  assert.equal(checksum(b, 32, 25, pseudoSumV6(b, 0, 16, IPPROTO_TCP, 25)), 0);
  const t = new TcpHeader();
  assert.equal(parseTcp(b, 32, 57, t, pseudoSumV6(b, 0, 16, IPPROTO_TCP, 25)), null);
  assert.ok(t.checksumOk);
});

test('tcp: option edge cases and malformed', () => {
  const t = new TcpHeader();
  const f = FRAMES.tcp_syn;
  checkTruncations('tcp', parseTcp, f, 34, 74, t, 74);
  const seg = (opts: number[]): Buffer => {
    const len = 20 + Math.ceil(opts.length / 4) * 4;
    const b = Buffer.alloc(len);
    b[12] = (len / 4) << 4;
    b.set(opts, 20);
    return b;
  };
  const parse = (opts: number[]): string | null => {
    const b = seg(opts);
    return parseTcp(b, 0, b.length, t);
  };
  assert.equal(parse([1, 1, 1, 1]), null);
  assert.equal(parse([0, 2, 99, 99]), null, 'bytes after EOL are ignored');
  assert.equal(parse([3, 3, 20, 0]), null);
  assert.equal(t.wscale, 14, 'window scale clamped');
  assert.equal(parse([99, 4, 1, 2, 2, 4, 1, 0]), null, 'unknown option skipped');
  assert.equal(t.mss, 256);
  assert.equal(parse([5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0]), null);
  assert.deepEqual([t.sackCount, t.sackBlocks[0], t.sackBlocks[1]], [1, 1, 2]);
  assert.equal(parse([1, 1, 1, 2]), 'tcp: option without length');
  assert.equal(parse([99, 1, 0, 0]), 'tcp: bad option length');
  assert.equal(parse([99, 0, 0, 0]), 'tcp: bad option length');
  assert.equal(parse([99, 5, 0, 0]), 'tcp: bad option length');
  assert.equal(parse([2, 3, 0, 0]), 'tcp: bad mss option');
  assert.equal(parse([3, 4, 0, 0]), 'tcp: bad window scale option');
  assert.equal(parse([4, 3, 0, 0]), 'tcp: bad sack-permitted option');
  assert.equal(parse([5, 2, 0, 0]), 'tcp: bad sack option');
  assert.equal(parse([5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 'tcp: bad sack option');
  assert.equal(parse([8, 8, 0, 0, 0, 0, 0, 0]), 'tcp: bad timestamp option');
  const b = Buffer.alloc(20);
  b[12] = 0x40;
  assert.equal(parseTcp(b, 0, 20, t), 'tcp: bad data offset');
  b[12] = 0x60;
  assert.equal(parseTcp(b, 0, 20, t), 'tcp: data offset beyond segment');
});
