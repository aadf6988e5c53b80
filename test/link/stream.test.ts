import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import net from 'node:net';
import { StreamConnector, StreamListener, StreamPort } from '../../src/link/stream.ts';
import { UdpEndpoint } from '../../src/link/dgram.ts';
import { MAX_FRAME } from '../../src/link/port.ts';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { StreamPeer, UdpPeer, delay, lengthPrefixed, makeFrame, tmpDir } from './peers.ts';
import { waitFor } from '../helpers/wait.ts';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';

async function listener() {
  const sock = path.join(tmpDir(), 's.sock');
  const l = await StreamListener.listen({ kind: 'unix', path: sock });
  const ports: StreamPort[] = [];
  const got: Buffer[] = [];
  l.onPort = (p) => { ports.push(p); p.onFrame = (f) => got.push(Buffer.from(f)); };
  return { sock, l, ports, got };
}

test('stream: frames split at every byte boundary are reassembled', async () => {
  const { sock, l, got } = await listener();
  const peer = await StreamPeer.connect(sock);
  const frames = [makeFrame(B, A, 60, 0x88b5, 1), makeFrame(B, A, 1514, 0x88b5, 2), makeFrame(B, A, 9000, 0x88b5, 3)];
  const wire = lengthPrefixed(frames);
  // (the pauses only spread the pieces over many reads; nothing waits on them)
  for (let i = 0; i < wire.length; i += 7) { peer.raw(wire.subarray(i, Math.min(wire.length, i + 7))); if (i % 700 === 0) await delay(1); }
  await waitFor(() => got.length >= 3, { what: '3 reassembled frames' });
  assert.equal(got.length, 3);
  frames.forEach((f, i) => assert.deepEqual(got[i], f));
  peer.close();
  l.close();
});

test('stream: runts and empty frames are dropped and counted, the connection stays', async () => {
  const { sock, l, ports, got } = await listener();
  const peer = await StreamPeer.connect(sock);
  peer.send(Buffer.alloc(0), Buffer.alloc(13), makeFrame(B, A));
  // the good frame comes last in the same write: once it is in, the runts were read
  await waitFor(() => got.length >= 1, { what: 'the good frame' });
  assert.equal(got.length, 1);
  assert.equal(ports[0].counters.rxDropped, 2);
  assert.equal(ports[0].closed, false);
  peer.close();
  l.close();
});

test('stream: a bad length prefix disconnects that peer only', async () => {
  const { sock, l, ports, got } = await listener();
  const bad = await StreamPeer.connect(sock);
  const good = await StreamPeer.connect(sock);
  await waitFor(() => ports.length === 2, { what: 'both connections accepted' });
  const h = Buffer.alloc(4);
  h.writeUInt32BE(MAX_FRAME + 1);
  bad.raw(h);
  assert.equal(await bad.waitClosed(), true);
  good.send(makeFrame(B, A));
  await waitFor(() => got.length >= 1, { what: "the good peer's frame" });
  assert.equal(got.length, 1);
  assert.equal(ports.filter((p) => !p.closed).length, 1);
  good.close();
  l.close();
});

test('stream: sends are batched and framed; many connections on one listener', async () => {
  const { sock, l, ports } = await listener();
  const peers = await Promise.all([1, 2, 3].map(() => StreamPeer.connect(sock)));
  await waitFor(() => ports.length >= 3, { what: '3 connections accepted' });
  assert.equal(ports.length, 3);
  for (const p of ports) for (let i = 0; i < 100; i++) p.send(makeFrame(A, B, 100, 0x88b5, i));
  for (const peer of peers) {
    const frames = await peer.waitFrames(100);
    assert.equal(frames.length, 100);
    assert.equal(frames[99][20], 99);
  }
  peers.forEach((p) => p.close());
  l.close();
});

