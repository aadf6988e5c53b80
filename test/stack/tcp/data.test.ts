// The gateway's TCP, ESTABLISHED: data both ways, ACK coalescing, the receive window and
// flow control tied to the host side, out-of-order data with SACK, out-of-window segments,
// zero windows and persist probes. In memory, manual clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bed, bytes, describe, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN } from './_bed.ts';
import { BURST, PERSIST_MAX_MS, RCV_BUF, RCV_WSCALE, SND_BUF, State } from '../../../src/stack/tcp/conn.ts';

test('guest -> host: in-order data goes to the host and is acknowledged once per batch', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  bed.guestBatch([
    { seq: g, ack: r, flags: TCP_ACK, data: 'one ' },
    { seq: g + 4, ack: r, flags: TCP_ACK, data: 'two ' },
    { seq: g + 8, ack: r, flags: TCP_ACK | TCP_PSH, data: 'three' },
  ]);
  assert.equal(host.text, 'one two three');
  const acks = bed.take();
  assert.equal(acks.length, 1, `one ACK for the batch: ${acks.map(describe)}`);
  assert.equal(acks[0].ack, g + 13);
});

test('guest -> host: host writes are corked for the batch and uncorked at its end', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  let corkedDuring = -1;
  const write = host.write.bind(host);
  host.write = (d) => { corkedDuring = host.corked; write(d); };
  bed.guestBatch([{ seq: g, ack: r, flags: TCP_ACK, data: 'a' }, { seq: g + 1, ack: r, flags: TCP_ACK, data: 'b' }]);
  assert.equal(corkedDuring, 1);
  assert.equal(host.corked, 0, 'uncorked once the batch ended');
});

test('guest -> host: one batch of in-order segments reaches the host as one write', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  bed.guestBatch([1, 2, 3, 4].map((k) => ({ seq: g + (k - 1) * 100, ack: r, flags: TCP_ACK, data: bytes(100, 0x60 + k) })));
  assert.equal(host.written.length, 1, 'adjacent copies in the slab make one buffer');
  assert.equal(host.text, 'a'.repeat(100) + 'b'.repeat(100) + 'c'.repeat(100) + 'd'.repeat(100));
  bed.guest({ seq: g + 400, ack: r, flags: TCP_ACK, data: 'e' });
  assert.equal(host.written.length, 2, 'the next batch is the next write');
});

test('guest -> host: interleaved connections in one batch each get their own data, in order, before a FIN', () => {
  const bed = new Bed();
  const a = bed.open();
  // a second connection from another guest port
  bed.guest({ seq: 7000, flags: TCP_SYN, sport: 40001, window: 65535, mss: 1460 });
  const synack = bed.take().find((x) => x.dport === 40001)!;
  bed.guest({ seq: 7001, ack: synack.seq + 1, flags: TCP_ACK, sport: 40001 });
  bed.take();
  const other = bed.hosts[bed.hosts.length - 1];
  const r2 = synack.seq + 1;
  let textAtEnd = '';
  other.end = () => { other.ended = true; textAtEnd = other.text; };
  bed.guestBatch([
    { seq: a.g, ack: a.r, flags: TCP_ACK, data: 'a1' },
    { seq: 7001, ack: r2, flags: TCP_ACK, sport: 40001, data: 'b1' },
    { seq: a.g + 2, ack: a.r, flags: TCP_ACK, data: 'a2' },
    { seq: 7003, ack: r2, flags: TCP_ACK | TCP_FIN, sport: 40001, data: 'b2' },
  ]);
  assert.equal(a.host.text, 'a1a2');
  assert.equal(other.text, 'b1b2');
  assert.ok(other.ended);
  assert.equal(textAtEnd, 'b1b2', 'the FIN ended the host after its data');
});

test('guest -> host: the host gets its own copy, not a view of the frame', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  const payload = Buffer.from('mutable');
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: payload });
  payload.fill(0);
  assert.equal(host.text, 'mutable');
});

test('host -> guest: data is cut into MSS-sized segments, PSH on the last', () => {
  const bed = new Bed();
  const { c, r } = bed.open({ mss: 1000 });
  c.hostData(bytes(2500));
  const segs = bed.take();
  assert.deepEqual(segs.map((s) => s.data.length), [1000, 1000, 500]);
  assert.deepEqual(segs.map((s) => s.seq - r), [0, 1000, 2000]);
  assert.deepEqual(segs.map((s) => (s.flags & TCP_PSH) !== 0), [false, false, true]);
  assert.equal(c.sndNxt, (r + 2500) >>> 0);
});

