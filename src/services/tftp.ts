// Read-only TFTP server on the gateway (QEMU user-mode `tftp=dir`, served at the host address
// 10.0.2.2:69 like libslirp's tftp.c), for PXE and other network boots.
//
// Protocol: RFC 1350 read requests in octet and netascii modes, with the option extension
// (RFC 2347): blksize (RFC 2348), tsize and timeout (RFC 2349). Write requests are refused with
// error 2 (access violation): the root is never written to.
//
// Design
// - Each transfer gets its own server port (TID) on the gateway address, bound with
//   gw.bindUdp() and unbound when the transfer ends. The request port (69) only takes requests.
//   A repeated RRQ from the same client port while its transfer runs is ignored (the transfer's
//   own retransmission answers it) rather than starting a second transfer.
// - Lock-step sending, one block in flight: block n+1 is read and sent only on the ACK of block n.
//   A duplicate ACK of an earlier block is ignored, never answered with a retransmission, so
//   the "Sorcerer's Apprentice" doubling (RFC 1123 4.2.3.1) cannot happen; only the timer
//   retransmits, `retries` times, then the transfer is dropped with an error packet.
// - Timers run on the gateway's shared queue. The retransmission interval is the client's
//   `timeout` option when it sent one, else `retransmitMs` (1 s).
// - Files are read with positioned reads on a read-only handle, one block at a time, so a large
//   image costs one block of memory per transfer. netascii converts on the fly (LF -> CR LF,
//   CR -> CR NUL) through a small look-ahead buffer; tsize then reports the file's size on disk,
//   as most servers do (the converted size would need a full pass over the file).
// - Block size: a client's blksize is clamped to `maxBlksize`, 1432 by default (as many servers
//   do: 1432 + 4 + 8 + 20 fits a 1500-byte MTU with room for a tunnel header), so DATA never
//   needs IP fragmentation; a larger maxBlksize is allowed (up to 65464) and the gateway
//   fragments. Block numbers wrap after 65535 (as tftp-hpa and most clients do).
//
// Security
// - The requested name is relative to the root: backslashes are treated as slashes (Windows PXE
//   clients), one leading '/' is stripped, and an absolute path that remains, an empty name, a
//   NUL or any '..' component is an access violation. The path is then resolved with
//   fs.realpath and must still be inside the (real) root, so symlinks cannot lead out; the
//   resolved path is opened read-only with O_NOFOLLOW, and must be a regular file.
// - At most `maxPerClient` transfers per guest address and `maxTransfers` overall (error 0 with
//   a message beyond that); every malformed packet is counted and dropped or answered with an
//   error, never thrown.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { UdpDatagram, UdpHost } from '../stack/output.ts';
import { Timer } from '../stack/timers.ts';
import { addrToString } from '../stack/addr.ts';
import { logger } from '../util/log.ts';

const log = logger('tftp');

export const TFTP_PORT = 69;
const OP_RRQ = 1, OP_WRQ = 2, OP_DATA = 3, OP_ACK = 4, OP_ERROR = 5, OP_OACK = 6;
export const TFTP_ERR_UNDEF = 0, TFTP_ERR_NOT_FOUND = 1, TFTP_ERR_ACCESS = 2, TFTP_ERR_ILLEGAL = 4,
  TFTP_ERR_UNKNOWN_TID = 5, TFTP_ERR_OPTION = 8;
const MIN_BLKSIZE = 8;
const MAX_BLKSIZE = 65464;

export interface TftpOptions {
  /** directory served */
  root: string;
  /** gateway address to serve on; default the gateway's first address (slirp's .2) */
  listenIp?: number;
  /** largest blksize granted; default 1432 */
  maxBlksize?: number;
  /** retransmission interval when the client gives no timeout option; default 1000 ms */
  retransmitMs?: number;
  /** retransmissions of one packet before giving up; default 5 */
  retries?: number;
  /** concurrent transfers per guest address; default 4 */
  maxPerClient?: number;
  /** concurrent transfers overall; default 64 */
  maxTransfers?: number;
}

