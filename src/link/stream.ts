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
//
// Hostile peers (whoever is on the other end of a listening socket): a frame split across
// reads needs a buffer of its announced length, so a peer that stops inside a frame pins up
// to 68 KiB for the 4 bytes of a length prefix. A listener therefore
// - caps its connections (`maxConnections`; excess ones are closed at once by the server),
// - caps the bytes all its connections hold in unfinished frames (`maxBufferedBytes`): a new
//   partial frame that would exceed it first evicts (disconnects) the peers whose unfinished
//   frame is oldest. A well-behaved peer's partial frame completes within the next read, so
//   the peers evicted are the ones that stalled,
// - disconnects a peer whose frame stays unfinished for `partialTimeoutMs` (timed by a 1 s
//   sweep on a coarse clock: no timer per read and no clock read on the packet path).
// Each of these is reported to `limits` (counted, logged once per interval). Connections a
// StreamConnector makes (to a QEMU qnet started) are one per VM and need none of this.
//
// Fairness: libuv reads a busy socket up to 32 times per event-loop turn, so a peer that
// floods would have its frames handled many times over before another port's were. A port
// that has delivered FRAMES_PER_TURN frames in the current turn pauses its socket until the
// next turn (`yields` counts it): every port gets its turn, and the kernel's socket buffer
// pushes back on the flooder. Normal traffic delivers far fewer frames per turn and never pauses.
import net from 'node:net';
import fs from 'node:fs';
import { MAX_FRAME, Port } from './port.ts';
import { logger } from '../util/log.ts';
import { LimitLog, type LimitReporter } from '../util/limits.ts';

const log = logger('link/stream');

/** Above this many bytes queued in the kernel-facing write buffer, new frames are dropped. */
const WRITE_HIGH_WATER = 4 * 1024 * 1024;
const OUT_CHUNK = 256 * 1024;
/** Frames one port hands on per event-loop turn before it yields to the others. */
export const FRAMES_PER_TURN = 512;

/** Event-loop turns, counted while any stream port receives (one setImmediate per busy turn). */
let turn = 0;
let turnArmed = false;
const nextTurn = (): void => { turn++; turnArmed = false; };

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

/** Receive-side limits shared by the connections of one listener (see the top comment). */
export class RxBudget {
  /** bytes held in unfinished frames, all connections */
  bytes = 0;
  /** coarse clock (ms), advanced by the listener's sweep */
  now = 0;
  /** connections with an unfinished frame (or length prefix) */
  readonly partial = new Set<StreamPort>();
  constructor(readonly maxBytes: number, readonly timeoutMs: number, readonly onEvict: (p: StreamPort, why: 'bytes' | 'timeout') => void) {}

  /** Room for `len` more bytes for `port`: evicts the stalest other partial frames if needed. */
  reserve(port: StreamPort, len: number): boolean {
    while (this.bytes + len > this.maxBytes) {
      let oldest: StreamPort | null = null;
      for (const p of this.partial) if (p !== port && p.partialBytes > 0 && (!oldest || p.partialSince < oldest.partialSince)) oldest = p;
      if (!oldest) return false;
      this.onEvict(oldest, 'bytes');
    }
    this.bytes += len;
    return true;
  }

  sweep(nowMs: number): void {
    this.now = nowMs;
    for (const p of [...this.partial]) if (nowMs - p.partialSince > this.timeoutMs) this.onEvict(p, 'timeout');
  }
}

export class StreamPort extends Port {
  // Receive state for a frame (or length prefix) split across reads.
  private partial: Buffer | null = null;
  private partialFill = 0;
  private readonly hdr = Buffer.alloc(4);
  private hdrFill = 0;
  /** bytes reserved in the budget for the unfinished frame */
  partialBytes = 0;
  /** budget clock when the unfinished frame began */
  partialSince = 0;
  /** the listener's receive limits (null: a connection qnet made itself) */
  budget: RxBudget | null = null;
  // Send state: frames are gathered in the current chunk between `start` and `fill`.
  private cur: OutChunk | null = null;
  private readonly spares: Buffer[] = [];
  private flushQueued = false;
  private readonly flushFn = (): void => this.flush();
  /** the turn rxInTurn counts frames of */
  private rxTurn = -1;
  private rxInTurn = 0;
  /** times this port paused to let the others have their turn */
  yields = 0;
  private readonly resumeFn = (): void => { if (!this.closed) this.socket.resume(); };

