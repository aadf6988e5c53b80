// The gateway's TCP, opening: passive opens from the guest (the opener decides; options
// negotiated), active opens into the guest (hostfwd), simultaneous open, and what happens to
// handshakes that go wrong. In memory, manual clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bed, FakeHost, GPORT, GUEST, REMOTE, RPORT, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, describe } from './_bed.ts';
import { State, RCV_BUF, RCV_WSCALE, SYN_RETRIES, DEFAULT_MSS, MIN_MSS } from '../../../src/stack/tcp/conn.ts';

test('passive open: SYN-ACK only once the host side is up, acknowledging the guest ISN', () => {
  const bed = new Bed({ opener: 'hold' });
  bed.guest({ seq: 5000, flags: TCP_SYN, mss: 1460 });
  assert.deepEqual(bed.take(), [], 'nothing is sent while the host side opens');
  const c = bed.conn();
  assert.equal(c.state, State.Opening);
  const host = new FakeHost();
  c.attachHost(host);
  const s = bed.one();
  assert.equal(s.flags, TCP_SYN | TCP_ACK);
  assert.equal(s.ack, 5001);
  assert.equal(s.src, REMOTE);
  assert.equal(s.dst, GUEST);
  assert.equal(s.sport, RPORT);
  assert.equal(s.dport, GPORT);
  assert.ok(s.checksumOk);
  assert.equal(c.state, State.SynReceived);
  bed.guest({ seq: 5001, ack: s.seq + 1, flags: TCP_ACK });
  assert.equal(c.state, State.Established);
  assert.deepEqual(bed.take(), [], 'the handshake ACK needs no answer');
});

test('passive open: refused by the opener -> RST|ACK acknowledging the SYN, no connection left', () => {
  const bed = new Bed({ opener: 'refuse' });
  bed.guest({ seq: 7, flags: TCP_SYN });
  const s = bed.one();
  assert.equal(s.flags, TCP_RST | TCP_ACK);
  assert.equal(s.seq, 0);
  assert.equal(s.ack, 8);
  assert.equal(bed.stack.size, 0);
  assert.equal(bed.stack.stats.refused, 1);
});

test('options: MSS, window scale and SACK-permitted are offered back when the guest offers them', () => {
  const bed = new Bed();
  const { synack, c } = bed.open({ mss: 1460, wscale: 7, sackPermitted: true });
  assert.equal(synack.mss, 1460, 'our MSS is the gateway MTU - 40');
  assert.equal(synack.wscale, RCV_WSCALE);
  assert.equal(synack.sackPermitted, true);
  assert.equal(synack.window, 65535, 'a SYN window is never scaled: the buffer is larger, so 65535');
  assert.equal(c.sndWscale, 7);
  assert.equal(c.rcvWscale, RCV_WSCALE);
  assert.equal(c.sackOk, true);
});

test('options: a SYN without options gets none of window scale and SACK, and the default MSS', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN });
  const s = bed.one();
  assert.equal(s.wscale, -1, 'no window scale unless the guest offered it (RFC 7323 1.3)');
  assert.equal(s.sackPermitted, false);
  assert.equal(s.mss, 1460, 'we still say our MSS');
  const c = bed.conn();
  assert.equal(c.mss, DEFAULT_MSS);
  assert.equal(c.rcvWscale, 0);
  assert.equal(c.sackOk, false);
});

test('options: the guest MSS is clamped to the gateway MTU and to at least MIN_MSS', () => {
  const big = new Bed({ mtu: 1500 });
  big.guest({ seq: 1, flags: TCP_SYN, mss: 9000 });
  assert.equal(big.conn().mss, 1460, 'never larger than our MTU allows');
  const jumbo = new Bed({ mtu: 9000 });
  jumbo.guest({ seq: 1, flags: TCP_SYN, mss: 8960 });
  assert.equal(jumbo.conn().mss, 8960);
  assert.equal(jumbo.one().mss, 8960, 'our MSS follows the MTU');
  const tiny = new Bed();
  tiny.guest({ seq: 1, flags: TCP_SYN, mss: 1 });
  assert.equal(tiny.conn().mss, MIN_MSS, 'a 1-byte MSS would make the host side a packet storm');
});

test('options: a window scale above 14 is taken as 14 (RFC 7323 2.3)', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN, wscale: 14 });
  assert.equal(bed.conn().sndWscale, 14);
});