test('host -> guest: the guest window bounds what is in flight; ACKs open it', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ mss: 1000, window: 3000 });
  c.hostData(bytes(10_000));
  assert.equal(bed.take().reduce((n, s) => n + s.data.length, 0), 3000);
  bed.guest({ seq: g, ack: r + 2000, flags: TCP_ACK, window: 3000 });
  assert.equal(bed.take().reduce((n, s) => n + s.data.length, 0), 2000, 'the window slid by 2000');
  assert.equal(c.queued, 8000);
});

test('host -> guest: the initial congestion window is 10 segments (RFC 6928)', () => {
  const bed = new Bed();
  const { c } = bed.open({ mss: 1000, window: 65535, wscale: 7 });
  c.hostData(bytes(50_000));
  const segs = bed.take();
  assert.equal(segs.length, 10);
  assert.equal(c.cwnd, 10_000);
});

test('host -> guest: slow start grows cwnd by one MSS per ACK of a full segment', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ mss: 1000, wscale: 7 });
  c.hostData(bytes(200_000));
  bed.take();
  bed.guest({ seq: g, ack: r + 1000, flags: TCP_ACK, window: 65535 });
  bed.guest({ seq: g, ack: r + 2000, flags: TCP_ACK, window: 65535 });
  assert.equal(c.cwnd, 12_000);
});

test('host -> guest: once a burst is in flight, sending waits for a burst-sized opening', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ mss: 1000, wscale: 7 });
  c.cc.init(1000);
  (c.cc as { cwnd: number }).cwnd = 40 * 1000;
  c.hostData(bytes(200_000));
  assert.equal(bed.take().length, 40);
  bed.guest({ seq: g, ack: r + 2000, flags: TCP_ACK, window: 65535 });
  assert.equal(bed.take().length, 0, `a 2-segment opening is not worth a write while ${BURST} segments fit later`);
  bed.guest({ seq: g, ack: r + 20_000, flags: TCP_ACK, window: 65535 });
  assert.ok(bed.take().length >= BURST);
});

test('host -> guest: acknowledged data leaves the send queue', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostData(bytes(3000));
  bed.take();
  bed.guest({ seq: g, ack: r + 1460, flags: TCP_ACK });
  assert.equal(c.queued, 3000 - 1460);
  assert.equal(c.sndUna, (r + 1460) >>> 0);
});

test('host -> guest: an ACK of unsent data is answered with an ACK and ignored', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostData(bytes(100));
  bed.take();
  bed.guest({ seq: g, ack: r + 5000, flags: TCP_ACK });
  const s = bed.one();
  assert.equal(s.flags, TCP_ACK);
  assert.equal(c.sndUna, r, 'nothing acknowledged');
  assert.equal(c.queued, 100);
});

test('host backpressure: the host is paused when SND_BUF is queued and resumed below half', () => {
  const bed = new Bed();
  const { c, host, g } = bed.open({ mss: 1000, wscale: 7 });
  c.hostData(bytes(SND_BUF));
  assert.equal(host.paused, true);
  let resumedAt = -1;
  for (let i = 0; i < 10_000 && resumedAt < 0; i++) {
    bed.take();
    bed.guest({ seq: g, ack: c.sndNxt, flags: TCP_ACK, window: 65535 });
    if (!host.paused) resumedAt = c.queued;
    else assert.ok(c.queued >= SND_BUF / 2, `paused with only ${c.queued} queued`);
  }
  assert.ok(resumedAt >= 0 && resumedAt < SND_BUF / 2, `resumed with ${resumedAt} queued`);
});

test('receive window: what the host has not taken is subtracted from the window we advertise', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open({ wscale: 7 });
  host.backlog = RCV_BUF - 128 * 1024;
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'x' });
  assert.equal(bed.one().window, (128 * 1024) >>> RCV_WSCALE);
});

