// QEMU `-netdev stream` (and legacy `-netdev socket,listen=|connect=`) transport:
// each frame travels as a 4-byte big-endian length followed by the frame, over a unix
// or TCP stream socket (net/stream.c, net/socket.c).
//
// Receive path: one socket read holds many frames; complete frames are handed on as
// views of the read chunk (no copy), only a frame split across reads is reassembled.
// Send path: frames are copied into one output buffer per port and written with a
// single write per batch (flushed from a microtask, i.e. once the current read batch
// has been fully processed); a producer that builds frames (the gateway) may instead write
// them in place there (reserveFrame/commitFrame), saving the copy. A peer that does not keep
// up has frames dropped, as a real switch port with a full queue would, so memory stays
// bounded.
import net from 'node:net';
import fs from 'node:fs';
import { MAX_FRAME, Port } from './port.ts';
import { logger } from '../util/log.ts';

const log = logger('link/stream');

/** Above this many bytes queued in the kernel-facing write buffer, new frames are dropped. */
const WRITE_HIGH_WATER = 4 * 1024 * 1024;
const OUT_CHUNK = 256 * 1024;

interface OutChunk {
  buf: Buffer;
  /** first byte not yet handed to the socket */
  start: number;
  fill: number;
  /** writes of this chunk still in flight */
  pending: number;
  /** no longer filled; reusable once pending reaches 0 */
  retired: boolean;
  done: () => void;
}

export class StreamPort extends Port {
  // Receive state for a frame (or length prefix) split across reads.
  private partial: Buffer | null = null;
  private partialFill = 0;
  private readonly hdr = Buffer.alloc(4);
  private hdrFill = 0;
  // Send state: frames are gathered in the current chunk between `start` and `fill`.
  private cur: OutChunk | null = null;
  private readonly spares: Buffer[] = [];
  private flushQueued = false;
  private readonly flushFn = (): void => this.flush();

  constructor(readonly socket: net.Socket, peer: string, kind = 'stream') {
    super(kind, peer);
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.close(`socket error: ${err.message}`));
    socket.on('close', () => this.close('peer closed the connection'));
  }

  private onData(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    while (off < n && !this.closed) {
      if (this.partial !== null) {
        const want = this.partial.length - this.partialFill;
        const take = Math.min(want, n - off);
        chunk.copy(this.partial, this.partialFill, off, off + take);
        this.partialFill += take;
        off += take;
        if (this.partialFill === this.partial.length) {
          const frame = this.partial;
          this.partial = null;
          this.deliver(frame);
        }
        continue;
      }
      let len: number;
      if (this.hdrFill === 0 && n - off >= 4) {
        len = chunk.readUInt32BE(off);
        off += 4;
      } else {
        while (this.hdrFill < 4 && off < n) this.hdr[this.hdrFill++] = chunk[off++];
        if (this.hdrFill < 4) return;
        this.hdrFill = 0;
        len = this.hdr.readUInt32BE(0);
      }
      if (len > MAX_FRAME) {
        // Framing is lost: nothing after this prefix can be trusted.
        this.counters.rxDropped++;
        log.warn('disconnecting peer: bad frame length prefix', { port: this.name, length: len, max: MAX_FRAME });
        this.close(`bad frame length prefix ${len} (max ${MAX_FRAME})`);
        return;
      }
      if (n - off >= len) {
        this.deliver(chunk.subarray(off, off + len));
        off += len;
      } else {
        this.partial = Buffer.allocUnsafe(len);
        this.partialFill = 0;
      }
    }
  }

  send(frame: Buffer): void {
    const at = this.reserveFrame(frame.length);
    if (at < 0) return;
    frame.copy(this.cur!.buf, at);
    this.commitFrame(frame.length);
  }

  override reserveFrame(max: number): number {
    const c0 = this.cur;
    if (this.closed || this.socket.writableLength + (c0 ? c0.fill - c0.start : 0) > WRITE_HIGH_WATER) {
      this.counters.txDropped++;
      return -1;
    }
    const need = max + 4;
    let c = c0;
    if (c === null || c.fill + need > c.buf.length) {
      if (c !== null) { this.flush(); this.retire(c); }
      c = this.cur = this.chunk(need);
    }
    return c.fill + 4;
  }

  override get txBuf(): Buffer { return this.cur!.buf; }

  override commitFrame(len: number): void {
    const c = this.cur!;
    c.buf.writeUInt32BE(len, c.fill);
    c.fill += len + 4;
    this.counters.txFrames++;
    this.counters.txBytes += len;
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushFn);
    }
  }

  /** A chunk to fill: a recycled one when possible (fresh 256 KB buffers per batch churn the GC). */
  private chunk(need: number): OutChunk {
    const buf = need <= OUT_CHUNK ? this.spares.pop() ?? Buffer.allocUnsafe(OUT_CHUNK) : Buffer.allocUnsafe(need);
    const c: OutChunk = { buf, start: 0, fill: 0, pending: 0, retired: false, done: () => {
      if (--c.pending === 0 && c.retired) this.recycle(c);
    } };
    return c;
  }

  private retire(c: OutChunk): void {
    c.retired = true;
    if (this.cur === c) this.cur = null;
    if (c.pending === 0) this.recycle(c);
  }

  private recycle(c: OutChunk): void {
    if (c.buf.length === OUT_CHUNK && this.spares.length < 4 && !this.closed) this.spares.push(c.buf);
  }

  /** Write everything queued with one write. */
  flush(): void {
    this.flushQueued = false;
    const c = this.cur;
    if (c === null || c.fill === c.start || this.closed) return;
    // The written region belongs to the socket until the write completes.
    const data = c.buf.subarray(c.start, c.fill);
    c.start = c.fill;
    c.pending++;
    if (c.buf.length - c.fill < 2048) this.retire(c);
    this.socket.write(data, c.done);
  }

  protected closeTransport(): void {
    this.partial = null;
    this.cur = null;
    this.spares.length = 0;
    this.socket.destroy();
  }
}

