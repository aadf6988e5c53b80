import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { UnixDgramEndpoint, type UnixDgramPeerPort } from '../../src/link/unixgram.ts';
import { MAX_FRAME } from '../../src/link/port.ts';
import { sys, receiveBuffers, type SysHandle } from '../../src/link/sys.ts';
import { makeFrame, tmpDir } from './peers.ts';
import { waitFor } from '../helpers/wait.ts';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';

/** A QEMU-like unix dgram peer bound to its own path, collecting what it receives. */
class UnixPeer {
  readonly frames: Buffer[] = [];
  readonly from: (string | null)[] = [];
  private readonly h: SysHandle;
  constructor(readonly path: string, readonly remote: string) {
    const s = sys();
    this.h = s.openUnixDgram(path, 0);
    const { buf, info } = receiveBuffers(1 << 20);
    s.start(this.h, buf, info, MAX_FRAME + 1, (n, senders) => {
      for (let i = 0; i < n; i++) {
        const off = info[i * s.STRIDE], len = info[i * s.STRIDE + 1];
        this.frames.push(Buffer.from(buf.subarray(off, off + len)));
        this.from.push(senders?.[i] ?? null);
      }
    });
  }
  send(frame: Buffer): number { return sys().sendUnix(this.h, frame, this.remote); }
  close(): void { sys().close(this.h); }
}

const until = (cond: () => boolean, what = 'the condition') => waitFor(cond, { what });

/** An endpoint wired as a two-port hub: a frame from one port goes out of every other. */
async function hub(dir: string) {
  const ep = await UnixDgramEndpoint.bind(path.join(dir, 'qnet.sock'));
  const ports: UnixDgramPeerPort[] = [];
  ep.onPort = (p) => {
    ports.push(p);
    p.onFrame = (f, from) => { for (const q of ports) if (q !== from) q.send(f); };
  };
  return { ep, ports };
}

test('unixgram: two peers exchange frames through the endpoint', async () => {
  const dir = tmpDir();
  const { ep, ports } = await hub(dir);
  const a = new UnixPeer(path.join(dir, 'a.sock'), ep.path);
  const b = new UnixPeer(path.join(dir, 'b.sock'), ep.path);
  try {
    assert.equal(a.send(makeFrame(B, A, 60, 0x88b5, 1)), 0); // a appears; nobody to forward to yet
    await until(() => ports.length === 1);
    assert.equal(b.send(makeFrame(A, B, 1514, 0x88b5, 2)), 0);
    await until(() => a.frames.length === 1);
    const big = makeFrame(B, A, MAX_FRAME, 0x88b5, 3);
    assert.equal(a.send(big), 0);
    const batch = Array.from({ length: 200 }, (_, i) => makeFrame(B, A, 100 + i, 0x88b5, i & 0xff));
    // a unix dgram receive queue holds net.unix.max_dgram_qlen (default 10) datagrams:
    // beyond that sendto() fails with EAGAIN, so send in small bursts
    for (let i = 0; i < batch.length; i += 5) {
      for (const f of batch.slice(i, i + 5)) assert.equal(a.send(f), 0);
      await until(() => b.frames.length === 1 + Math.min(i + 5, batch.length));
    }
    assert.deepEqual(a.frames[0], makeFrame(A, B, 1514, 0x88b5, 2));
    assert.deepEqual(b.frames[0], big);
    batch.forEach((f, i) => assert.deepEqual(b.frames[i + 1], f));
    assert.equal(ports.length, 2);
    assert.deepEqual(ports.map((p) => p.path).sort(), [a.path, b.path].sort());
    assert.equal(a.from[0], ep.path);
    const pa = ports.find((p) => p.path === a.path)!;
    assert.equal(pa.counters.rxFrames, 202);
    assert.equal(pa.counters.txFrames, 1);
  } finally {
    a.close(); b.close(); ep.close();
  }
});

test('unixgram: a full receive queue makes send() fail, counted as a drop', async () => {
  const dir = tmpDir();
  const ep = await UnixDgramEndpoint.bind(path.join(dir, 'qnet.sock'));
  const a = new UnixPeer(path.join(dir, 'a.sock'), ep.path);
  try {
    const pa = ep.addPeer(a.path);
    for (let i = 0; i < 1000 && pa.counters.txDropped === 0; i++) pa.send(makeFrame(A, B));
    assert.equal(pa.counters.txDropped, 1);
    assert.equal(ep.lastSendError, 11 /* EAGAIN */);
    await until(() => a.frames.length === pa.counters.txFrames);
  } finally {
    a.close(); ep.close();
  }
});