test('receive window: a drained host announces the reopened window', () => {
  const bed = new Bed();
  const { c, host, g, r } = bed.open({ wscale: 7 });
  host.backlog = RCV_BUF;
  bed.guest({ seq: g, ack: r, flags: TCP_ACK });
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'x' });
  assert.equal(bed.one().window, 0, 'zero window');
  host.backlog = 0;
  c.hostDrained();
  bed.flush();
  const up = bed.one();
  assert.equal(up.window, RCV_BUF >>> RCV_WSCALE, 'window update');
});

test('receive window: data beyond the window is cut at its edge (and acknowledged up to it)', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  host.backlog = RCV_BUF - 10;
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'x'.repeat(30) });
  assert.equal(host.text, 'x'.repeat(10));
  assert.equal(bed.one().ack, g + 10);
});

test('zero receive window: data is refused but the ACK in it still counts', () => {
  const bed = new Bed();
  const { c, host, g, r } = bed.open();
  c.hostData(bytes(500));
  bed.take();
  host.backlog = RCV_BUF;
  bed.guest({ seq: g, ack: r + 500, flags: TCP_ACK, data: 'refused' });
  assert.equal(host.text, '');
  assert.equal(c.sndUna, (r + 500) >>> 0, 'RFC 9293: a valid ACK is taken even with the window shut');
  const s = bed.one();
  assert.equal(s.ack, g);
  assert.equal(s.window, 0);
});

test('out of window: an old duplicate is acknowledged and not delivered twice', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'abc' });
  bed.take();
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'abc' });
  assert.equal(host.text, 'abc');
  assert.equal(bed.one().ack, g + 3);
});

test('partial overlap: only the new part of a segment is delivered', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'abc' });
  bed.guest({ seq: g + 1, ack: r, flags: TCP_ACK, data: 'bcdef' });
  assert.equal(host.text, 'abcdef');
});

test('out of window: a segment far beyond the window is acknowledged and dropped', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  bed.guest({ seq: g + RCV_BUF + 100, ack: r, flags: TCP_ACK, data: 'far' });
  assert.equal(host.text, '');
  assert.equal(bed.one().ack, g);
  assert.equal(bed.stack.stats.outOfOrder, 0, 'not even held');
});

test('out of order: held, answered at once with a duplicate ACK, delivered when the hole fills', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  bed.guest({ seq: g + 5, ack: r, flags: TCP_ACK, data: 'world' });
  const dup = bed.one();
  assert.equal(dup.ack, g);
  assert.equal(host.text, '');
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'hello' });
  assert.equal(host.text, 'helloworld');
  assert.equal(bed.one().ack, g + 10);
  assert.equal(bed.stack.stats.outOfOrder, 1);
});

test('out of order: without SACK-permitted, duplicate ACKs carry no SACK blocks', () => {
  const bed = new Bed();
  const { g, r } = bed.open({ sackPermitted: false });
  bed.guest({ seq: g + 5, ack: r, flags: TCP_ACK, data: 'x' });
  assert.deepEqual(bed.one().sack, []);
});

test('SACK: blocks describe what is held, the latest arrival first (RFC 2018)', () => {
  const bed = new Bed();
  const { g, r } = bed.open({ sackPermitted: true });
  bed.guest({ seq: g + 10, ack: r, flags: TCP_ACK, data: 'aaaaa' });
  assert.deepEqual(bed.one().sack, [[g + 10, g + 15]]);
  bed.guest({ seq: g + 30, ack: r, flags: TCP_ACK, data: 'bbbbb' });
  assert.deepEqual(bed.one().sack, [[g + 30, g + 35], [g + 10, g + 15]]);
  bed.guest({ seq: g + 15, ack: r, flags: TCP_ACK, data: 'ccccc' });
  assert.deepEqual(bed.one().sack, [[g + 10, g + 20], [g + 30, g + 35]], 'adjacent blocks merge');
});

test('SACK: at most three blocks (with room for data segments)', () => {
  const bed = new Bed();
  const { g, r } = bed.open({ sackPermitted: true });
  for (let k = 1; k <= 5; k++) bed.guest({ seq: g + 10 * k, ack: r, flags: TCP_ACK, data: 'xx' });
  const s = bed.take().pop()!;
  assert.equal(s.sack.length, 3);
  assert.deepEqual(s.sack[0], [g + 50, g + 52]);
});

