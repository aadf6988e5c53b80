// `qnet switch --listen ADDR,OPTS`: the per-attach-point port options the README lists
// (vlan=, trunk=, native=, mtu=), on a real `qnet switch` process with stream peers.
//
//   A  vlan=10                  access port, VLAN 10
//   B  vlan=20                  access port, VLAN 20
//   N  vlan=30                  access port, VLAN 30
//   T  trunk=10;20,native=30    tagged 10 and 20, untagged frames are VLAN 30
//   M  vlan=10,mtu=100          access port, VLAN 10, at most 100 bytes of payload
//
// That a frame did NOT reach a port is shown with a later frame that does: the switch handles
// frames in order and each port's output is ordered, so anything wrongly sent to that port
// would have arrived before the later one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/cleanup.ts';
import { QnetSwitch, type PortStats } from '../helpers/qnet-switch.ts';
import { waitFor } from '../helpers/wait.ts';
import { StreamPeer, makeFrame } from '../link/peers.ts';

const BCAST = 'ff:ff:ff:ff:ff:ff';
const MAC = { a: '02:00:00:00:0a:01', b: '02:00:00:00:0b:01', n: '02:00:00:00:0e:01', t: '02:00:00:00:0f:01', m: '02:00:00:00:0c:01' };
type Name = keyof typeof MAC;

/**
 * A frame with an 802.1Q tag (VID), `size` bytes in all. `mark` tells frames apart: byte 20 of
 * the payload's place in an untagged frame, so byte 24 here (the tag is 4 bytes).
 */
function tagged(dst: string, src: string, vid: number, size: number, mark: number): Buffer {
  const f = makeFrame(dst, src, size, 0x8100, 0);
  f.writeUInt16BE(vid, 14);
  f.writeUInt16BE(0x88b5, 16);
  f[24] = mark;
  return f;
}
function untagged(dst: string, src: string, size: number, mark: number): Buffer {
  const f = makeFrame(dst, src, size, 0x88b5, 0);
  f[20] = mark;
  return f;
}

const dir = makeTempDir('switch-opts-');
const sock = (n: Name) => join(dir.path, `${n}.sock`);
let sw: QnetSwitch;
const peers = {} as Record<Name, StreamPeer>;
let marks = 0;

before(async () => {
  sw = await QnetSwitch.start([
    '--listen', `unix:${sock('a')},vlan=10`,
    '--listen', `unix:${sock('b')},vlan=20`,
    '--listen', `unix:${sock('n')},vlan=30`,
    '--listen', `unix:${sock('t')},trunk=10;20,native=30`,
    '--listen', `unix:${sock('m')},vlan=10,mtu=100`,
  ], 5);
  for (const n of Object.keys(MAC) as Name[]) peers[n] = await StreamPeer.connect(sock(n));
  await waitFor(async () => (await sw.stats()).ports.length === 5, { what: 'five ports on the switch' });
});

after(async () => {
  for (const p of Object.values(peers)) p?.close();
  await sw?.stop();
  dir.remove();
});

/** Frames `to` received with mark `m` (byte 20 of an untagged frame, 24 of a tagged one). */
const got = (to: Name, m: number) => peers[to].frames.filter((f) => (f.readUInt16BE(12) === 0x8100 ? f[24] : f[20]) === m);
const arrive = (to: Name, m: number) => waitFor(() => got(to, m).length > 0 && got(to, m), { what: `frame ${m} at ${to}` });

/** A broadcast on VLAN 10/20/30 reaches every port of it; returns once all have it. */
async function sentinel(vid: 10 | 20 | 30): Promise<void> {
  const m = ++marks;
  peers.t.send(vid === 30 ? untagged(BCAST, MAC.t, 64, m) : tagged(BCAST, MAC.t, vid, 64, m));
  const on: Record<number, Name[]> = { 10: ['a', 'm'], 20: ['b'], 30: ['n'] };
  for (const n of on[vid]) await arrive(n, m);
}
async function portOf(n: Name): Promise<PortStats> {
  const s = await sw.stats();
  const p = s.ports.find((x) => x.peer === sock(n));
  assert.ok(p, `a port for ${n}: ${JSON.stringify(s.ports.map((x) => x.peer))}`);
  return p;
}