export type StreamAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export function describeStreamAddress(a: StreamAddress): string {
  return a.kind === 'unix' ? `unix:${a.path}` : `tcp:${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

/** Remove a stale unix socket file, but refuse to steal one a live process listens on. */
async function clearStaleUnixSocket(path: string): Promise<void> {
  let st: fs.Stats;
  try { st = fs.statSync(path); } catch { return; }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; remove it or choose another path`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${path} is in use by another process; stop it or choose another path`);
  fs.unlinkSync(path);
}

/**
 * Accepts QEMU connections (QEMU `server=off`, or legacy `socket,connect=`). Every
 * connection becomes its own port, so many guests can share one listening socket, and a
 * restarted QEMU simply connects again.
 */
export class StreamListener {
  private readonly server: net.Server;
  readonly ports = new Set<StreamPort>();
  onPort: ((port: StreamPort) => void) | null = null;

  private constructor(readonly address: StreamAddress, server: net.Server, readonly kind: string) {
    this.server = server;
    server.on('connection', (sock) => {
      const peer = address.kind === 'unix' ? `${address.path}` : `${sock.remoteAddress}:${sock.remotePort}`;
      const port = new StreamPort(sock, peer, kind);
      this.ports.add(port);
      port.onClosed(() => this.ports.delete(port));
      log.info('peer connected', { port: port.name, listen: describeStreamAddress(address) });
      this.onPort?.(port);
    });
  }

  static async listen(address: StreamAddress, kind = 'stream', mode = 0o660): Promise<StreamListener> {
    if (address.kind === 'unix') await clearStaleUnixSocket(address.path);
    const server = net.createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(new Error(`cannot listen on ${describeStreamAddress(address)}: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`));
      });
      if (address.kind === 'unix') server.listen(address.path, () => resolve());
      else server.listen(address.port, address.host, () => resolve());
    });
    if (address.kind === 'unix') fs.chmodSync(address.path, mode);
    const bound = server.address();
    if (address.kind === 'tcp' && bound && typeof bound === 'object') address = { ...address, port: bound.port };
    return new StreamListener(address, server, kind);
  }

  close(): void {
    this.server.close();
    for (const p of this.ports) p.close('listener closed');
    if (this.address.kind === 'unix') {
      try { fs.unlinkSync(this.address.path); } catch { /* already gone */ }
    }
  }
}

/**
 * Connects to a QEMU that listens (`server=on`, or legacy `socket,listen=`). When the
 * connection drops (QEMU restarted) it reconnects with backoff; each connection is a new port.
 */
export class StreamConnector {
  onPort: ((port: StreamPort) => void) | null = null;
  port: StreamPort | null = null;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private backoff = 50;

  constructor(readonly address: StreamAddress, readonly kind = 'stream') {}

  start(): void { this.attempt(); }

  private attempt(): void {
    if (this.stopped) return;
    const a = this.address;
    const sock = a.kind === 'unix' ? net.connect(a.path) : net.connect(a.port, a.host);
    sock.once('connect', () => {
      this.backoff = 50;
      const port = new StreamPort(sock, describeStreamAddress(a), this.kind);
      this.port = port;
      port.onClosed((_p, reason) => {
        this.port = null;
        if (this.stopped) return;
        log.info('connection lost, reconnecting', { peer: describeStreamAddress(a), reason });
        this.schedule();
      });
      log.info('connected', { port: port.name });
      this.onPort?.(port);
    });
    sock.once('error', () => {
      if (!sock.connecting && this.port?.socket === sock) return; // handled by the port
      sock.destroy();
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.attempt(); }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, 2000);
  }

  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.port?.close('connector closed');
  }
}
