// guestfwd: guest connections to a virtual address:port are relayed to a host-side target,
// as with QEMU's `guestfwd=[tcp]:server:port-TARGET`: `cmd:COMMAND` (spawned per
// connection, talking over its stdin/stdout), `tcp:HOST:PORT` or `unix:PATH`. The virtual
// address need not exist anywhere: the gateway answers ARP for it.
import net from 'node:net';
import { spawn, type ChildProcessWithoutNullStreams, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { Duplex } from 'node:stream';
import type { TcpConn } from '../stack/tcp/conn.ts';
import { logger } from '../util/log.ts';

const log = logger('guestfwd');

export type GuestFwdTarget =
  | { kind: 'cmd'; command: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string };

export interface GuestFwdRule { server: number; port: number; target: GuestFwdTarget; text: string }

export class GuestForwarder {
  readonly stats = { connections: 0, failures: 0 };
  constructor(readonly rules: GuestFwdRule[]) {}

  /** The rule for a guest destination, if any (server 0 = any address). */
  match(ip: number, port: number): GuestFwdRule | undefined {
    return this.rules.find((r) => r.port === port && (r.server === ip || r.server === 0));
  }

  open(c: TcpConn, rule: GuestFwdRule): void {
    this.stats.connections++;
    const t = rule.target;
    if (t.kind === 'cmd') {
      const child = spawn('/bin/sh', ['-c', t.command], { stdio: ['pipe', 'pipe', 'inherit'] });
      child.on('error', (err) => { this.stats.failures++; log.warn('command failed', { rule: rule.text, error: err.message }); });
      c.attach(commandStream(child));
      return;
    }
    const sock = t.kind === 'tcp' ? net.connect({ host: t.host, port: t.port, noDelay: true }) : net.connect(t.path);
    let up = false;
    sock.once('connect', () => { up = true; c.attach(sock); });
    sock.once('error', (err) => {
      if (up) return;
      this.stats.failures++;
      log.warn('target unreachable', { rule: rule.text, error: err.message });
      c.refuse();
    });
  }
}

/**
 * The command's stdout and stdin as one stream for the TCP connection: stdout's end is the
 * FIN towards the guest, the guest's FIN ends stdin.
 *
 * Not Duplex.from({ readable, writable }): Node destroys a child's stdin as soon as the child
 * exits, and Duplex.from turns that into a premature-close error on the pair. A command that
 * prints and exits at once (`cmd:echo hello`) then raced its own output: the error (and a
 * RST to the guest) could come before stdout's data and EOF were read, so the guest saw
 * "connection reset" instead of `hello` and a FIN. Here the stdin side never fails the
 * connection: what the guest sends after the command stopped reading is dropped, as a
 * closed pipe would (slirp gives the command a socket, whose reads simply stop).
 */
function commandStream(child: ChildProcessByStdio<Writable, Readable, null> | ChildProcessWithoutNullStreams): Duplex {
  const { stdin, stdout } = child;
  stdin.on('error', () => { /* EPIPE: the command exited without reading its input */ });
  const d = new Duplex({
    read() { stdout.resume(); },
    write(chunk: Buffer, _enc, cb) {
      if (stdin.destroyed || !stdin.writable) { cb(); return; }
      stdin.write(chunk, () => cb());
    },
    final(cb) { if (!stdin.destroyed) stdin.end(); cb(); },
    destroy(err, cb) { if (child.exitCode === null && child.signalCode === null) child.kill(); cb(err); },
  });
  stdout.on('data', (b: Buffer) => { if (!d.push(b)) stdout.pause(); });
  stdout.on('end', () => d.push(null));
  stdout.on('error', (err) => d.destroy(err));
  return d;
}
