// DNS over TCP from guests (RFC 1035 4.2.2 / RFC 7766): 2-byte length-prefixed messages,
// several per connection and split anywhere, each handed to the forwarder (which forwards
// TCP queries over TCP), the answers written back length-prefixed in completion order
// (allowed by RFC 7766 6.2.1.1: the IDs tell them apart). At most MAX_INFLIGHT_PER_STREAM
// queries of one connection are in flight; reading pauses beyond that.
import { Duplex } from 'node:stream';
import { DnsForwarder } from './dns.ts';

const MAX_INFLIGHT_PER_STREAM = 16;

/** Splits a byte stream into length-prefixed DNS messages and forwards them. */
class StreamSession {
  private buf: Buffer = Buffer.alloc(0);
  private inflight = 0;
  private ended = false;
  constructor(private readonly fwd: DnsForwarder, private readonly out: (b: Buffer) => void,
    private readonly finish: () => void, private readonly pause: (on: boolean) => void) {}

  feed(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.drain();
  }

  private draining = false;
  private drain(): void {
    if (this.draining) return; // an answer given synchronously: the running loop goes on
    this.draining = true;
    while (this.buf.length >= 2 && this.inflight < MAX_INFLIGHT_PER_STREAM) {
      const len = this.buf.readUInt16BE(0);
      if (this.buf.length < 2 + len) break;
      const msg = Buffer.from(this.buf.subarray(2, 2 + len));
      this.buf = this.buf.subarray(2 + len);
      this.inflight++;
      const ok = this.fwd.query(msg, 0, (answer) => {
        const hdr = Buffer.alloc(2);
        hdr.writeUInt16BE(answer.length);
        this.out(Buffer.concat([hdr, answer]));
        this.inflight--;
        this.drain();
        this.maybeFinish();
      }, true);
      if (!ok) this.inflight--; // dropped as malformed
    }
    this.draining = false;
    this.pause(this.inflight >= MAX_INFLIGHT_PER_STREAM);
  }

  end(): void {
    this.ended = true;
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.ended && this.inflight === 0) this.finish();
  }
}

/** The guest-facing end of a DNS-over-TCP connection: write the guest's bytes, read the answers. */
class DnsStreamEndpoint extends Duplex {
  private readonly session: StreamSession;
  private resumeWrite: (() => void) | null = null;
  private paused = false;
  constructor(fwd: DnsForwarder) {
    super();
    this.session = new StreamSession(fwd, (b) => { this.push(b); }, () => { this.push(null); }, (on) => {
      this.paused = on;
      if (!on && this.resumeWrite) { const r = this.resumeWrite; this.resumeWrite = null; r(); }
    });
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.session.feed(chunk);
    if (this.paused) this.resumeWrite = () => cb(); else cb();
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.session.end();
    cb();
  }
}

/**
 * DNS over TCP. `serveDnsStream(fwd)` returns a Duplex to attach to a guest connection (what is
 * written to it are the guest's bytes, what it emits are the answers); `serveDnsStream(stream,
 * fwd)` serves an existing duplex (a socket: its data are queries, answers are written to it).
 */
export function serveDnsStream(fwd: DnsForwarder): Duplex;
export function serveDnsStream(stream: Duplex, fwd: DnsForwarder): void;
export function serveDnsStream(a: Duplex | DnsForwarder, b?: DnsForwarder): Duplex | void {
  if (a instanceof DnsForwarder) return new DnsStreamEndpoint(a);
  const stream = a;
  const fwd = b!;
  const session = new StreamSession(fwd, (buf) => { if (!stream.destroyed) stream.write(buf); },
    () => { if (!stream.destroyed) stream.end(); }, (on) => { if (on) stream.pause(); else stream.resume(); });
  stream.on('data', (d: Buffer) => session.feed(d));
  stream.on('end', () => session.end());
  stream.on('error', () => stream.destroy());
}
