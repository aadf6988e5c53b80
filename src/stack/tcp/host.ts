// The host side of a gateway TCP connection: whatever the guest's connection is joined to
// (a NAT socket, a hostfwd client, a guestfwd target, the DNS-over-TCP service).
//
// The connection talks to it only through HostEnd, and hears from it only through its
// host*() methods, so TCP's tests can put an in-memory host there and drive it by hand.
// attachStream() joins a Node Duplex (a socket, a child's pipes) to a connection; a socket is
// lent guest data (writeLent) and gives it back once written, other streams keep what they get.
import net from 'node:net';
import type { Duplex } from 'node:stream';

export interface HostEnd {
  /** guest data for the host; the buffer is the host's to keep */
  write(data: Buffer): void;
  /**
   * Guest data lent to the host: it calls done() once it no longer needs the buffer (a socket:
   * once written), and the buffer is then reused (stack/tcp/rx-slab.ts). Hosts without it get
   * write() and keep what they are given.
   */
  writeLent?(data: Buffer, done: () => void): void;
  /** the guest sent FIN: end the host's input */
  end(): void;
  /** abort: reset the host side (a TCP RST where the host is a socket) */
  reset(): void;
  /** the connection is over: release the host side */
  release(): void;
  /** stop / restart reading from the host (flow control towards the guest) */
  pause(): void;
  resume(): void;
  /** gather writes until uncork() (one syscall per input batch) */
  cork(): void;
  uncork(): void;
  /** bytes written and not yet taken by the host: what our receive window leaves out */
  readonly backlog: number;
}

/** What a connection hears from its host side. */
export interface HostEvents {
  hostData(data: Buffer): void;
  hostEnded(): void;
  /** the host took its backlog: the window may open */
  hostDrained(): void;
  /** the host side failed or closed without an orderly end */
  hostFailed(): void;
  /** the host side closed (after an orderly end, or not) */
  hostClosed(): void;
}

class StreamHost implements HostEnd {
  constructor(private readonly s: Duplex) {}
  write(data: Buffer): void { this.s.write(data); }
  end(): void { this.s.end(); }
  reset(): void {
    if (this.s.destroyed) return;
    const sock = this.s as Duplex & { resetAndDestroy?: () => void };
    if (sock.resetAndDestroy) sock.resetAndDestroy(); else this.s.destroy();
  }
  release(): void { if (!this.s.destroyed) this.s.destroy(); }
  pause(): void { this.s.pause(); }
  resume(): void { this.s.resume(); }
  cork(): void { this.s.cork(); }
  uncork(): void { this.s.uncork(); }
  get backlog(): number { return this.s.writableLength; }
}

/** A socket writes what it is lent and gives it back from the write's callback. */
class SocketHost extends StreamHost {
  constructor(private readonly sock: net.Socket) { super(sock); }
  writeLent(data: Buffer, done: () => void): void { this.sock.write(data, done); }
}

/** Join a Duplex to a connection: its events become the connection's host events. */
export function attachStream(c: HostEvents & { attachHost(h: HostEnd): void }, s: Duplex): void {
  s.on('data', (d: Buffer) => c.hostData(d));
  s.on('end', () => c.hostEnded());
  s.on('drain', () => c.hostDrained());
  s.on('error', () => c.hostFailed());
  s.on('close', () => c.hostClosed());
  c.attachHost(s instanceof net.Socket ? new SocketHost(s) : new StreamHost(s));
}
