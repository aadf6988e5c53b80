// The gateway's TCP, closing: FIN from either side (half-close both ways), FIN with data,
// simultaneous close, TIME_WAIT and its reuse, RST in every state (RFC 5961 exact match,
// challenge ACKs), keepalive, host-side failures, and the limits. In memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bed, bytes, FakeHost, GUEST, REMOTE, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, type Opened } from './_bed.ts';
import { KEEPALIVE_IDLE_MS, KEEPALIVE_INTERVAL_MS, KEEPALIVE_PROBES, State, TIME_WAIT_MS } from '../../../src/stack/tcp/conn.ts';

test('half-close guest -> host: the guest FIN ends the host input; data still flows to the guest', () => {
  const bed = new Bed();
  const { c, host, g, r } = bed.open();
  bed.guest({ seq: g, ack: r, flags: TCP_ACK | TCP_FIN, data: 'bye' });
  assert.equal(host.text, 'bye');
  assert.equal(host.ended, true);
  assert.equal(c.state, State.CloseWait);
  assert.equal(bed.one().ack, g + 4, 'data and FIN acknowledged');
  c.hostData(Buffer.from('still talking'));
  const s = bed.one();
  assert.equal(s.data.toString(), 'still talking');
  assert.equal(s.ack, g + 4);
});

test('half-close host -> guest: the host end queues our FIN after the data; guest data still flows', () => {
  const bed = new Bed();
  const { c, host, g, r } = bed.open();
  c.hostData(Buffer.from('last words'));
  c.hostEnded();
  assert.equal(c.state, State.FinWait1);
  const segs = bed.take();
  assert.deepEqual(segs.map((s) => [s.data.toString(), s.flags & TCP_FIN]), [['last words', 0], ['', TCP_FIN]]);
  assert.equal(segs[1].seq, (r + 10) >>> 0, 'the FIN follows the data');
  bed.guest({ seq: g, ack: r + 11, flags: TCP_ACK });
  assert.equal(c.state, State.FinWait2);
  bed.guest({ seq: g, ack: r + 11, flags: TCP_ACK, data: 'reply' });
  assert.equal(host.text, 'reply', 'FIN-WAIT-2 still takes data');
});

test('the FIN waits for queued data the window does not let out yet', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ window: 100, mss: 1000 });
  c.hostData(bytes(300));
  c.hostEnded();
  assert.deepEqual(bed.take().map((s) => s.data.length), [100]);
  assert.equal(c.state, State.FinWait1, 'CLOSE enters FIN-WAIT-1 at once (RFC 9293)');
  bed.guest({ seq: g, ack: r + 100, flags: TCP_ACK, window: 1000 });
  const rest = bed.take();
  assert.deepEqual(rest.map((s) => [s.data.length, s.flags & TCP_FIN]), [[200, 0], [0, TCP_FIN]]);
});

test('orderly close from the host: FIN-WAIT-1 -> FIN-WAIT-2 -> TIME_WAIT -> gone', () => {
  const bed = new Bed();
  const { c, host, g, r } = bed.open();
  c.hostEnded();
  bed.take();
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK });
  assert.equal(c.state, State.FinWait2);
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK | TCP_FIN });
  assert.equal(c.state, State.TimeWait);
  assert.equal(host.ended, true);
  assert.equal(host.released, true, 'the host side is released in TIME_WAIT');
  assert.equal(bed.one().ack, g + 1);
  bed.advance(TIME_WAIT_MS - 1);
  assert.equal(c.state, State.TimeWait);
  bed.advance(1);
  assert.equal(c.state, State.Closed);
  assert.equal(bed.stack.size, 0);
});

