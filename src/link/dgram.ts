// QEMU `-netdev dgram` and legacy `-netdev socket,udp=|mcast=` transports: one datagram
// carries one frame, no length prefix (net/dgram.c, net/socket.c).
//
// A qnet UDP endpoint is a single bound socket shared by many peers: each distinct source
// address that sends a frame becomes a port of its own (QEMU's dgram netdev sends from a
// fixed local address, so the address identifies the guest NIC), and a restarted QEMU
// with the same address maps back onto the same port. Peers may also be configured up
// front, for a QEMU that must be sent to before it sends anything.
//
// Multicast (`socket,mcast=`) is one port that stands for the whole group: every member
// (QEMU or another qnet) sees every frame sent to it. Multicast loopback returns our own
// transmissions to us; those echoes are recognised and dropped so the switch does not learn
// our own guests' MACs on the multicast port.
import dgram from 'node:dgram';
import { MAX_FRAME, Port } from './port.ts';
import { logger } from '../util/log.ts';

const log = logger('link/dgram');

export interface UdpAddr { host: string; port: number }
export const udpAddrString = (a: UdpAddr): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

/** Frames copied per send: node's dgram keeps the buffer until the send completes. */
function copyFrame(frame: Buffer): Buffer {
  const b = Buffer.allocUnsafe(frame.length);
  frame.copy(b);
  return b;
}

export class DgramPeerPort extends Port {
  lastRx = Date.now();
  constructor(private readonly endpoint: UdpEndpoint, readonly addr: UdpAddr) {
    super('dgram', udpAddrString(addr));
  }
  send(frame: Buffer): void {
    if (this.closed) { this.counters.txDropped++; return; }
    this.counters.txFrames++;
    this.counters.txBytes += frame.length;
    this.endpoint.sendTo(copyFrame(frame), this.addr, this);
  }
  /** Called by the endpoint for each datagram from this peer. */
  input(frame: Buffer): void {
    this.lastRx = Date.now();
    this.deliver(frame);
  }
  protected closeTransport(): void { this.endpoint.forget(this); }
}

export interface UdpEndpointOptions {
  /** Upper bound on learned peers, so a flood of spoofed sources cannot grow memory. */
  maxPeers?: number;
  /** Learned peers silent this long are forgotten (configured peers never are). */
  peerIdleMs?: number;
}

export class UdpEndpoint {
  private readonly peers = new Map<string, DgramPeerPort>();
  private readonly fixed = new Set<DgramPeerPort>();
  private readonly sweep: NodeJS.Timeout;
  onPort: ((port: DgramPeerPort) => void) | null = null;
  /** Datagrams from new sources refused because maxPeers was reached. */
  refusedPeers = 0;
  /** Datagrams dropped before any port: too big or too small to be a frame. */
  badDatagrams = 0;

  private constructor(readonly socket: dgram.Socket, readonly local: UdpAddr, private readonly opts: Required<UdpEndpointOptions>) {
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    socket.on('error', (err) => log.warn('socket error', { local: udpAddrString(local), error: err.message }));
    this.sweep = setInterval(() => this.expire(), Math.min(opts.peerIdleMs, 30_000));
    this.sweep.unref();
  }

