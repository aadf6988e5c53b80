// The pieces TCP is made of, one by one: sequence arithmetic, the RTT estimator, NewReno, the
// send queue and SACK scoreboard, the reorder queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { seqAdd, seqDiff, seqGe, seqGt, seqInRange, seqLe, seqLt } from '../../../src/stack/tcp/seq.ts';
import { RttEstimator } from '../../../src/stack/tcp/rtt.ts';
import { NewReno } from '../../../src/stack/tcp/congestion.ts';
import { BLOCK, SackScoreboard, SendQueue, spareBlocks } from '../../../src/stack/tcp/send-queue.ts';
import { ReorderQueue } from '../../../src/stack/tcp/recv-queue.ts';

test('seq: comparisons wrap around 2^32', () => {
  assert.ok(seqLt(0xfffffff0, 5));
  assert.ok(seqGt(5, 0xfffffff0));
  assert.ok(seqLe(7, 7) && seqGe(7, 7));
  assert.equal(seqAdd(0xffffffff, 2), 1);
  assert.equal(seqDiff(1, 0xffffffff), 2);
  assert.ok(seqInRange(2, 0xfffffffe, 10));
  assert.ok(!seqInRange(10, 0xfffffffe, 10));
});

test('rtt: first sample sets srtt and rttvar = r/2; later ones smooth (RFC 6298 2)', () => {
  const e = new RttEstimator();
  assert.equal(e.rto, 1000);
  e.sample(300);
  assert.equal(e.srtt, 300);
  assert.equal(e.rttvar, 150);
  assert.equal(e.rto, 900);
  e.sample(100);
  assert.equal(e.rttvar, 0.75 * 150 + 0.25 * 200);
  assert.equal(e.srtt, 0.875 * 300 + 0.125 * 100);
});

test('rtt: RTO is clamped to [200 ms, 60 s]; backoff doubles up to the cap', () => {
  const e = new RttEstimator();
  e.sample(1);
  assert.equal(e.rto, 200);
  for (let i = 0; i < 20; i++) e.backoff();
  assert.equal(e.rto, 60_000);
  e.sample(100_000);
  assert.equal(e.rto, 60_000);
});

test('rtt: one segment timed at a time; an ACK covering it samples, invalidate() forgets it', () => {
  const e = new RttEstimator();
  e.start(100, 0);
  e.start(200, 5); // already timing
  e.acked(50, 40);
  assert.equal(e.samples, 0, 'not covered yet');
  e.acked(100, 40);
  assert.equal(e.srtt, 40);
  e.start(300, 50);
  e.invalidate();
  e.acked(300, 90);
  assert.equal(e.samples, 1);
});

test('newreno: slow start, congestion avoidance, loss, recovery, timeout', () => {
  const cc = new NewReno(1 << 20);
  cc.init(1000);
  assert.equal(cc.cwnd, 10_000);
  cc.onAck(1000);
  assert.equal(cc.cwnd, 11_000);
  cc.onAck(300);
  assert.equal(cc.cwnd, 11_300, 'slow start adds what was acked, at most one MSS');
  cc.onLoss(20_000);
  assert.equal(cc.ssthresh, 10_000);
  assert.equal(cc.cwnd, 10_000);
  cc.onAck(1000);
  assert.equal(cc.cwnd, 10_100, 'congestion avoidance: MSS^2 / cwnd');
  cc.onRecovered();
  assert.equal(cc.cwnd, 10_000);
  cc.onTimeout(3000);
  assert.equal(cc.ssthresh, 2000, 'at least two segments');
  assert.equal(cc.cwnd, 1000);
});

test('newreno: cwnd never exceeds the send buffer', () => {
  const cc = new NewReno(15_000);
  cc.init(1000);
  for (let i = 0; i < 100; i++) cc.onAck(1000);
  assert.equal(cc.cwnd, 15_000);
});

test('send queue: chunks are kept as given; copyOut and drop work across chunk edges', () => {
  const q = new SendQueue();
  q.push(Buffer.from('abc'));
  q.push(Buffer.alloc(0));
  q.push(Buffer.from('defgh'));
  assert.equal(q.length, 8);
  const out = Buffer.alloc(10, '.');
  assert.equal(q.copyOut(2, 4, out, 1), 5);
  assert.equal(out.toString(), '.cdef.....');
  q.drop(4);
  assert.equal(q.length, 4);
  out.fill('.');
  q.copyOut(0, 4, out, 0);
  assert.equal(out.toString(), 'efgh......');
  q.drop(100);
  assert.equal(q.length, 0);
});