test('orderly close from the guest: CLOSE-WAIT -> LAST-ACK -> closed when our FIN is acknowledged', () => {
  const bed = new Bed();
  const { c, host, g, r } = bed.open();
  bed.guest({ seq: g, ack: r, flags: TCP_ACK | TCP_FIN });
  assert.equal(c.state, State.CloseWait);
  c.hostEnded();
  assert.equal(c.state, State.LastAck);
  const fin = bed.take().pop()!;
  assert.equal(fin.flags, TCP_FIN | TCP_ACK);
  bed.guest({ seq: g + 1, ack: r + 1, flags: TCP_ACK });
  assert.equal(c.state, State.Closed);
  assert.equal(host.released, true);
  let closed = 0;
  c.onClose = () => { closed++; };
  c.close();
  assert.equal(closed, 0, 'closing twice does nothing');
});

test('simultaneous close: FIN crosses FIN -> CLOSING -> TIME_WAIT', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostEnded();
  bed.take();
  bed.guest({ seq: g, ack: r, flags: TCP_ACK | TCP_FIN }); // the guest's FIN does not ack ours
  assert.equal(c.state, State.Closing);
  bed.guest({ seq: g + 1, ack: r + 1, flags: TCP_ACK });
  assert.equal(c.state, State.TimeWait);
});

test('FIN with data and an ACK of ours in one segment, in FIN-WAIT-1 -> TIME_WAIT at once', () => {
  const bed = new Bed();
  const { c, host, g, r } = bed.open();
  c.hostEnded();
  bed.take();
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK | TCP_FIN, data: 'done' });
  assert.equal(host.text, 'done');
  assert.equal(c.state, State.TimeWait);
});

test('TIME_WAIT: a retransmitted FIN is acknowledged again', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostEnded();
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK | TCP_FIN });
  bed.take();
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK | TCP_FIN });
  assert.equal(bed.one().ack, g + 1);
  assert.equal(c.state, State.TimeWait);
});

test('TIME_WAIT: a new SYN on the same 4-tuple starts a new connection', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostEnded();
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK | TCP_FIN });
  bed.take();
  bed.guest({ seq: g + 100_000, flags: TCP_SYN });
  const sa = bed.one();
  assert.equal(sa.flags, TCP_SYN | TCP_ACK);
  assert.equal(sa.ack, g + 100_001);
  assert.equal(c.state, State.Closed);
  assert.equal(bed.stack.size, 1);
  assert.notEqual(bed.conn(), c);
});

test('TIME_WAIT connections do not count against the per-guest limit', () => {
  const bed = new Bed({ maxConnsPerGuest: 1 });
  const { c, g, r } = bed.open();
  c.hostEnded();
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK | TCP_FIN });
  assert.equal(bed.stack.countOf(GUEST), 0);
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 41000 });
  assert.equal(bed.take().pop()!.flags, TCP_SYN | TCP_ACK);
});

// ---- RST in every state ----

test('RST in SYN-RECEIVED: the connection goes, the host side is reset', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN });
  bed.take();
  bed.guest({ seq: 2, flags: TCP_RST });
  assert.equal(bed.stack.size, 0);
  assert.equal(bed.hosts[0].wasReset, true);
});

const states: [string, (o: Opened, bed: Bed) => { seq: number }][] = [
  ['ESTABLISHED', (o) => ({ seq: o.g })],
  ['FIN-WAIT-1', (o) => { o.c.hostEnded(); return { seq: o.g }; }],
  ['FIN-WAIT-2', (o, bed) => { o.c.hostEnded(); bed.guest({ seq: o.g, ack: o.r + 1, flags: TCP_ACK }); return { seq: o.g }; }],
  ['CLOSE-WAIT', (o, bed) => { bed.guest({ seq: o.g, ack: o.r, flags: TCP_ACK | TCP_FIN }); return { seq: o.g + 1 }; }],
  ['LAST-ACK', (o, bed) => { bed.guest({ seq: o.g, ack: o.r, flags: TCP_ACK | TCP_FIN }); o.c.hostEnded(); return { seq: o.g + 1 }; }],
  ['CLOSING', (o, bed) => { o.c.hostEnded(); bed.guest({ seq: o.g, ack: o.r, flags: TCP_ACK | TCP_FIN }); return { seq: o.g + 1 }; }],
];