test('unixgram: runts and giants are counted and dropped before any port', async () => {
  const dir = tmpDir();
  const { ep, ports } = await hub(dir);
  const a = new UnixPeer(path.join(dir, 'a.sock'), ep.path);
  try {
    a.send(Buffer.alloc(0));
    a.send(Buffer.alloc(13));
    a.send(Buffer.alloc(MAX_FRAME + 1));
    a.send(Buffer.alloc(MAX_FRAME + 5000));
    await until(() => ep.badDatagrams === 4);
    assert.equal(ports.length, 0);
    a.send(makeFrame(B, A, 14));
    await until(() => ports.length === 1);
    assert.equal(ep.badDatagrams, 4);
  } finally {
    a.close(); ep.close();
  }
});

test('unixgram: addPeer sends first; unreachable peers count drops; close unlinks', async () => {
  const dir = tmpDir();
  const ep = await UnixDgramEndpoint.bind(path.join(dir, 'qnet.sock'));
  const a = new UnixPeer(path.join(dir, 'a.sock'), ep.path);
  try {
    const seen: string[] = [];
    ep.onPort = (p) => seen.push(p.path);
    const pa = ep.addPeer(a.path);
    assert.deepEqual(seen, [a.path]);
    assert.equal(ep.addPeer(a.path), pa);
    pa.send(makeFrame(A, B, 64, 0x88b5, 9));
    await until(() => a.frames.length === 1);
    assert.deepEqual(a.frames[0], makeFrame(A, B, 64, 0x88b5, 9));
    const gone = ep.addPeer(path.join(dir, 'nobody.sock'));
    gone.send(makeFrame(A, B, 64));
    assert.equal(gone.counters.txDropped, 1);
    assert.equal(ep.sendErrors, 1);
  } finally {
    a.close();
    ep.close();
  }
  assert.equal(fs.existsSync(ep.path), false);
  ep.close(); // idempotent
});

test('unixgram: stale socket file is replaced, a live one is refused', async () => {
  const dir = tmpDir();
  const p = path.join(dir, 'qnet.sock');
  const first = await UnixDgramEndpoint.bind(p);
  await assert.rejects(UnixDgramEndpoint.bind(p), /another process is bound/);
  // simulate a crash: close the socket but leave the file
  sys().close((first as unknown as { handle: SysHandle }).handle);
  // the native close completes on the event loop: until then the old socket still counts as live
  const second = await waitFor(() => UnixDgramEndpoint.bind(p).catch((e: Error) => {
    if (/another process is bound/.test(e.message)) return null;
    throw e;
  }), { what: 'the crashed socket to be gone and its file replaced' });
  second.close();
  first.close();
  fs.writeFileSync(p, 'x');
  await assert.rejects(UnixDgramEndpoint.bind(p), /not a socket/);
});

test('unixgram: maxPeers refuses new senders', async () => {
  const dir = tmpDir();
  const ep = await UnixDgramEndpoint.bind(path.join(dir, 'qnet.sock'), { maxPeers: 1 });
  const a = new UnixPeer(path.join(dir, 'a.sock'), ep.path);
  const b = new UnixPeer(path.join(dir, 'b.sock'), ep.path);
  try {
    a.send(makeFrame(B, A));
    await until(() => ep.ports().length === 1);
    b.send(makeFrame(A, B));
    await until(() => ep.refusedPeers === 1);
    assert.equal(ep.ports().length, 1);
  } finally {
    a.close(); b.close(); ep.close();
  }
});

test('unixgram: QEMU -netdev dgram with unix addresses starts against the endpoint', async (t) => {
  const qemu = 'qemu-system-x86_64';
  const dir = tmpDir();
  const ep = await UnixDgramEndpoint.bind(path.join(dir, 'qnet.sock'));
  const local = path.join(dir, 'qemu.sock');
  const child = spawn(qemu, ['-M', 'none', '-nodefaults', '-display', 'none',
    '-netdev', `dgram,id=n0,local.type=unix,local.path=${local},remote.type=unix,remote.path=${ep.path}`],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr += String(d); });
  let exited: number | null | undefined;
  let spawnError: Error | null = null;
  child.on('exit', (code) => { exited = code; });
  child.on('error', (e) => { spawnError = e; });
  try {
    // QEMU has started once it bound its local path (or it failed)
    await waitFor(() => spawnError || exited !== undefined || (fs.existsSync(local) && fs.statSync(local).isSocket()), { what: "QEMU's local socket", timeoutMs: 20_000 });
    if (spawnError) { t.skip(`${qemu} not available: ${(spawnError as Error).message}`); return; }
    assert.equal(exited, undefined, `QEMU exited (${exited}): ${stderr}`);
    assert.ok(fs.statSync(local).isSocket(), 'QEMU bound its local path');
    // the endpoint can reach QEMU's socket (no NIC with -M none: the frame is simply dropped)
    const pq = ep.addPeer(local);
    pq.send(makeFrame(A, B));
    assert.equal(pq.counters.txFrames, 1);
    assert.equal(ep.sendErrors, 0);
  } finally {
    if (child.pid !== undefined && exited === undefined) {
      const gone = new Promise((r) => child.once('exit', r));
      process.kill(child.pid, 'SIGKILL');
      await gone;
    }
    ep.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
