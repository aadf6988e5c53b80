// A switch + gateway with a fake guest on a QEMU stream socket, exchanging real frames.
import path from 'node:path';
import fs from 'node:fs';
import { Switch } from '../../src/switch/switch.ts';
import { Gateway, type Ipv6Config } from '../../src/stack/gateway.ts';
import { StreamListener } from '../../src/link/stream.ts';
import { StreamPeer, tmpDir, delay } from '../link/peers.ts';
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

  /** ipv6: also give the gateway IPv6 on the segment (DHCPv6, NDP tests) */
  static async create(mtu?: number, ipv6?: Ipv6Config): Promise<Bed> {
    const sw = new Switch();
    const gw = new Gateway({ mac: mac(GW_MAC), net: ip('10.0.2.0'), prefix: 24, addrs: [ip('10.0.2.2'), ip('10.0.2.3')], mtu, ipv6 });
    sw.attach(gw);
    const dir = tmpDir('qnet-svc-');
    const sock = path.join(dir, 'sw.sock');
    const listener = await StreamListener.listen({ kind: 'unix', path: sock });
    listener.onPort = (p) => sw.attach(p);
    const peer = await StreamPeer.connect(sock);
    for (let k = 0; k < 100 && listener.ports.size === 0; k++) await delay(5);
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

  /** First not yet consumed raw frame (of any protocol) that `decode` turns into a value, or null on timeout. */
  async recvFrame<T>(decode: (f: Buffer) => T | null, ms = 2000): Promise<T | null> {
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

  /** First not yet consumed UDP datagram matching `pred` (others stay queued), or null on timeout. */
  async recvUdp(pred: (d: RxUdp) => boolean = () => true, ms = 2000): Promise<RxUdp | null> {
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

  /** All UDP datagrams arriving within `ms`. */
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
