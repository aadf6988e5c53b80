// Fuzz a real `qnet switch` child process (node bin/qnet.js switch ...) through its sockets.
//
// While two well-behaved stream peers (and one well-behaved dgram peer) exchange numbered
// frames, hostile clients on the same unix stream socket write garbage, over-long length
// prefixes (> 69632: that client, and only that client, is disconnected), zero-length and
// runt frames, random frames with random (also multicast) source MACs, 802.1Q tags on an
// access port, maximum-size frames, frames split into random pieces and connections cut in
// the middle of a frame; random datagrams hit the udp: listener. Afterwards qnet must still
// run and answer SIGUSR1, every good frame must have arrived intact and in order, and the
// counters must show the drops.
//
// Seeded: QNET_FUZZ_SEED=<n> replays a run; the seed is printed, and added to any failure.
import { test, before, after, describe, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { StreamPeer, UdpPeer, makeFrame, lengthPrefixed } from '../link/peers.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { prng } from '../helpers/prng.ts';
import { QnetSwitch, type SwitchStats, type PortStats } from '../helpers/qnet-switch.ts';
import { waitFor } from '../helpers/wait.ts';

const MAX_FRAME = 69632;


const macStr = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** A raw stream client that discards whatever the switch floods to it. */
function rawClient(path: string): Promise<{ sock: net.Socket; closed: () => boolean; waitClosed(ms: number): Promise<boolean> }> {
  return new Promise((resolveP, rejectP) => {
    const sock = net.connect(path);
    let closed = false;
    const waiters: (() => void)[] = [];
    sock.on('data', () => {});
    sock.on('error', () => {});
    sock.on('close', () => { closed = true; waiters.splice(0).forEach((f) => f()); });
    sock.once('connect', () => resolveP({
      sock,
      closed: () => closed,
      waitClosed: (ms) => new Promise((r) => {
        if (closed) return r(true);
        const t = setTimeout(() => r(closed), ms);
        waiters.push(() => { clearTimeout(t); r(true); });
      }),
    }));
    sock.once('error', rejectP);
  });
}

// The fuzz runs once (before); each verdict is its own test.
describe('qnet switch survives fuzzing and keeps forwarding good traffic', { timeout: 120_000 }, () => {
  const seed = process.env.QNET_FUZZ_SEED ? Number(process.env.QNET_FUZZ_SEED) : randomInt(2 ** 31);
  const rnd = prng(seed);
  const dir = makeTempDir('switch-fuzz-');
  const sockPath = join(dir.path, 'sw.sock');
  const cleanups: (() => void)[] = [];
  let f: Awaited<ReturnType<typeof fuzz>>;

  /** Start the switch, let the good peers and the hostile clients loose, wait for them to finish. */
  async function fuzz() {
  // the udp: listener's port: bind, learn, release
  const probe = dgram.createSocket('udp4');
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()));
  const udpPort = probe.address().port;
  probe.close();
  const q = await QnetSwitch.start(['--listen', `unix:${sockPath}`, '--listen', `udp:127.0.0.1:${udpPort}`], 2);

  // ---- good peers ---------------------------------------------------------------------
  const MAC_P = '02:00:00:00:00:01';
  const MAC_Q = '02:00:00:00:00:02';
  const MAC_R = '02:00:00:00:00:03';
  const P = await StreamPeer.connect(sockPath);
  const Q = await StreamPeer.connect(sockPath);
  const R = await UdpPeer.bind(udpPort);
  cleanups.push(() => P.close(), () => Q.close(), () => R.close());
  const isFrom = (f: Buffer, mac: string): boolean => f.length >= 14 && macStr(f.subarray(6, 12)) === mac && f.readUInt16BE(12) === 0x88b5;
  // Introduce themselves (broadcasts) so the switch learns where each MAC lives. Repeated:
  // a peer's connect() completes before qnet has accepted (attached) it, so an early
  // broadcast may miss a peer that is not on the switch yet.
  const sees = (peer: StreamPeer, macs: string[]): boolean => macs.every((m) => peer.frames.some((f) => isFrom(f, m)));
  await waitFor(() => {
    if (sees(P, [MAC_Q, MAC_R]) && sees(Q, [MAC_P, MAC_R])) return true;
    P.send(makeFrame('ff:ff:ff:ff:ff:ff', MAC_P, 60));
    Q.send(makeFrame('ff:ff:ff:ff:ff:ff', MAC_Q, 60));
    R.send(makeFrame('ff:ff:ff:ff:ff:ff', MAC_R, 60));
    return false;
  }, { what: "good peers to see each other's broadcasts", intervalMs: 100 });
  P.frames.length = 0;
  Q.frames.length = 0;

  /** Numbered frames with random sizes and bodies; seq at 14, length check by Buffer.equals. */
  const goodFrames = (dst: string, src: string, n: number, maxLen: number): Buffer[] => {
    const out: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const f = makeFrame(dst, src, rnd.int(60, maxLen));
      f.writeUInt32BE(i, 14);
      rnd.bytes(f.length - 18).copy(f, 18);
      out.push(f);
    }
    return out;
  };
  const N = 1500;
  const M = 300;
  const pToQ = goodFrames(MAC_Q, MAC_P, N, 1514);
  const qToP = goodFrames(MAC_P, MAC_Q, N, 1514);
  const rToQ = goodFrames(MAC_Q, MAC_R, M, 1400);

  // ---- hostile clients -------------------------------------------------------------------
  // Every client first sends one valid frame from its own MAC so its port can be found in
  // the counters by the MAC learned on it.
  const idMac = (i: number): string => `02:00:00:00:f0:${i.toString(16).padStart(2, '0')}`;
  const kinds = ['garbage', 'badprefix-min', 'badprefix-rnd', 'runts', 'random', 'random', 'random', 'vlan', 'split', 'maxsize', 'cut'] as const;
  const clients = await Promise.all(kinds.map(() => rawClient(sockPath)));
  cleanups.push(() => clients.forEach((c) => c.sock.destroy()));
  clients.forEach((c, i) => c.sock.write(lengthPrefixed([makeFrame('ff:ff:ff:ff:ff:ff', idMac(i), 60)])));
  // wait until all are learned (so the id frames are not mixed up with what follows)
  {
    let s = await q.stats();
    await waitFor(async () => { s = await q.stats(); return kinds.every((_, i) => s.ports.some((p) => p.macs.includes(idMac(i)))); },
      { what: 'all fuzz clients learned', intervalMs: 50, diag: () => JSON.stringify(s.ports.map((p) => p.macs)) });
  }

  const sent = { runts: 0, zero: 0, multicastSrc: 0, tagged: 0, shortTagged: 0 };
  const randomMac = (): Buffer => {
    const m = rnd.bytes(6);
    if (m[0] === 0x02 && m[1] === 0 && m[2] === 0) m[2] = 1; // never one of the good peers' or ids' MACs
    return m;
  };
  const randomFrame = (): Buffer => {
    const len = rnd.chance(0.02) ? rnd.int(1515, 9000) : rnd.int(14, 1514);
    const f = rnd.bytes(len);
    const dst = rnd.chance(0.3) ? Buffer.from('ffffffffffff', 'hex') : randomMac();
    dst.copy(f, 0);
    const src = randomMac();
    if (rnd.chance(0.2)) src[0] |= 1;
    else src[0] &= 0xfe;
    if (src[0] & 1) sent.multicastSrc++;
    src.copy(f, 6);
    if (len >= 14 && f.readUInt16BE(12) === 0x8100) sent.tagged++;
    return f;
  };
  const writeBatch = (c: { sock: net.Socket }, frames: Buffer[]): void => { c.sock.write(lengthPrefixed(frames)); };

  const hostile: Promise<void>[] = kinds.map(async (kind, i) => {
    const c = clients[i];
    switch (kind) {
      case 'garbage': // random bytes in random chunks (the first 4 are almost surely an over-long prefix)
        for (let k = 0; k < 50 && !c.closed(); k++) { c.sock.write(rnd.bytes(rnd.int(1, 3000))); await tick(); }
        return;
      case 'badprefix-min':
      case 'badprefix-rnd': {
        for (let k = 0; k < 20; k++) { writeBatch(c, [randomFrame()]); await tick(); }
        const h = Buffer.alloc(4);
        h.writeUInt32BE(kind === 'badprefix-min' ? MAX_FRAME + 1 : MAX_FRAME + 1 + (rnd.u32() % (2 ** 32 - MAX_FRAME - 1)));
        c.sock.write(Buffer.concat([h, rnd.bytes(rnd.int(0, 200))]));
        return;
      }
      case 'runts': // zero-length and 1..13-byte frames, mixed with valid ones
        for (let k = 0; k < 200; k++) {
          const frames: Buffer[] = [];
          for (let j = 0; j < 5; j++) {
            const r = rnd.int(0, 2);
            if (r === 0) { frames.push(Buffer.alloc(0)); sent.zero++; }
            else if (r === 1) { frames.push(rnd.bytes(rnd.int(1, 13))); sent.runts++; }
            else frames.push(makeFrame('ff:ff:ff:ff:ff:ff', idMac(i), rnd.int(14, 100)));
          }
          writeBatch(c, frames);
          await tick();
        }
        return;
      case 'random':
        for (let k = 0; k < 150; k++) { writeBatch(c, [randomFrame(), randomFrame()]); await tick(); }
        return;
      case 'vlan': // 802.1Q tags on an access port (dropped) and truncated tags (malformed)
        for (let k = 0; k < 100; k++) {
          const short = rnd.chance(0.3);
          const f = short ? rnd.bytes(rnd.int(14, 17)) : makeFrame('ff:ff:ff:ff:ff:ff', idMac(i), rnd.int(18, 300));
          Buffer.from(idMac(i).split(':').map((x) => parseInt(x, 16))).copy(f, 6);
          f.writeUInt16BE(rnd.chance(0.5) ? 0x8100 : 0x88a8, 12);
          if (!short) f.writeUInt16BE(rnd.int(1, 4094), 14);
          if (short) sent.shortTagged++; else sent.tagged++;
          writeBatch(c, [f]);
          await tick();
        }
        return;
      case 'split': { // valid frames, but the byte stream is cut at random points
        const data = lengthPrefixed(Array.from({ length: 200 }, () => makeFrame('ff:ff:ff:ff:ff:ff', idMac(i), rnd.int(14, 1514))));
        for (let off = 0; off < data.length;) {
          const n = rnd.int(1, 700);
          c.sock.write(data.subarray(off, off + n));
          off += n;
          await tick();
        }
        return;
      }
      case 'maxsize': // exactly MAX_FRAME is legal, in one write and split
        writeBatch(c, [makeFrame('ff:ff:ff:ff:ff:ff', idMac(i), MAX_FRAME)]);
        await tick();
        {
          // in three writes, each handed to the kernel before the next (so qnet may read them apart)
          const d = lengthPrefixed([makeFrame('ff:ff:ff:ff:ff:ff', idMac(i), MAX_FRAME)]);
          const drained = () => waitFor(() => c.sock.writableLength === 0, { what: 'the write to drain' });
          c.sock.write(d.subarray(0, 3));
          await drained();
          c.sock.write(d.subarray(3, 40000));
          await drained();
          c.sock.write(d.subarray(40000));
        }
        return;
      case 'cut': { // connection dropped in the middle of a frame
        const d = lengthPrefixed([makeFrame('ff:ff:ff:ff:ff:ff', idMac(i), 1000)]);
        c.sock.write(d.subarray(0, 500));
        await waitFor(() => c.sock.writableLength === 0, { what: 'the half frame to be written' });
        c.sock.destroy();
        return;
      }
    }
  });

  // random datagrams at the udp: listener from two sources
  const udpFuzz = (async () => {
    const socks = await Promise.all([0, 1].map(async () => {
      const s = dgram.createSocket('udp4');
      s.on('error', () => {});
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
      return s;
    }));
    cleanups.push(() => socks.forEach((s) => { try { s.close(); } catch { /* closed */ } }));
    for (let k = 0; k < 200; k++) {
      const s = socks[k % 2];
      const len = rnd.chance(0.3) ? rnd.int(0, 13) : rnd.int(14, 1600);
      const d = rnd.bytes(len);
      if (len >= 14 && rnd.chance(0.5)) d[6] |= 1; // multicast source
      s.send(d, udpPort, '127.0.0.1');
      await tick();
    }
  })();

  // ---- the good traffic, in batches between the fuzz -------------------------------------
  const good = (async () => {
    for (let k = 0; k < N; k += 50) {
      P.send(...pToQ.slice(k, k + 50));
      Q.send(...qToP.slice(k, k + 50));
      await tick();
    }
  })();
  const goodUdp = (async () => {
    // at most 40 datagrams in flight (about 56 KB, well inside a socket's receive buffer),
    // so none is lost however slowly qnet gets to read them
    for (let k = 0; k < M; k++) {
      R.send(rToQ[k]);
      if (k % 20 === 19) await waitFor(() => Q.frames.filter((f) => isFrom(f, MAC_R)).length >= k - 40, { what: `Q to receive R's frame ${k - 40}`, timeoutMs: 15_000 });
    }
  })();

  // SIGUSR1 while the fuzz is running
  const midStats = await q.stats();
  assert.ok(midStats.ports.length >= 3);

  await Promise.all([...hostile, udpFuzz, good, goodUdp]);

  return { q, P, Q, MAC_P, MAC_Q, MAC_R, N, M, pToQ, qToP, rToQ, isFrom, idMac, kinds, clients, sent };
  }

  before(async () => { f = await fuzz(); });
  after(() => {
    for (const c of cleanups) { try { c(); } catch { /* best effort */ } }
    f?.q.kill();
    dir.remove();
  });

  /** Failures name the seed, so the run can be replayed. */
  const seeded = (fn: (t: TestContext) => Promise<void> | void) => async (t: TestContext): Promise<void> => {
    t.diagnostic(`fuzz seed ${seed} (replay: QNET_FUZZ_SEED=${seed})`);
    try { await fn(t); } catch (e) {
      if (e instanceof Error) e.message = `[fuzz seed ${seed}; replay with QNET_FUZZ_SEED=${seed}] ${e.message}`;
      throw e;
    }
  };
  const collect = async (peer: StreamPeer, src: string, want: number): Promise<Buffer[]> => {
    await waitFor(() => peer.frames.filter((x) => f.isFrom(x, src)).length >= want, { what: `${want} frames from ${src}`, timeoutMs: 15_000 }).catch(() => {});
    return peer.frames.filter((x) => f.isFrom(x, src));
  };
  const byKind = (k: string): number[] => f.kinds.flatMap((x, i) => (x === k ? [i] : []));

  test('every good frame arrives intact and in order; the good peers stay connected', seeded(async () => {
    const check = (got: Buffer[], want: Buffer[], what: string): void => {
      assert.equal(got.length, want.length, `${what}: ${got.length} of ${want.length} frames arrived`);
      for (let i = 0; i < want.length; i++) {
        if (!got[i].equals(want[i])) assert.fail(`${what}: frame ${i} differs (got seq ${got[i].length >= 18 ? got[i].readUInt32BE(14) : '?'}, length ${got[i].length} vs ${want[i].length})`);
      }
    };
    check(await collect(f.Q, f.MAC_P, f.N), f.pToQ, 'stream P → Q');
    check(await collect(f.P, f.MAC_Q, f.N), f.qToP, 'stream Q → P');
    check(await collect(f.Q, f.MAC_R, f.M), f.rToQ, 'dgram R → Q');
    assert.equal(f.P.closed, false, 'good peer P still connected');
    assert.equal(f.Q.closed, false, 'good peer Q still connected');
  }));

  test('an over-long length prefix disconnects that client only', seeded(async () => {
    const { clients, kinds } = f;
    for (const i of [...byKind('badprefix-min'), ...byKind('badprefix-rnd')]) {
      assert.equal(await clients[i].waitClosed(5000), true, `${kinds[i]} client disconnected`);
    }
    for (const k of ['runts', 'random', 'vlan', 'split', 'maxsize'] as const) {
      for (const i of byKind(k)) assert.equal(clients[i].closed(), false, `${k} client must stay connected`);
    }
  }));

  test('qnet still runs, answers SIGUSR1, and its counters show the drops', seeded(async (t) => {
    const { q, clients, kinds, idMac, sent, MAC_P, MAC_Q } = f;
    assert.ok(q.alive, `qnet exited: ${q.exitCode ?? q.exitSignal}\n${q.stderr}`);
    // Everything written has left our sockets; poll the counters until qnet has read it all.
    await waitFor(() => clients.every((c) => c.closed() || c.sock.writableLength === 0), { what: 'the fuzz clients\' writes to drain' });
    const expectRx = (st: SwitchStats, k: string, n: number): boolean =>
      (st.ports.find((p) => p.macs.includes(idMac(byKind(k)[0])))?.rxFrames ?? 0) >= n;
    let s = await q.stats();
    await waitFor(async () => { s = await q.stats(); return expectRx(s, 'split', 201) && expectRx(s, 'maxsize', 3); },
      { what: 'qnet to have read the split and maxsize streams', intervalMs: 100 }).catch(() => {});
    const portOf = (i: number): PortStats | undefined => s.ports.find((p) => p.macs.includes(idMac(i)));
    for (const i of [...byKind('badprefix-min'), ...byKind('badprefix-rnd'), ...byKind('cut')]) {
      assert.equal(portOf(i), undefined, `${kinds[i]} port removed from the switch`);
    }
    const runts = portOf(byKind('runts')[0]);
    assert.ok(runts, 'runt client port present');
    assert.ok(runts.rxDropped >= sent.runts + sent.zero, `runts port rxDropped ${runts.rxDropped} >= ${sent.runts + sent.zero} runts sent`);
    const vlan = portOf(byKind('vlan')[0]);
    assert.ok(vlan, 'vlan client port present');
    assert.equal(vlan.drops.vlan + vlan.drops.malformed, 100, `every tagged frame dropped: ${JSON.stringify(vlan.drops)}`);
    assert.ok(vlan.drops.malformed >= 1 || sent.shortTagged === 0);
    const maxsize = portOf(byKind('maxsize')[0]);
    assert.ok(maxsize && maxsize.rxFrames >= 3 && maxsize.rxDropped === 0, `69632-byte frames accepted: ${JSON.stringify(maxsize)}`);
    const split = portOf(byKind('split')[0]);
    assert.ok(split && split.rxFrames === 201 && split.rxDropped === 0, `split stream reassembled: ${JSON.stringify(split)}`);
    const total = (fn: (p: PortStats) => number): number => s.ports.reduce((a, p) => a + fn(p), 0);
    assert.ok(total((p) => p.drops.malformed) > 0, 'multicast-source frames counted as malformed');
    assert.ok(total((p) => p.rxDropped) > 0);
    assert.ok(s.ports.filter((p) => p.kind === 'dgram').length >= 2, `random datagrams made dgram ports: ${JSON.stringify(s.ports.map((p) => p.name))}`);
    const goodP = s.ports.find((p) => p.macs.includes(MAC_P));
    const goodQ = s.ports.find((p) => p.macs.includes(MAC_Q));
    assert.ok(goodP && goodQ, 'good peers still learned');
    assert.equal(goodP.txDropped + goodQ.txDropped, 0, 'nothing dropped towards the good peers');
    t.diagnostic(`counters: ${s.ports.length} ports, flooded ${s.switch.flooded}, forwarded ${s.switch.forwarded}, malformed ${total((p) => p.drops.malformed)}, vlan ${total((p) => p.drops.vlan)}, rxDropped ${total((p) => p.rxDropped)}`);
  }));

  test('a fresh client still gets served after all that', seeded(async () => {
    const late = await StreamPeer.connect(sockPath);
    cleanups.push(() => late.close());
    late.send(makeFrame(f.MAC_P, '02:00:00:00:00:09', 100, 0x88b5, 7));
    const lateGot = await collect(f.P, '02:00:00:00:00:09', 1);
    assert.equal(lateGot.length, 1, 'a new client reaches P');
  }));

  test('SIGTERM: qnet exits 0 and removes its socket', seeded(async () => {
    assert.equal(await f.q.stop(), 0, `qnet exits 0 on SIGTERM\n${f.q.stderr}`);
    assert.equal(existsSync(sockPath), false, 'socket removed on exit');
  }));
});