  static async bind(local: UdpAddr, opts: UdpEndpointOptions = {}): Promise<UdpEndpoint> {
    const type = local.host.includes(':') ? 'udp6' : 'udp4';
    const socket = dgram.createSocket({ type, recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err) => reject(new Error(`cannot bind udp ${udpAddrString(local)}: ${err.message}`)));
      socket.bind(local.port, local.host, () => resolve());
    });
    const a = socket.address();
    return new UdpEndpoint(socket, { host: a.address, port: a.port }, {
      maxPeers: opts.maxPeers ?? 256,
      peerIdleMs: opts.peerIdleMs ?? 600_000,
    });
  }

  /** A peer known in advance (QEMU's dgram `local=` address); never expires. */
  addPeer(addr: UdpAddr): DgramPeerPort {
    const key = udpAddrString(addr);
    let p = this.peers.get(key);
    if (!p) {
      p = new DgramPeerPort(this, addr);
      this.peers.set(key, p);
      this.onPort?.(p);
    }
    this.fixed.add(p);
    return p;
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (msg.length > MAX_FRAME || msg.length < 14) { this.badDatagrams++; return; }
    const key = rinfo.family === 'IPv6' ? `[${rinfo.address}]:${rinfo.port}` : `${rinfo.address}:${rinfo.port}`;
    let p = this.peers.get(key);
    if (!p) {
      if (this.peers.size >= this.opts.maxPeers) { this.refusedPeers++; return; }
      p = new DgramPeerPort(this, { host: rinfo.address, port: rinfo.port });
      this.peers.set(key, p);
      log.info('peer appeared', { port: p.name, local: udpAddrString(this.local) });
      this.onPort?.(p);
    }
    p.input(msg);
  }

  sendTo(frame: Buffer, addr: UdpAddr, port: DgramPeerPort): void {
    this.socket.send(frame, addr.port, addr.host, (err) => {
      if (err) port.counters.txDropped++;
    });
  }

  forget(p: DgramPeerPort): void {
    this.peers.delete(udpAddrString(p.addr));
    this.fixed.delete(p);
  }

  private expire(): void {
    const limit = Date.now() - this.opts.peerIdleMs;
    for (const p of this.peers.values()) {
      if (!this.fixed.has(p) && p.lastRx < limit) p.close('peer idle');
    }
  }

  ports(): DgramPeerPort[] { return [...this.peers.values()]; }

  close(): void {
    clearInterval(this.sweep);
    for (const p of [...this.peers.values()]) p.close('endpoint closed');
    this.socket.close();
  }
}

/** FNV-1a over the whole frame: identifies our own multicast echoes. */
function frameHash(b: Buffer): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return (h ^ b.length) >>> 0;
}

export class McastPort extends Port {
  /** Hashes of frames we sent whose loopback echo has not come back yet. */
  private readonly echoes = new Map<number, number>();
  echoesDropped = 0;

  private constructor(private readonly socket: dgram.Socket, readonly group: UdpAddr) {
    super('mcast', udpAddrString(group));
    socket.on('message', (msg) => {
      const h = frameHash(msg);
      const pending = this.echoes.get(h);
      if (pending !== undefined) {
        if (pending <= 1) this.echoes.delete(h); else this.echoes.set(h, pending - 1);
        this.echoesDropped++;
        return;
      }
      this.deliver(msg);
    });
    socket.on('error', (err) => this.close(`socket error: ${err.message}`));
  }

  /** Join group:port like QEMU's `socket,mcast=GROUP:PORT[,localaddr=IP]`. */
  static async join(group: UdpAddr, localAddr?: string): Promise<McastPort> {
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 4 << 20 });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err) => reject(new Error(`cannot join multicast ${udpAddrString(group)}: ${err.message}`)));
      socket.bind(group.port, group.host, () => resolve());
    });
    socket.addMembership(group.host, localAddr);
    if (localAddr) socket.setMulticastInterface(localAddr);
    socket.setMulticastLoopback(true);
    socket.setMulticastTTL(1);
    return new McastPort(socket, group);
  }

  send(frame: Buffer): void {
    if (this.closed) { this.counters.txDropped++; return; }
    const h = frameHash(frame);
    if (this.echoes.size > 4096) this.echoes.clear(); // echoes lost (loopback off elsewhere): start over
    this.echoes.set(h, (this.echoes.get(h) ?? 0) + 1);
    this.counters.txFrames++;
    this.counters.txBytes += frame.length;
    this.socket.send(copyFrame(frame), this.group.port, this.group.host, (err) => {
      if (err) this.counters.txDropped++;
    });
  }

  protected closeTransport(): void { this.socket.close(); }
}
