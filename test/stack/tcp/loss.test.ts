// The gateway's TCP, loss recovery towards the guest: retransmission timeout with backoff and
// go-back-N, Karn's rule, fast retransmit on three duplicate ACKs, SACK recovery with several
// holes, NewReno partial ACKs, and what congestion control does at each step. In memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bed, bytes, TCP_ACK, TCP_FIN, TCP_RST, type Opened } from './_bed.ts';
import { DATA_RETRIES, State } from '../../../src/stack/tcp/conn.ts';

const MSS = 1000;

/** An open connection with `n` full segments in flight (cwnd raised so they all go). */
function inFlight(n: number, o: { sack?: boolean } = {}): Opened & { bed: Bed } {
  const bed = new Bed();
  const op = bed.open({ mss: MSS, wscale: 7, sackPermitted: o.sack ?? false });
  (op.c.cc as { cwnd: number }).cwnd = n * MSS;
  op.c.hostData(bytes(n * MSS));
  const segs = bed.take();
  assert.equal(segs.length, n);
  return { ...op, bed };
}

const ackOf = (op: Opened, upTo: number, sack?: [number, number][]) => ({ seq: op.g, ack: (op.r + upTo) >>> 0, flags: TCP_ACK, window: 65535, sack });

test('RTO: an unacknowledged segment is resent after 1 s, then 2 s, 4 s (exponential backoff)', () => {
  const bed = new Bed();
  const { c, r } = bed.open();
  c.hostData(bytes(100));
  bed.take();
  const at: number[] = [];
  const t0 = bed.clock.t;
  for (let i = 0; i < 80; i++) { bed.advance(100); for (const s of bed.take()) { at.push(bed.clock.t - t0); assert.equal(s.seq, r); } }
  assert.deepEqual(at, [1000, 3000, 7000]);
  assert.equal(bed.stack.stats.timeouts, 3);
  assert.equal(c.rto, 8000);
});

test('RTO: after DATA_RETRIES the connection is reset both ways', () => {
  const bed = new Bed();
  const { c, host } = bed.open();
  c.hostData(bytes(100));
  bed.advance(60 * 60_000);
  const all = bed.take();
  assert.equal(all.filter((s) => s.data.length === 100).length, 1 + DATA_RETRIES, 'the first send and every retransmission');
  assert.equal(all[all.length - 1].flags, TCP_RST | TCP_ACK);
  assert.equal(c.state, State.Closed);
  assert.equal(host.wasReset, true);
});

test('RTO: the timeout rewinds to snd.una and resends from there (go-back-N)', () => {
  const op = inFlight(4);
  const { bed } = op;
  bed.guest(ackOf(op, 1000));
  bed.take();
  bed.advance(op.c.rto);
  const resent = bed.take();
  assert.equal(resent[0].seq, (op.r + 1000) >>> 0, 'from snd.una');
  assert.equal(resent.length, 1, 'cwnd restarts at one segment');
  bed.guest(ackOf(op, 2000));
  const next = bed.take();
  assert.deepEqual(next.map((s) => s.seq - op.r), [2000, 3000], 'slow start: two after one');
});

test('RTO: a timeout halves the flight into ssthresh and restarts cwnd at one MSS', () => {
  const op = inFlight(10);
  op.bed.advance(1000);
  assert.equal(op.c.cwnd, MSS);
  assert.equal(op.c.ssthresh, 5 * MSS);
});

test('RTT: samples set the RTO (RFC 6298: srtt + 4 rttvar, at least 200 ms)', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostData(bytes(100));
  bed.advance(50);
  bed.guest({ seq: g, ack: r + 100, flags: TCP_ACK });
  assert.equal(c.rtt.srtt, 50);
  assert.equal(c.rto, 200, '50 + 4*25 = 150, clamped to 200');
  c.hostData(bytes(100));
  bed.advance(150);
  bed.guest({ seq: g, ack: r + 200, flags: TCP_ACK });
  assert.equal(c.rtt.srtt, 62.5, '7/8 * 50 + 1/8 * 150');
  assert.equal(c.rto, 62.5 + 4 * 43.75, 'rttvar = 3/4 * 25 + 1/4 * 100');
});

test('RTT: Karn: the ACK of a retransmitted segment gives no sample', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostData(bytes(100));
  bed.advance(1000); // retransmitted
  bed.advance(10);
  bed.guest({ seq: g, ack: r + 100, flags: TCP_ACK });
  assert.equal(c.rtt.srtt, 0, 'no sample taken');
  assert.equal(c.rto, 2000, 'the backed-off RTO stays until a clean sample');
});

test('fast retransmit: three duplicate ACKs resend the missing segment at once', () => {
  const op = inFlight(8);
  const { bed } = op;
  bed.guest(ackOf(op, 1000));
  bed.take();
  bed.guest(ackOf(op, 1000));
  bed.guest(ackOf(op, 1000));
  assert.deepEqual(bed.take(), [], 'two duplicates are not enough');
  bed.guest(ackOf(op, 1000));
  const rtx = bed.take();
  assert.equal(rtx[0].seq, (op.r + 1000) >>> 0);
  assert.equal(bed.stack.stats.fastRetransmits, 1);
  assert.equal(op.c.recovery, true);
  assert.equal(bed.stack.stats.timeouts, 0, 'no timeout was needed');
});

test('fast recovery: ssthresh is half the flight and cwnd starts there (NewReno)', () => {
  const op = inFlight(8);
  const { bed } = op;
  for (let i = 0; i < 4; i++) bed.guest(ackOf(op, 1000)); // an ACK, then three duplicates
  assert.equal(op.c.ssthresh, 3500, 'flight 7 segments -> 3.5');
  assert.equal(op.c.cwnd, 3500);
});

