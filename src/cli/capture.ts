// `qnet capture NET [--port P] -w FILE [--seconds N]`: the daemon writes a network's (or one
// port's) frames to a pcap file until Ctrl-C or for N seconds.
import path from 'node:path';
import { seg } from '../daemon/client.ts';
import { client, json, parse, runCommand, UsageError } from './common.ts';

const USAGE = `usage: qnet capture NET -w FILE [--port P] [--seconds N] [--json]

Captures the frames of network NET to a pcap file (open it with wireshark or tcpdump -r).
The daemon writes FILE, so it must be a path the daemon can write.
  -w, --write FILE   the pcap file to write
  --port P           only one port: its id or the VM's name (default: the whole network)
  --seconds N        stop after N seconds (default: until Ctrl-C)
  --json             print the result as JSON
  --api PATH         the daemon's API socket (default: $QNET_API or the runtime directory)`;

interface CaptureResult { id: string; network: string; path: string; port: string | null; frames?: number; seconds?: number }

export async function main(argv: string[]): Promise<number> {
  return runCommand('capture', USAGE, async () => {
    const { values, positionals } = parse(argv, {
      write: { type: 'string', short: 'w' },
      port: { type: 'string' },
      seconds: { type: 'string' },
    });
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    if (positionals.length !== 1) throw new UsageError('give exactly one network: qnet capture NET -w FILE');
    if (!values.write) throw new UsageError('say where to write the capture: -w FILE');
    const netName = positionals[0];
    const file = path.resolve(values.write);
    let seconds: number | undefined;
    if (values.seconds !== undefined) {
      seconds = Number(values.seconds);
      if (!(seconds > 0)) throw new UsageError(`--seconds must be a positive number, got '${values.seconds}'`);
    }
    const api = client(values.api);
    const body: Record<string, unknown> = { path: file };
    if (values.port !== undefined) body.port = values.port;
    const what = `${netName}${values.port ? ` port ${values.port}` : ''}`;
    const done = (r: CaptureResult): number => {
      if (values.json) process.stdout.write(json(r));
      else process.stderr.write(`\n${r.frames ?? 0} frames captured on ${what} to ${file}\n`);
      return 0;
    };

    if (seconds !== undefined) {
      // the daemon answers when the time is up; closing the request (Ctrl-C) stops it early
      const ac = new AbortController();
      let interrupted = false;
      const onSig = (): void => { interrupted = true; ac.abort(); };
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      if (!values.json) process.stderr.write(`capturing ${what} to ${file} for ${seconds} s (Ctrl-C stops early)\n`);
      try {
        const r = await api.post<CaptureResult>(`/v1/networks/${seg(netName)}/capture`, { ...body, seconds }, { timeoutMs: 0, signal: ac.signal });
        return done(r);
      } catch (e) {
        if (interrupted) {
          if (!values.json) process.stderr.write(`\ncapture stopped early; ${file} holds what was captured\n`);
          return 130;
        }
        throw e;
      } finally {
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    }

    const started = await api.post<CaptureResult>(`/v1/networks/${seg(netName)}/capture`, body);
    await new Promise<void>((resolve) => {
      const keepAlive = setInterval(() => {}, 1 << 30); // signal handlers alone do not keep node running
      const onSig = (): void => {
        clearInterval(keepAlive);
        process.off('SIGINT', onSig); process.off('SIGTERM', onSig); process.off('SIGHUP', onSig);
        resolve();
      };
      process.on('SIGINT', onSig);
      process.on('SIGTERM', onSig);
      process.on('SIGHUP', onSig);
      // only now say so: a Ctrl-C that follows the message must find the handler in place
      if (!values.json) process.stderr.write(`capturing ${what} to ${file} (capture ${started.id}); Ctrl-C stops\n`);
    });
    const r = await api.post<CaptureResult>(`/v1/captures/${seg(started.id)}/stop`);
    return done(r);
  });
}