test('stream: a port that delivers FRAMES_PER_TURN frames in one turn yields to the others, losing nothing', async (t) => {
  const { sock, l, ports, got } = await listener();
  const flooder = await StreamPeer.connect(sock);
  const calm = await StreamPeer.connect(sock);
  t.after(() => { flooder.close(); calm.close(); l.close(); });
  await waitFor(() => ports.length >= 2, { what: '2 connections accepted' });
  const N = 20_000;
  const frames = Array.from({ length: N }, (_, i) => { const f = makeFrame(B, A, 64); f.writeUInt32BE(i, 20); return f; });
  flooder.send(...frames);
  for (let i = 0; i < 5; i++) { calm.send(makeFrame(A, B, 64)); await new Promise((r) => setImmediate(r)); }
  await waitFor(() => got.length >= N + 5, { what: 'every frame delivered', timeoutMs: 30_000 });
  const floodPort = ports[0];
  assert.ok(floodPort.yields > 0, 'the flooding port paused for the others');
  assert.equal(ports[1].yields, 0, 'a port with a few frames per turn never pauses');
  const flood = got.filter((f) => f[11] === 0x0a); // from A
  assert.equal(flood.length, N);
  assert.ok(flood.every((f, i) => f.readUInt32BE(20) === i), 'in order, none lost');
  assert.equal(floodPort.counters.rxFrames, N);
});

test('stream: refuses to take over a live socket, replaces a stale one', async () => {
  const { sock, l } = await listener();
  await assert.rejects(StreamListener.listen({ kind: 'unix', path: sock }), /in use/);
  l.close();
  // stale: the socket file of a process that was SIGKILLed (a clean close would remove it)
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.ok(fs.lstatSync(sock).isSocket(), 'the dead process left its socket file');
  const l2 = await StreamListener.listen({ kind: 'unix', path: sock });
  const ports: StreamPort[] = [];
  l2.onPort = (p) => ports.push(p);
  const peer = await StreamPeer.connect(sock);
  await waitFor(() => ports.length === 1, { what: 'a connection on the replacing listener' });
  peer.close();
  l2.close();
  // not a socket: refused, and the file is left alone
  fs.writeFileSync(sock, 'data');
  await assert.rejects(StreamListener.listen({ kind: 'unix', path: sock }), /is not a socket/);
  assert.equal(fs.readFileSync(sock, 'utf8'), 'data');
});

test('stream connector: reconnects when the QEMU-side server restarts', async () => {
  const dir = tmpDir();
  const sock = path.join(dir, 'qemu.sock');
  const accepted: net.Socket[] = [];
  const start = () => new Promise<net.Server>((r) => { const s = net.createServer((c) => accepted.push(c)); s.listen(sock, () => r(s)); });
  let srv = await start();
  const c = new StreamConnector({ kind: 'unix', path: sock });
  const ports: StreamPort[] = [];
  c.onPort = (p) => ports.push(p);
  c.start();
  await waitFor(() => ports.length >= 1 && accepted.length >= 1, { what: 'the first connection' });
  assert.equal(ports.length, 1);
  accepted.forEach((s) => s.destroy());
  await waitFor(() => ports[0].closed, { what: 'the first port to close' });
  await new Promise<void>((r) => srv.close(() => r()));
  srv = await start();
  // the reconnect is the event awaited; the deadline only guards a hang
  await waitFor(() => ports.length >= 2, { what: 'the connector to reconnect' });
  assert.equal(ports.length, 2);
  assert.equal(ports[1].closed, false);
  c.close();
  srv.close();
});

test('dgram: each source address is a port; oversize and runt datagrams are counted', async () => {
  const ep = await UdpEndpoint.bind({ host: '127.0.0.1', port: 0 });
  const got: [number, Buffer][] = [];
  ep.onPort = (p) => { p.onFrame = (f, port) => got.push([port.id, Buffer.from(f)]); };
  const a = await UdpPeer.bind(ep.local.port);
  const b = await UdpPeer.bind(ep.local.port);
  a.send(makeFrame(B, A));
  b.send(makeFrame(A, B));
  a.send(Buffer.alloc(5));
  await waitFor(() => got.length >= 2 && ep.badDatagrams >= 1, { what: 'two frames and one bad datagram' });
  assert.equal(got.length, 2);
  assert.notEqual(got[0][0], got[1][0]);
  assert.equal(ep.badDatagrams, 1);
  const [pa] = ep.ports();
  pa.send(makeFrame(A, B, 70));
  assert.equal((await a.waitFrames(1)).length, 1);
  a.close(); b.close(); ep.close();
});
