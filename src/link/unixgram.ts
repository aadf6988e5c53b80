// QEMU `-netdev dgram,local.type=unix,local.path=Q,remote.type=unix,remote.path=E`: one
// unix datagram carries one Ethernet frame. qnet binds E; each QEMU sends from its own bound
// path Q, so the sender path identifies the guest NIC and becomes a port of its own (the
// unix-socket twin of UdpEndpoint in dgram.ts). QEMU only accepts frames from `remote`
// once it has sent one, but sends to it at once, so configured peers (addPeer) are optional.
//
// The socket is the native addon's (src/link/sys.ts): received datagrams arrive in batches,
// as views of one receive buffer, valid for the duration of the frame callback; sends are
// synchronous sendto() on a non-blocking socket, so frames are not copied (EAGAIN = drop).
import fs from 'node:fs';
import os from 'node:os';
import { MAX_FRAME, MIN_FRAME, Port } from './port.ts';
import { sys, type SysHandle } from './sys.ts';
import { logger } from '../util/log.ts';

const log = logger('link/unixgram');

export class UnixDgramPeerPort extends Port {
  lastRx = Date.now();
  constructor(private readonly endpoint: UnixDgramEndpoint, readonly path: string) {
    super('dgram', `unix:${path}`);
  }
  send(frame: Buffer): void {
    if (this.closed || !this.endpoint.sendTo(frame, this.path)) { this.counters.txDropped++; return; }
    this.counters.txFrames++;
    this.counters.txBytes += frame.length;
  }
  /** Called by the endpoint for each datagram from this peer. */
  input(frame: Buffer): void {
    this.lastRx = Date.now();
    this.deliver(frame);
  }
  protected closeTransport(): void { this.endpoint.forget(this); }
}

export interface UnixDgramEndpointOptions {
  /** Upper bound on learned peers, so a flood of senders cannot grow memory. */
  maxPeers?: number;
  /** Learned peers silent this long are forgotten (configured peers never are). */
  peerIdleMs?: number;
  /** Socket send/receive buffer size. */
  bufferBytes?: number;
  /** Replace a stale socket file left at the path (default true; a live socket is refused). */
  replaceStale?: boolean;
}

/** Receive buffer: room for a batch of frames, at least one maximal frame plus one byte (giants). */
const RX_BYTES = 1 << 20;
const RX_SLOT = MAX_FRAME + 1;

export class UnixDgramEndpoint {
  private readonly peers = new Map<string, UnixDgramPeerPort>();
  private readonly fixed = new Set<UnixDgramPeerPort>();
  private readonly sweep: NodeJS.Timeout;
  private readonly rx = Buffer.alloc(RX_BYTES);
  private readonly info: Uint32Array;
  private closed = false;
  onPort: ((port: UnixDgramPeerPort) => void) | null = null;
  /** Datagrams from new senders refused because maxPeers was reached. */
  refusedPeers = 0;
  /** Datagrams dropped before any port: too big or too small to be a frame. */
  badDatagrams = 0;
  /** Datagrams from unbound (unnamed) sockets: they cannot be answered, so they are dropped. */
  unnamedDatagrams = 0;
  /** Sends that failed (EAGAIN: receiver not keeping up; ENOENT/ECONNREFUSED: peer gone). */
  sendErrors = 0;
  lastSendError = 0;

  private constructor(private readonly handle: SysHandle, readonly path: string, private readonly opts: Required<Omit<UnixDgramEndpointOptions, 'bufferBytes' | 'replaceStale'>>) {
    const s = sys();
    this.info = new Uint32Array(s.STRIDE * s.MAX_BATCH);
    s.start(handle, this.rx, this.info, RX_SLOT, (n, senders, errno) => this.onBatch(n, senders, errno));
    this.sweep = setInterval(() => this.expire(), Math.min(opts.peerIdleMs, 30_000));
    this.sweep.unref();
  }