export interface TftpStats {
  requests: number;
  started: number;
  completed: number;
  notFound: number;
  denied: number;
  writeRefused: number;
  malformed: number;
  limited: number;
  retransmits: number;
  duplicateAcks: number;
  unknownTid: number;
  gaveUp: number;
  clientErrors: number;
  bytesSent: number;
  active: number;
}

class TftpError extends Error {
  constructor(readonly code: number, msg: string) { super(msg); }
}

interface Transfer {
  clientIp: number;
  clientPort: number;
  key: number;
  tid: number;
  fh: fsp.FileHandle;
  blksize: number;
  intervalMs: number;
  netascii: boolean;
  /** current block number (0 = the OACK) */
  block: number;
  /** current packet, for retransmission */
  pkt: Buffer;
  last: boolean;
  tries: number;
  reading: boolean;
  done: boolean;
  timer: Timer;
  // source reading
  pos: number;
  eof: boolean;
  /** netascii: converted bytes not yet sent */
  pending: Buffer;
}

export class TftpServer {
  readonly stats: TftpStats = {
    requests: 0, started: 0, completed: 0, notFound: 0, denied: 0, writeRefused: 0, malformed: 0, limited: 0,
    retransmits: 0, duplicateAcks: 0, unknownTid: 0, gaveUp: 0, clientErrors: 0, bytesSent: 0, active: 0,
  };
  readonly listenIp: number;
  readonly root: string;
  private readonly maxBlksize: number;
  private readonly retransmitMs: number;
  private readonly retries: number;
  private readonly maxPerClient: number;
  private readonly maxTransfers: number;
  private readonly transfers = new Map<number, Transfer>(); // by client ip:port
  private readonly tids = new Set<number>();
  private readonly starting = new Set<number>();
  private readonly perClient = new Map<number, number>();
  private closed = false;

  constructor(private readonly gw: UdpHost, opts: TftpOptions) {
    this.root = fs.realpathSync(opts.root);
    if (!fs.statSync(this.root).isDirectory()) throw new Error(`tftp: ${opts.root} is not a directory`);
    this.listenIp = opts.listenIp ?? gw.addrs.values().next().value ?? 0;
    this.maxBlksize = Math.max(MIN_BLKSIZE, Math.min(MAX_BLKSIZE, opts.maxBlksize ?? 1432));
    this.retransmitMs = opts.retransmitMs ?? 1000;
    this.retries = opts.retries ?? 5;
    this.maxPerClient = opts.maxPerClient ?? 4;
    this.maxTransfers = opts.maxTransfers ?? 64;
    gw.bindUdp(this.listenIp, TFTP_PORT, this.onRequest);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.gw.unbindUdp(this.listenIp, TFTP_PORT);
    for (const t of [...this.transfers.values()]) this.finish(t, false);
  }

  // ---- requests on port 69 ----

  private readonly onRequest = (d: UdpDatagram): void => {
    if (this.closed) return;
    try {
      this.request(d);
    } catch (err) {
      this.stats.malformed++;
      if (log.enabled('debug')) log.debug('request handler error', { err: (err as Error).message });
    }
  };

