// The packet path in one process: the switch, the gateway and its TCP with an in-memory guest
// port and an in-memory host end, no sockets, no QEMU. What it measures is qnet's own CPU cost
// per byte moved (frame parsing, checksums, TCP, the switch, building frames), which the
// end-to-end bench (bench/user.ts) cannot separate from QEMU, the kernel and a loaded machine.
//
// The guest is played here: it sends full-sized data segments (64 KiB in flight) and acks
// every second segment it gets, as Linux does; frames it receives are taken from a buffer the
// way a stream port's output would be written to QEMU. The host end swallows what it is given
// (guest->host) or is asked for data whenever the connection has room (host->guest).
//
// Prints, per direction, family and MTU: CPU seconds per GB, ns per segment, Gbit/s on one core.
// BENCH_MB (default 512) per run, BENCH_REPEAT (3) runs (median), BENCH_DIRECT=0 makes the guest
// port refuse in-place frames (the copy path), BENCH_ONLY=down|up, BENCH_V6=0|1 limits families,
// BENCH_GUARD=0 leaves out the source guard on the guest port (network/source-guard.ts).
import { Switch } from '../src/switch/switch.ts';
import { Gateway } from '../src/stack/gateway.ts';
import { TcpStack } from '../src/stack/tcp/stack.ts';
import type { TcpConn } from '../src/stack/tcp/conn.ts';
import type { HostEnd } from '../src/stack/tcp/host.ts';
import { Port } from '../src/link/port.ts';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, writeEthernet } from '../src/wire/ethernet.ts';
import { IPPROTO_TCP, writeIpv4 } from '../src/wire/ipv4.ts';
import { writeIpv6 } from '../src/wire/ipv6.ts';
import { TCP_ACK, TCP_SYN, TcpOptions, finishTcpV4, finishTcpV6, writeTcp } from '../src/wire/tcp.ts';
import { parseIp4 } from '../src/wire/addr.ts';
import { addr6 } from '../src/stack/addr.ts';
import { SourceGuard } from '../src/network/source-guard.ts';

const MB = Number(process.env.BENCH_MB ?? 512);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const DIRECT = process.env.BENCH_DIRECT !== '0';
const GUARD = process.env.BENCH_GUARD !== '0';
const GW_MAC = Buffer.from([0x52, 0x55, 10, 0, 2, 2]);
const GUEST_MAC = Buffer.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const GUEST4 = parseIp4('10.0.2.15')!;
const REMOTE4 = parseIp4('203.0.113.10')!;
const PREFIX6 = Buffer.from('fec00000000000000000000000000000', 'hex');
const GUEST6B = Buffer.from('fec00000000000000000000000000015', 'hex');
const REMOTE6B = Buffer.from('20010db8000000000000000000000010', 'hex');
const WINDOW = 65535 << 2; // wscale 2: 256 KiB the guest lets us have in flight
const IN_FLIGHT = 64 * 1024;

/** The guest's NIC: frames the gateway sends land in `out` (one buffer, as a stream port's). */
class GuestPort extends Port {
  readonly out = Buffer.allocUnsafe(4 << 20);
  fill = 0;
  readonly frames: number[] = [];
  constructor() { super('mem', 'bench-guest'); }
  send(frame: Buffer): void {
    if (this.fill + frame.length > this.out.length) { this.counters.txDropped++; return; }
    frame.copy(this.out, this.fill);
    this.frames.push(this.fill, frame.length);
    this.fill += frame.length;
  }
  override reserveFrame(max: number): number {
    if (!DIRECT || this.fill + max > this.out.length) return -1;
    return this.fill;
  }
  override get txBuf(): Buffer { return this.out; }
  override commitFrame(len: number): void {
    this.frames.push(this.fill, len);
    this.fill += len;
  }
  /** A frame from the guest (a view valid for the call, as from a stream read). */
  input(f: Buffer): void { this.deliver(f); }
  take(): void { this.fill = 0; this.frames.length = 0; }
  protected closeTransport(): void {}
}