  constructor(readonly socket: net.Socket, peer: string, kind = 'stream') {
    super(kind, peer);
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.close(`socket error: ${err.message}`));
    socket.on('close', () => this.close('peer closed the connection'));
  }

  private onData(chunk: Buffer): void {
    const c = this.counters;
    const before = c.rxFrames + c.rxDropped;
    this.receive(chunk);
    if (this.closed) return;
    // fairness (see the top comment)
    if (this.rxTurn !== turn) { this.rxTurn = turn; this.rxInTurn = 0; }
    if (!turnArmed) { turnArmed = true; setImmediate(nextTurn); }
    this.rxInTurn += c.rxFrames + c.rxDropped - before;
    if (this.rxInTurn >= FRAMES_PER_TURN) {
      this.yields++;
      this.socket.pause();
      setImmediate(this.resumeFn);
    }
  }

  private receive(chunk: Buffer): void {
    const wasPartial = this.partial !== null || this.hdrFill > 0;
    let finished = false;
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
          this.releasePartial();
          finished = true;
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
        finished = true;
        this.deliver(chunk.subarray(off, off + len));
        off += len;
      } else {
        const b = this.budget;
        if (b !== null) {
          if (!b.reserve(this, len)) { this.close('unfinished frames over the listener\'s buffer limit'); return; }
          this.partialBytes = len;
        }
        this.partial = Buffer.allocUnsafe(len);
        this.partialFill = 0;
      }
    }
    const b = this.budget;
    if (b === null || this.closed) return;
    if (this.partial !== null || this.hdrFill > 0) {
      // the unfinished frame's age counts from its first byte, not from the last read
      if (!wasPartial || finished) { this.partialSince = b.now; b.partial.add(this); }
    } else if (wasPartial) {
      b.partial.delete(this);
    }
  }

  private releasePartial(): void {
    if (this.partialBytes === 0) return;
    this.budget!.bytes -= this.partialBytes;
    this.partialBytes = 0;
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
    if (this.budget !== null) { this.releasePartial(); this.budget.partial.delete(this); }
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
export interface StreamListenerOptions {
  /** connections at once; default 256 */
  maxConnections?: number;
  /** bytes in unfinished frames over all connections; default 32 MiB (at least one largest frame) */
  maxBufferedBytes?: number;
  /** longest a frame may stay unfinished; default 20 s */
  partialTimeoutMs?: number;
  /** where limit hits are reported (default: logged here) */
  limits?: LimitReporter;
}

export const STREAM_MAX_CONNECTIONS = 256;
export const STREAM_MAX_BUFFERED = 32 << 20;
// Generous: a QEMU that is briefly stopped (SIGSTOP, a debugger) mid-write must not lose its NIC.
export const STREAM_PARTIAL_TIMEOUT_MS = 20_000;

export class StreamListener {
  private readonly server: net.Server;
  readonly ports = new Set<StreamPort>();
  onPort: ((port: StreamPort) => void) | null = null;
  readonly budget: RxBudget;
  readonly stats = { refused: 0, evicted: 0, timedOut: 0 };
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly started = Date.now();

  private constructor(readonly address: StreamAddress, server: net.Server, readonly kind: string, opts: StreamListenerOptions) {
    this.server = server;
    const where = describeStreamAddress(address);
    const limits = opts.limits ?? new LimitLog(log);
    const maxConns = opts.maxConnections ?? STREAM_MAX_CONNECTIONS;
    server.maxConnections = maxConns;
    this.budget = new RxBudget(Math.max(MAX_FRAME, opts.maxBufferedBytes ?? STREAM_MAX_BUFFERED), opts.partialTimeoutMs ?? STREAM_PARTIAL_TIMEOUT_MS, (p, why) => {
      if (why === 'bytes') {
        this.stats.evicted++;
        limits.hit('stream.bufferedBytes', this.budget.maxBytes, p.name, 'peers on this socket hold too many unfinished frames; the one stalled longest was disconnected', { listen: where });
        p.close('evicted: its unfinished frame was the oldest when the listener\'s buffer limit was reached');
      } else {
        this.stats.timedOut++;
        limits.hit('stream.partialTimeoutMs', this.budget.timeoutMs, p.name, 'a peer stopped in the middle of a frame and was disconnected', { listen: where });
        p.close(`a frame stayed unfinished for over ${this.budget.timeoutMs / 1000} s`);
      }
    });
    // Node closes connections beyond maxConnections at once and reports them here
    server.on('drop', () => {
      this.stats.refused++;
      limits.hit('stream.connections', maxConns, where, 'too many connections on this attach socket; new ones are closed at once');
    });
    this.sweepTimer = setInterval(() => this.budget.sweep(Date.now() - this.started), 1000);
    this.sweepTimer.unref();
    server.on('connection', (sock) => {
      const peer = address.kind === 'unix' ? `${address.path}` : `${sock.remoteAddress}:${sock.remotePort}`;
      const port = new StreamPort(sock, peer, kind);
      port.budget = this.budget;
      this.ports.add(port);
      port.onClosed(() => this.ports.delete(port));
      log.info('peer connected', { port: port.name, listen: where });
      this.onPort?.(port);
    });
  }

  static async listen(address: StreamAddress, kind = 'stream', mode = 0o660, opts: StreamListenerOptions = {}): Promise<StreamListener> {
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
    return new StreamListener(address, server, kind, opts);
  }

  close(): void {
    clearInterval(this.sweepTimer);
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
