// pcap (libpcap "classic" format, LINKTYPE_ETHERNET) writer for captures that Wireshark
// and tshark read. Records are gathered into one buffer and written in batches (by size
// or every 200 ms) so a capture costs a copy per frame, not a syscall per frame.
import fs from 'node:fs';

const SNAPLEN = 262144;
const BATCH = 256 * 1024;

export class PcapWriter {
  private readonly fd: number;
  private buf = Buffer.allocUnsafe(BATCH);
  private fill = 0;
  private readonly timer: NodeJS.Timeout;
  frames = 0;
  closed = false;

  constructor(readonly path: string) {
    this.fd = fs.openSync(path, 'w', 0o600);
    const h = Buffer.alloc(24);
    h.writeUInt32LE(0xa1b2c3d4, 0); // magic: microsecond timestamps
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeUInt32LE(SNAPLEN, 16);
    h.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
    fs.writeSync(this.fd, h);
    this.timer = setInterval(() => this.flush(), 200);
    this.timer.unref();
  }

  write(frame: Buffer): void {
    if (this.closed) return;
    const caplen = Math.min(frame.length, SNAPLEN);
    if (this.fill + 16 + caplen > this.buf.length) {
      this.flush();
      if (16 + caplen > this.buf.length) this.buf = Buffer.allocUnsafe(16 + caplen);
    }
    const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
    const b = this.buf;
    let o = this.fill;
    b.writeUInt32LE(Math.floor(us / 1e6), o);
    b.writeUInt32LE(us % 1e6, o + 4);
    b.writeUInt32LE(caplen, o + 8);
    b.writeUInt32LE(frame.length, o + 12);
    frame.copy(b, o + 16, 0, caplen);
    this.fill = o + 16 + caplen;
    this.frames++;
  }

  flush(): void {
    if (this.fill === 0 || this.closed) return;
    fs.writeSync(this.fd, this.buf, 0, this.fill);
    this.fill = 0;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    clearInterval(this.timer);
    fs.closeSync(this.fd);
  }
}
