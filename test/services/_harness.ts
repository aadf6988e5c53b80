// A switch + gateway with a fake guest on a QEMU stream socket, exchanging real frames.
import path from 'node:path';
import fs from 'node:fs';
import { Switch } from '../../src/switch/switch.ts';
import { Gateway, type Ipv6Config } from '../../src/stack/gateway.ts';
import { StreamListener } from '../../src/link/stream.ts';
import { StreamPeer, tmpDir } from '../link/peers.ts';
import type { Clock } from '../../src/stack/timers.ts';
import { waitFor } from '../helpers/wait.ts';
import { ETHERTYPE_IPV4, EthernetHeader, parseEthernet, writeEthernet } from '../../src/wire/ethernet.ts';
import { IPPROTO_UDP, Ipv4Header, parseIpv4, writeIpv4 } from '../../src/wire/ipv4.ts';
import { UdpHeader, finishUdpV4, parseUdp, writeUdp } from '../../src/wire/udp.ts';
import { macToString, parseIp4, parseMac } from '../../src/wire/addr.ts';

export const ip = (s: string): number => parseIp4(s)!;
export const mac = (s: string): Buffer => parseMac(s)!;
export const GW_MAC = '52:55:0a:00:02:02';
export const BCAST_MAC = 'ff:ff:ff:ff:ff:ff';

export interface RxUdp {
  dstMac: string;
  srcMac: string;
  srcIp: number;
  dstIp: number;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

export class Bed {
  private cursor = 0;
  private readonly queue: RxUdp[] = [];
  private constructor(readonly sw: Switch, readonly gw: Gateway, readonly listener: StreamListener,
    readonly peer: StreamPeer, readonly dir: string) {}

  /**
   * ipv6: also give the gateway IPv6 on the segment (DHCPv6, NDP tests). clock: the gateway's
   * timer clock (a ManualClock lets a test fire timers itself).
   */
  static async create(mtu?: number, ipv6?: Ipv6Config, clock?: Clock): Promise<Bed> {
    const sw = new Switch();
    const gw = new Gateway({ mac: mac(GW_MAC), net: ip('10.0.2.0'), prefix: 24, addrs: [ip('10.0.2.2'), ip('10.0.2.3')], mtu, ipv6, clock });
    sw.attach(gw);
    const dir = tmpDir('qnet-svc-');
    const sock = path.join(dir, 'sw.sock');
    const listener = await StreamListener.listen({ kind: 'unix', path: sock });
    listener.onPort = (p) => sw.attach(p);
    const peer = await StreamPeer.connect(sock);
    await waitFor(() => listener.ports.size > 0, { what: 'the fake guest on the switch' });
    return new Bed(sw, gw, listener, peer, dir);
  }