test('window scale: the guest window is shifted by its scale once the handshake is done', () => {
  const bed = new Bed();
  const { c } = bed.open({ wscale: 3, window: 1000 });
  assert.equal(c.sndWnd, 1000 << 3);
});

test('window scale: our advertised window is RCV_BUF >> 7 after the handshake', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ wscale: 2 });
  bed.guest({ seq: g, ack: r, flags: TCP_ACK, data: 'x' });
  assert.equal(bed.one().window, RCV_BUF >>> RCV_WSCALE);
  assert.equal(c.window(), RCV_BUF);
});

test('passive open: a retransmitted SYN while opening changes nothing; after attach it gets the SYN-ACK again', () => {
  const bed = new Bed({ opener: 'hold' });
  bed.guest({ seq: 100, flags: TCP_SYN });
  bed.guest({ seq: 100, flags: TCP_SYN });
  assert.deepEqual(bed.take(), []);
  assert.equal(bed.stack.size, 1, 'one connection, not two');
  const c = bed.conn();
  c.attachHost(new FakeHost());
  const first = bed.one();
  bed.guest({ seq: 100, flags: TCP_SYN });
  const again = bed.one();
  assert.equal(again.flags, TCP_SYN | TCP_ACK);
  assert.equal(again.seq, first.seq, 'the same ISS');
});

test('passive open: the SYN-ACK is retransmitted with backoff, then the connection is reset', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN });
  bed.take();
  const times: number[] = [];
  const t0 = bed.clock.t;
  for (let i = 0; i < 400 && bed.stack.size > 0; i++) {
    bed.advance(500);
    for (let n = bed.take().length; n > 0; n--) times.push(bed.clock.t - t0);
  }
  assert.equal(times.length, SYN_RETRIES + 1, `retransmissions then a RST: ${times}`);
  assert.deepEqual(times.slice(0, 3), [1000, 3000, 7000], 'RTO 1 s, doubling (RFC 6298 5.5)');
  assert.equal(bed.stack.size, 0);
  assert.equal(bed.hosts[0].wasReset, true, 'the host side is reset too');
});

test('passive open: a host that never answers times the attempt out without a word to the guest', () => {
  const bed = new Bed({ opener: 'hold' });
  let timedOut = 0;
  bed.stack.onConnectTimeout = () => { timedOut++; };
  bed.guest({ seq: 1, flags: TCP_SYN });
  bed.advance(19_000);
  assert.equal(bed.stack.size, 1);
  bed.advance(2_000);
  assert.equal(bed.stack.size, 0);
  assert.equal(timedOut, 1);
  assert.deepEqual(bed.take(), [], 'the NAT decides what the guest hears (an ICMP error)');
});

test('passive open: a guest RST while the host side opens cancels the attempt', () => {
  const bed = new Bed({ opener: 'hold' });
  bed.guest({ seq: 1, flags: TCP_SYN });
  bed.guest({ seq: 2, flags: TCP_RST });
  assert.equal(bed.stack.size, 0);
});

test('passive open: an ACK that does not acknowledge our SYN gets a RST, the connection stays', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN });
  const synack = bed.one();
  bed.guest({ seq: 2, ack: synack.seq + 5, flags: TCP_ACK });
  const rst = bed.one();
  assert.equal(rst.flags, TCP_RST);
  assert.equal(rst.seq, synack.seq + 5, 'RST seq = the bad ACK (RFC 9293 3.10.7.4)');
  assert.equal(bed.conn().state, State.SynReceived);
});

test('passive open: data on the handshake-completing ACK is delivered', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN });
  const synack = bed.one();
  bed.guest({ seq: 2, ack: synack.seq + 1, flags: TCP_ACK, data: 'GET /' });
  assert.equal(bed.hosts[0].text, 'GET /');
  assert.equal(bed.one().ack, 2 + 5);
});

test('passive open: a SYN with data is not taken before the handshake (its data comes again)', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN, data: 'early' });
  assert.equal(bed.hosts[0].text, '');
  assert.equal(bed.one().ack, 2, 'only the SYN is acknowledged');
});

test('passive open: bad checksums and malformed segments are counted and dropped', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN, badChecksum: true });
  assert.equal(bed.stack.size, 0);
  assert.equal(bed.stack.stats.badChecksum, 1);
  bed.stack.input(GUEST, REMOTE, Buffer.alloc(10), 0, 10);
  assert.equal(bed.stack.stats.malformed, 1);
  assert.deepEqual(bed.take(), []);
});

