// Issue 13, case 7: peers that stop in the middle of a frame on a stream attach socket. They
// used to pin a frame-sized buffer each, forever (5,000 of them took qnet from 196 to 565 MB).
// Now a listener caps its connections, the bytes its connections hold in unfinished frames
// (evicting the peer that stalled longest) and how long a frame may stay unfinished, while a
// well-behaved peer keeps its connection and its frames.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import net from 'node:net';
import { StreamListener, type StreamPort } from '../../src/link/stream.ts';
import { Network } from '../../src/network/network.ts';
import { parseAttach } from '../../src/network/attach.ts';
import { LimitLog } from '../../src/util/limits.ts';
import { logger, setLogSink } from '../../src/util/log.ts';
import { StreamPeer, lengthPrefixed, makeFrame, tmpDir } from '../link/peers.ts';
import { RawGuest, ip, until } from './raw-guest.ts';

const logLines: string[] = [];
setLogSink((l) => logLines.push(l));
const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';

/** A peer that announces a frame of `len` bytes and sends only `sent` of them. */
async function staller(sock: string, len: number, sent: number): Promise<net.Socket> {
  const s = net.connect(sock);
  s.on('error', () => {});
  await new Promise<void>((r) => s.once('connect', () => r()));
  const h = Buffer.alloc(4 + sent);
  h.writeUInt32BE(len, 0);
  s.write(h);
  return s;
}

test('stream listener: connection cap, unfinished-frame byte cap (stalest evicted), unfinished-frame timeout; the good peer is untouched', async (t) => {
  const sock = path.join(tmpDir('qnet-hostile-stream-'), 's.sock');
  const limits = new LimitLog(logger('test'));
  const l = await StreamListener.listen({ kind: 'unix', path: sock }, 'stream', 0o600, { maxConnections: 8, maxBufferedBytes: 200_000, partialTimeoutMs: 1500, limits });
  t.after(() => l.close());
  const ports: StreamPort[] = [];
  const got: Buffer[] = [];
  l.onPort = (p) => { ports.push(p); p.onFrame = (f, from) => { if (from === ports[0]) got.push(Buffer.from(f)); }; };
  const good = await StreamPeer.connect(sock);
  t.after(() => good.close());
  await until(() => ports.length === 1, 'the good peer\'s port');

  // idle connections: 7 fill the connection cap, the 13 after them are closed at once
  const idle: net.Socket[] = [];
  t.after(() => idle.forEach((s) => s.destroy()));
  for (let k = 0; k < 20; k++) {
    const s = net.connect(sock);
    s.on('error', () => {});
    idle.push(s);
  }
  await until(() => l.stats.refused === 13 && ports.length === 8, '7 accepted and 13 refused connections');
  assert.equal(limits.count('stream.connections'), 13);
  idle.forEach((s) => s.destroy());
  await until(() => ports.slice(1).every((p) => p.closed), 'the idle connections to go');

  // 7 peers announce 69,000-byte frames and stop after 60,000 bytes: they cannot all fit in
  // 200,000 bytes, so each new one evicts the one that stalled longest
  const evil: net.Socket[] = [];
  t.after(() => evil.forEach((s) => s.destroy()));
  for (let k = 0; k < 7; k++) {
    evil.push(await staller(sock, 69_000, 60_000));
    await until(() => ports.length === 9 + k && (ports[8 + k].partialBytes > 0 || ports[8 + k].closed), `staller ${k}'s unfinished frame`);
  }
  assert.equal(l.stats.evicted, 5);
  assert.equal(l.budget.bytes, 2 * 69_000);
  assert.deepEqual(ports.slice(8).map((p) => p.closed), [true, true, true, true, true, false, false], 'the five that stalled first were evicted');
  // the two left time out
  await until(() => l.stats.timedOut === 2, 'the two remaining stallers to time out', 15_000);
  assert.equal(l.budget.bytes, 0);
  assert.equal(l.budget.partial.size, 0);
  assert.equal(limits.count('stream.bufferedBytes'), 5);
  assert.equal(limits.count('stream.partialTimeoutMs'), 2);

  // the good peer: still connected, and a frame it sends in pieces still arrives whole
  assert.equal(ports[0].closed, false);
  const frame = makeFrame(B, A, 9000, 0x88b5, 7);
  const wire = lengthPrefixed([frame]);
  good.raw(wire.subarray(0, 5000));
  await until(() => l.budget.partial.has(ports[0]), 'the good peer\'s frame to be half in');
  good.raw(wire.subarray(5000));
  await until(() => got.length === 1, 'the good peer\'s frame');
  assert.deepEqual(got[0], frame);
  assert.equal(l.budget.bytes, 0, 'a finished frame releases its bytes');
});

test('network attach socket, defaults: of 400 peers stalled 68,000 bytes into a frame, 255 are let in (256 connections) and hold their frames within the 32 MiB cap; a guest attached before keeps working', async (t) => {
  const dir = tmpDir('qnet-hostile-stream-net-');
  const sock = path.join(dir, 'u.sock');
  const n = await Network.start({
    name: 'st', mode: 'user', net: ip('10.0.2.0'), prefix: 24, gateway: ip('10.0.2.2'), dns: ip('10.0.2.3'), dhcpStart: ip('10.0.2.15'),
    upstreams: [], listen: [parseAttach(`unix:${sock}`)],
  });
  t.after(() => n.close());
  const good = await RawGuest.connect(sock, '52:54:00:12:34:56', { ip: ip('10.0.2.2'), mac: '52:55:0a:00:02:02' });
  t.after(() => good.close());
  assert.equal((await good.lease())?.type, 5);
  const rssBefore = process.memoryUsage().rss;
  const evil: net.Socket[] = [];
  t.after(() => evil.forEach((s) => s.destroy()));
  for (let k = 0; k < 400; k++) evil.push(await staller(sock, 69_000, 68_000));
  const st = () => (n.stats() as { attachPoints: { connections: number; bufferedBytes: number; refused: number; evicted: number }[] }).attachPoints[0];
  await until(() => st().refused + st().connections === 401, 'every staller accepted or refused');
  assert.equal(st().connections, 256, 'the listener\'s connection cap (the good guest is one of them)');
  assert.equal(st().refused, 145);
  await until(() => st().bufferedBytes === 255 * 69_000, 'every accepted staller\'s unfinished frame');
  assert.ok(st().bufferedBytes <= 32 << 20);
  const grown = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
  await good.ping();
  await good.barrier();
  assert.equal(good.closed, false);
  if (process.env.QNET_VERBOSE) console.log({ rssGrowthMiB: grown.toFixed(1), ...st() });
  assert.equal(logLines.filter((x) => /net\/st: limit reached: stream\.connections/.test(x)).length, 1, 'one log line for many refusals');
});