class SinkHost implements HostEnd {
  bytes = 0;
  backlog = 0;
  write(d: Buffer): void { this.bytes += d.length; }
  /** as a socket that wrote it at once */
  writeLent(d: Buffer, done: () => void): void { this.bytes += d.length; done(); }
  end(): void {}
  reset(): void {}
  release(): void {}
  paused = false;
  pause(): void { this.paused = true; }
  resume(): void { this.paused = false; }
  cork(): void {}
  uncork(): void {}
}

interface Case { dir: 'up' | 'down'; v6: boolean; mtu: number }
interface Result { cpuSPerGB: number; nsPerSeg: number; gbit: number }

const tick = () => new Promise<void>((r) => setImmediate(r));

async function run(c: Case): Promise<Result> {
  const sw = new Switch();
  const v6cfg = { prefix: PREFIX6, prefixLen: 64, addrs: [addr6(Buffer.from('fec00000000000000000000000000002', 'hex'))], linkLocal: addr6(Buffer.from('fe800000000000000000000000000002', 'hex')) };
  const gw = new Gateway({ mac: GW_MAC, net: parseIp4('10.0.2.0')!, prefix: 24, addrs: [parseIp4('10.0.2.2')!], mtu: c.mtu, ipv6: v6cfg });
  sw.attach(gw, { mtu: c.mtu });
  const guest = new GuestPort();
  const gsp = sw.attach(guest, { mtu: c.mtu });
  if (GUARD) {
    const guard = new SourceGuard({
      net: parseIp4('10.0.2.0')!, prefix: 24, gatewayOwns: (a) => gw.addrs.has(a) || a === gw.linkLocal,
      prefix6: { prefix: PREFIX6, len: 64 }, owner4: () => -1, owner6: () => null, portOfMac: (b, o) => sw.portOf(b, o),
      clock: gw.timers, onRelease: () => {}, onTooMany: () => {},
    });
    gsp.guard = guard.add(guest, 1).check;
  }
  const tcp = new TcpStack(gw, gw.timers);
  gw.onTcp = (p) => tcp.input(p.src, p.dst, p.buf, p.l4, p.l4End, p.pseudo);
  const host = new SinkHost();
  let conn: TcpConn | null = null;
  tcp.opener = (cn) => { conn = cn; cn.attachHost(host); return true; };
  const guestIp = c.v6 ? addr6(GUEST6B) : GUEST4;
  if (c.v6) gw.ndp!.learn(guestIp, GUEST_MAC, 0); else gw.arp.learn(guestIp, GUEST_MAC, 0);
  const ipHead = c.v6 ? 40 : 20;
  const mss = c.mtu - ipHead - 20;
  const fb = Buffer.alloc(14 + ipHead + 60 + mss);
  const payload = Buffer.alloc(mss, 0x5a);
  const noOpts = new TcpOptions();
  const send = (seq: number, ack: number, flags: number, len: number, opts = noOpts) => {
    const l4 = 14 + ipHead;
    const end = writeTcp(fb, l4, 40000, 80, seq >>> 0, ack >>> 0, flags, WINDOW >>> 2, opts);
    if (len > 0) payload.copy(fb, end, 0, len);
    const tl = end - l4 + len;
    if (c.v6) {
      writeEthernet(fb, 0, GW_MAC, GUEST_MAC, ETHERTYPE_IPV6);
      writeIpv6(fb, 14, GUEST6B, REMOTE6B, IPPROTO_TCP, tl);
      finishTcpV6(fb, l4, tl, 22, 38);
    } else {
      writeEthernet(fb, 0, GW_MAC, GUEST_MAC, ETHERTYPE_IPV4);
      writeIpv4(fb, 14, GUEST4, REMOTE4, IPPROTO_TCP, tl);
      finishTcpV4(fb, l4, tl, GUEST4, REMOTE4);
    }
    guest.input(fb.subarray(0, l4 + tl));
  };
  // what the gateway sent: the highest ack and sequence seen, bytes of data, each segment's end
  const ends = new Array<number>(4096).fill(0);
  const read = () => {
    const f = guest.frames;
    let ack = -1; let seqEnd = -1; let data = 0; let segs = 0; let synSeq = -1;
    const o = guest.out;
    for (let i = 0; i < f.length; i += 2) {
      const at = f[i]; const len = f[i + 1];
      const l4 = at + 14 + ipHead;
      const dataOff = (o[l4 + 12] >>> 4) * 4;
      const n = len - 14 - ipHead - dataOff;
      const seq = o.readUInt32BE(l4 + 4);
      if (o[l4 + 13] & TCP_SYN) synSeq = seq;
      ack = o.readUInt32BE(l4 + 8);
      if (n > 0) { data += n; ends[segs++] = seqEnd = (seq + n) >>> 0; }
    }
    guest.take();
    return { ack, seqEnd, data, segs, synSeq };
  };

  // handshake
  const iss = 1000;
  const so = new TcpOptions();
  so.mss = mss; so.wscale = 2; so.sackPermitted = true;
  send(iss, 0, TCP_SYN, 0, so);
  await tick();
  const syn = read();
  if (syn.synSeq < 0) throw new Error('no SYN-ACK from the gateway');
  let rcvNext = (syn.synSeq + 1) >>> 0;
  let sndNext = iss + 1;
  send(sndNext, rcvNext, TCP_ACK, 0);
  await tick();
  read();
  if (conn === null) throw new Error('no connection');
  const cn: TcpConn = conn;

  const total = MB * 1024 * 1024;
  let moved = 0;
  let segments = 0;
  const chunk = Buffer.alloc(64 * 1024, 0x33);
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  if (c.dir === 'up') {
    let acked = sndNext;
    while (moved < total) {
      // one "read from QEMU": segments up to the window in flight
      while (((sndNext - acked) >>> 0) + mss <= IN_FLIGHT) { send(sndNext, rcvNext, TCP_ACK, mss); sndNext = (sndNext + mss) >>> 0; segments++; }
      await tick();
      const r = read();
      if (r.ack >= 0) acked = r.ack;
      moved = host.bytes;
    }
  } else {
    while (moved < total) {
      // the host gives whatever fits in what the connection would take
      while (!host.paused) cn.hostData(chunk);
      await tick();
      const r = read();
      if (r.segs === 0) continue;
      moved += r.data;
      segments += r.segs;
      // one ACK per two segments (each acking more), in one batch, as a Linux guest under load
      for (let k = 1; k < r.segs; k += 2) send(sndNext, ends[k], TCP_ACK, 0);
      if (r.segs % 2 === 1) send(sndNext, r.seqEnd, TCP_ACK, 0);
      rcvNext = r.seqEnd;
    }
  }
  const cpu = process.cpuUsage(cpu0);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpuS = (cpu.user + cpu.system) / 1e6;
  cn.close();
  gw.close();
  sw.close();
  return { cpuSPerGB: cpuS / (moved / 1e9), nsPerSeg: (cpuS * 1e9) / segments, gbit: (moved * 8) / 1e9 / wall };
}