test('passive open: the ISS differs between connections (random source)', () => {
  const bed = new Bed();
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1 });
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 2 });
  const [a, b] = bed.take();
  assert.notEqual(a.seq, b.seq);
});

test('active open (hostfwd): SYN with our options from an ephemeral port, established on SYN-ACK', () => {
  const bed = new Bed();
  const c = bed.stack.connect(GUEST, 22, REMOTE)!;
  assert.ok(c);
  const syn = bed.one();
  assert.equal(syn.flags, TCP_SYN);
  assert.equal(syn.dport, 22);
  assert.ok(syn.sport >= 49152 && syn.sport <= 65535, `ephemeral port ${syn.sport}`);
  assert.equal(syn.mss, 1460);
  assert.equal(syn.wscale, RCV_WSCALE);
  assert.equal(syn.sackPermitted, true);
  assert.equal(c.state, State.SynSent);
  bed.guest({ seq: 9000, ack: syn.seq + 1, flags: TCP_SYN | TCP_ACK, sport: 22, dport: syn.sport, mss: 1400, wscale: 5, sackPermitted: true });
  assert.equal(c.state, State.Established);
  const ack = bed.one();
  assert.equal(ack.flags, TCP_ACK);
  assert.equal(ack.ack, 9001);
  assert.equal(c.mss, 1400);
  assert.equal(c.sndWscale, 5);
  assert.equal(c.sackOk, true);
});

test('active open: a SYN-ACK without window scale turns scaling off both ways', () => {
  const bed = new Bed();
  const c = bed.stack.connect(GUEST, 22, REMOTE)!;
  const syn = bed.one();
  bed.guest({ seq: 1, ack: syn.seq + 1, flags: TCP_SYN | TCP_ACK, sport: 22, dport: syn.sport, window: 1000 });
  assert.equal(c.rcvWscale, 0);
  assert.equal(c.sndWscale, 0);
  assert.equal(c.sndWnd, 1000);
  assert.equal(bed.one().window, 65535, 'unscaled, so capped at 65535');
});

test('active open: the guest refuses (RST|ACK) -> the host side is reset', () => {
  const bed = new Bed();
  const c = bed.stack.connect(GUEST, 22, REMOTE)!;
  const host = new FakeHost();
  c.attachHost(host);
  const syn = bed.one();
  bed.guest({ seq: 0, ack: syn.seq + 1, flags: TCP_RST | TCP_ACK, sport: 22, dport: syn.sport });
  assert.equal(c.state, State.Closed);
  assert.equal(host.wasReset, true);
  assert.equal(bed.stack.size, 0);
});

test('active open: a RST whose ACK is not for our SYN is ignored', () => {
  const bed = new Bed();
  const c = bed.stack.connect(GUEST, 22, REMOTE)!;
  const syn = bed.one();
  bed.guest({ seq: 0, ack: syn.seq + 100, flags: TCP_RST | TCP_ACK, sport: 22, dport: syn.sport });
  assert.equal(c.state, State.SynSent);
  assert.deepEqual(bed.take(), [], 'a RST is never answered');
});

test('active open: an unacceptable ACK gets a RST (seq = its ack), the attempt goes on', () => {
  const bed = new Bed();
  const c = bed.stack.connect(GUEST, 22, REMOTE)!;
  const syn = bed.one();
  bed.guest({ seq: 5, ack: syn.seq + 9, flags: TCP_ACK, sport: 22, dport: syn.sport });
  const r = bed.one();
  assert.equal(r.flags, TCP_RST);
  assert.equal(r.seq, (syn.seq + 9) >>> 0);
  assert.equal(c.state, State.SynSent);
});

test('active open: the SYN is retransmitted, then given up with the host side reset', () => {
  const bed = new Bed();
  const c = bed.stack.connect(GUEST, 22, REMOTE)!;
  const host = new FakeHost();
  c.attachHost(host);
  bed.take();
  bed.advance(200_000);
  const syns = bed.take().filter((s) => s.flags === TCP_SYN);
  assert.equal(syns.length, SYN_RETRIES);
  assert.equal(c.state, State.Closed);
  assert.equal(host.wasReset, true);
});

