// `qnet capture NET [--port P] -w FILE [--seconds N]`: a network's (or one port's) frames
// as a pcap file, until Ctrl-C or for N seconds.
//
// The daemon streams the pcap in its API response and this command writes FILE itself, so the
// file is created with the rights of whoever runs the command (never the daemon's), where
// that user may write. `-w -` writes to stdout (e.g. `qnet capture lab -w - | tshark -r -`).
// Ctrl-C asks the daemon to stop the capture, so the last batch still arrives; a second
// Ctrl-C (or a daemon that does not answer) ends at once.
import fs from 'node:fs';
import path from 'node:path';
import type http from 'node:http';
import { seg } from '../daemon/client.ts';
import { client, json, parse, runCommand, UsageError } from './common.ts';

const USAGE = `usage: qnet capture NET -w FILE [--port P] [--seconds N] [--json]

Captures the frames of network NET to a pcap file (open it with wireshark or tcpdump -r).
The daemon streams the capture; this command writes FILE, as you.
  -w, --write FILE   the pcap file to write (created 0600, replaced if it exists); - for stdout
  --port P           only one port: its id or the VM's name (default: the whole network)
  --seconds N        stop after N seconds (default: until Ctrl-C)
  --json             print the result as JSON
  --api PATH         the daemon's API socket (default: $QNET_API or the runtime directory)`;

interface CaptureResult { id: string; network: string; path: string; port: string | null; frames: number; dropped: number; bytes: number; seconds: number; stoppedEarly: boolean }

/** Counts the records of a pcap byte stream as it passes (24-byte header, then 16 + caplen each). */
class PcapCounter {
  frames = 0;
  bytes = 0;
  /** bytes still to skip before the next record header (the file header first) */
  private skip = 24;
  private readonly hdr = Buffer.alloc(16);
  private hdrFill = 0;
  feed(d: Buffer): void {
    this.bytes += d.length;
    let o = 0;
    while (o < d.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, d.length - o);
        this.skip -= n;
        o += n;
        continue;
      }
      const n = Math.min(16 - this.hdrFill, d.length - o);
      d.copy(this.hdr, this.hdrFill, o, o + n);
      this.hdrFill += n;
      o += n;
      if (this.hdrFill === 16) {
        this.frames++;
        this.skip = this.hdr.readUInt32LE(8);
        this.hdrFill = 0;
      }
    }
  }
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('capture', USAGE, async () => {
    const { values, positionals } = parse(argv, {
      write: { type: 'string', short: 'w' },
      port: { type: 'string' },
      seconds: { type: 'string' },
    });
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    if (positionals.length !== 1) throw new UsageError('give exactly one network: qnet capture NET -w FILE');
    if (!values.write) throw new UsageError('say where to write the capture: -w FILE (or -w - for stdout)');
    const netName = positionals[0];
    const toStdout = values.write === '-';
    if (toStdout && values.json) throw new UsageError('--json prints to stdout, where -w - writes the capture; use one of them');
    const file = toStdout ? '-' : path.resolve(values.write);
    let seconds: number | undefined;
    if (values.seconds !== undefined) {
      seconds = Number(values.seconds);
      if (!(seconds > 0)) throw new UsageError(`--seconds must be a positive number, got '${values.seconds}'`);
    }
    const api = client(values.api);
    const body: Record<string, unknown> = {};
    if (values.port !== undefined) body.port = values.port;
    if (seconds !== undefined) body.seconds = seconds;
    const what = `${netName}${values.port ? ` port ${values.port}` : ''}`;

    // the file is opened first, as the user running this command, so a path it may not
    // write fails before anything is captured
    let fd: number;
    try {
      fd = toStdout ? 1 : fs.openSync(file, 'w', 0o600);
    } catch (e) {
      throw new Error(`cannot write ${file}: ${(e as Error).message}`);
    }
    const t0 = Date.now();
    const ac = new AbortController();
    let res: http.IncomingMessage;
    try {
      res = await api.stream('POST', `/v1/networks/${seg(netName)}/capture`, body, { signal: ac.signal });
    } catch (e) {
      if (!toStdout) { fs.closeSync(fd); fs.rmSync(file, { force: true }); }
      throw e;
    }
    const id = String(res.headers['x-qnet-capture-id'] ?? '');
    const counter = new PcapCounter();
    let interrupted = false;
    let writeError: Error | null = null;
    const ended = new Promise<void>((resolve) => {
      res.on('data', (d: Buffer) => {
        if (writeError) return;
        try { fs.writeSync(fd, d); counter.feed(d); } catch (e) { writeError = e as Error; ac.abort(); resolve(); }
      });
      res.on('end', () => resolve());
      res.on('error', () => resolve());
      res.on('close', () => resolve());
    });
    const keepAlive = setInterval(() => {}, 1 << 30); // signal handlers alone do not keep node running
    const onSig = (): void => {
      if (interrupted) { ac.abort(); return; } // second Ctrl-C: at once
      interrupted = true;
      // a graceful stop: the daemon sends the last batch and ends the stream
      api.post(`/v1/captures/${seg(id)}/stop`, {}, { timeoutMs: 3000 }).catch(() => ac.abort());
    };
    process.on('SIGINT', onSig);
    process.on('SIGTERM', onSig);
    process.on('SIGHUP', onSig);
    // only now say so: a Ctrl-C that follows the message must find the handler in place
    if (!values.json) process.stderr.write(`capturing ${what} to ${file}${seconds !== undefined ? ` for ${seconds} s` : ''} (capture ${id}); Ctrl-C stops\n`);
    try {
      await ended;
    } finally {
      clearInterval(keepAlive);
      process.off('SIGINT', onSig); process.off('SIGTERM', onSig); process.off('SIGHUP', onSig);
      if (!toStdout) fs.closeSync(fd);
    }
    if (writeError) throw new Error(`cannot write ${file}: ${(writeError as Error).message}`);
    const trailers = res.trailers ?? {};
    const r: CaptureResult = {
      id, network: netName, path: file, port: values.port ?? null, frames: counter.frames,
      dropped: Number(trailers['x-qnet-dropped'] ?? 0), bytes: counter.bytes, seconds: (Date.now() - t0) / 1000, stoppedEarly: interrupted,
    };
    if (values.json) process.stdout.write(json(r));
    else {
      process.stderr.write(`\n${r.frames} frames captured on ${what} to ${file}\n`);
      if (r.dropped > 0) process.stderr.write(`${r.dropped} frames were dropped: this command did not keep up with the network\n`);
    }
    return 0;
  });
}