  private request(d: UdpDatagram): void {
    const p = d.payload;
    const client = d.srcIp, cport = d.srcPort;
    if (p.length < 2) { this.stats.malformed++; return; }
    const op = p.readUInt16BE(0);
    if (op === OP_WRQ) {
      this.stats.writeRefused++;
      return this.sendError(TFTP_PORT, client, cport, TFTP_ERR_ACCESS, 'Access violation: read-only server');
    }
    if (op !== OP_RRQ) {
      this.stats.malformed++;
      if (op === OP_DATA || op === OP_ACK || op === OP_ERROR || op === OP_OACK) return; // stray packet of a finished transfer
      return this.sendError(TFTP_PORT, client, cport, TFTP_ERR_ILLEGAL, 'Illegal TFTP operation');
    }
    this.stats.requests++;
    // filename NUL mode NUL [option NUL value NUL]...
    const strs: string[] = [];
    let i = 2;
    while (i < p.length && strs.length < 64) {
      const z = p.indexOf(0, i);
      if (z < 0) break;
      strs.push(p.toString('latin1', i, z));
      i = z + 1;
    }
    if (strs.length < 2 || i !== p.length) {
      this.stats.malformed++;
      return this.sendError(TFTP_PORT, client, cport, TFTP_ERR_ILLEGAL, 'Malformed request');
    }
    const [name, modeRaw] = strs;
    const mode = modeRaw.toLowerCase();
    if (mode !== 'octet' && mode !== 'netascii') {
      this.stats.malformed++;
      return this.sendError(TFTP_PORT, client, cport, TFTP_ERR_ILLEGAL, `Unsupported mode ${mode.slice(0, 16)}`);
    }
    const key = client * 65536 + cport;
    if (this.transfers.has(key) || this.starting.has(key)) return; // retransmitted RRQ
    const n = this.perClient.get(client) ?? 0;
    if (n >= this.maxPerClient || this.transfers.size + this.starting.size >= this.maxTransfers) {
      this.stats.limited++;
      return this.sendError(TFTP_PORT, client, cport, TFTP_ERR_UNDEF, 'Too many transfers');
    }
    const opts = new Map<string, string>();
    for (let k = 2; k + 1 < strs.length; k += 2) opts.set(strs[k].toLowerCase(), strs[k + 1]);
    this.perClient.set(client, n + 1);
    this.starting.add(key);
    void this.open(name).then((fh) => this.start(fh, client, cport, key, mode === 'netascii', opts), (err: unknown) => {
      this.starting.delete(key);
      this.releaseClient(client);
      if (this.closed) return;
      const e = err instanceof TftpError ? err : new TftpError(TFTP_ERR_UNDEF, 'Cannot read file');
      if (e.code === TFTP_ERR_NOT_FOUND) this.stats.notFound++; else this.stats.denied++;
      if (log.enabled('debug')) log.debug('request refused', { client: addrToString(client), file: name.slice(0, 128), err: e.message });
      this.sendError(TFTP_PORT, client, cport, e.code, e.message);
    }).catch((err: unknown) => {
      this.stats.malformed++;
      log.warn('transfer start failed', { err: (err as Error).message });
    });
  }