function median(xs: number[]): number { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }

const cases: Case[] = [];
for (const dir of ['down', 'up'] as const) {
  if (process.env.BENCH_ONLY && process.env.BENCH_ONLY !== dir) continue;
  for (const v6 of [false, true]) {
    if (process.env.BENCH_V6 === '0' && v6) continue;
    if (process.env.BENCH_V6 === '1' && !v6) continue;
    for (const mtu of [1500, 9000]) cases.push({ dir, v6, mtu });
  }
}
console.log(`qnet packet path in one process (switch + gateway + TCP, in-memory guest and host), ${MB} MiB per run, median of ${REPEAT}${DIRECT ? '' : ', in-place frames off'}`);
console.log('case                          CPU s/GB   ns/segment   Gbit/s (1 core)');
for (const c of cases) {
  const rs: Result[] = [];
  for (let i = 0; i < REPEAT; i++) rs.push(await run(c));
  const name = `${c.dir === 'down' ? 'host->guest' : 'guest->host'} ${c.v6 ? 'IPv6' : 'IPv4'} MTU ${c.mtu}`;
  console.log(`${name.padEnd(28)}  ${median(rs.map((r) => r.cpuSPerGB)).toFixed(3).padStart(8)}   ${median(rs.map((r) => r.nsPerSeg)).toFixed(0).padStart(10)}   ${median(rs.map((r) => r.gbit)).toFixed(2).padStart(8)}`);
}