test('SACK: our data segments carry SACK blocks while the guest has holes, and are shorter for it', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ sackPermitted: true, mss: 1000 });
  bed.guest({ seq: g + 10, ack: r, flags: TCP_ACK, data: 'x' });
  bed.take();
  c.hostData(bytes(1500));
  const segs = bed.take();
  assert.deepEqual(segs.map((s) => s.data.length), [960, 540]);
  assert.deepEqual(segs[0].sack, [[g + 10, g + 11]]);
});

test('out of order: a FIN after a hole is taken when the hole fills', () => {
  const bed = new Bed();
  const { c, host, g, r } = bed.open();
  bed.guest({ seq: g + 3, ack: r, flags: TCP_ACK | TCP_FIN, data: 'def' });
  assert.equal(c.state, State.Established);
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'abc' });
  assert.equal(host.text, 'abcdef');
  assert.equal(host.ended, true);
  assert.equal(c.state, State.CloseWait);
  assert.equal(bed.take().pop()!.ack, g + 7);
});

test('out of order: overlapping held segments deliver each byte once', () => {
  const bed = new Bed();
  const { host, g, r } = bed.open();
  bed.guest({ seq: g + 2, ack: r, flags: TCP_ACK, data: 'cdef' });
  bed.guest({ seq: g + 4, ack: r, flags: TCP_ACK, data: 'efgh' });
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'abc' });
  assert.equal(host.text, 'abcdefgh');
});

test('window update: an older segment does not shrink the send window (SND.WL1/WL2)', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ window: 5000 });
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'ab', window: 5000 });
  bed.guest({ seq: g + 2, ack: r, flags: TCP_ACK, window: 8000 });
  assert.equal(c.sndWnd, 8000);
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, window: 100 }); // old: seq g < WL1
  assert.equal(c.sndWnd, 8000);
});

test('zero window from the guest: persist probes with an old sequence number, backing off to 5 s', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ mss: 1000, window: 1000 });
  c.hostData(bytes(3000));
  bed.take();
  bed.guest({ seq: g, ack: r + 1000, flags: TCP_ACK, window: 0 });
  assert.deepEqual(bed.take(), [], 'nothing may be sent');
  const probes: number[] = [];
  const t0 = bed.clock.t;
  for (let i = 0; i < 60; i++) {
    bed.advance(500);
    for (const s of bed.take()) { probes.push(bed.clock.t - t0); assert.equal(s.seq, (r + 1000 - 1) >>> 0); assert.equal(s.data.length, 0); }
  }
  assert.ok(probes.length >= 5, `probes at ${probes}`);
  const gaps = probes.slice(1).map((t, i) => t - probes[i]);
  assert.ok(gaps.every((d) => d <= PERSIST_MAX_MS), `gaps ${gaps}`);
  assert.equal(c.state, State.Established, 'a zero window never times the connection out');
  assert.equal(bed.stack.stats.windowProbes, probes.length);
  bed.guest({ seq: g, ack: r + 1000, flags: TCP_ACK, window: 2000 });
  assert.equal(bed.take().reduce((n, s) => n + s.data.length, 0), 2000, 'the window reopened: data flows');
});

test('keepalive probes from the guest (old sequence number) are answered with an ACK', () => {
  const bed = new Bed();
  const { g, r } = bed.open();
  bed.guest({ seq: g - 1, ack: r, flags: TCP_ACK });
  const s = bed.one();
  assert.equal(s.ack, g);
  assert.equal(s.seq, r);
});

test('a SYN on an established connection gets a challenge ACK and changes nothing (RFC 5961 4)', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  bed.guest({ seq: g + 100, flags: TCP_SYN });
  const s = bed.one();
  assert.equal(s.flags, TCP_ACK);
  assert.equal(s.ack, g);
  assert.equal(c.state, State.Established);
  assert.equal(bed.stack.stats.challengeAcks, 1);
  assert.equal(s.seq, r);
});

test('a segment without ACK in ESTABLISHED is dropped silently', () => {
  const bed = new Bed();
  const { host, g } = bed.open();
  bed.guest({ seq: g, flags: 0, data: 'noack' });
  assert.equal(host.text, '');
  assert.deepEqual(bed.take(), []);
});

test('bytes in and out are counted per connection', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'abcd' });
  c.hostData(bytes(7));
  assert.equal(c.bytesOut, 4);
  assert.equal(c.bytesIn, 7);
});