  static async bind(path: string, opts: UnixDgramEndpointOptions = {}): Promise<UnixDgramEndpoint> {
    const s = sys();
    if (opts.replaceStale !== false) removeStaleSocket(path);
    let handle: SysHandle;
    try {
      handle = s.openUnixDgram(path, opts.bufferBytes ?? 4 << 20);
    } catch (e) {
      throw new Error(`cannot bind unix dgram ${path}: ${(e as Error).message}`);
    }
    return new UnixDgramEndpoint(handle, path, {
      maxPeers: opts.maxPeers ?? 256,
      peerIdleMs: opts.peerIdleMs ?? 600_000,
    });
  }

  /** A peer known in advance (QEMU's `local.path`); never expires. */
  addPeer(path: string): UnixDgramPeerPort {
    let p = this.peers.get(path);
    if (!p) {
      p = new UnixDgramPeerPort(this, path);
      this.peers.set(path, p);
      this.onPort?.(p);
    }
    this.fixed.add(p);
    return p;
  }

  private onBatch(n: number, senders: (string | null)[] | undefined, errno: number): void {
    const info = this.info, stride = sys().STRIDE;
    for (let i = 0; i < n && !this.closed; i++) {
      const off = info[i * stride], len = info[i * stride + 1];
      if (len > MAX_FRAME || len < MIN_FRAME) { this.badDatagrams++; continue; }
      const from = senders?.[i] ?? null;
      if (from === null) { this.unnamedDatagrams++; continue; }
      let p = this.peers.get(from);
      if (!p) {
        if (this.peers.size >= this.opts.maxPeers) { this.refusedPeers++; continue; }
        p = new UnixDgramPeerPort(this, from);
        this.peers.set(from, p);
        log.info('peer appeared', { port: p.name, local: this.path });
        this.onPort?.(p);
      }
      p.input(this.rx.subarray(off, off + len));
    }
    if (errno !== 0 && !this.closed) log.warn('receive error', { local: this.path, errno });
  }

  /** Synchronous send; false if the frame was not sent. The frame is not retained. */
  sendTo(frame: Buffer, path: string): boolean {
    if (this.closed) return false;
    const e = sys().sendUnix(this.handle, frame, path);
    if (e !== 0) { this.sendErrors++; this.lastSendError = e; return false; }
    return true;
  }

  forget(p: UnixDgramPeerPort): void {
    if (this.peers.get(p.path) === p) this.peers.delete(p.path);
    this.fixed.delete(p);
  }

  private expire(): void {
    const limit = Date.now() - this.opts.peerIdleMs;
    for (const p of this.peers.values()) {
      if (!this.fixed.has(p) && p.lastRx < limit) p.close('peer idle');
    }
  }

  ports(): UnixDgramPeerPort[] { return [...this.peers.values()]; }

  /** Let the process exit while the endpoint is open (or not: the default). */
  ref(on = true): void { if (!this.closed) sys().setRef(this.handle, on); }

  close(): void {
    if (this.closed) return;
    clearInterval(this.sweep);
    for (const p of [...this.peers.values()]) p.close('endpoint closed');
    this.closed = true;
    sys().close(this.handle);
    try { fs.unlinkSync(this.path); } catch { /* already gone */ }
  }
}

/** Remove a socket file nobody is bound to any more; refuse to touch a live one or a non-socket. */
function removeStaleSocket(path: string): void {
  let st: fs.Stats;
  try { st = fs.lstatSync(path); } catch { return; }
  if (!st.isSocket()) throw new Error(`cannot bind unix dgram ${path}: exists and is not a socket`);
  // Probe: sending an empty datagram to a live dgram socket succeeds; a stale file gives ECONNREFUSED.
  const s = sys();
  const probeDir = fs.mkdtempSync(`${os.tmpdir()}/qnet-probe-`);
  const probe = s.openUnixDgram(`${probeDir}/p`, 0);
  try {
    const e = s.sendUnix(probe, Buffer.alloc(0), path);
    if (e === 0 || e === os.constants.errno.EAGAIN) {
      throw new Error(`cannot bind unix dgram ${path}: another process is bound to it`);
    }
    fs.unlinkSync(path);
  } finally {
    s.close(probe);
    fs.rmSync(probeDir, { recursive: true, force: true });
  }
}
