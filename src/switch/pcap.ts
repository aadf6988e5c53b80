// pcap (libpcap "classic" format, LINKTYPE_ETHERNET) writer for captures that Wireshark
// and tshark read. Records are gathered into one buffer and handed on in batches (by size
// or every 200 ms) so a capture costs a copy per frame, not a syscall per frame.
//
// Where the bytes go is a sink: the control API streams them to its client (which writes
// the file as the calling user: the daemon never opens a path it was given), and the
// `qnet switch` / `qnet user` commands write a file of their own user's choosing
// (PcapWriter.toFile). A sink that cannot take a batch (a client that does not keep up)
// says so and the batch's frames are counted as dropped: a capture never buffers without bound.
import fs from 'node:fs';

const SNAPLEN = 262144;
const BATCH = 256 * 1024;

/** Takes one batch (borrowed for the call); false: not taken (its frames count as dropped). */
export type PcapSink = (data: Buffer) => boolean;

/** The 24-byte pcap file header. */
export function pcapHeader(): Buffer {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(0xa1b2c3d4, 0); // magic: microsecond timestamps
  h.writeUInt16LE(2, 4);
  h.writeUInt16LE(4, 6);
  h.writeUInt32LE(SNAPLEN, 16);
  h.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
  return h;
}

export class PcapWriter {
  private buf = Buffer.allocUnsafe(BATCH);
  private fill = 0;
  /** frames in the current batch */
  private batched = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly closeListeners: (() => void)[] = [];
  /** frames handed to the sink */
  frames = 0;
  /** frames the sink could not take */
  dropped = 0;
  closed = false;

  /** Writes the file header through `sink` at once; `release` runs after the last batch. */
  constructor(private readonly sink: PcapSink, private readonly release?: () => void) {
    sink(pcapHeader());
    this.timer = setInterval(() => this.flush(), 200);
    this.timer.unref();
  }

  /**
   * A capture file (created 0600, truncated if it exists, as tcpdump -w does), for the
   * commands that run as the user who names the file. The descriptor is closed again if
   * the header cannot be written.
   */
  static toFile(path: string): PcapWriter {
    const fd = fs.openSync(path, 'w', 0o600);
    try {
      return new PcapWriter((d) => { fs.writeSync(fd, d); return true; }, () => fs.closeSync(fd));
    } catch (e) {
      fs.closeSync(fd);
      throw new Error(`cannot write the capture file ${path}: ${(e as Error).message}`);
    }
  }

  /** Run fn once the capture has ended (at once if it has). */
  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closeListeners.push(fn);
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
    const o = this.fill;
    b.writeUInt32LE(Math.floor(us / 1e6), o);
    b.writeUInt32LE(us % 1e6, o + 4);
    b.writeUInt32LE(caplen, o + 8);
    b.writeUInt32LE(frame.length, o + 12);
    frame.copy(b, o + 16, 0, caplen);
    this.fill = o + 16 + caplen;
    this.batched++;
  }

  flush(): void {
    if (this.fill === 0 || this.closed) return;
    const n = this.batched;
    const data = this.buf.subarray(0, this.fill);
    this.fill = 0;
    this.batched = 0;
    let taken = false;
    try { taken = this.sink(data); } catch { taken = false; }
    if (taken) this.frames += n; else this.dropped += n;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    clearInterval(this.timer);
    try { this.release?.(); } catch { /* the sink is gone already */ }
    for (const fn of this.closeListeners.splice(0)) fn();
  }
}