for (const [name, into] of states) {
  test(`RST in ${name}: an exact-match RST closes and resets the host side; nothing is sent back`, () => {
    const bed = new Bed();
    const o = bed.open();
    const { seq } = into(o, bed);
    bed.take();
    bed.guest({ seq, flags: TCP_RST });
    assert.equal(o.c.state, State.Closed);
    assert.equal(o.host.wasReset, true);
    assert.deepEqual(bed.take(), []);
  });

  test(`RST in ${name}: an in-window but inexact RST gets a challenge ACK (RFC 5961 3.2)`, () => {
    const bed = new Bed();
    const o = bed.open();
    const { seq } = into(o, bed);
    const before = o.c.state;
    bed.take();
    bed.guest({ seq: seq + 10, flags: TCP_RST });
    assert.equal(o.c.state, before);
    const s = bed.one();
    assert.equal(s.flags, TCP_ACK);
    assert.equal(s.ack, seq);
  });
}

test('RST in TIME_WAIT: the wait ends at once', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  c.hostEnded();
  bed.guest({ seq: g, ack: r + 1, flags: TCP_ACK | TCP_FIN });
  bed.guest({ seq: g + 1, flags: TCP_RST });
  assert.equal(c.state, State.Closed);
});

test('RST out of window: ignored without a word', () => {
  const bed = new Bed();
  const { c, g } = bed.open();
  bed.guest({ seq: g - 1000, flags: TCP_RST });
  bed.guest({ seq: g + 10 * 1024 * 1024, flags: TCP_RST });
  assert.equal(c.state, State.Established);
  assert.deepEqual(bed.take(), []);
});

// ---- keepalive and failures ----

test('keepalive: after 2 h idle, probes every 75 s; an answer resets the count', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  bed.advance(KEEPALIVE_IDLE_MS - 1);
  assert.deepEqual(bed.take(), []);
  bed.advance(1);
  const p = bed.one();
  assert.equal(p.seq, (r - 1) >>> 0, 'an old sequence number makes a live guest answer');
  bed.advance(KEEPALIVE_INTERVAL_MS);
  assert.equal(bed.take().length, 1);
  bed.guest({ seq: g, ack: r, flags: TCP_ACK });
  bed.advance(KEEPALIVE_INTERVAL_MS);
  assert.deepEqual(bed.take(), [], 'the guest answered: idle again for 2 h');
  assert.equal(c.state, State.Established);
});

test('keepalive: a guest that never answers is reset after the last probe', () => {
  const bed = new Bed();
  const { c, host } = bed.open();
  bed.advance(KEEPALIVE_IDLE_MS + KEEPALIVE_PROBES * KEEPALIVE_INTERVAL_MS + 1);
  const sent = bed.take();
  assert.equal(sent.filter((s) => s.flags === TCP_ACK).length, KEEPALIVE_PROBES);
  assert.equal(sent[sent.length - 1].flags, TCP_RST | TCP_ACK);
  assert.equal(c.state, State.Closed);
  assert.equal(host.wasReset, true);
  assert.equal(bed.stack.stats.keepalives, KEEPALIVE_PROBES);
});

test('host failure: the guest gets a RST|ACK at snd.nxt', () => {
  const bed = new Bed();
  const { c, r } = bed.open();
  c.hostFailed();
  const s = bed.one();
  assert.equal(s.flags, TCP_RST | TCP_ACK);
  assert.equal(s.seq, r);
  assert.equal(c.state, State.Closed);
});

test('host closed without an orderly end: reset; after an end: the FIN stands', () => {
  const bed = new Bed();
  const a = bed.open();
  a.c.hostClosed();
  assert.equal(bed.take().pop()!.flags, TCP_RST | TCP_ACK);
  const b = bed.open({ iss: 5000 });
  b.c.hostEnded();
  b.c.hostClosed();
  assert.equal(b.c.state, State.FinWait1);
});