test('vlan= (access): untagged frames stay in their VLAN; a trunk carries them tagged', async () => {
  const m = ++marks;
  peers.a.send(untagged(BCAST, MAC.a, 64, m));
  const [onT] = await arrive('t', m);
  assert.equal(onT.readUInt16BE(12), 0x8100, 'tagged on the trunk');
  assert.equal(onT.readUInt16BE(14) & 0xfff, 10);
  assert.equal(onT.length, 68, 'four bytes longer: the tag');
  const [onM] = await arrive('m', m);
  assert.equal(onM.readUInt16BE(12), 0x88b5, 'untagged on the other access port of VLAN 10');
  await sentinel(20);
  await sentinel(30);
  assert.deepEqual([got('b', m).length, got('n', m).length], [0, 0], 'VLAN 20 and 30 never see it');
});

test('trunk=: tagged frames of an allowed VLAN reach that VLAN untagged; others are dropped and counted', async () => {
  const m = ++marks;
  peers.t.send(tagged(BCAST, MAC.t, 20, 80, m));
  const [onB] = await arrive('b', m);
  assert.equal(onB.readUInt16BE(12), 0x88b5, 'the tag is removed towards an access port');
  assert.equal(onB.length, 76);
  await sentinel(10);
  await sentinel(30);
  assert.deepEqual([got('a', m).length, got('n', m).length], [0, 0]);
  // VLAN 40 is not allowed on the trunk
  const before40 = (await portOf('t')).drops.vlan;
  const x = ++marks;
  peers.t.send(tagged(BCAST, MAC.t, 40, 64, x));
  await waitFor(async () => (await portOf('t')).drops.vlan === before40 + 1, { what: 'the VLAN 40 frame counted as a VLAN drop' });
  for (const v of [10, 20, 30] as const) await sentinel(v);
  assert.deepEqual((['a', 'b', 'n', 'm'] as Name[]).map((n) => got(n, x).length), [0, 0, 0, 0]);
});

test('native=: untagged frames on the trunk belong to the native VLAN', async () => {
  const m = ++marks;
  peers.t.send(untagged(BCAST, MAC.t, 64, m));
  const [onN] = await arrive('n', m);
  assert.equal(onN.readUInt16BE(12), 0x88b5);
  await sentinel(10);
  await sentinel(20);
  assert.deepEqual([got('a', m).length, got('b', m).length], [0, 0]);
  // and VLAN 30 traffic leaves the trunk untagged
  const r = ++marks;
  peers.n.send(untagged(BCAST, MAC.n, 64, r));
  const [onT] = await arrive('t', r);
  assert.equal(onT.readUInt16BE(12), 0x88b5, 'the native VLAN is untagged on the trunk');
});

test('a tagged frame on an access port is dropped and counted', async () => {
  const before = (await portOf('a')).drops.vlan;
  const m = ++marks;
  peers.a.send(tagged(BCAST, MAC.a, 10, 64, m));
  await waitFor(async () => (await portOf('a')).drops.vlan === before + 1, { what: 'the tagged frame counted as a VLAN drop on A' });
  await sentinel(10);
  assert.equal(got('m', m).length + got('t', m).length, 0);
});

test('mtu=: a frame with more payload than the port allows is dropped and counted; one at the limit passes', async () => {
  const before = await portOf('m');
  const big = ++marks;
  const ok = ++marks;
  peers.m.send(untagged(MAC.a, MAC.m, 14 + 101, big), untagged(MAC.a, MAC.m, 14 + 100, ok));
  const [onA] = await arrive('a', ok);
  assert.equal(onA.length, 114);
  assert.equal(got('a', big).length, 0, 'the oversized frame came before the good one and did not arrive');
  const after = await portOf('m');
  assert.equal(after.drops.mtu, before.drops.mtu + 1);
  assert.equal(after.drops.vlan, before.drops.vlan);
});