test('simultaneous open: a bare SYN in SYN-SENT -> SYN-ACK from the same ISS, then established', () => {
  const bed = new Bed();
  const c = bed.stack.connect(GUEST, 22, REMOTE)!;
  const syn = bed.one();
  bed.guest({ seq: 700, flags: TCP_SYN, sport: 22, dport: syn.sport, mss: 1200 });
  assert.equal(c.state, State.SynReceived);
  const sa = bed.one();
  assert.equal(sa.flags, TCP_SYN | TCP_ACK);
  assert.equal(sa.seq, syn.seq);
  assert.equal(sa.ack, 701);
  bed.guest({ seq: 701, ack: syn.seq + 1, flags: TCP_SYN | TCP_ACK, sport: 22, dport: syn.sport });
  bed.guest({ seq: 701, ack: syn.seq + 1, flags: TCP_ACK, sport: 22, dport: syn.sport });
  assert.equal(c.state, State.Established);
  assert.equal(c.mss, 1200);
});

test('active open: ephemeral ports are not reused while a connection holds them', () => {
  const bed = new Bed();
  const ports = new Set<number>();
  for (let i = 0; i < 50; i++) ports.add(bed.stack.connect(GUEST, 22, REMOTE)!.remotePort);
  assert.equal(ports.size, 50);
});

test('a segment for no connection gets a RST: seq from its ACK, or ACK of its sequence space', () => {
  const bed = new Bed();
  bed.guest({ seq: 10, ack: 555, flags: TCP_ACK, data: 'abc' });
  let r = bed.one();
  assert.equal(r.flags, TCP_RST);
  assert.equal(r.seq, 555);
  bed.guest({ seq: 10, flags: TCP_FIN, data: 'abc' });
  r = bed.one();
  assert.equal(r.flags, TCP_RST | TCP_ACK);
  assert.equal(r.ack, 10 + 3 + 1, 'data and FIN are counted (RFC 9293 3.10.7.1)');
  bed.guest({ seq: 10, flags: TCP_RST });
  assert.deepEqual(bed.take(), [], 'a RST is never answered with a RST');
  assert.equal(bed.stack.stats.resetsSent, 2);
  assert.equal(bed.stack.size, 0);
});

test('every segment the stack sends parses back with a valid checksum', () => {
  const bed = new Bed();
  const { c, g, r } = bed.open({ wscale: 7, sackPermitted: true });
  c.hostData(Buffer.alloc(5000, 1));
  bed.guest({ seq: g + 10, ack: r, flags: TCP_ACK, data: 'zz' });
  bed.advance(2000);
  const all = bed.take();
  assert.ok(all.length > 3);
  for (const s of all) assert.ok(s.checksumOk, describe(s));
});

test('limits: at most maxOpeningPerGuest half-open (host side still connecting); more get administratively prohibited until one opens, fails or goes', () => {
  const bed = new Bed({ opener: 'hold', maxOpeningPerGuest: 2 });
  const reported: string[] = [];
  bed.stack.onLimit = (_ip, max, which) => reported.push(`${which} ${max}`);
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1001 });
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1002 });
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1003 });
  assert.equal(bed.stack.size, 2, 'the third SYN made no connection');
  assert.deepEqual(bed.icmpErrors, [{ type: 3, code: 13, guest: GUEST, dst: REMOTE, proto: 6 }]);
  assert.deepEqual(reported, ['opening 2']);
  assert.deepEqual(bed.take(), [], 'no RST');
  const [a, b] = bed.stack.connections();
  a.attachHost(new FakeHost()); // its host side is up: no longer half-open
  assert.equal(bed.stack.opening.countOf(GUEST), 1);
  const sa = bed.one();
  bed.guest({ seq: 2, ack: sa.seq + 1, flags: TCP_ACK, sport: 1001 });
  assert.equal(a.state, State.Established);
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1004 });
  assert.equal(bed.stack.size, 3, 'room for one more');
  b.refuse(); // a refused host connect frees its place too
  bed.guest({ seq: 1, flags: TCP_SYN, sport: 1005 });
  assert.equal(bed.stack.size, 3);
  assert.equal(bed.stack.opening.countOf(GUEST), 2);
  bed.advance(120_000); // the host connects time out: gone, and not half-open any more
  assert.equal(bed.stack.opening.countOf(GUEST), 0);
  assert.equal(bed.stack.limit.countOf(GUEST), 1, 'the open connection still counts as a connection');
});