test('send queue: borrowed data is copied into pool blocks across their edges, in order with kept chunks', () => {
  const q = new SendQueue();
  const lent = Buffer.alloc(BLOCK, 0x61);
  lent.fill(0x62, BLOCK - 10);
  q.append(lent, 0, BLOCK - 5); // one block, nearly full
  lent.fill(0x7a); // the lender reuses its buffer: the queue has its own copy
  q.append(Buffer.from('0123456789'), 0, 10); // 5 bytes finish the block, 5 start the next
  q.push(Buffer.from('KEPT'));
  q.append(Buffer.from('xyz'), 1, 3); // after a kept chunk: a new block, not the old one
  assert.equal(q.length, BLOCK - 5 + 10 + 4 + 2);
  const out = Buffer.alloc(32);
  const end = q.copyOut(BLOCK - 12, 23, out, 0);
  assert.equal(out.toString('latin1', 0, end), 'aa' + 'b'.repeat(5) + '0123456789' + 'KEPT' + 'yz');
  const before = spareBlocks();
  q.drop(BLOCK); // the first block is acknowledged: back to the pool
  assert.equal(spareBlocks(), before + 1);
  q.drop(q.length); // all acknowledged: the others too
  assert.equal(spareBlocks(), before + 3);
  assert.equal(q.length, 0);
  q.append(Buffer.from('again'), 0, 5);
  assert.equal(spareBlocks(), before + 2, 'appends take pooled blocks first');
  q.clear();
  assert.equal(spareBlocks(), before + 3, 'clear returns them');
});

test('sack scoreboard: blocks merge, stay sorted, and clip at snd.una', () => {
  const s = new SackScoreboard();
  s.add(300, 400, 100, 1000);
  s.add(100 - 50, 150, 100, 1000);
  s.add(380, 500, 100, 1000);
  s.add(700, 800, 100, 1000);
  assert.deepEqual(s.ranges, [100, 150, 300, 500, 700, 800]);
  s.add(140, 310, 100, 1000);
  assert.deepEqual(s.ranges, [100, 500, 700, 800]);
  assert.equal(s.bytes(), 500);
  assert.equal(s.top(0), 800);
});

test('sack scoreboard: stale, bogus and empty blocks are ignored; advance() forgets acked ranges', () => {
  const s = new SackScoreboard();
  s.add(10, 50, 100, 1000);
  s.add(900, 2000, 100, 1000);
  s.add(200, 200, 100, 1000);
  assert.equal(s.empty, true);
  s.add(200, 300, 100, 1000);
  s.add(400, 500, 100, 1000);
  s.advance(250);
  assert.deepEqual(s.ranges, [250, 300, 400, 500]);
  s.advance(450);
  assert.deepEqual(s.ranges, [450, 500]);
});

test('sack scoreboard: holes are what lies between blocks, below the top', () => {
  const s = new SackScoreboard();
  s.add(200, 300, 100, 1000);
  s.add(400, 500, 100, 1000);
  assert.deepEqual(s.holeFrom(100, 500), [100, 200]);
  assert.deepEqual(s.holeFrom(200, 500), [300, 400]);
  assert.deepEqual(s.holeFrom(450, 500), null);
  assert.deepEqual(new SackScoreboard().holeFrom(100, 101), [100, 101], 'no SACK: the segment at snd.una');
});

test('sack scoreboard: at most 16 ranges, the oldest dropped', () => {
  const s = new SackScoreboard();
  for (let k = 0; k < 20; k++) s.add(1000 + 10 * k, 1005 + 10 * k, 0, 100_000);
  assert.equal(s.ranges.length, 32);
  assert.equal(s.ranges[0], 1040);
});

test('reorder queue: drain hands out what became contiguous, and reports an in-order FIN', () => {
  const q = new ReorderQueue();
  const src = Buffer.from('0123456789');
  assert.ok(q.add(105, src, 5, 8, false, 100, 1000)); // 567
  assert.ok(q.add(108, src, 8, 10, true, 100, 1000)); // 89 + FIN
  let nxt = 100;
  const got: string[] = [];
  const deliver = (d: Buffer, f: number, t: number) => { got.push(d.toString('latin1', f, t)); nxt += t - f; return nxt; };
  assert.equal(q.drain(nxt, deliver), false, 'the hole at 100 is still open');
  nxt = 105; // the hole was filled by in-order data
  assert.equal(q.drain(nxt, deliver), true);
  assert.deepEqual(got, ['567', '89']);
  assert.equal(q.empty, true);
  assert.equal(q.bytes, 0);
});

test('reorder queue: nothing beyond the window is held', () => {
  const q = new ReorderQueue();
  assert.equal(q.add(150, Buffer.alloc(100), 0, 100, false, 100, 100), false);
  assert.equal(q.add(150, Buffer.alloc(50), 0, 50, false, 100, 100), true);
});

test('reorder queue: SACK blocks merge overlaps, latest first, at most max', () => {
  const q = new ReorderQueue();
  const b = Buffer.alloc(100);
  q.add(200, b, 0, 10, false, 100, 10_000);
  q.add(205, b, 0, 10, false, 100, 10_000);
  q.add(400, b, 0, 10, false, 100, 10_000);
  q.add(300, b, 0, 10, false, 100, 10_000);
  const out = new Uint32Array(8);
  assert.equal(q.sackBlocks(out, 3), 3);
  assert.deepEqual([...out.subarray(0, 6)], [300, 310, 200, 215, 400, 410]);
  assert.equal(q.sackBlocks(out, 1), 1);
});