  close(): void {
    this.peer.close();
    this.listener.close();
    this.gw.close();
    this.sw.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Send a UDP datagram from the fake guest. */
  sendUdp(srcMac: string, srcIp: number, sport: number, dstIp: number, dport: number, payload: Buffer, dstMac = GW_MAC): void {
    const f = Buffer.alloc(14 + 20 + 8 + payload.length);
    writeEthernet(f, 0, mac(dstMac), mac(srcMac), ETHERTYPE_IPV4);
    writeIpv4(f, 14, srcIp, dstIp, IPPROTO_UDP, 8 + payload.length);
    writeUdp(f, 34, sport, dport, payload.length);
    payload.copy(f, 42);
    finishUdpV4(f, 34, srcIp, dstIp);
    this.peer.send(f);
  }

  /** Raw frame from the guest. */
  sendFrame(f: Buffer): void { this.peer.send(f); }

  /** Frames the gateway has taken from the segment so far (for waiting until it read what was sent). */
  get gatewayInput(): number { return this.gw.counters.txFrames; }

  /** Wait until the gateway has taken `n` frames in all (see gatewayInput). */
  async delivered(n: number): Promise<void> {
    await waitFor(() => this.gatewayInput >= n, { what: `${n} frames at the gateway (has ${this.gatewayInput})` });
  }

  /**
   * Wait until everything the gateway sent for the frames before this call has arrived: a UDP
   * datagram to a port nothing serves, whose ICMP port unreachable comes back on the same
   * ordered stream after any earlier reply. For asserting that something got no answer.
   */
  async sync(): Promise<void> {
    const sport = 30000 + (this.syncs++ % 10000);
    const src = ip('10.0.2.250');
    this.sendUdp('52:54:00:5e:5e:5e', src, sport, ip('10.0.2.2'), 9, Buffer.from('sync'));
    // ICMP type 3 code 3 quoting our datagram (IP header at 42, its UDP source port at 62)
    const isAnswer = (f: Buffer): boolean => f.length >= 64 && f.readUInt16BE(12) === ETHERTYPE_IPV4 && f[23] === 1 && f[34] === 3 && f[35] === 3 && f.readUInt16BE(62) === sport;
    await waitFor(() => this.peer.frames.some(isAnswer), { what: 'the sync datagram\'s port unreachable' });
  }
  private syncs = 0;

  /** First not yet consumed raw frame (of any protocol) that `decode` turns into a value, or null after `ms` (a hang guard). */
  async recvFrame<T>(decode: (f: Buffer) => T | null, ms = 10_000): Promise<T | null> {
    const end = Date.now() + ms;
    for (let i = this.rawCursor; ; ) {
      for (; i < this.peer.frames.length; i++) {
        const v = decode(this.peer.frames[i]);
        if (v !== null) { this.rawCursor = i + 1; return v; }
      }
      const left = end - Date.now();
      if (left <= 0) return null;
      await this.peer.waitFrames(i + 1, left);
    }
  }
  private rawCursor = 0;

  /**
   * First not yet consumed UDP datagram matching `pred` (others stay queued), or null after
   * `ms` (a hang guard: callers expect the datagram to come).
   */
  async recvUdp(pred: (d: RxUdp) => boolean = () => true, ms = 10_000): Promise<RxUdp | null> {
    const end = Date.now() + ms;
    for (;;) {
      while (this.cursor < this.peer.frames.length) {
        const d = decodeUdp(this.peer.frames[this.cursor++]);
        if (d) this.queue.push(d);
      }
      const i = this.queue.findIndex(pred);
      if (i >= 0) return this.queue.splice(i, 1)[0];
      const left = end - Date.now();
      if (left <= 0) return null;
      await this.peer.waitFrames(this.cursor + 1, left);
    }
  }

  /** All UDP datagrams arriving within `ms` (0: those already here). */
  async collectUdp(ms: number, pred: (d: RxUdp) => boolean = () => true): Promise<RxUdp[]> {
    const out: RxUdp[] = [];
    const end = Date.now() + ms;
    for (;;) {
      const d = await this.recvUdp(pred, Math.max(0, end - Date.now()));
      if (!d) return out;
      out.push(d);
    }
  }
}

export function decodeUdp(f: Buffer): RxUdp | null {
  const eth = new EthernetHeader();
  if (parseEthernet(f, 0, f.length, eth) || eth.ethertype !== ETHERTYPE_IPV4) return null;
  const iph = new Ipv4Header();
  if (parseIpv4(f, eth.payloadOffset, f.length, iph) || iph.protocol !== IPPROTO_UDP) return null;
  const u = new UdpHeader();
  if (parseUdp(f, iph.payloadOffset, iph.payloadEnd, u)) return null;
  return {
    dstMac: macToString(f, 0), srcMac: macToString(f, 6), srcIp: iph.src, dstIp: iph.dst,
    srcPort: u.srcPort, dstPort: u.dstPort, payload: Buffer.from(f.subarray(u.payloadOffset, u.payloadEnd)),
  };
}