test('host data after the host ended is ignored', () => {
  const bed = new Bed();
  const { c } = bed.open();
  c.hostEnded();
  bed.take();
  c.hostData(Buffer.from('late'));
  assert.deepEqual(bed.take(), []);
});

test('abortGuest resets the host sides of one guest only, sending nothing to it', () => {
  const bed = new Bed();
  const a = bed.open();
  bed.guest({ seq: 1, flags: TCP_SYN, src: GUEST + 1 });
  const other = bed.stack.connections().find((c) => c.guestIp === GUEST + 1)!;
  bed.take();
  assert.equal(bed.stack.abortGuest(GUEST), 1);
  assert.equal(a.host.wasReset, true);
  assert.deepEqual(bed.take(), []);
  assert.notEqual(other.state, State.Closed);
});

test('limits: a guest at its connection limit gets administratively prohibited for new SYNs (not a RST), counted and reported', () => {
  const bed = new Bed({ maxConnsPerGuest: 3 });
  const reported: [number, number][] = [];
  bed.stack.onLimit = (ip, max) => reported.push([ip, max]);
  for (let p = 1; p <= 3; p++) bed.guest({ seq: 1, flags: TCP_SYN, sport: 1000 + p });
  bed.take();
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 2000 });
  assert.deepEqual(bed.take(), [], 'no RST: the guest must not take a limit for a closed port');
  assert.deepEqual(bed.icmpErrors, [{ type: 3, code: 13, guest: GUEST, dst: REMOTE, proto: 6 }]);
  assert.equal(bed.stack.stats.limitHits, 1);
  assert.deepEqual(reported, [[GUEST, 3]]);
  assert.equal(bed.stack.size, 3);
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 2000, src: GUEST + 7 });
  assert.equal(bed.one().flags, TCP_SYN | TCP_ACK, 'another guest is not affected');
  assert.equal(bed.stack.connect(GUEST, 22, REMOTE), null, 'connections into it are refused too');
  assert.deepEqual(reported, [[GUEST, 3], [GUEST, 3]]);
});

test('limits: connections are counted per owner (a port holding several addresses), and given back to the owner they were counted under', () => {
  const bed = new Bed({ maxConnsPerGuest: 2 });
  let owner = 77;
  bed.stack.limit.ownerOf = () => owner; // every address belongs to one port
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1001 });
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1002, src: GUEST + 1 });
  assert.equal(bed.take().length, 2);
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1003, src: GUEST + 2 });
  assert.deepEqual(bed.take(), [], 'a third address of the same port is over the limit');
  assert.equal(bed.icmpErrors.length, 1);
  assert.equal(bed.stack.countOf(GUEST + 9), 2);
  owner = 78; // the addresses change hands: the old connections still count under 77
  assert.equal(bed.stack.countOf(GUEST), 0);
  for (const c of bed.stack.connections()) c.abort(false, 'test');
  assert.equal(bed.stack.limit.countOf(77), 0, 'given back to the owner they were counted under');
  assert.equal(bed.stack.abortOwner(77, 'test'), 0);
});

test('limits: the reorder queue holds at most 1024 segments', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open();
  for (let k = 0; k < 1100; k++) bed.guest({ seq: g + 2 + 2 * k, ack: r, flags: TCP_ACK, data: 'x' });
  assert.equal(c.reorder.segments, 1024);
  bed.take();
});

test('close() of the stack resets every connection', () => {
  const bed = new Bed();
  const a = bed.open();
  const host = new FakeHost();
  const b = bed.stack.connect(GUEST, 22, REMOTE)!;
  b.attachHost(host);
  bed.take();
  bed.stack.close();
  assert.equal(bed.stack.size, 0);
  assert.ok(a.host.wasReset && host.wasReset);
  assert.equal(bed.take().filter((s) => s.flags & TCP_RST).length, 2);
});
