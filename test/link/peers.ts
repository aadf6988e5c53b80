// Test peers that speak QEMU's socket netdev framings from the test process itself.
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';

const tmpDirs: string[] = [];
process.on('exit', () => { for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true }); });

/** A temporary directory, removed when the test process exits. */
export function tmpDir(prefix = 'qnet-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}

/** An Ethernet frame: dst, src, ethertype, payload of `size` total bytes with a recognisable body. */
export function makeFrame(dst: string, src: string, size = 64, ethertype = 0x88b5, fill = 0): Buffer {
  const f = Buffer.alloc(size, fill);
  Buffer.from(dst.split(':').map((x) => parseInt(x, 16))).copy(f, 0);
  Buffer.from(src.split(':').map((x) => parseInt(x, 16))).copy(f, 6);
  f.writeUInt16BE(ethertype, 12);
  return f;
}

export function lengthPrefixed(frames: Buffer[]): Buffer {
  return Buffer.concat(frames.flatMap((f) => {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(f.length);
    return [h, f];
  }));
}

/** A stream peer (like QEMU's -netdev stream,server=off) collecting the frames it receives. */
export class StreamPeer {
  readonly frames: Buffer[] = [];
  private buf = Buffer.alloc(0);
  closed = false;
  private waiters: (() => void)[] = [];
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4) {
        const len = this.buf.readUInt32BE(0);
        if (this.buf.length < 4 + len) break;
        this.frames.push(Buffer.from(this.buf.subarray(4, 4 + len)));
        this.buf = this.buf.subarray(4 + len);
      }
      this.wake();
    });
    sock.on('close', () => { this.closed = true; this.wake(); });
    sock.on('error', () => {});
  }
  private wake(): void { const w = this.waiters; this.waiters = []; w.forEach((f) => f()); }
  static connect(target: string | number): Promise<StreamPeer> {
    return new Promise((resolve, reject) => {
      const s = typeof target === 'number' ? net.connect(target, '127.0.0.1') : net.connect(target);
      s.once('connect', () => resolve(new StreamPeer(s)));
      s.once('error', reject);
    });
  }
  send(...frames: Buffer[]): void { this.sock.write(lengthPrefixed(frames)); }
  raw(b: Buffer): void { this.sock.write(b); }
  /** Wait until `n` frames have arrived in total (or the timeout passes). */
  async waitFrames(n: number, ms = 2000): Promise<Buffer[]> {
    const end = Date.now() + ms;
    while (this.frames.length < n && !this.closed && Date.now() < end) {
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, end - Date.now()); });
    }
    return this.frames;
  }
  async waitClosed(ms = 2000): Promise<boolean> {
    const end = Date.now() + ms;
    while (!this.closed && Date.now() < end) await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 50); });
    return this.closed;
  }
  close(): void { this.sock.destroy(); }
}

/** A dgram peer (like QEMU's -netdev dgram) bound on loopback. */
export class UdpPeer {
  readonly frames: Buffer[] = [];
  private constructor(readonly sock: dgram.Socket, readonly port: number, readonly remote: number) {
    sock.on('message', (m) => this.frames.push(Buffer.from(m)));
  }
  static async bind(remote: number): Promise<UdpPeer> {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    return new UdpPeer(s, s.address().port, remote);
  }
  send(f: Buffer): void { this.sock.send(f, this.remote, '127.0.0.1'); }
  async waitFrames(n: number, ms = 2000): Promise<Buffer[]> {
    const end = Date.now() + ms;
    while (this.frames.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    return this.frames;
  }
  close(): void { this.sock.close(); }
}

export const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