  /** Resolve `name` inside the root and open it read-only; throws TftpError. */
  private async open(name: string): Promise<fsp.FileHandle> {
    let rel = name.replace(/\\/g, '/');
    if (rel.startsWith('/')) rel = rel.slice(1);
    if (rel === '' || rel.startsWith('/') || rel.includes('\0') || rel.split('/').includes('..')) {
      throw new TftpError(TFTP_ERR_ACCESS, 'Access violation');
    }
    let real: string;
    try {
      real = await fsp.realpath(path.join(this.root, rel));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new TftpError(TFTP_ERR_NOT_FOUND, 'File not found');
      throw new TftpError(TFTP_ERR_ACCESS, 'Access violation');
    }
    if (!real.startsWith(this.root.endsWith(path.sep) ? this.root : this.root + path.sep)) {
      throw new TftpError(TFTP_ERR_ACCESS, 'Access violation');
    }
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new TftpError(TFTP_ERR_NOT_FOUND, 'File not found');
      throw new TftpError(TFTP_ERR_ACCESS, 'Access violation');
    }
    const st = await fh.stat().catch(() => null);
    if (!st || !st.isFile()) {
      await fh.close().catch(() => {});
      throw new TftpError(TFTP_ERR_ACCESS, 'Access violation: not a regular file');
    }
    return fh;
  }

  private async start(fh: fsp.FileHandle, client: number, cport: number, key: number, netascii: boolean, opts: Map<string, string>): Promise<void> {
    this.starting.delete(key);
    if (this.closed) { await fh.close().catch(() => {}); this.releaseClient(client); return; }
    const size = (await fh.stat().catch(() => null))?.size ?? 0;
    // option negotiation (RFC 2347): unknown or invalid options are left out of the OACK
    const oack: string[] = [];
    let blksize = 512;
    let intervalMs = this.retransmitMs;
    const bs = decimal(opts.get('blksize'));
    if (bs !== null && bs >= MIN_BLKSIZE && bs <= MAX_BLKSIZE) {
      blksize = Math.min(bs, this.maxBlksize);
      oack.push('blksize', String(blksize));
    }
    const to = decimal(opts.get('timeout'));
    if (to !== null && to >= 1 && to <= 255) {
      intervalMs = to * 1000;
      oack.push('timeout', String(to));
    }
    if (opts.has('tsize') && decimal(opts.get('tsize')) !== null) oack.push('tsize', String(size));
    const tid = this.allocTid();
    const t: Transfer = {
      clientIp: client, clientPort: cport, key, tid, fh, blksize, intervalMs, netascii, block: 0,
      pkt: Buffer.alloc(0), last: false, tries: 0, reading: false, done: false,
      timer: new Timer(() => this.onTimeout(t)), pos: 0, eof: false, pending: Buffer.alloc(0),
    };
    if (tid === 0) {
      this.stats.limited++;
      this.releaseClient(client);
      await fh.close().catch(() => {});
      this.sendError(TFTP_PORT, client, cport, TFTP_ERR_UNDEF, 'No free transfer port');
      return;
    }
    this.transfers.set(key, t);
    this.tids.add(tid);
    this.stats.active++;
    this.stats.started++;
    this.gw.bindUdp(this.listenIp, tid, (d) => this.onTransferPacket(t, d));
    if (oack.length > 0) {
      const parts = [Buffer.from([0, OP_OACK])];
      for (const s of oack) parts.push(Buffer.from(s + '\0', 'latin1'));
      t.pkt = Buffer.concat(parts);
      this.transmit(t);
    } else {
      await this.nextBlock(t);
    }
  }

  private allocTid(): number {
    for (let k = 0; k < 64; k++) {
      const port = 49152 + Math.floor(Math.random() * 16384);
      if (!this.tids.has(port)) return port;
    }
    return 0;
  }

  private releaseClient(client: number): void {
    const n = (this.perClient.get(client) ?? 1) - 1;
    if (n <= 0) this.perClient.delete(client); else this.perClient.set(client, n);
  }

  // ---- transfer ----

  private onTransferPacket(t: Transfer, d: UdpDatagram): void {
    if (t.done) return;
    try {
      if (d.srcIp !== t.clientIp || d.srcPort !== t.clientPort) {
        this.stats.unknownTid++;
        this.sendError(t.tid, d.srcIp, d.srcPort, TFTP_ERR_UNKNOWN_TID, 'Unknown transfer ID');
        return;
      }
      const p = d.payload;
      if (p.length < 4) { this.stats.malformed++; return; }
      const op = p.readUInt16BE(0);
      if (op === OP_ERROR) { this.stats.clientErrors++; this.finish(t, false); return; }
      if (op !== OP_ACK) {
        this.stats.malformed++;
        this.sendError(t.tid, t.clientIp, t.clientPort, TFTP_ERR_ILLEGAL, 'Illegal TFTP operation');
        this.finish(t, false);
        return;
      }
      const n = p.readUInt16BE(2);
      if (n !== (t.block & 0xffff) || t.reading) { this.stats.duplicateAcks++; return; }
      if (t.last) { this.finish(t, true); return; }
      void this.nextBlock(t);
    } catch (err) {
      this.stats.malformed++;
      if (log.enabled('debug')) log.debug('transfer handler error', { err: (err as Error).message });
    }
  }

  private async nextBlock(t: Transfer): Promise<void> {
    t.reading = true;
    this.gw.timers.cancel(t.timer);
    let data: Buffer;
    try {
      data = t.netascii ? await this.readNetascii(t) : await this.readOctet(t);
    } catch {
      if (!t.done) {
        this.sendError(t.tid, t.clientIp, t.clientPort, TFTP_ERR_UNDEF, 'Read error');
        this.finish(t, false);
      }
      return;
    }
    t.reading = false;
    if (t.done) return;
    t.block++;
    t.last = data.length < t.blksize;
    const pkt = Buffer.allocUnsafe(4 + data.length);
    pkt.writeUInt16BE(OP_DATA, 0);
    pkt.writeUInt16BE(t.block & 0xffff, 2);
    data.copy(pkt, 4);
    t.pkt = pkt;
    t.tries = 0;
    this.stats.bytesSent += data.length;
    this.transmit(t);
  }

  private async readOctet(t: Transfer): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(t.blksize);
    let fill = 0;
    while (fill < t.blksize) {
      const { bytesRead } = await t.fh.read(buf, fill, t.blksize - fill, t.pos);
      if (bytesRead === 0) break;
      fill += bytesRead;
      t.pos += bytesRead;
    }
    return buf.subarray(0, fill);
  }

  private async readNetascii(t: Transfer): Promise<Buffer> {
    while (t.pending.length < t.blksize && !t.eof) {
      const chunk = Buffer.allocUnsafe(Math.max(t.blksize, 16384));
      const { bytesRead } = await t.fh.read(chunk, 0, chunk.length, t.pos);
      if (bytesRead === 0) { t.eof = true; break; }
      t.pos += bytesRead;
      t.pending = Buffer.concat([t.pending, toNetascii(chunk.subarray(0, bytesRead))]);
    }
    const out = t.pending.subarray(0, t.blksize);
    t.pending = t.pending.subarray(out.length);
    return Buffer.from(out);
  }

  private transmit(t: Transfer): void {
    this.gw.sendUdp(this.listenIp, t.tid, t.clientIp, t.clientPort, t.pkt);
    this.gw.timers.arm(t.timer, t.intervalMs);
  }

  private onTimeout(t: Transfer): void {
    if (t.done || t.reading) return;
    if (t.tries >= this.retries) {
      this.stats.gaveUp++;
      this.sendError(t.tid, t.clientIp, t.clientPort, TFTP_ERR_UNDEF, 'Timeout');
      this.finish(t, false);
      return;
    }
    t.tries++;
    this.stats.retransmits++;
    this.transmit(t);
  }

  private finish(t: Transfer, ok: boolean): void {
    if (t.done) return;
    t.done = true;
    if (ok) this.stats.completed++;
    this.stats.active--;
    this.gw.timers.cancel(t.timer);
    this.gw.unbindUdp(this.listenIp, t.tid);
    this.tids.delete(t.tid);
    this.transfers.delete(t.key);
    this.releaseClient(t.clientIp);
    void t.fh.close().catch(() => {});
  }

  private sendError(sport: number, dst: number, dport: number, code: number, msg: string): void {
    const m = Buffer.from(msg.slice(0, 200), 'latin1');
    const pkt = Buffer.alloc(5 + m.length);
    pkt.writeUInt16BE(OP_ERROR, 0);
    pkt.writeUInt16BE(code, 2);
    m.copy(pkt, 4);
    this.gw.sendUdp(this.listenIp, sport, dst, dport, pkt);
  }
}

function decimal(s: string | undefined): number | null {
  if (s === undefined || !/^[0-9]{1,10}$/.test(s)) return null;
  return Number(s);
}

/** LF -> CR LF, CR -> CR NUL (RFC 764 / 1350 netascii). */
function toNetascii(b: Buffer): Buffer {
  let extra = 0;
  for (let k = 0; k < b.length; k++) if (b[k] === 10 || b[k] === 13) extra++;
  if (extra === 0) return Buffer.from(b);
  const out = Buffer.allocUnsafe(b.length + extra);
  let o = 0;
  for (let k = 0; k < b.length; k++) {
    const c = b[k];
    if (c === 10) { out[o++] = 13; out[o++] = 10; } else if (c === 13) { out[o++] = 13; out[o++] = 0; } else out[o++] = c;
  }
  return out;
}