test('fast recovery: a full ACK ends it, cwnd = ssthresh', () => {
  const op = inFlight(8);
  const { bed } = op;
  for (let i = 0; i < 4; i++) bed.guest(ackOf(op, 1000));
  bed.take();
  bed.guest(ackOf(op, 8000));
  assert.equal(op.c.recovery, false);
  assert.equal(bed.stack.stats.recoveries, 1);
  assert.equal(op.c.cwnd, op.c.ssthresh);
});

test('NewReno: each partial ACK resends the next missing segment (no SACK)', () => {
  const op = inFlight(8);
  const { bed } = op;
  for (let i = 0; i < 4; i++) bed.guest(ackOf(op, 1000));
  bed.take();
  bed.guest(ackOf(op, 3000)); // segment 1000 arrived; 3000 is missing as well
  const rtx = bed.take();
  assert.equal(rtx[0].seq, (op.r + 3000) >>> 0, 'the hole at the new snd.una');
  assert.equal(bed.stack.stats.partialAcks, 1);
  assert.equal(op.c.recovery, true, 'still in recovery until everything is acknowledged');
  bed.guest(ackOf(op, 8000));
  assert.equal(op.c.recovery, false);
});

test('SACK recovery: the holes between SACKed blocks are resent, two per ACK, lowest first', () => {
  const op = inFlight(10, { sack: true });
  const { bed, r } = op;
  // segments 0, 2, 5 lost; the guest SACKs what it has
  const blocks = (): [number, number][] => [[r + 3000, r + 5000], [r + 6000, r + 10_000], [r + 1000, r + 2000]];
  bed.guest(ackOf(op, 0, blocks())); // 7000 SACKed bytes: recovery at the first duplicate
  const first = bed.take();
  assert.deepEqual(first.map((s) => s.seq - r), [0, 2000], 'the first two holes');
  bed.guest(ackOf(op, 0, blocks()));
  assert.deepEqual(bed.take().map((s) => s.seq - r), [5000], 'then the third');
  bed.guest(ackOf(op, 10_000));
  assert.equal(op.c.recovery, false);
  assert.equal(bed.stack.stats.timeouts, 0);
});

test('SACK recovery: enough SACKed bytes start recovery before three duplicates', () => {
  const op = inFlight(10, { sack: true });
  const { bed, r } = op;
  bed.guest(ackOf(op, 0, [[r + 1000, r + 5000]]));
  const rtx = bed.take();
  assert.equal(op.c.recovery, true, '4000 SACKed bytes > 3 segments');
  assert.equal(rtx[0].seq, r);
});

test('SACK: blocks below snd.una or beyond snd.max are ignored', () => {
  const op = inFlight(4, { sack: true });
  const { bed, r } = op;
  bed.guest(ackOf(op, 1000, [[r, r + 500], [r + 9000, r + 9500]]));
  assert.equal(op.c.sack.bytes(), 0);
});

test('SACK: the scoreboard forgets what the cumulative ACK covers', () => {
  const op = inFlight(6, { sack: true });
  const { bed, r } = op;
  bed.guest(ackOf(op, 0, [[r + 2000, r + 4000]]));
  assert.equal(op.c.sack.bytes(), 2000);
  bed.guest(ackOf(op, 3000));
  assert.equal(op.c.sack.bytes(), 1000);
  bed.guest(ackOf(op, 4000));
  assert.equal(op.c.sack.bytes(), 0);
});

test('a timeout during recovery drops the scoreboard and goes back to snd.una', () => {
  const op = inFlight(10, { sack: true });
  const { bed, r } = op;
  bed.guest(ackOf(op, 0, [[r + 1000, r + 10_000]]));
  bed.take();
  bed.advance(op.c.rto);
  assert.equal(op.c.recovery, false);
  assert.equal(op.c.sack.bytes(), 0);
  assert.equal(bed.take()[0].seq, r);
});

test('duplicate ACKs carrying data or a window change still count (the window may move with held data)', () => {
  const op = inFlight(6);
  const { bed } = op;
  for (let w = 0; w < 3; w++) bed.guest({ ...ackOf(op, 0), window: 60000 - w });
  assert.equal(bed.stack.stats.fastRetransmits, 1);
});

test('an ACK carrying data is not a duplicate ACK', () => {
  const op = inFlight(6);
  const { bed, g } = op;
  for (let i = 0; i < 4; i++) bed.guest({ ...ackOf(op, 0), seq: g + i, data: 'x' });
  assert.equal(bed.stack.stats.fastRetransmits, 0);
});

test('FIN retransmission: a lost FIN alone is resent by the timer', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostEnded();
  const fin = bed.one();
  assert.equal(fin.flags, TCP_FIN | TCP_ACK);
  bed.advance(1000);
  const again = bed.one();
  assert.equal(again.flags, TCP_FIN | TCP_ACK);
  assert.equal(again.seq, r);
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK });
  assert.equal(c.state, State.FinWait2);
});

test('data + FIN lost: the timeout resends the data, then the FIN follows', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostData(bytes(500));
  c.hostEnded();
  assert.equal(bed.take().length, 2);
  bed.advance(1000);
  const rtx = bed.take();
  assert.deepEqual(rtx.map((s) => [s.seq - r, s.data.length, (s.flags & TCP_FIN) !== 0]), [[0, 500, false], [500, 0, true]]);
  bed.guest({ seq: g, ack: r + 501, flags: TCP_ACK });
  assert.equal(c.state, State.FinWait2);
});
